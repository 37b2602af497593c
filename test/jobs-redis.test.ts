/**
 * The job queue contract (test/jobs.contract.ts) on a real Redis: the Cassandra backend's queue, BullMQ 5 and the
 * adapter's own keys beside it (src/db/redis/jobs.ts), on a redis-server of this test's own.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { openRedisJobs, type RedisJobsStore } from '../src/db/redis/jobs.ts';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { jobsContract } from './jobs.contract.ts';
import { quiet } from './jobs-support.ts';
import { redisUnavailable, startRedis } from './support/redis.ts';

test('the Cassandra backend without REDIS_URL is a start-up error naming it', () => {
  assert.throws(() => loadConfig({ CASSANDRA_HOSTS: 'cassandra' }), (err: unknown) =>
    err instanceof ConfigError && /CASSANDRA_HOSTS needs REDIS_URL/.test(err.message));
  assert.equal(loadConfig({ CASSANDRA_HOSTS: 'cassandra', REDIS_URL: 'redis://127.0.0.1:6379' }).redisUrl, 'redis://127.0.0.1:6379');
});

const missing = redisUnavailable();
if (missing) {
  after(() => console.log(`# skipped: ${missing}`));
} else {
  jobsContract(async () => {
    const server = await startRedis();
    const raw = new Redis(server.url);
    const stores: RedisJobsStore[] = [];
    const kindOf = async (id: string) => (JSON.parse((await raw.hget('spate-jobs:meta', id))!) as { k: string }).k;
    return {
      name: 'redis',
      async store() {
        const s = openRedisJobs({ url: server.url, log: quiet });
        stores.push(s);
        return s;
      },
      async stealLease(id) { await raw.set(`spate-jobs:${await kindOf(id)}:${id}:lock`, 'another-worker', 'PX', 60_000); },
      async makeScheduleDue(name) { await raw.set(`spate-jobs:schedule:${name}`, String(Date.now() - 1000)); },
      async endedDaysAgo(id, days) {
        const at = Date.now() - days * 86_400_000;
        if (await raw.hexists('spate-jobs:cancelled', id)) {
          await raw.zadd('spate-jobs:cancelled-at', at, id);
          return;
        }
        const kind = await kindOf(id);
        for (const set of ['completed', 'failed']) {
          if ((await raw.zscore(`spate-jobs:${kind}:${set}`, id)) !== null) await raw.zadd(`spate-jobs:${kind}:${set}`, at, id);
        }
        await raw.hset(`spate-jobs:${kind}:${id}`, 'finishedOn', String(at));
      },
      async destroy() {
        await Promise.all(stores.map((s) => s.close()));
        raw.disconnect();
        await server.stop();
      },
    };
  });
}
