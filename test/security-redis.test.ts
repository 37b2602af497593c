/**
 * Several instances sharing a real Redis: two `npm start` processes enforce one rate limit, a revocation on one
 * is honoured by the other at once, and when Redis is killed in the middle, general routes keep serving
 * (in-process counters) while logins fail closed (503), until Redis returns.
 *
 * Needs the `redis-server` binary: skipped with a message when it is missing, failed when CI=true.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN, authEnv, bearer } from './support/auth.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';
import { startServer, type ServerProcess } from './support/server.ts';

const skip = redisUnavailable();
if (skip) console.log(`# skipping the Redis tests: ${skip}`);

describe('instances sharing Redis', { skip }, () => {
  let db: TestDatabase;
  let redis: TestRedis;
  let a: ServerProcess;
  let b: ServerProcess;

  before(async () => {
    db = await createTestDatabase();
    redis = await startRedis();
    const env = authEnv({
      DATABASE_URL: db.url, REDIS_URL: redis.url, RATE_LIMIT_MAX: '40', RATE_LIMIT_LOGIN_MAX: '4', RATE_LIMIT_LOGIN_IP_MAX: '1000',
      AUTH_CACHE_TTL_MS: '60000', // long: only invalidation can make a revocation visible in time
    });
    a = await startServer(env);
    b = await startServer(env);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
    await db?.destroy();
  });

  const call = (s: ServerProcess, path: string, init: RequestInit = {}) => fetch(`${s.baseUrl}${path}`, init);
  const post = (s: ServerProcess, path: string, body: unknown, headers: Record<string, string> = {}) =>
    call(s, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const login = async (s: ServerProcess) => {
    const res = await post(s, '/auth/token', { email: ADMIN.email, password: ADMIN.password });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as { access_token: string };
  };
  const newKey = async (s: ServerProcess, token: string) => {
    const res = await post(s, '/auth/api-keys', { name: 'shared' }, bearer(token));
    assert.equal(res.status, 201);
    return (await res.json()) as { id: string; key: string };
  };
  const revoke = (s: ServerProcess, token: string, id: string) => call(s, `/auth/api-keys/${id}`, { method: 'DELETE', headers: bearer(token) });

  test('a key revoked on one instance is refused by the other at once, although it had it cached', async () => {
    const t = await login(a);
    const key = await newKey(a, t.access_token);
    assert.equal((await call(b, '/users', { headers: { 'x-api-key': key.key } })).status, 200, 'b caches the key');
    assert.equal((await revoke(a, t.access_token, key.id)).status, 204);
    // Pub/sub delivery is asynchronous; allow it a moment (far below the 60 s cache TTL).
    let status = 0;
    for (let i = 0; i < 20 && status !== 401; i++) {
      status = (await call(b, '/users', { headers: { 'x-api-key': key.key } })).status;
      if (status !== 401) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(status, 401);
  });

  test('login attempts are counted once across both instances', async () => {
    const attempt = (s: ServerProcess) => post(s, '/auth/token', { email: 'target@example.com', password: 'guess' });
    const statuses = [];
    for (const s of [a, b, a, b, a, b]) statuses.push((await attempt(s)).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 429, 429]);
  });

  test('the general limit is one budget across both instances', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 50; i++) statuses.push((await call(i % 2 ? a : b, '/')).status);
    const first429 = statuses.indexOf(429);
    // 40 per window per client in all (the requests of the tests above from this client count too).
    assert.ok(first429 > 0 && first429 <= 40, `first 429 at request ${first429}: ${statuses.join(',')}`);
    assert.ok(statuses.slice(first429).every((s) => s === 429), 'once over, both instances refuse');
  });

  test('Redis killed mid-test: general routes keep serving, logins fail closed, revocation stays immediate; all recovers', async () => {
    const t = await login(a);
    const key = await newKey(a, t.access_token);
    assert.equal((await call(b, '/users', { headers: { 'x-api-key': key.key } })).status, 200);

    await redis.kill();

    // General routes: served (now counted in-process), and promptly.
    for (const s of [a, b]) {
      const started = performance.now();
      const res = await call(s, '/users', { headers: bearer(t.access_token) });
      assert.equal(res.status, 200, `general route on ${s.port} with Redis down`);
      assert.ok(performance.now() - started < 1000, 'nothing waits on the dead Redis');
      assert.equal((await call(s, '/health')).status, 200);
    }
    // Logins: closed.
    const blocked = await post(a, '/auth/token', { email: ADMIN.email, password: ADMIN.password });
    assert.equal(blocked.status, 503);
    assert.equal(blocked.headers.get('retry-after'), '1');
    assert.match(((await blocked.json()) as { detail: string }).detail, /^Service temporarily unavailable/);
    // With the invalidation channel down, caches are bypassed: a revocation on a still holds on b.
    assert.equal((await revoke(a, t.access_token, key.id)).status, 204);
    assert.equal((await call(b, '/users', { headers: { 'x-api-key': key.key } })).status, 401);

    await redis.restart();
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = (await post(b, '/auth/token', { email: ADMIN.email, password: ADMIN.password })).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 200, 'logins work again once Redis is back');
    assert.match(a.output() + b.output(), /rate-limit store unreachable/);
  });
});
