/**
 * A hung Redis (SIGSTOP: its connections stay open and silent) under two `npm start` instances sharing it:
 * once the circuit breaker opens, requests pay nothing for Redis, and a key revoked on one instance is refused
 * by the other within the heartbeat bound although Redis delivers nothing. Needs `redis-server` (skipped
 * without it, failed under CI=true).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN, authEnv, bearer } from './support/auth.ts';
import { quantile, redisPid, timed, waitReady } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';
import { startServer, type ServerProcess } from './support/server.ts';

const skip = redisUnavailable();
if (skip) console.log(`# skipping the Redis chaos tests: ${skip}`);

const HEARTBEAT_MS = 250;

describe('Redis hung under two instances', { skip }, () => {
  let db: TestDatabase;
  let redis: TestRedis;
  let a: ServerProcess;
  let b: ServerProcess;
  let pid: number;
  before(async () => {
    db = await createTestDatabase();
    redis = await startRedis();
    pid = await redisPid(redis.url);
    // Every request counts against the general limit in Redis; the auth cache TTL is long, so only invalidation
    // (or bypassing the cache) can make a revocation visible in time.
    const env = authEnv({
      DATABASE_URL: db.url, REDIS_URL: redis.url, AUTH_CACHE_TTL_MS: '60000', AUTH_BUS_HEARTBEAT_MS: String(HEARTBEAT_MS),
      REDIS_BREAKER_FAILURES: '3', REDIS_BREAKER_HALF_OPEN_MS: '1000',
    });
    a = await startServer(env);
    b = await startServer(env);
    await Promise.all([waitReady(a.baseUrl), waitReady(b.baseUrl)]);
  });
  after(async () => {
    if (pid) process.kill(pid, 'SIGCONT');
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
    await db?.destroy();
  });

  const post = (s: ServerProcess, path: string, body: unknown, headers: Record<string, string> = {}) =>
    timed(`${s.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

  test('5 s SIGSTOP: reads after the breaker opens stay fast, a revocation holds within 2 heartbeats, recovery within 3 s', async () => {
    const token = (JSON.parse((await post(a, '/auth/token', { email: ADMIN.email, password: ADMIN.password })).body) as { access_token: string }).access_token;
    const newKey = async (name: string) => JSON.parse((await post(a, '/auth/api-keys', { name }, bearer(token))).body) as { id: string; key: string };
    const revoked = await newKey('to revoke');
    const kept = await newKey('kept');
    const read = (s: ServerProcess, key: string) => timed(`${s.baseUrl}/users?limit=1`, { headers: { 'x-api-key': key } }, 5000);
    assert.equal((await read(b, revoked.key)).status, 200, 'b has the key cached');
    assert.equal((await read(b, kept.key)).status, 200);
    const baseline: number[] = [];
    for (let i = 0; i < 30; i++) baseline.push((await read(b, kept.key)).ms);

    process.kill(pid, 'SIGSTOP');
    const stoppedAt = performance.now();
    try {
      const revoke = await timed(`${a.baseUrl}/auth/api-keys/${revoked.id}`, { method: 'DELETE', headers: bearer(token) }, 5000);
      assert.equal(revoke.status, 204, 'the revocation itself does not need Redis');
      const revokedAt = performance.now();
      const afterRevoke: { status: number; at: number }[] = [];
      const hung: number[] = [];
      while (performance.now() - stoppedAt < 5000) {
        const r = await read(b, revoked.key);
        afterRevoke.push({ status: r.status, at: performance.now() - revokedAt });
        const k = await read(b, kept.key);
        assert.equal(k.status, 200, 'a valid key keeps working while Redis hangs');
        hung.push(k.ms);
        await new Promise((res) => setTimeout(res, 50));
      }
      const first401 = afterRevoke.find((r) => r.status === 401);
      const acceptedAfter = afterRevoke.filter((r) => r.status === 200).length;
      const late = afterRevoke.filter((r) => first401 && r.at > first401.at && r.status !== 401);
      // Past the breaker's opening (3 failures of 250 ms each at most, and a trial each second), nothing waits.
      const settled = hung.slice(Math.min(hung.length - 1, 10));
      const summary = `revoked key accepted ${acceptedAfter} times by b, first 401 ${Math.round(first401?.at ?? -1)} ms after the `
        + `revocation; reads p99 ${Math.round(quantile(baseline, 0.99))} ms before, ${Math.round(quantile(settled, 0.99))} ms while hung `
        + `(${hung.filter((ms) => ms > 200).length} of ${hung.length} over 200 ms)`;
      console.log(`# redis hung: ${summary}`);
      assert.ok(first401 !== undefined && first401.at < 2 * HEARTBEAT_MS + 500, `b refuses the revoked key within 2 heartbeats + 500 ms (${summary})`);
      assert.deepEqual(late, [], 'and never accepts it again');
      assert.ok(hung.filter((ms) => ms > 200).length <= 8, `at most the breaker's trials pay the command timeout (${summary})`);
      // p90, not p99: each half-open trial (one a second) pays the command timeout by design, so in 40 reads over
      // 5 s the p99 is a trial's (CI saw 384 ms with 2 of 50 over 200 ms); the bound above counts those.
      assert.ok(quantile(settled, 0.9) < 300, `reads stay fast while Redis hangs (${summary})`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const contAt = performance.now();
    let back: number | undefined;
    while (back === undefined && performance.now() - contAt < 5000) {
      const login = await post(b, '/auth/token', { email: ADMIN.email, password: ADMIN.password });
      if (login.status === 200) back = performance.now() - contAt;
      else await new Promise((res) => setTimeout(res, 100));
    }
    console.log(`# redis hung: logins (limits fail closed) back ${Math.round(back ?? -1)} ms after SIGCONT`);
    assert.ok(back !== undefined && back < 3000, 'logins work again within 3 s of Redis answering');
    assert.match(b.output(), /circuit breaker open/);
  });
});
