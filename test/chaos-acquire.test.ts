/**
 * Waiting for a connection, against `npm start` on a real PostgreSQL: with the table locked and every pooled
 * connection stuck behind the lock, reads by id (coalesced into shared batches) are refused each at its own
 * acquire deadline, counted from its own arrival, never together with a batch that started waiting earlier.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { quantile, seedUsers, timed, waitReady, within, type Timed } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';

const ACQUIRE_MS = 1000;

/** Reads of `url` at 20/s for 3 s while `locker` holds `users` locked for 4 s (every pooled connection stuck). */
async function readsDuringLock(locker: postgres.Sql, url: string): Promise<Timed[]> {
  const unlock = await new Promise<() => void>((locked) => {
    void locker.begin(async (sql) => {
      await sql`LOCK TABLE users IN ACCESS EXCLUSIVE MODE`;
      await new Promise<void>((release) => locked(release));
    });
  });
  const reads: Promise<Timed>[] = [];
  const started = performance.now();
  while (performance.now() - started < 3000) {
    reads.push(timed(url, {}, 10_000));
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 4000 - (performance.now() - started)));
  unlock();
  return Promise.all(reads);
}

describe('acquire deadlines under a locked table', () => {
  let db: TestDatabase;
  let s: ServerProcess;
  let id: string;
  before(async () => {
    db = await createTestDatabase();
    s = await startServer({ DATABASE_URL: db.url, POOL_MAX: '2', POOL_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_MS) });
    await waitReady(s.baseUrl);
    await seedUsers(db.url, 10);
    id = (JSON.parse((await timed(`${s.baseUrl}/users?limit=1`)).body) as { id: string }[])[0]!.id;
  });
  after(async () => {
    await s?.stop();
    await db?.destroy();
  });

  test('reads at 20/s during a 4 s lock: every 503 after waiting 1 s (+-0.2 s) of its own, all 200 again once unlocked', async () => {
    const locker = postgres(db.url, { max: 1, onnotice: () => {} });
    const results = await readsDuringLock(locker, `${s.baseUrl}/users/${id}`);
    await locker.end();
    const refused = results.filter((r) => r.status === 503);
    const other = results.filter((r) => r.status !== 503 && r.status !== 200);
    const waits = refused.map((r) => r.ms);
    const summary = `${results.length} reads: ${results.length - refused.length} x 200, ${refused.length} x 503 after `
      + `${Math.round(Math.min(...waits))}..${Math.round(Math.max(...waits))} ms (p50 ${Math.round(quantile(waits, 0.5))})`;
    console.log(`# acquire deadlines: ${summary}`);
    assert.deepEqual(other.map((r) => r.status), [], 'only 200 or 503');
    assert.ok(refused.length > 10, `most reads queued past the deadline (${summary})`);
    assert.ok(Math.min(...waits) >= ACQUIRE_MS - 50, `no read refused before its own deadline (${summary})`);
    assert.ok(Math.max(...waits) <= ACQUIRE_MS + 200, `none held past it (${summary})`);
    for (const r of refused) {
      assert.equal(r.headers.get('retry-after'), '1');
      assert.deepEqual(JSON.parse(r.body), { detail: `Service temporarily unavailable: no database connection free within ${ACQUIRE_MS} ms` });
    }
    assert.equal((await timed(`${s.baseUrl}/users/${id}`, {}, 2000)).status, 200, 'reads answer again at once after the lock');
  });

  // Finding 9's variant: with Spate's connections terminated just before the lock, reads used to get 503
  // "database unreachable" after 2.0 to 3.8 s (CONNECT_TIMEOUT) though the database was only locked. Not
  // reproduced on this code (the new connections open at once; only their statements wait on the lock): kept as
  // the scenario that shows it.
  test('connections terminated, then the table locked: refusals are each read\'s own acquire deadline, never "database unreachable"', async () => {
    const admin = postgres(db.url, { max: 1, onnotice: () => {} });
    const locker = postgres(db.url, { max: 1, onnotice: () => {} });
    const logBefore = s.output().length;
    try {
      const gone = await admin`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
        WHERE application_name LIKE 'spate%'`;
      assert.ok(gone[0]!.n > 0, 'Spate connections were terminated');
      // pg_terminate_backend only signals: wait until those backends have exited (and their sockets closed), so a read
      // is not sent on a connection that is already dead, which is "connection lost" (503 unreachable), not this case.
      await within(3000, async () => (await admin`SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE application_name LIKE 'spate%' AND backend_start < now() - interval '1 second'`)[0]!.n === 0);
      await sleep(100);
      const results = await readsDuringLock(locker, `${s.baseUrl}/users/${id}`);
      const refused = results.filter((r) => r.status === 503);
      const details = new Set(refused.map((r) => (JSON.parse(r.body) as { detail: string }).detail));
      const waits = refused.map((r) => r.ms);
      const summary = `${results.length} reads: ${results.length - refused.length} x 200, ${refused.length} x 503 after `
        + `${Math.round(Math.min(...waits))}..${Math.round(Math.max(...waits))} ms: ${[...details].join('; ')}`;
      console.log(`# terminated, then locked: ${summary}`);
      assert.deepEqual(results.filter((r) => r.status !== 200 && r.status !== 503).map((r) => r.status), [], 'only 200 or 503');
      assert.ok(refused.length > 10, `reads queued past the deadline (${summary})`);
      assert.deepEqual([...details], [`Service temporarily unavailable: no database connection free within ${ACQUIRE_MS} ms`],
        `every refusal is the acquire deadline, none "database unreachable" (${summary})`);
      assert.ok(Math.min(...waits) >= ACQUIRE_MS - 50 && Math.max(...waits) <= ACQUIRE_MS + 200, `each after its own wait (${summary})`);
      assert.ok(!s.output().slice(logBefore).includes('CONNECT_TIMEOUT'), 'no connection attempt timed out');
    } finally {
      await Promise.all([admin.end(), locker.end()]);
    }
  });
});
