/**
 * Graceful drain and `POST /shutdown`.
 *
 * `drain()` (SIGTERM, SIGINT or `POST /shutdown`) keeps the port open but answers every new request with 503 in
 * the contract's shape, `Connection: close` and `Retry-After`, and readiness with 503, so clients and load
 * balancers move elsewhere, while requests already running, streams included, finish. Once none is left the
 * server closes. The process-level part (the timeout, exit code, the embedded database) is in server.ts.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import fp from 'fastify-plugin';
import { Type } from 'typebox';
import { errors } from '../errors.ts';
import { ErrorBody } from '../schemas.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** True once a drain or close has begun. */
    draining: boolean;
    /** Refuses new requests and resolves when the requests in flight have finished. */
    drain(): Promise<void>;
  }
}

export interface ShutdownOptions {
  /** Starts the process's graceful shutdown; without it (tests), the route closes the app. */
  requestShutdown?: (reason: string) => void;
}


const shutdown: FastifyPluginAsyncTypebox<ShutdownOptions> = async (app, { requestShutdown }) => {
  app.decorate('draining', false);
  let inFlight = 0;
  let idle: (() => void) | undefined;

  app.decorate('drain', () => {
    app.draining = true;
    if (inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => (idle = resolve));
  });
  app.addHook('preClose', async () => {
    app.draining = true;
  });

  // A response's 'close' fires once whatever happened (finished, failed, or the client went away mid-stream),
  // so the count cannot leak. Counted before the check so that the 503s balance too.
  const finished = () => {
    if (--inFlight === 0 && idle) idle();
  };
  app.addHook('onRequest', async (_request, reply) => {
    inFlight++;
    reply.raw.once('close', finished);
    if (app.draining) throw errors.shuttingDown();
  });

  app.post('/shutdown', {
    schema: {
      tags: ['operations'],
      summary: 'Start a graceful shutdown (admin; with authentication off, loopback callers or admins)',
      response: { 200: Type.Object({ message: Type.String() }), 403: ErrorBody },
    },
  }, async (_request, reply) => {
    // Who may call this is the authorization policy's business (src/auth/policy.ts). Answer first: the drain waits for this very request to finish.
    reply.raw.once('finish', () => {
      if (requestShutdown) requestShutdown('POST /shutdown');
      else void app.close();
    });
    return { message: 'Shutdown initiated' };
  });
};

export default fp(shutdown, { name: 'shutdown' });
