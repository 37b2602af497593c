/**
 * The warm pool (src/db/postgres/db.ts `keepWarm`, POOL_MIN and POOL_IDLE_TIMEOUT in src/platform/config.ts):
 * `min` connections are open right after start and stay open across idle spells longer than the idle timeout,
 * while connections above `min` still close; so the first burst after start or after quiet opens nothing.
 * Connections are counted on the server, in pg_stat_activity.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import postgres from 'postgres';
import { createDb, type Db } from '../src/db/postgres/db.ts';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { startApp } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

describe('the warm pool', () => {
  let tdb: TestDatabase;
  let admin: postgres.Sql;
  const pools: Db[] = [];

  before(async () => {
    tdb = await createTestDatabase();
    admin = postgres(tdb.url, { max: 1, onnotice: () => {}, connection: { application_name: 'warm-pool-test' } });
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.close()));
    await admin.end({ timeout: 5 });
    await tdb.destroy();
  });

  /** Backends of the pools under test (application_name spate), and when the newest of them was opened. */
  async function backends(): Promise<{ n: number; newest: Date | null }> {
    const [row] = await admin<{ n: number; newest: Date | null }[]>`
      SELECT count(*)::int AS n, max(backend_start) AS newest FROM pg_stat_activity WHERE application_name = 'spate'`;
    return row!;
  }
  async function until(what: string, ok: (n: number) => boolean, ms = 5000): Promise<number> {
    const t0 = Date.now();
    for (;;) {
      const { n } = await backends();
      if (ok(n)) return n;
      if (Date.now() - t0 > ms) assert.fail(`${what}: ${n} connections after ${ms} ms`);
      await sleep(50);
    }
  }
  /** A pool of max 8 that the test closes when it ends (and waits until its connections are gone). */
  const pool = (t: TestContext, min: number, idleTimeoutS: number) => {
    const p = createDb({ url: tdb.url, max: 8, min, idleTimeoutS, acquireTimeoutMs: 5000, statementTimeoutMs: 10_000 });
    pools.push(p);
    t.after(async () => {
      pools.splice(pools.indexOf(p), 1);
      await p.close();
      await until('closed', (n) => n === 0);
    });
    return p;
  };
  /** As many statements at once as the pool allows, each holding its connection a moment. */
  const burst = (p: Db) => Promise.all(Array.from({ length: 8 }, () => p.query((sql) => sql`SELECT pg_sleep(0.1)`)));

  test('min connections are open right after start, before any request', async (t) => {
    pool(t, 3, 60);
    assert.equal(await until('after start', (n) => n >= 3), 3);
    await sleep(300);
    assert.equal((await backends()).n, 3, 'no more than min opened');
  });

  test('after a burst, connections above min close at the idle timeout and min stay open across idle spells', async (t) => {
    const p = pool(t, 3, 2);
    await until('after start', (n) => n === 3);
    await burst(p);
    assert.equal((await backends()).n, 8, 'the burst opened the rest up to max');
    // Extras close about one idle timeout (2 s) after their last use; min stay.
    await until('after the idle timeout', (n) => n === 3, 6000);
    const warm = await backends();
    // An idle spell of three idle timeouts: nothing closes and nothing is reopened.
    await sleep(6000);
    assert.deepEqual(await backends(), warm, 'the same min connections, none reopened');
    // The next burst of min statements opens no connection.
    await Promise.all(Array.from({ length: 3 }, () => p.query((sql) => sql`SELECT pg_sleep(0.05)`)));
    assert.deepEqual(await backends(), warm, 'a burst of min statements after quiet used warm connections');
  });

  test('control: without min, an idle spell longer than the idle timeout closes every connection', async (t) => {
    const p = pool(t, 0, 1);
    await sleep(300);
    assert.equal((await backends()).n, 0, 'nothing opened at start');
    await burst(p);
    assert.equal((await backends()).n, 8);
    await until('after the idle timeout', (n) => n === 0, 4000);
  });

  test('the app opens POOL_MIN connections at start (default POOL_MAX) and answers a burst with them', async (t) => {
    const app = await startApp(tdb.url, { POOL_MAX: '5', POOL_IDLE_TIMEOUT: '2' });
    t.after(() => app.close());
    // The users pool is application_name spate; the accounts pool and the health probe are others.
    await until('after the app started', (n) => n >= 5);
    const before = await backends();
    assert.equal(before.n, 5);
    await sleep(5000);
    const res = await app.inject({ url: '/performance/async?requests=50' });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(await backends(), before, 'after 5 s of quiet (idle timeout 2 s) the burst opened no connection');
  });
});

describe('POOL_MIN and POOL_IDLE_TIMEOUT', () => {
  const url = 'postgres://u:p@127.0.0.1:1/db';
  test('default: POOL_MIN is POOL_MAX, the idle timeout 60 s', () => {
    const { pool } = loadConfig({ DATABASE_URL: url, POOL_MAX: '7' });
    assert.equal(pool.min, 7);
    assert.equal(pool.idleTimeoutS, 60);
  });
  test('POOL_MIN above POOL_MAX is refused with a message naming both', () => {
    assert.throws(() => loadConfig({ DATABASE_URL: url, POOL_MAX: '4', POOL_MIN: '5' }), (err: Error) =>
      err instanceof ConfigError && /POOL_MIN \(5\) must not exceed POOL_MAX \(4\)/.test(err.message));
  });
  test('POOL_MIN=0 and a negative or zero idle timeout', () => {
    assert.equal(loadConfig({ DATABASE_URL: url, POOL_MIN: '0' }).pool.min, 0);
    assert.throws(() => loadConfig({ DATABASE_URL: url, POOL_IDLE_TIMEOUT: '0' }), ConfigError);
    assert.throws(() => loadConfig({ DATABASE_URL: url, POOL_MIN: '-1' }), ConfigError);
  });
});
