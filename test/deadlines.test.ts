/**
 * Deadlines against a real PostgreSQL: `X-Request-Timeout` cancels the statement on the server and answers 504,
 * the global statement timeout does the same without a header, a busy pool answers 503 within the acquire
 * deadline instead of hanging, and the slow endpoints run real sleeps while other requests stay fast.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { startApp } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
let sql: postgres.Sql;
const apps: FastifyInstance[] = [];

before(async () => {
  db = await createTestDatabase();
  sql = postgres(db.url, { max: 1, onnotice: () => {} });
});
after(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await sql?.end();
  await db?.destroy();
});

/** An app on the shared test database with these settings, closed after the file. */
async function appWith(env: Record<string, string> = {}): Promise<FastifyInstance> {
  const app = await startApp(db.url, env);
  apps.push(app);
  return app;
}

/** Sleeps the server is running right now for anyone but us. */
async function activeSleeps(): Promise<number> {
  const [row] = await sql`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE query ILIKE '%pg_sleep%' AND state = 'active' AND pid <> pg_backend_pid()`;
  return row!.n as number;
}

/** Polls until no sleep is active; returns how long that took (ms), or fails after `withinMs`. */
async function sleepsGone(withinMs: number): Promise<number> {
  const started = performance.now();
  while ((await activeSleeps()) > 0) {
    if (performance.now() - started > withinMs) assert.fail(`pg_sleep still active after ${withinMs} ms`);
    await sleep(20);
  }
  return performance.now() - started;
}

/** A GET with its wall time. */
async function timed(app: FastifyInstance, url: string, headers: Record<string, string> = {}) {
  const started = performance.now();
  const res = await app.inject({ url, headers });
  return { res, ms: performance.now() - started };
}

describe('X-Request-Timeout', () => {
  test('0.5 s on /slow_query: 504 in under 1 s, the sleep is cancelled on the server, the connection is reusable', async (t) => {
    // One connection, so the requests afterwards must run on the very connection whose statement was cancelled.
    const app = await appWith({ POOL_MAX: '1' });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const started = performance.now();
    const pending = fetch(`${base}/slow_query`, { headers: { 'x-request-timeout': '0.5' } });
    for (let i = 0; (await activeSleeps()) === 0; i++) {
      assert.ok(i < 20, 'the sleep never showed up in pg_stat_activity');
      await sleep(20);
    }
    const res = await pending;
    const ms = performance.now() - started;
    assert.equal(res.status, 504);
    assert.deepEqual(await res.json(), { detail: 'Gateway Timeout' });
    assert.ok(ms >= 450 && ms < 1000, `answered after ${ms} ms`);
    const goneMs = await sleepsGone(1000);
    t.diagnostic(`504 after ${ms.toFixed(0)} ms; sleep gone from pg_stat_activity ${goneMs.toFixed(0)} ms later`);

    const list = await fetch(`${base}/users`);
    assert.equal(list.status, 200);
    const created = await fetch(`${base}/users`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'After', email: 'after@example.com', age: 1 }),
    });
    assert.equal(created.status, 201);
    assert.deepEqual(app.backend.probes.pools().users, { active: 0, idle: 1, waiting: 0, max: 1 });
  });

  test('a malformed value is 400', async () => {
    const app = await appWith();
    for (const value of ['abc', '0', '-1', '']) {
      const res = await app.inject({ url: '/slow_query', headers: { 'x-request-timeout': value } });
      assert.equal(res.statusCode, 400, `X-Request-Timeout: ${JSON.stringify(value)}`);
      assert.equal(typeof res.json().detail, 'string');
    }
  });
});

describe('X-Request-Timeout above 3600 s (README: at most 3600, anything else is 400)', () => {
  test('3600 is accepted; more is 400 in the contract\'s shape, and a write carrying it changes nothing', async () => {
    const app = await appWith();
    for (const value of ['3600', '3600.0', ' 30 ']) {
      const res = await app.inject({ url: '/users', headers: { 'x-request-timeout': value } });
      assert.equal(res.statusCode, 200, `X-Request-Timeout: ${value}`);
    }
    const count = async () => Number((await sql`SELECT count(*)::int AS n FROM users`)[0]!.n);
    const before = await count();
    for (const value of ['3600.001', '3601', '86400', '99999999999999999999999', '1e9']) {
      for (const req of [
        { method: 'GET' as const, url: '/slow_query' },
        { method: 'POST' as const, url: '/users', payload: { name: 'Never', email: 'never@example.com', age: 1 } },
      ]) {
        const res = await app.inject({ ...req, headers: { 'x-request-timeout': value } });
        assert.equal(res.statusCode, 400, `${req.method} ${req.url} with X-Request-Timeout: ${value}`);
        assert.deepEqual(Object.keys(res.json()), ['detail']);
        assert.match(res.json().detail, /X-Request-Timeout/);
      }
    }
    assert.equal(await count(), before, 'nothing was written');
  });
});

describe('global statement timeout', () => {
  test('STATEMENT_TIMEOUT_MS=1000 turns /slow_query into 504 without any header', async () => {
    const app = await appWith({ STATEMENT_TIMEOUT_MS: '1000' });
    const { res, ms } = await timed(app, '/slow_query');
    assert.equal(res.statusCode, 504, res.body);
    assert.deepEqual(res.json(), { detail: 'Gateway Timeout' });
    assert.ok(ms >= 900 && ms < 2000, `answered after ${ms} ms`);
    await sleepsGone(500);
    assert.equal((await app.inject('/users')).statusCode, 200);
  });
});

describe('a busy pool (POOL_MAX=2, POOL_ACQUIRE_TIMEOUT_MS=300)', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await appWith({ POOL_MAX: '2', POOL_ACQUIRE_TIMEOUT_MS: '300' });
  });

  /** Two slow queries holding both connections until their 1.5 s deadline. */
  async function holdPool() {
    const holds = [1, 2].map(() => app.inject({ url: '/slow_query', headers: { 'x-request-timeout': '1.5' } }));
    for (let i = 0; app.backend.probes.pools().users.active < 2; i++) {
      assert.ok(i < 100, 'the holds never took the pool');
      await sleep(10);
    }
    return async () => {
      for (const res of await Promise.all(holds)) assert.equal(res.statusCode, 504);
      await sleepsGone(1000);
    };
  }

  test('a third request gets 503 with Retry-After within the acquire deadline, never a hang', async (t) => {
    const release = await holdPool();
    const { res, ms } = await timed(app, '/users');
    assert.equal(res.statusCode, 503, res.body);
    assert.equal(res.headers['retry-after'], '1');
    assert.match(res.json().detail, /^Service temporarily unavailable: /);
    assert.ok(ms >= 280 && ms < 800, `answered after ${ms} ms`);
    t.diagnostic(`503 after ${ms.toFixed(0)} ms`);
    await release();
    assert.equal((await app.inject('/users')).statusCode, 200, 'the pool is usable again');
  });

  test('a request deadline shorter than the acquire deadline gives 504', async () => {
    const release = await holdPool();
    const { res, ms } = await timed(app, '/users', { 'x-request-timeout': '0.1' });
    assert.equal(res.statusCode, 504, res.body);
    assert.deepEqual(res.json(), { detail: 'Gateway Timeout' });
    // 504 rather than 503 shows the request deadline bounded the wait, not the acquire deadline.
    assert.ok(ms >= 90 && ms < 600, `answered after ${ms} ms`);
    await release();
    assert.deepEqual(app.backend.probes.pools().users, { active: 0, idle: 2, waiting: 0, max: 2 });
  });
});

// Both wait on real sleeps, so they run side by side to keep the file short.
describe('the slow endpoints without a deadline', { concurrency: true }, () => {
  let app: FastifyInstance;
  before(async () => {
    app = await appWith();
  });

  test('/slow_query completes after a real 5 s sleep', async () => {
    const { res, ms } = await timed(app, '/slow_query');
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), { message: 'Slow query completed' });
    assert.ok(ms >= 4900 && ms < 7000, `answered after ${ms} ms`);
  });

  test('/long_running_query completes after a real 10 s sleep; other requests stay fast meanwhile', async (t) => {
    const long = timed(app, '/long_running_query');
    await sleep(200);
    const worst = { ms: 0 };
    for (let i = 0; i < 20; i++) {
      const { res, ms } = await timed(app, '/users?limit=5');
      assert.equal(res.statusCode, 200);
      worst.ms = Math.max(worst.ms, ms);
      await sleep(200);
    }
    assert.ok(worst.ms < 200, `slowest GET /users meanwhile took ${worst.ms} ms`);
    t.diagnostic(`slowest of 20 GET /users during the sleep: ${worst.ms.toFixed(1)} ms`);
    const { res, ms } = await long;
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), { message: 'Long query completed' });
    assert.ok(ms >= 9900 && ms < 12_000, `answered after ${ms} ms`);
  });
});
