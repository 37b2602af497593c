/**
 * The storage contract (test/storage.contract.ts) against a real PostgreSQL: an embedded server in a temporary
 * directory, or a fresh database on TEST_DATABASE_URL.
 */
import postgres from 'postgres';
import { storageContract } from './storage.contract.ts';
import { startBackend } from './support/backends.ts';

storageContract('postgres', async () => {
  const backend = await startBackend('postgres');
  return {
    backend,
    async serverSleeps() {
      const sql = postgres(backend.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
      try {
        const [row] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()`;
        return row?.n ?? 0;
      } finally {
        await sql.end();
      }
    },
  };
});
