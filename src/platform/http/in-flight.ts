/**
 * The one count of requests in flight, read by the metrics (a gauge) and by the drain (it waits for zero).
 *
 * A response's 'close' fires once whatever happened (finished, failed, or the client went away mid-stream), so
 * the count cannot drift. Registered first, so every request is counted, including those a later hook refuses.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import fp from 'fastify-plugin';

export interface InFlight {
  /** Requests received and not yet closed. */
  readonly count: number;
  /** Resolves once no request is in flight (at once if none is). */
  idle(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyInstance {
    inFlight: InFlight;
  }
}

export default fp(
  async (app) => {
    let count = 0;
    let waiters: (() => void)[] = [];
    function onClose(this: ServerResponse): void {
      if (--count === 0 && waiters.length) {
        for (const w of waiters) w();
        waiters = [];
      }
    }
    // Callback-style: an async hook would allocate a promise per request.
    app.addHook('onRequest', (_request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
      count++;
      reply.raw.once('close', onClose);
      done();
    });
    app.decorate('inFlight', {
      get count() {
        return Math.max(0, count);
      },
      idle: () => (count <= 0 ? Promise.resolve() : new Promise<void>((resolve) => waiters.push(resolve))),
    } satisfies InFlight);
  },
  { name: 'in-flight' },
);
