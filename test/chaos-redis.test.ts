/**
 * A hung Redis (SIGSTOP: its connections stay open and silent) under two `npm start` instances sharing it:
 * once the circuit breaker opens, requests pay nothing for Redis, and a key revoked on one instance is refused
 * by the other within the heartbeat bound although Redis delivers nothing. Then Redis killed (SIGKILL) and
 * restarted: nothing waits on it, logins fail closed with the documented 503, the revocation rule holds, and
 * logins come back within a stated time of the restart. Needs `redis-server` (skipped
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
/** How long Redis stays dead in the killed scenario, and how soon after its restart logins must work again. */
const KILLED_MS = 3000;
const KILLED_RECOVERY_MS = 3000;

describe('Redis hung, then killed, under two instances', { skip }, () => {
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

  test(`Redis killed (SIGKILL) for ${KILLED_MS / 1000} s: reads 200 and logins 503 within 1 s each, a revocation holds within 2 heartbeats, logins back within ${KILLED_RECOVERY_MS / 1000} s of the restart`, async () => {
    const token = (JSON.parse((await post(a, '/auth/token', { email: ADMIN.email, password: ADMIN.password })).body) as { access_token: string }).access_token;
    const newKey = async (name: string) => JSON.parse((await post(a, '/auth/api-keys', { name }, bearer(token))).body) as { id: string; key: string };
    const revoked = await newKey('to revoke, Redis killed');
    const kept = await newKey('kept, Redis killed');
    const read = (s: ServerProcess, key: string) => timed(`${s.baseUrl}/users?limit=1`, { headers: { 'x-api-key': key } }, 5000);
    assert.equal((await read(b, revoked.key)).status, 200, 'b has the key cached');
    assert.equal((await read(b, kept.key)).status, 200);

    await redis.kill();
    const killedAt = performance.now();
    const revoke = await timed(`${a.baseUrl}/auth/api-keys/${revoked.id}`, { method: 'DELETE', headers: bearer(token) }, 5000);
    assert.equal(revoke.status, 204, 'the revocation itself does not need Redis');
    const revokedAt = performance.now();
    const afterRevoke: { status: number; at: number }[] = [];
    const reads: { status: number; ms: number }[] = [];
    const logins: { status: number; ms: number; retryAfter: string | null; body: string }[] = [];
    while (performance.now() - killedAt < KILLED_MS) {
      const r = await read(b, revoked.key);
      afterRevoke.push({ status: r.status, at: performance.now() - revokedAt });
      for (const s of [a, b]) reads.push(await read(s, kept.key));
      const l = await post(a, '/auth/token', { email: ADMIN.email, password: ADMIN.password });
      logins.push({ status: l.status, ms: l.ms, retryAfter: l.headers.get('retry-after'), body: l.body });
      await new Promise((res) => setTimeout(res, 50));
    }
    const first401 = afterRevoke.find((r) => r.status === 401);
    const late = afterRevoke.filter((r) => first401 && r.at > first401.at && r.status !== 401);
    const slowest = Math.round(Math.max(...reads.map((r) => r.ms), ...logins.map((l) => l.ms)));
    const badLogins = logins.filter((l) => l.status !== 503 || l.retryAfter !== '1'
      || !l.body.startsWith('{"detail":"Service temporarily unavailable: rate limiter unreachable"'));

    await redis.restart();
    const restartedAt = performance.now();
    const back: Record<string, number | undefined> = {};
    for (const [name, s] of [['a', a], ['b', b]] as const) {
      while (back[name] === undefined && performance.now() - restartedAt < KILLED_RECOVERY_MS + 2000) {
        const login = await post(s, '/auth/token', { email: ADMIN.email, password: ADMIN.password });
        if (login.status === 200) back[name] = performance.now() - restartedAt;
        else await new Promise((res) => setTimeout(res, 100));
      }
    }
    pid = await redisPid(redis.url); // the after hook's SIGCONT must reach the new process
    const summary = `${reads.length} reads ${JSON.stringify(countBy(reads))}, ${logins.length} logins `
      + `${JSON.stringify(countBy(logins))}, slowest ${slowest} ms; revoked key accepted `
      + `${afterRevoke.filter((r) => r.status === 200).length} times by b, first 401 ${Math.round(first401?.at ?? -1)} ms after the `
      + `revocation; logins back ${Math.round(back.a ?? -1)} ms (a) / ${Math.round(back.b ?? -1)} ms (b) after the restart`;
    console.log(`# redis killed: ${summary}`);
    assert.ok(reads.every((r) => r.status === 200), `a valid key keeps working with Redis dead (${summary})`);
    assert.deepEqual(badLogins.map((l) => `${l.status} ${l.retryAfter} ${l.body.slice(0, 80)}`), [],
      'logins fail closed: 503, Retry-After: 1, the documented detail');
    assert.ok(slowest < 1000, `no request waits on the dead Redis: every answer within 1 s (${summary})`);
    assert.ok(first401 !== undefined && first401.at < 2 * HEARTBEAT_MS + 500, `b refuses the revoked key within 2 heartbeats + 500 ms (${summary})`);
    assert.deepEqual(late, [], 'and never accepts it again');
    assert.ok(back.a !== undefined && back.a < KILLED_RECOVERY_MS && back.b !== undefined && back.b < KILLED_RECOVERY_MS,
      `logins on both instances back within ${KILLED_RECOVERY_MS} ms of the restart (${summary})`);
    assert.equal((await read(b, revoked.key)).status, 401, 'the revocation still holds once Redis is back');
    assert.equal((await read(b, kept.key)).status, 200);
  });
});

const countBy = (rs: { status: number }[]) => {
  const c: Record<string, number> = {};
  for (const r of rs) c[r.status] = (c[r.status] ?? 0) + 1;
  return c;
};
