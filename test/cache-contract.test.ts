/**
 * The storage contract (test/storage.contract.ts) through the users cache: the cached store is a `UsersStore`
 * like any adapter and must keep every promise the adapters keep, on a real PostgreSQL and a real Cassandra node
 * (skipped without Java, as in test/storage-cassandra.test.ts).
 */
import postgres from 'postgres';
import { storageContract } from './storage.contract.ts';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { localBus } from '../src/platform/bus.ts';
import { createCachedUsers } from '../src/modules/cache/cached-users.ts';

exitWhenDone();

/** The same backend, its users store wrapped in the cache. */
function throughCache(backend: TestBackend): TestBackend {
  return {
    ...backend,
    async openBackend(o) {
      const opened = await backend.openBackend(o);
      const cache = createCachedUsers(opened.users, {
        mode: 'memory', ttlMs: 60_000, maxEntries: 10_000, maxBytes: 1 << 24, bus: localBus,
      });
      return {
        ...opened,
        users: cache.users,
        async close() {
          cache.close();
          await opened.close();
        },
      };
    },
  };
}

storageContract('postgres', async () => {
  const backend = await startBackend('postgres');
  return {
    backend: throughCache(backend),
    // As in test/storage-postgres.test.ts: the deadline clause checks the server's own view.
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

storageContract('cassandra', async () => ({ backend: throughCache(await startBackend('cassandra')) }), skipReason('cassandra'));
