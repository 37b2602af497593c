/**
 * `npm run migrate`: applies pending schema migrations and exits, for deploys that migrate as a separate step.
 * With DATABASE_URL unset it migrates the embedded database under DATA_DIR.
 */
import { migrateDatabase } from '../db/backend.ts';
import { startEmbeddedPostgres } from '../db/embedded-postgres.ts';
import { ConfigError, loadConfig } from '../platform/config.ts';

async function main(): Promise<void> {
  const config = loadConfig();
  if (config.cassandra) {
    console.log('Cassandra backend: its schema is created at start; nothing to migrate.');
    return;
  }
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir, () => {});
  try {
    const applied = await migrateDatabase({ ...config, databaseUrl: config.databaseUrl ?? embedded!.url });
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'schema is up to date');
  } finally {
    await embedded?.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
