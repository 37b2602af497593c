/**
 * `recentFailures` on both job stores (the dashboard's recent failures, src/modules/ops/dashboard-jobs.ts): jobs
 * failed for good, by the time they failed, newest first. A job created before many others that fails after them
 * all (a webhook delivery failing for good minutes after it was enqueued) comes first; a retried attempt, a
 * succeeded job and a cancelled one are not failures. On a real PostgreSQL and a real Redis (skipped without
 * `redis-server`, failed under CI=true).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRedisJobs, type RedisJobsStore } from '../src/db/redis/jobs.ts';
import type { JobsStore } from '../src/platform/jobs/store.ts';
import { quiet, startJobsHarness, type JobsHarness } from './jobs-support.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';

/** More than the dashboard's old read (the 20 newest created failed jobs), so a read by creation misses the late one. */
const EARLIER = 25;

async function failAll(store: JobsStore, kind: string, max: number): Promise<string[]> {
  const claims = await store.claim([kind], max, 30_000);
  const ids: string[] = [];
  for (const c of claims) {
    assert.equal(await store.fail(c.job.id, c.token, `${kind} broke`, null), 'failed');
    ids.push(c.job.id);
    // Distinct failure times, even on a store that keeps milliseconds.
    await sleep(2);
  }
  return ids;
}

function recentFailuresCase(open: () => Promise<JobsStore>) {
  test('the job that failed last comes first, though created before every other', async () => {
    const store = await open();
    const late = (await store.enqueue({ kind: 'fails-late', maxAttempts: 1 }))!;
    for (let i = 0; i < EARLIER; i++) await store.enqueue({ kind: 'fails-early', maxAttempts: 1 });
    const retried = (await store.enqueue({ kind: 'retried', maxAttempts: 3 }))!;
    const succeeded = (await store.enqueue({ kind: 'succeeds' }))!;
    const cancelled = (await store.enqueue({ kind: 'cancelled', runAt: new Date(Date.now() + 60_000) }))!;

    const early = await failAll(store, 'fails-early', EARLIER);
    assert.equal(early.length, EARLIER);
    await sleep(5);
    assert.deepEqual(await failAll(store, 'fails-late', 1), [late.id]);
    // Ended after the late failure, but none of them failed for good.
    const [r] = await store.claim(['retried'], 1, 30_000);
    assert.equal(await store.fail(retried.id, r!.token, 'once', 60_000), 'retried');
    const [s] = await store.claim(['succeeds'], 1, 30_000);
    assert.deepEqual(await store.succeed([{ id: succeeded.id, token: s!.token, result: null }]), [succeeded.id]);
    assert.equal((await store.cancel(cancelled.id))?.cancelled, true);

    const recent = await store.recentFailures(5, { deadline: performance.now() + 5000 });
    assert.deepEqual(recent.map((j) => j.id), [late.id, ...early.slice(-4).reverse()]);
    for (const j of recent) {
      assert.equal(j.state, 'failed');
      assert.ok(j.finishedAt !== null && j.error !== null);
    }
    const all = await store.recentFailures(100);
    assert.equal(all.length, EARLIER + 1, 'only the jobs failed for good');
    const times = all.map((j) => j.finishedAt!);
    assert.deepEqual(times, [...times].sort().reverse(), 'newest failure first');
  });
}

describe('recent failures on PostgreSQL', () => {
  let h: JobsHarness;
  before(async () => { h = await startJobsHarness(); });
  after(async () => { await h?.destroy(); });
  recentFailuresCase(async () => (await h.backend()).jobs!);

  test('read through the index of failed jobs', async () => {
    await h.backend();
    // A table this small is scanned whole by choice; with scans off the plan shows the index that serves it.
    const plan = await h.sql.begin(async (tx) => {
      await tx`SET LOCAL enable_seqscan = off`;
      return tx.unsafe(`EXPLAIN SELECT id FROM jobs WHERE state = 'failed' ORDER BY finished_at DESC LIMIT 5`);
    });
    const text = plan.map((r) => (r as Record<string, string>)['QUERY PLAN']).join('\n');
    assert.match(text, /Index Scan Backward using jobs_failed_idx/, text);
  });
});

const missing = redisUnavailable();
describe('recent failures on Redis', { skip: missing }, () => {
  let server: TestRedis;
  const stores: RedisJobsStore[] = [];
  before(async () => { server = await startRedis(); });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await server?.stop();
  });
  recentFailuresCase(async () => {
    const s = openRedisJobs({ url: server.url, log: quiet });
    stores.push(s);
    return s;
  });
});
