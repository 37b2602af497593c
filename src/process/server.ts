/**
 * The process: loads configuration, starts the embedded PostgreSQL when no database is configured, builds the
 * app, listens, and shuts down gracefully on SIGTERM, SIGINT or `POST /shutdown`.
 *
 * Shutdown drains in-flight requests and streams (see src/platform/http/drain.ts), closes the pool, stops the embedded
 * database and exits 0; if that takes longer than SHUTDOWN_TIMEOUT the process is forced out with exit code 1.
 *
 * With WORKERS above 1 this process becomes the primary of src/process/cluster.ts, and each worker it forks runs
 * `serve` below with the database URL the primary hands it. With WORKERS=1 (the default) there is no cluster
 * at all: this one process serves, exactly as before.
 */
import cluster from 'node:cluster';
import pino from 'pino';
import { joinMetricsGroup, runPrimary, SHUTDOWN_MESSAGE } from './cluster.ts';
import { ConfigError, loadConfig, type Config } from '../platform/config.ts';
import { loggerOptions } from '../platform/logger.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../db/embedded-postgres.ts';

function readConfig(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    process.exit(1);
  }
}

/** The embedded PostgreSQL when neither DATABASE_URL nor Cassandra is configured, with the config pointing at it. */
async function startDatabase(
  config: Config,
  log: pino.Logger,
): Promise<{ config: Config; embedded: EmbeddedPostgres | undefined }> {
  if (config.databaseUrl || config.cassandra) return { config, embedded: undefined };
  log.info({ dataDir: config.dataDir }, 'starting embedded PostgreSQL');
  const embedded = await startEmbeddedPostgres(config.dataDir, (line) => log.debug({ pg: line }, 'postgres'), {
    avoid: config.port,
  });
  return { config: { ...config, databaseUrl: embedded.url }, embedded };
}

/** Of the shutdown's time, what running jobs get to finish: all but 2 s, and at least half. */
const jobsShutdownBudgetMs = (timeoutMs: number) => Math.max(timeoutMs / 2, timeoutMs - 2000);

/**
 * With tracing on, the OpenTelemetry SDK, started before the app's modules load (it patches ioredis as that loads
 * and hooks every Fastify instance as it is created). Off, it is never imported: nothing of it loads or runs.
 */
async function startTracing(config: Config, log: pino.Logger): Promise<{ shutdown(): Promise<void> } | undefined> {
  if (!config.tracing.enabled) return undefined;
  const { startTracing: start } = await import('../platform/tracing/sdk.ts');
  log.info('tracing on: spans are exported over OTLP/HTTP (docs/tracing.md)');
  return start();
}

/** One serving process: the whole service when WORKERS=1, else one cluster worker. */
async function serve(initial: Config, log: pino.Logger): Promise<void> {
  const tracing = await startTracing(initial, log);
  // The app's modules load while the embedded database starts: neither needs the other, and together they are most
  // of the start-up (docs/startup.md).
  const loadingApp = import('../app.ts');
  loadingApp.catch(() => {}); // a failure surfaces where the app is built, below
  // A worker never starts a database: the primary passed it the URL of the one it started (or the configured one).
  const { config, embedded } = await startDatabase(initial, log);

  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => {
    stopping ??= (async () => {
      log.info({ reason, timeoutMs: config.shutdownTimeoutMs }, 'shutting down');
      const force = setTimeout(() => {
        log.error('shutdown did not finish within SHUTDOWN_TIMEOUT; forcing exit');
        process.exit(1);
      }, config.shutdownTimeoutMs);
      try {
        // A signal during start-up waits for the app to be built, then closes it like any other.
        const app = await building.catch(() => undefined);
        if (app) {
          // Running jobs finish beside the HTTP drain; what is still running then goes back to the queue,
          // leaving the rest of SHUTDOWN_TIMEOUT to close the pools and the embedded database.
          await Promise.all([app.drain(), app.jobs.stopWorkers(jobsShutdownBudgetMs(config.shutdownTimeoutMs))]);
          await app.close();
        }
        // The spans of the last requests and jobs leave before the process does.
        await tracing?.shutdown().catch((err: unknown) => log.warn({ reason: (err as Error).message }, 'flushing traces failed'));
        await embedded?.stop();
      } finally {
        clearTimeout(force);
      }
      log.info('stopped');
      process.exit(0);
    })();
    return stopping;
  };
  // In a worker, POST /shutdown stops the whole service: the primary drains every worker, this one included.
  const requestShutdown = (reason: string) => {
    if (cluster.isWorker && process.connected) process.send!({ type: SHUTDOWN_MESSAGE, reason });
    else void stop(reason);
  };

  // Before the build, so a signal during start-up still exits cleanly (and stops the embedded database).
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  const building = loadingApp.then(({ buildApp }) => buildApp(config, { requestShutdown }));
  const app = await building;
  if (stopping) return;
  if (cluster.isWorker) joinMetricsGroup(app.metrics, config.workers);
  await app.listen({ host: config.host, port: config.port });
}

async function main(): Promise<void> {
  const config = readConfig();
  const log = pino(loggerOptions(config) as pino.LoggerOptions);
  if (cluster.isPrimary && config.workers > 1) await runPrimary(config, log, startDatabase);
  else await serve(config, log);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
