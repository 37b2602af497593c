/**
 * Database failures for real: PostgreSQL stopped under steady write load and started again, the service
 * started while the database is down, the database hanging (SIGSTOP) under /health, a connection poisoned by
 * nothing after a failed query, and 5xx bodies of the real server process that never carry driver text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { startApp, userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer } from './support/server.ts';

const embedded = !process.env.TEST_DATABASE_URL;
const why = 'stopping the server needs the embedded PostgreSQL (TEST_DATABASE_URL is set)';

describe('PostgreSQL stopped under write load, then started again', { skip: embedded ? false : why }, () => {
  let db: TestDatabase;
  let app: FastifyInstance;
  before(async () => {
    db = await createTestDatabase();
    app = await startApp(db.url, { POOL_ACQUIRE_TIMEOUT_MS: '1000' });
  });
  after(async () => {
    await app?.close();
    await db?.destroy();
  });

  test('only 503s while down, unhealthy within 1 s, recovery within 2 s, every 2xx write kept', async () => {
    const acknowledged: string[] = [];
    const statuses = new Map<number, number>();
    let phase: 'up' | 'down' | 'back' = 'up';
    const unexpected: string[] = [];
    let firstSuccessAfterRestart: number | undefined;
    let restartedAt = 0;
    let writing = true;

    const writer = async () => {
      while (writing) {
        const res = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        if (res.statusCode === 201) {
          acknowledged.push(res.json().id);
          if (phase === 'back') firstSuccessAfterRestart ??= performance.now();
        } else if (res.statusCode === 503) {
          assert.ok(res.headers['retry-after'], 'a 503 carries Retry-After');
          assert.match(res.json().detail, /^Service temporarily unavailable/);
        } else {
          unexpected.push(`${phase}: ${res.statusCode} ${res.body}`);
        }
        if (res.statusCode !== 201) await new Promise((r) => setTimeout(r, 20));
      }
    };
    const writers = Array.from({ length: 4 }, writer);

    await new Promise((r) => setTimeout(r, 500));
    assert.ok(acknowledged.length > 0, 'writes succeed before the outage');
    const beforeOutage = acknowledged.length;

    await db.stopServer();
    phase = 'down';
    const stoppedAt = performance.now();
    let unhealthyAfterMs: number | undefined;
    while (unhealthyAfterMs === undefined && performance.now() - stoppedAt < 3000) {
      const t0 = performance.now();
      const health = await app.inject('/health');
      assert.equal(health.statusCode, 200);
      assert.ok(performance.now() - t0 < 1000, '/health answers within 1 s');
      if (health.json().status === 'unhealthy') unhealthyAfterMs = performance.now() - stoppedAt;
      else await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(unhealthyAfterMs !== undefined && unhealthyAfterMs < 1000, `unhealthy after ${unhealthyAfterMs} ms`);
    assert.equal((await app.inject('/health/ready')).statusCode, 503);
    await new Promise((r) => setTimeout(r, 1500));

    await db.startServer();
    restartedAt = performance.now();
    phase = 'back';
    while (firstSuccessAfterRestart === undefined && performance.now() - restartedAt < 5000) {
      await new Promise((r) => setTimeout(r, 20));
    }
    writing = false;
    await Promise.all(writers);

    const recoveryMs = firstSuccessAfterRestart! - restartedAt;
    console.log(`outage: unhealthy after ${unhealthyAfterMs!.toFixed(0)} ms; writes recovered ${recoveryMs.toFixed(0)} ms after restart; statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.deepEqual(unexpected, [], 'nothing but 201 and 503');
    assert.ok((statuses.get(503) ?? 0) > 0, 'the outage was seen');
    assert.ok(recoveryMs < 2000, `recovered ${recoveryMs} ms after the database returned`);
    assert.ok(acknowledged.length > beforeOutage, 'writes resumed');
    assert.equal((await app.inject('/health')).json().status, 'healthy');

    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const stored = new Set((await sql<{ id: string }[]>`SELECT id::text AS id FROM users`).map((r) => r.id));
      const lost = acknowledged.filter((id) => !stored.has(id));
      assert.deepEqual(lost, [], 'every acknowledged write is in the table');
    } finally {
      await sql.end();
    }
  });
});

describe('starting while the database is down', { skip: embedded ? false : why }, () => {
  test('the service starts unhealthy and not ready, then recovers and migrates by itself', async () => {
    const db = await createTestDatabase();
    try {
      await db.stopServer();
      const app = await startApp(db.url);
      try {
        const health = (await app.inject('/health')).json();
        assert.deepEqual([health.status, health.database_connected], ['unhealthy', false]);
        assert.equal((await app.inject('/health/ready')).statusCode, 503);
        const write = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
        assert.equal(write.statusCode, 503);

        await db.startServer();
        const t0 = performance.now();
        let ready = false;
        while (!ready && performance.now() - t0 < 5000) {
          ready = (await app.inject('/health/ready')).statusCode === 200;
          if (!ready) await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(ready, 'ready once the database is back and the schema applied');
        const created = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
        assert.equal(created.statusCode, 201, created.body);
      } finally {
        await app.close();
      }
    } finally {
      await db.destroy();
    }
  });
});

describe('a failed query never poisons a pooled connection', () => {
  test('after errors of every kind on a one-connection pool, the next query works', async () => {
    const db = await createTestDatabase();
    const app = await startApp(db.url, { POOL_MAX: '1' });
    try {
      const timedOut = await app.inject({ url: '/slow_query', headers: { 'x-request-timeout': '0.2' } });
      assert.equal(timedOut.statusCode, 504);
      const refused = await app.inject({ method: 'POST', url: '/users', payload: userBody({ name: 'nul\u0000' }) });
      assert.equal(refused.statusCode, 400);
      const batch = await app.inject({ method: 'POST', url: '/users/batch', payload: [userBody(), userBody({ name: 'x\u0000' })] });
      assert.equal(batch.statusCode, 400);
      const ok = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
      assert.equal(ok.statusCode, 201);
      assert.equal((await app.inject(`/users/${ok.json().id}`)).statusCode, 200);
      assert.equal(app.backend.probes.pools().users.active, 0);
    } finally {
      await app.close();
      await db.destroy();
    }
  });
});

/** Texts of drivers, servers and stacks that must never reach a response body. */
const DRIVER_TEXT = [
  /ECONN|EPIPE|ETIMEDOUT|CONNECT_TIMEOUT|CONNECTION_(CLOSED|ENDED|DESTROYED)/, /relation "|does not exist|column "/,
  /canceling statement|statement timeout|SQLSTATE|\b(42P01|57014|08006)\b/, /postgres|pg_sleep|SELECT|INSERT/i,
  /node_modules|\.ts:\d|\bat \S+ \(/, /127\.0\.0\.1/,
];

/** A 5xx body is exactly `{"detail": <a catalogue text>}`, with nothing from the driver in any byte of it. */
function assertCatalogue5xx(status: number, body: string, what: string): void {
  assert.ok(status >= 500 && status < 600, `${what}: ${status}`);
  for (const text of DRIVER_TEXT) assert.doesNotMatch(body, text, `${what}: ${body}`);
  const parsed = JSON.parse(body) as { detail: unknown };
  assert.deepEqual(Object.keys(parsed), ['detail'], what);
  assert.match(String(parsed.detail), /^(Internal server error|Gateway Timeout|Service temporarily unavailable: [a-z ]+)$/, what);
}

describe('PostgreSQL hanging: SIGSTOP of the postmaster and its backends', { skip: embedded ? false : why }, () => {
  test('/health answers 200 unhealthy within 1 s, again and again, beside hung requests; healthy after SIGCONT', async (t) => {
    const db = await createTestDatabase();
    const app = await startApp(db.url);
    try {
      assert.equal((await app.inject('/health')).json().status, 'healthy');
      assert.equal((await app.inject('/users')).statusCode, 200, 'the pool has a connection open');
      const thaw = db.freezeServer();
      let hung: Promise<{ statusCode: number; body: string }>[] = [];
      const times: number[] = [];
      try {
        hung = [app.inject('/users'), app.inject({ method: 'POST', url: '/users', payload: userBody() }), app.inject('/users?limit=5')];
        for (let round = 0; round < 3; round++) {
          const answers = await Promise.all(Array.from({ length: 4 }, async () => {
            const t0 = performance.now();
            const res = await app.inject('/health');
            return { res, ms: performance.now() - t0 };
          }));
          for (const { res, ms } of answers) {
            times.push(ms);
            assert.equal(res.statusCode, 200);
            assert.deepEqual([res.json().status, res.json().database_connected], ['unhealthy', false]);
          }
        }
        let t0 = performance.now();
        assert.equal((await app.inject('/health/live')).statusCode, 200);
        assert.ok(performance.now() - t0 < 1000, '/health/live');
        t0 = performance.now();
        assert.equal((await app.inject('/health/ready')).statusCode, 503);
        assert.ok(performance.now() - t0 < 1000, '/health/ready');
      } finally {
        thaw();
      }
      t.diagnostic(`/health while frozen: ${times.length} answers, slowest ${Math.max(...times).toFixed(0)} ms`);
      assert.ok(Math.max(...times) < 1000, `slowest /health took ${Math.max(...times).toFixed(0)} ms`);

      const thawedAt = performance.now();
      let healthy = false;
      while (!healthy && performance.now() - thawedAt < 5000) {
        healthy = (await app.inject('/health')).json().status === 'healthy';
        if (!healthy) await sleep(50);
      }
      assert.ok(healthy, 'healthy again within 5 s of SIGCONT');
      for (const res of await Promise.all(hung)) {
        if (res.statusCode >= 500) assertCatalogue5xx(res.statusCode, res.body, 'a request caught by the hang');
        else assert.ok(res.statusCode === 200 || res.statusCode === 201, `${res.statusCode} ${res.body}`);
      }
    } finally {
      await app.close();
      await db.destroy();
    }
  });
});

describe('5xx bodies of the real server process never carry driver text', () => {
  let db: TestDatabase;
  let sql: postgres.Sql;
  before(async () => {
    db = await createTestDatabase();
    sql = postgres(db.url, { max: 1, onnotice: () => {} });
  });
  after(async () => {
    await sql?.end();
    await db?.destroy();
  });

  test('500 (a missing table), 504 (a deadline) and 503 (the database down): catalogue text only; the cause is in the log', async () => {
    const server = await startServer({ DATABASE_URL: db.url, POOL_ACQUIRE_TIMEOUT_MS: '1000' });
    try {
      assert.equal((await fetch(`${server.baseUrl}/users`)).status, 200);

      await sql`ALTER TABLE users RENAME TO users_elsewhere`;
      try {
        for (const [method, path] of [['GET', '/users'], ['POST', '/users'], ['GET', '/users/stream'], ['GET', '/users/0190a3c4-0000-7000-8000-00000000abcd']]) {
          const res = await fetch(`${server.baseUrl}${path}`, method === 'POST'
            ? { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(userBody()) } : {});
          const body = await res.text();
          assert.equal(res.status, 500, `${method} ${path}: ${body}`);
          assertCatalogue5xx(res.status, body, `${method} ${path} without its table`);
          const id = res.headers.get('x-request-id')!;
          // Logs leave through an asynchronous destination: the line may follow the response by a moment.
          const loggedLine = () => server.output().split('\n').find((l) => l.includes(id) && l.includes('"level":50'));
          for (let i = 0; i < 100 && !loggedLine(); i++) await sleep(20);
          assert.ok(loggedLine()?.includes('relation \\"users\\" does not exist'), `the driver's text is logged with request ${id}`);
        }
      } finally {
        await sql`ALTER TABLE users_elsewhere RENAME TO users`;
      }

      const late = await fetch(`${server.baseUrl}/slow_query`, { headers: { 'x-request-timeout': '0.3' } });
      assertCatalogue5xx(late.status, await late.text(), 'a deadline');

      if (embedded) {
        await db.stopServer();
        try {
          for (const path of ['/users', '/users/stream?limit=5', '/performance/async?requests=5']) {
            const res = await fetch(`${server.baseUrl}${path}`);
            assert.equal(res.status, 503, path);
            assertCatalogue5xx(res.status, await res.text(), `${path} with the database down`);
          }
        } finally {
          await db.startServer();
        }
      }
    } finally {
      assert.equal(await server.stop(), 0, server.output());
    }
  });
});
