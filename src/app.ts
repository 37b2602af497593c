/**
 * Builds the Spate application. The server and the tests both call `buildApp`, so tests exercise exactly
 * what production runs.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import pino from 'pino';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from './platform/config.ts';
import { loggerOptions } from './platform/logger.ts';
import docs, { docsRoutes } from './platform/http/docs.ts';
import errorHandling from './platform/http/error-handler.ts';
import inFlight from './platform/http/in-flight.ts';
import jsonBody from './platform/http/json-body.ts';
import { AccessLogController } from './platform/http/log-controller.ts';
import { clientErrorHandler, frameworkErrors } from './platform/http/refusals.ts';
import requestContext, { genReqId } from './platform/http/request-context.ts';
import { formatValidationErrors, validatorCompiler } from './platform/http/validation.ts';
import healthRoutes from './modules/ops/health.ts';
import metricsRoutes from './modules/ops/metrics-routes.ts';
import dashboardRoutes from './modules/ops/dashboard.ts';
import performanceRoutes from './modules/ops/performance.ts';
import shutdown from './platform/http/drain.ts';
import auth from './modules/auth/plugin.ts';
import { SECURITY_SCHEMES } from './modules/auth/openapi.ts';
import metrics from './platform/metrics.ts';
import security, { corsPolicy, loadShedding } from './platform/http/security.ts';
import costBudget from './platform/http/cost-budget.ts';
import type { Backend } from './db/backend.ts';
import backendPlugin from './db/plugin.ts';
import jobs from './modules/jobs/plugin.ts';
import jobsRoutes from './modules/jobs/routes.ts';
import webhooks from './modules/webhooks/plugin.ts';
import webhooksRoutes from './modules/webhooks/routes.ts';
import usersCache, { type CachePluginOptions } from './modules/cache/plugin.ts';
import cacheRoutes from './modules/cache/routes.ts';
import usersRoutes from './modules/users/routes.ts';
import streamRoutes from './modules/users/stream.ts';
import bulk from './modules/bulk/plugin.ts';
import uploads from './modules/uploads/plugin.ts';

export interface BuildOptions {
  /** A backend to use instead of opening the configured one (the caller closes it). */
  backend?: Backend;
  /** Logger override; tests pass `false` or a level. */
  logger?: boolean | { level: string };
  /** Called by `POST /shutdown` to start the process's graceful shutdown (server.ts). */
  requestShutdown?: (reason: string) => void;
  /** Tests only: awaited inside the users cache between a load and its store (src/modules/cache/cached-users.ts). */
  cacheAfterLoad?: CachePluginOptions['afterLoad'];
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
    // Refusals below the routes, in the contract's shape (src/platform/http/refusals.ts).
    clientErrorHandler,
    frameworkErrors,
    // Our own drain answers 503 in the contract's shape (src/platform/http/drain.ts).
    return503OnClosing: false,
    // Opening a backend may create its schema: on a fresh Cassandra cluster that is a dozen tables, each waiting for
    // schema agreement across the nodes, far past Fastify's default 10 s for a plugin. A backend that cannot be
    // reached does not hold start-up (src/db/when-reachable.ts), so this bounds slow DDL only.
    pluginTimeout: 120_000,
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

  // First, so their hooks see every request, including ones a later hook rejects.
  await app.register(inFlight);
  await app.register(metrics);
  await app.register(security, { config });
  await app.register(errorHandling, { notFoundPreHandler: app.limits.general });
  await app.register(requestContext);
  // Before everything that needs a store; it registers no routes.
  await app.register(backendPlugin, { config, backend: opts.backend, onQuery: app.metrics.observeQuery });
  app.metrics.readPools(() => app.backend.probes.pools());
  if (app.backend.probes.replicas) app.metrics.readReplicas(() => app.backend.probes.replicas?.() ?? []);
  // Before the modules that define job kinds (auth's pruning); workers start once the app is ready.
  await app.register(jobs, { jobs: config.jobs, observer: app.metrics.jobs });
  app.metrics.readJobCounts(async () => app.backend.jobs?.counts() ?? []);
  // The outbox relay and the delivery job (docs/webhooks.md); the routes come with the API's below.
  await app.register(webhooks, { webhooks: config.webhooks, jobs: config.jobs });
  // Every users route but the stream reads through it (docs/caching.md).
  await app.register(usersCache, { config, afterLoad: opts.cacheAfterLoad });
  await app.register(jsonBody);
  await app.register(loadShedding, { config });
  await app.register(costBudget, { capacity: config.resilience.pageRowsInFlight });
  // Before every route, so the document lists them all (the auth routes included); the auth plugin's onRoute
  // hook then adds each route's security to the same route object the document reads.
  await app.register(docs, { securitySchemes: SECURITY_SCHEMES });
  // Before any route: it puts the policy's checks in front of every route registered after it.
  await app.register(auth, { config });
  await app.register(corsPolicy, { config });
  await app.register(docsRoutes);
  await app.register(shutdown, { requestShutdown: opts.requestShutdown });
  await app.register(healthRoutes);
  await app.register(metricsRoutes);
  await app.register(dashboardRoutes);
  await app.register(cacheRoutes);
  // Its job kinds in every role; its routes unless ROLE=worker (docs/bulk.md).
  await app.register(bulk, { config });
  // ROLE=worker runs jobs and answers health and metrics only; the API is served by ROLE=api or all.
  if (config.jobs.role !== 'worker') {
    await app.register(performanceRoutes);
    await app.register(usersRoutes, {
      batchMax: config.batchMax, store: app.usersCache.users,
      caching: { cacheControl: config.cache.cacheControl, vary: config.cache.vary },
    });
    await app.register(streamRoutes, { config });
    await app.register(jobsRoutes);
    await app.register(webhooksRoutes, { config: config.webhooks });
  }
  // tus uploads (docs/uploads.md); in ROLE=worker only their expiry sweep.
  await app.register(uploads, { config });
  return app;
}
