/**
 * Builds the Spate application. The server and the tests both call `buildApp`, so tests exercise exactly
 * what production runs.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import pino from 'pino';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from './config.ts';
import { loggerOptions } from './logger.ts';
import docs from './http/docs.ts';
import errorHandling from './http/errors.ts';
import { AccessLogController } from './http/log-controller.ts';
import requestContext, { genReqId } from './http/request-context.ts';
import { formatValidationErrors, validatorCompiler } from './http/validation.ts';
import healthRoutes from './ops/health.ts';
import metricsRoutes from './ops/metrics.ts';
import performanceRoutes from './ops/performance.ts';
import shutdown from './ops/shutdown.ts';
import type { AccountsRepository } from './auth/accounts-repository.ts';
import auth from './plugins/auth.ts';
import metrics from './plugins/metrics.ts';
import security, { corsPolicy } from './plugins/security.ts';
import storage from './plugins/storage.ts';
import type { UsersRepository } from './storage/repository.ts';
import usersRoutes from './users/routes.ts';
import streamRoutes from './users/stream.ts';

export interface BuildOptions {
  /** A repository to use instead of opening the configured backend (the caller closes it). */
  repository?: UsersRepository;
  /** Logger override; tests pass `false` or a level. */
  logger?: boolean | { level: string };
  /** Called by `POST /shutdown` to start the process's graceful shutdown (server.ts). */
  requestShutdown?: (reason: string) => void;
  /** An accounts store to use instead of opening one for the backend (the caller closes it). */
  accounts?: AccountsRepository;
}

/** Bytes a pipe writes atomically (Linux PIPE_BUF): workers sharing stdout never interleave within a write. */
const PIPE_BUF = 4096;

/**
 * JSON logs go to stdout through an asynchronous destination. The default one writes each line with its own
 * `write` system call on the event loop: with an access line per request that was about 5% of the CPU of
 * GET /users/{id} under load. Written asynchronously, the lines of a busy moment leave in one write of whole
 * lines (at most PIPE_BUF bytes), idle lines leave at once, and pino flushes what is left when the process
 * exits. The pretty (terminal) transport already writes off the event loop.
 */
function withAsyncDestination(options: FastifyServerOptions['logger']): FastifyServerOptions['logger'] {
  if (typeof options !== 'object' || options === null || 'transport' in options) return options;
  return { ...options, stream: pino.destination({ dest: 1, sync: false, maxWrite: PIPE_BUF }) };
}

export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? withAsyncDestination(loggerOptions(config)),
    genReqId,
    requestIdHeader: false,
    logController: new AccessLogController(),
    bodyLimit: config.bodyLimit,
    schemaErrorFormatter: formatValidationErrors,
    // Our own drain answers 503 in the contract's shape (src/ops/shutdown.ts).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // Slow clients (docs/security.md): whole request, headers, idle keep-alive, socket inactivity.
    // A hop count is supported at run time though Fastify's types leave it out.
    trustProxy: config.http.trustProxy as boolean | string[],
    requestTimeout: config.http.requestTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    connectionTimeout: config.http.connectionTimeoutMs,
    http: {
      headersTimeout: config.http.headersTimeoutMs,
      requestTimeout: config.http.requestTimeoutMs,
      // Node checks the two timeouts above on this period (default 30 s), which would let a slow client hold
      // a connection far past them.
      connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(config.http.headersTimeoutMs / 4))),
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);

  // First, so its hooks see every request, including ones a later hook rejects.
  await app.register(metrics);
  await app.register(security, { config });
  await app.register(errorHandling, { notFoundPreHandler: app.limits.general });
  await app.register(requestContext);
  // Before any route: it puts the policy's checks in front of every route registered after it.
  await app.register(auth, { config, accounts: opts.accounts });
  await app.register(corsPolicy, { config });
  await app.register(docs);
  await app.register(shutdown, { requestShutdown: opts.requestShutdown });
  await app.register(storage, { config, repository: opts.repository, onQuery: app.metrics.observeQuery });
  await app.register(healthRoutes);
  await app.register(metricsRoutes);
  await app.register(performanceRoutes);
  await app.register(usersRoutes, { batchMax: config.batchMax });
  await app.register(streamRoutes);
  return app;
}
