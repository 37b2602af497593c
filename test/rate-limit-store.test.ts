/**
 * The rate limits' store when Redis is unreachable (src/platform/rate-limit-store.ts), with a real ioredis client
 * whose server is not there: general limits go on counting in-process, so they still refuse past their maximum,
 * and login limits refuse every check (503). The store's part of what test/security-redis.test.ts shows end to end.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { AppError } from '../src/platform/errors.ts';
import { failoverStore } from '../src/platform/rate-limit-store.ts';

// Nothing listens on port 9 (discard): the client never becomes ready.
const redis = new Redis('redis://127.0.0.1:9', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
after(() => redis.disconnect());

type Counted = { current: number; ttl: number };
const incr = (store: { incr(key: string, cb: (err: Error | null, r?: Counted) => void, windowMs: number): void }, key: string) =>
  new Promise<Counted>((resolve, reject) => store.incr(key, (err, r) => (err ? reject(err) : resolve(r!)), 60_000));

test('with Redis unreachable, a general limit counts in-process and a login limit refuses', async () => {
  const warnings: string[] = [];
  const Store = failoverStore(redis, undefined, { warn: (_o, msg) => void warnings.push(msg), info: () => {} });
  const root = new Store();
  const general = root.child({ name: 'general' });
  const login = root.child({ name: 'login', failClosed: true });

  // Each request of the window counts, the first as the store learns Redis is gone and every one after.
  const counts = [];
  for (let i = 0; i < 5; i++) counts.push(await incr(general, 'client-a'));
  assert.deepEqual(counts.map((c) => c.current), [1, 2, 3, 4, 5]);
  for (const c of counts) assert.ok(c.ttl > 0 && c.ttl <= 60_000, `ttl ${c.ttl}`);
  assert.equal((await incr(general, 'client-b')).current, 1, 'each key has its own window');

  for (let i = 0; i < 3; i++) {
    await assert.rejects(incr(login, 'client-a'), (err: unknown) => err instanceof AppError && err.code === 'RATE_LIMITER_UNAVAILABLE');
  }
  assert.equal(warnings.length, 1, `one warning for the outage, not one per request: ${JSON.stringify(warnings)}`);
});
