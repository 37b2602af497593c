/**
 * The crash contract (test/webhooks-crash.contract.ts) on a real PostgreSQL: 10,000 acknowledged creates under a
 * SIGKILL of the server (WEBHOOK_CRASH_CREATES sets the count), each delivered as its user.created event.
 */
import postgres from 'postgres';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { webhooksCrashContract } from './webhooks-crash.contract.ts';

let db: TestDatabase;
webhooksCrashContract({
  total: 10_000,
  start: async () => { db = await createTestDatabase(); },
  stop: () => db.destroy(),
  env: () => ({ DATABASE_URL: db.url }),
  async storedIds() {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      return new Set((await sql<{ id: string }[]>`SELECT id FROM users`).map((r) => r.id));
    } finally {
      await sql.end();
    }
  },
});
