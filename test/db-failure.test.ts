/**
 * Database failures for real: PostgreSQL stopped under steady write load and started again, the service
 * started while the database is down, and a connection poisoned by nothing after a failed query.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { startApp, userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

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
      assert.equal(app.repository.poolStats().active, 0);
    } finally {
      await app.close();
      await db.destroy();
    }
  });
});
