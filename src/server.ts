/**
 * The process: loads configuration, starts the embedded PostgreSQL when no DATABASE_URL is given, builds the
 * app, listens, and shuts everything down gracefully on SIGTERM or SIGINT.
 */
import pino from 'pino';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { loggerOptions } from './logger.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './storage/postgres/embedded.ts';

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    process.exit(1);
  }
  const log = pino(loggerOptions(config) as pino.LoggerOptions);

  let embedded: EmbeddedPostgres | undefined;
  if (!config.databaseUrl && !config.cassandra) {
    log.info({ dataDir: config.dataDir }, 'starting embedded PostgreSQL');
    embedded = await startEmbeddedPostgres(config.dataDir, (line) => log.debug({ pg: line }, 'postgres'));
    config = { ...config, databaseUrl: embedded.url };
  }

  const app = await buildApp(config);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      app.log.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs);
    force.unref();
    await app.close();
    await embedded?.stop();
    clearTimeout(force);
    app.log.info('stopped');
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));

  await app.listen({ host: config.host, port: config.port });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
