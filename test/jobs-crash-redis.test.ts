/**
 * The crash test of test/jobs-crash.test.ts on the Redis queue (src/db/redis/jobs.ts): a worker process SIGKILLed
 * with 1,000 jobs in flight (50 running, the rest queued); after its leases expire (BullMQ's stalled-job check,
 * the visibility timeout), another worker takes its jobs up again, and every job's effect is present exactly once;
 * jobs the dead worker had started ran again (at-least-once), which the idempotent effect absorbs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { openRedisJobs, type RedisJobsStore } from '../src/db/redis/jobs.ts';
import { createRunner } from '../src/platform/jobs/runner.ts';
import { EFFECT_KEYS, redisEffectJob } from './jobs-effect.ts';
import { quiet, waitFor } from './jobs-support.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';

const missing = redisUnavailable();
let server: TestRedis;
let raw: Redis;
let store: RedisJobsStore;

before(async () => {
  if (missing) return;
  server = await startRedis();
  raw = new Redis(server.url);
  store = openRedisJobs({ url: server.url, log: quiet });
});
after(async () => {
  if (missing) return;
  await store.close();
  raw.disconnect();
  await server.stop();
});

const countIn = async (state: string) => (await store.counts()).filter((c) => c.state === state).reduce((n, c) => n + c.count, 0);

test('a SIGKILLed worker\'s jobs are taken up again after the visibility timeout, each effect exactly once (Redis)', { skip: missing }, async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/jobs-crash-worker.ts'], {
    env: { ...process.env, REDIS_URL: server.url }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  await waitFor(() => out.includes('ready'), 30_000);

  const ids: string[] = [];
  for (let i = 0; i < 100; i++) ids.push(...(await Promise.all(Array.from({ length: 10 }, () => store.enqueue({ kind: 'effect' })))).map((j) => j!.id));
  await waitFor(async () => (await raw.scard(EFFECT_KEYS.effects)) >= 150, 30_000);
  child.kill('SIGKILL');
  await once(child, 'exit');
  const running = await countIn('running');
  const done = await raw.scard(EFFECT_KEYS.effects);
  assert.ok(running > 0, 'the worker died holding jobs');
  assert.ok(done < 1000, 'the worker died before finishing');

  const effects = new Redis(server.url);
  const survivor = createRunner({ store, definitions: [redisEffectJob(effects)], concurrency: 20, leaseMs: 1000, pollMs: 100, log: quiet });
  const t0 = Date.now();
  await survivor.start();
  await waitFor(async () => (await store.counts()).length === 0, 60_000, 100);
  await survivor.stop(1000);
  effects.disconnect();

  const states = await Promise.all(ids.map(async (id) => (await store.get(id))!));
  assert.deepEqual([...new Set(states.map((j) => j.state))], ['succeeded']);
  assert.equal(await raw.scard(EFFECT_KEYS.effects), 1000);
  const runs = await raw.lrange(EFFECT_KEYS.runs, 0, -1);
  assert.equal(new Set(runs).size, 1000);
  const reruns = runs.length - 1000;
  assert.ok(reruns > 0, 'jobs the dead worker held ran again');
  const reclaimed = states.filter((j) => j.attempts === 2).length;
  assert.ok(reclaimed >= running, `${reclaimed} jobs on a second attempt, ${running} held by the dead worker`);
  console.log(`# held by the dead worker: ${running}; re-runs: ${reruns}; all 1000 done ${Date.now() - t0} ms after restart`);
});
