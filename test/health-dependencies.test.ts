/**
 * `GET /health`'s `dependencies` (docs/operations.md, "Health"): each dependency in use with its state, probed at
 * once and each within its deadline, so the answer is 200 in under a second whatever hangs. Against a real
 * PostgreSQL (stopped, then frozen) and a real Redis (SIGSTOPped, then stopped), and the Redis job queue's own
 * probe (the Cassandra backend's `job_queue`) on a Redis SIGSTOPped. Needs `redis-server` for the Redis tests
 * (skipped without it, failed under CI=true).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { openRedisJobs } from '../src/db/redis/jobs.ts';
import { quiet } from './jobs-support.ts';
import { startApp } from './support/app.ts';
import { redisPid } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';

interface Probe { state: string; latency_ms: number | null }
interface HealthBody {
  status: string;
  database_connected: boolean;
  dependencies: { database: Probe; redis?: Probe; job_queue?: Probe & { store: string }; replicas?: unknown[] };
}

/** `GET /health`, asserting the contract's part of it: 200, and within 1 s. */
async function health(app: FastifyInstance): Promise<HealthBody & { ms: number }> {
  const started = performance.now();
  const res = await app.inject({ method: 'GET', url: '/health' });
  const ms = performance.now() - started;
  assert.equal(res.statusCode, 200);
  assert.ok(ms < 1000, `/health answered in ${Math.round(ms)} ms`);
  return { ...(res.json() as HealthBody), ms };
}

const skipRedis = redisUnavailable();
if (skipRedis) console.log(`# skipping the Redis /health tests: ${skipRedis}`);

describe('/health with PostgreSQL and Redis', { skip: skipRedis }, () => {
  let db: TestDatabase;
  let redis: TestRedis;
  let app: FastifyInstance;
  let pid: number;
  before(async () => {
    db = await createTestDatabase();
    redis = await startRedis();
    pid = await redisPid(redis.url);
    app = await startApp(db.url, { REDIS_URL: redis.url, REDIS_BREAKER_FAILURES: '3', REDIS_BREAKER_HALF_OPEN_MS: '60000' });
  });
  const resume = () => {
    try {
      if (pid) process.kill(pid, 'SIGCONT');
    } catch { /* stopped by the last test */ }
  };
  after(async () => {
    resume();
    await app?.close();
    await redis?.stop();
    await db?.destroy();
  });

  test('every dependency in use is listed up, with its latency; no replicas when none are configured', async () => {
    const h = await health(app);
    assert.equal(h.status, 'healthy');
    assert.equal(h.dependencies.database.state, 'up');
    assert.ok(h.dependencies.database.latency_ms! >= 0);
    assert.equal(h.dependencies.redis?.state, 'up');
    assert.ok(h.dependencies.redis.latency_ms! >= 0);
    assert.deepEqual({ ...h.dependencies.job_queue, latency_ms: 0 }, { store: 'postgres', state: 'up', latency_ms: 0 });
    assert.equal('replicas' in h.dependencies, false);
    assert.equal('replicas' in h, false);
  });

  test('Redis SIGSTOPped: down, then breaker open; /health stays 200 within 1 s', async () => {
    process.kill(pid, 'SIGSTOP');
    const seen: string[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        const h = await health(app);
        seen.push(h.dependencies.redis!.state);
        assert.equal(h.status, 'healthy', 'Redis is not the database');
        assert.equal(h.dependencies.database.state, 'up');
      }
    } finally {
      resume();
    }
    assert.equal(seen[0], 'down', `states seen: ${seen.join(', ')}`);
    assert.ok(!seen.includes('up'), `states seen: ${seen.join(', ')}`);
    // Three failed commands (REDIS_BREAKER_FAILURES) open the breaker; from then on it is said without a PING.
    assert.equal(seen.at(-1), 'breaker_open', `states seen: ${seen.join(', ')}`);
  });

  test('Redis stopped: down at once', async () => {
    await redis.stop();
    const h = await health(app);
    // The breaker opened in the test before and stays open (half-open after 60 s): either says Redis is away.
    assert.ok(['down', 'breaker_open'].includes(h.dependencies.redis!.state), h.dependencies.redis!.state);
    assert.equal(h.dependencies.job_queue?.state, 'up');
  });
});

describe('/health with PostgreSQL away', () => {
  let db: TestDatabase;
  let app: FastifyInstance;
  before(async () => {
    db = await createTestDatabase();
    app = await startApp(db.url);
  });
  after(async () => {
    await app?.close();
    await db?.destroy();
  });

  test('no Redis configured: no redis entry', async () => {
    const h = await health(app);
    assert.equal('redis' in h.dependencies, false);
    assert.equal(h.dependencies.job_queue?.state, 'up');
  });

  test('database stopped: database and job queue down, 200 within 1 s', { skip: process.env.TEST_DATABASE_URL ? 'needs the embedded server' : false }, async () => {
    await db.stopServer();
    try {
      const h = await health(app);
      assert.equal(h.status, 'unhealthy');
      assert.equal(h.database_connected, false);
      assert.equal(h.dependencies.database.state, 'down');
      assert.equal(h.dependencies.job_queue?.state, 'down', 'the queue is in the database');
    } finally {
      await db.startServer();
    }
  });

  test('database frozen (SIGSTOP): both probes time out, 200 within 1 s', { skip: process.env.TEST_DATABASE_URL ? 'needs the embedded server' : false }, async () => {
    // Connections open on both pools first, so the probes wait on a silent server rather than fail to connect.
    const up = await health(app);
    assert.equal(up.dependencies.database.state, 'up');
    const thaw = db.freezeServer();
    try {
      const h = await health(app);
      assert.equal(h.dependencies.database.state, 'down');
      assert.equal(h.dependencies.job_queue?.state, 'down');
      assert.ok(h.dependencies.database.latency_ms! >= 700, `the probe waited out its deadline (${h.dependencies.database.latency_ms} ms)`);
    } finally {
      thaw();
    }
  });
});

describe('the Redis job queue\'s probe (the Cassandra backend\'s job_queue)', { skip: skipRedis }, () => {
  let redis: TestRedis;
  let pid = 0;
  before(async () => {
    redis = await startRedis();
    pid = await redisPid(redis.url);
  });
  after(async () => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch { /* not running */ }
    await redis?.stop();
  });

  test('answers while Redis does; with Redis SIGSTOPped it fails by its deadline, not later', async () => {
    const store = openRedisJobs({ url: redis.url, log: quiet });
    try {
      await store.ping({ deadline: performance.now() + 800 });
      process.kill(pid, 'SIGSTOP');
      const started = performance.now();
      try {
        await assert.rejects(store.ping({ deadline: performance.now() + 300 }), (err: Error & { kind?: string }) => err.kind === 'timeout');
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      const waited = performance.now() - started;
      assert.ok(waited >= 290 && waited < 600, `waited ${Math.round(waited)} ms for a 300 ms deadline`);
      await store.ping({ deadline: performance.now() + 2000 });
    } finally {
      await store.close();
    }
  });
});
