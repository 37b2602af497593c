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
import { ErrorBody } from './error-schemas.ts';

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
  app.decorate('drain', () => {
    app.draining = true;
    return app.inFlight.idle();
  });
  app.addHook('preClose', async () => {
    app.draining = true;
  });

  // Requests are counted in one place (src/platform/http/in-flight.ts), the 503s of the drain included.
  // Callback-style: an async hook would allocate a promise per request.
  app.addHook('onRequest', (_request, _reply, done) => {
    done(app.draining ? errors.shuttingDown() : undefined);
  });

  app.post('/shutdown', {
    schema: {
      tags: ['operations'],
      summary: 'Start a graceful shutdown (admin; with authentication off, loopback callers or admins)',
      response: { 200: Type.Object({ message: Type.String() }), 403: ErrorBody },
    },
  }, async (_request, reply) => {
    // Who may call this is the authorization policy's business (src/modules/auth/policy.ts). Answer first: the drain waits for this very request to finish.
    reply.raw.once('finish', () => {
      if (requestShutdown) requestShutdown('POST /shutdown');
      else void app.close();
    });
    return { message: 'Shutdown initiated' };
  });
};

export default fp(shutdown, { name: 'shutdown', dependencies: ['in-flight'] });
