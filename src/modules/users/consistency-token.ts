/**
 * The consistency token's HTTP side (docs/operations.md, "Read replicas"): a write answers with
 * `X-Consistency-Token`, and a read that sends it back sees at least that write, wherever it is served.
 *
 * The token is opaque here: the store checks and honours it (src/db/replica-router.ts). Installed only when the
 * backend has read replicas; without them every read is on the primary and there is nothing to honour.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { ReadYourWrites } from '../../db/users-store.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's token slot, passed to the store with the request (CallOptions.readYourWrites). */
    readYourWrites: ReadYourWrites | undefined;
  }
}

export const CONSISTENCY_HEADER = 'x-consistency-token';

/** Adds the token hooks to the routes of `app` (an encapsulated plugin of users routes). */
export function consistencyTokens(app: FastifyInstance): void {
  app.decorateRequest('readYourWrites', undefined);
  if (!app.backend.probes.replicas) return;

  app.addHook('onRequest', (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => {
    const sent = request.headers[CONSISTENCY_HEADER];
    request.readYourWrites = { after: Array.isArray(sent) ? sent[0] : sent, token: undefined };
    done();
  });

  app.addHook('onSend', (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void) => {
    const token = request.readYourWrites?.token;
    if (token !== undefined) reply.header(CONSISTENCY_HEADER, token);
    done(null, payload);
  });
}
