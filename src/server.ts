/**
 * The process: loads configuration, starts the embedded PostgreSQL when no database is configured, builds the
 * app, listens, and shuts down gracefully on SIGTERM, SIGINT or `POST /shutdown`.
 *
 * Shutdown drains in-flight requests and streams (see src/ops/shutdown.ts), closes the pool, stops the embedded
 * database and exits 0; if that takes longer than SHUTDOWN_TIMEOUT the process is forced out with exit code 1.
 */
import pino from 'pino';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { loggerOptions } from './logger.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './storage/postgres/embedded.ts';

function readConfig(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    process.exit(1);
  }
}

async function main(): Promise<void> {
  let config = readConfig();
  const log = pino(loggerOptions(config) as pino.LoggerOptions);

  let embedded: EmbeddedPostgres | undefined;
  if (!config.databaseUrl && !config.cassandra) {
    log.info({ dataDir: config.dataDir }, 'starting embedded PostgreSQL');
    embedded = await startEmbeddedPostgres(config.dataDir, (line) => log.debug({ pg: line }, 'postgres'));
    config = { ...config, databaseUrl: embedded.url };
  }

  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => {
    stopping ??= (async () => {
      log.info({ reason, timeoutMs: config.shutdownTimeoutMs }, 'shutting down');
      const force = setTimeout(() => {
        log.error('shutdown did not finish within SHUTDOWN_TIMEOUT; forcing exit');
        process.exit(1);
      }, config.shutdownTimeoutMs);
      try {
        await app.drain();
        await app.close();
        await embedded?.stop();
      } finally {
        clearTimeout(force);
      }
      log.info('stopped');
      process.exit(0);
    })();
    return stopping;
  };

  const app = await buildApp(config, { requestShutdown: (reason) => void stop(reason) });
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  await app.listen({ host: config.host, port: config.port });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
