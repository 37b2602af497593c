/**
 * `npm run migrate`: applies pending schema migrations and exits, for deploys that migrate as a separate step.
 * With DATABASE_URL unset it migrates the embedded database under DATA_DIR.
 */
import postgres from 'postgres';
import { ConfigError, loadConfig } from '../config.ts';
import { startEmbeddedPostgres } from '../storage/postgres/embedded.ts';
import { migrate } from '../storage/postgres/migrate.ts';

async function main(): Promise<void> {
  const config = loadConfig();
  if (config.cassandra) {
    console.log('Cassandra backend: its schema is created at start; nothing to migrate.');
    return;
  }
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir, () => {});
  const sql = postgres(config.databaseUrl ?? embedded!.url, { max: 1, onnotice: () => {} });
  try {
    const applied = await migrate(sql);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'schema is up to date');
  } finally {
    await sql.end();
    await embedded?.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
