/** A route option Fastify takes as one hook or a list of them (`onRequest`, `preHandler`, ...), as a new list. */
export const hookList = <T>(hooks: T | T[] | undefined): T[] => (hooks === undefined ? [] : Array.isArray(hooks) ? [...hooks] : [hooks]);
