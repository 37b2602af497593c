/**
 * THE job queue contract: every guarantee of `JobsStore` and the runner (docs/jobs.md), run against each store by
 * its test file (test/jobs-queue.test.ts on PostgreSQL, test/jobs-redis.test.ts on Redis): at-least-once, one
 * runner per job at a time, a lost lease aborts its handler, lease expiry takes a dead worker's jobs up again,
 * retries with exponential backoff and jitter then a kept failed state, delayed jobs, cron runs fired by one
 * instance, chains, progress, cancellation, the owner filter and paging the job API relies on, retention, and a
 * graceful stop that gives unfinished jobs back.
 *
 * A store's test file provides a `JobsFixture`: fresh stores on connections of their own, and the few arrangements
 * no store call can make (another worker taking a lease, a schedule coming due, a job that ended days ago).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { errors } from '../src/platform/errors.ts';
import { retryDelayMs } from '../src/platform/jobs/backoff.ts';
import { startScheduler } from '../src/platform/jobs/cron.ts';
import { RETENTION_KIND, retentionJob } from '../src/platform/jobs/retention.ts';
import { createRunner, type JobDefinition, type Runner, type RunnerOptions } from '../src/platform/jobs/runner.ts';
import type { Job, JobState, JobsStore } from '../src/platform/jobs/store.ts';
import { quiet, waitFor } from './jobs-support.ts';

export interface JobsFixture {
  name: string;
  /** A store of its own (own connections), as another process would have; closed by `destroy`. */
  store(): Promise<JobsStore>;
  /** Another worker takes the job's lease (as when its worker stalled past the visibility timeout). */
  stealLease(id: string): Promise<void>;
  /** The named cron schedule is due now. */
  makeScheduleDue(name: string): Promise<void>;
  /** The ended job ended `days` ago. */
  endedDaysAgo(id: string, days: number): Promise<void>;
  destroy(): Promise<void>;
}

export function jobsContract(start: () => Promise<JobsFixture>): void {
  let f: JobsFixture;
  let s: JobsStore;
  const runners: Runner[] = [];
  const runner = (store: JobsStore, definitions: JobDefinition[], o: Partial<RunnerOptions> = {}) => {
    const r = createRunner({ store, definitions, concurrency: 4, leaseMs: 2000, pollMs: 50, log: quiet, ...o });
    runners.push(r);
    return r;
  };

  before(async () => {
    f = await start();
    s = await f.store();
  });
  after(async () => {
    await Promise.all(runners.map((r) => r.stop(0)));
    await f.destroy();
  });

  const stateOf = async (id: string) => (await s.get(id))?.state;
  const finished = (id: string, state: JobState = 'succeeded') => waitFor(async () => (await stateOf(id)) === state);
  const ofKind = async (kind: string) => (await s.list({ kind, limit: 100 })).jobs;

  describe('backoff', () => {
    test('grows exponentially, capped, with half of each step random', () => {
      const policy = { baseMs: 100, maxMs: 1000 };
      assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelayMs(n, policy, () => 0)), [50, 100, 200, 400, 500]);
      assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelayMs(n, policy, () => 1)), [100, 200, 400, 800, 1000]);
    });
  });

  describe('running jobs', () => {
    test('a fresh store\'s first call may be a claim (a worker that starts with a job waiting)', async () => {
      await s.enqueue({ kind: 'first-claim' });
      const fresh = await f.store();
      const [c] = await fresh.claim(['first-claim'], 5, 30_000);
      assert.equal(c?.job.kind, 'first-claim');
      assert.deepEqual(await fresh.succeed([{ id: c.job.id, token: c.token, result: null }]), [c.job.id]);
    });

    test('every job runs, and never two runners of one job at a time (4 runners on 2 stores)', async () => {
      const other = await f.store();
      const running = new Map<string, number>();
      const runs = new Map<string, number>();
      let overlap = 0;
      const def: JobDefinition = {
        kind: 'count',
        async run(_, ctx) {
          const id = ctx.job.id;
          running.set(id, (running.get(id) ?? 0) + 1);
          if (running.get(id)! > 1) overlap++;
          runs.set(id, (runs.get(id) ?? 0) + 1);
          await sleep(Math.random() * 5);
          running.set(id, running.get(id)! - 1);
        },
      };
      // A lease long enough that no success is late on a loaded machine: a re-run here would be a bug, not at-least-once.
      const o = { leaseMs: 30_000 };
      const rs = [runner(s, [def], o), runner(s, [def], o), runner(other, [def], o), runner(other, [def], o)];
      await Promise.all(rs.map((r) => r.start()));
      const ids: string[] = [];
      for (let i = 0; i < 30; i++) {
        ids.push(...await Promise.all(Array.from({ length: 10 }, () => s.enqueue({ kind: 'count' }).then((j) => j!.id))));
      }
      await waitFor(async () => ids.length === runs.size && (await Promise.all(ids.map(stateOf))).every((st) => st === 'succeeded'), 60_000, 200);
      await Promise.all(rs.map((r) => r.stop(1000)));
      assert.equal(overlap, 0);
      assert.equal(runs.size, 300);
      for (const id of ids) assert.equal(runs.get(id), 1, `job ${id} ran ${runs.get(id)} times`);
    });

    test('a job whose lease is lost has its handler aborted, and its late success is not recorded', async () => {
      let aborted = false;
      const r = runner(s, [{
        kind: 'stall',
        async run(_, ctx) {
          await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
          aborted = true;
          return 'late';
        },
      }], { leaseMs: 300 });
      await r.start();
      const job = (await s.enqueue({ kind: 'stall', maxAttempts: 1 }))!;
      await waitFor(async () => (await stateOf(job.id)) === 'running');
      await f.stealLease(job.id);
      await waitFor(() => aborted, 5000);
      await r.stop(1000);
      const j = (await s.get(job.id))!;
      assert.equal(j.state, 'running');
      assert.equal(j.result, null);
    });
  });

  describe('failures', () => {
    test('a job whose lease expired is taken up again, or failed for good when it had no attempt left', async () => {
      const spare = (await s.enqueue({ kind: 'orphan', maxAttempts: 2 }))!;
      const last = (await s.enqueue({ kind: 'orphan', maxAttempts: 1 }))!;
      // Claimed by a worker that then vanished: nothing extends the 1 ms leases.
      assert.equal((await s.claim(['orphan'], 2, 1)).length, 2);
      await sleep(20);
      assert.ok((await s.reclaimExpired()) >= 2);
      // PostgreSQL fails the last one at once; BullMQ when it is next taken up: either way it never runs again.
      const again = await s.claim(['orphan'], 2, 30_000);
      assert.deepEqual(again.map((c) => c.job.id), [spare.id]);
      assert.equal(again[0]!.job.attempts, 2);
      const j = (await s.get(last.id))!;
      assert.equal(j.state, 'failed');
      assert.match(j.error!, /lease expired/);
      assert.equal(j.attempts, 1);
      await s.release(spare.id, again[0]!.token);
    });

    test('retries with growing delays up to max_attempts, then failed, kept with its error', async () => {
      const at: number[] = [];
      const r = runner(s, [{
        kind: 'flaky',
        backoff: { baseMs: 100, maxMs: 10_000 },
        async run() { at.push(performance.now()); throw new Error('boom'); },
      }]);
      await r.start();
      const job = (await s.enqueue({ kind: 'flaky', maxAttempts: 3 }))!;
      await finished(job.id, 'failed');
      await r.stop(1000);
      const j = (await s.get(job.id))!;
      assert.equal(j.attempts, 3);
      assert.equal(j.error, 'boom');
      assert.ok(j.finishedAt);
      assert.equal(at.length, 3);
      // Delays after attempts 1 and 2: 50..100 ms and 100..200 ms (plus the poll that finds the job due).
      assert.ok(at[1]! - at[0]! >= 50, `first delay ${at[1]! - at[0]!}`);
      assert.ok(at[2]! - at[1]! >= 100, `second delay ${at[2]! - at[1]!}`);
    });

    test('a job refused on its own input (bad_input, validation) fails for good at its first attempt', async () => {
      let runs = 0;
      const r = runner(s, [{
        kind: 'refused', backoff: { baseMs: 10, maxMs: 10 },
        async run() { runs++; throw errors.importRefused('line 2: age must be at most 150'); },
      }]);
      await r.start();
      const job = (await s.enqueue({ kind: 'refused', maxAttempts: 5 }))!;
      await finished(job.id, 'failed');
      await sleep(100); // a retry, were one queued, would have run by now
      await r.stop(1000);
      const j = (await s.get(job.id))!;
      assert.equal(runs, 1);
      assert.equal(j.attempts, 1);
      assert.equal(j.state, 'failed');
      assert.equal(j.error, 'line 2: age must be at most 150');
    });

    test('a job that fails once and then succeeds ends succeeded on its second attempt', async () => {
      let n = 0;
      const r = runner(s, [{ kind: 'once', backoff: { baseMs: 10, maxMs: 10 }, async run() { if (++n === 1) throw new Error('first'); return { n }; } }]);
      await r.start();
      const job = (await s.enqueue({ kind: 'once' }))!;
      await finished(job.id);
      await r.stop(1000);
      const j = (await s.get(job.id))!;
      assert.equal(j.attempts, 2);
      assert.deepEqual(j.result, { n: 2 });
      assert.equal(j.error, null);
    });
  });

  describe('scheduling', () => {
    test('a delayed job does not start before its time', async () => {
      let startedAt = 0;
      const r = runner(s, [{ kind: 'later', async run() { startedAt = Date.now(); } }]);
      await r.start();
      const due = Date.now() + 400;
      const job = (await s.enqueue({ kind: 'later', runAt: new Date(due) }))!;
      assert.equal(job.state, 'queued');
      await finished(job.id);
      await r.stop(1000);
      assert.ok(startedAt >= due, `started ${due - startedAt} ms early`);
    });

    test('an idle worker starts a new job within milliseconds (notified, not polled)', async () => {
      let startedAt = 0;
      const r = runner(s, [{ kind: 'now', async run() { startedAt = performance.now(); } }], { pollMs: 60_000 });
      await r.start();
      await sleep(100);
      const t0 = performance.now();
      const job = (await s.enqueue({ kind: 'now' }))!;
      await finished(job.id);
      await r.stop(1000);
      assert.ok(startedAt - t0 < 500, `took ${startedAt - t0} ms with a 60 s poll`);
    });

    test('a singleton key admits one queued or running job at a time', async () => {
      const a = await s.enqueue({ kind: 'single', singletonKey: 'only-one' });
      assert.ok(a);
      assert.equal(await s.enqueue({ kind: 'single', singletonKey: 'only-one' }), undefined);
      const r = runner(s, [{ kind: 'single', async run() {} }]);
      await r.start();
      await finished(a.id);
      await r.stop(1000);
      assert.ok(await s.enqueue({ kind: 'single', singletonKey: 'only-one' }), 'free again once the job ended');
    });

    test('a cron schedule due now is fired by exactly one of several instances, and runs never overlap', async () => {
      const schedules = [{ name: 'tick', cron: '0 0 1 1 *', job: { kind: 'cron-tick' } }];
      const instances = await Promise.all(Array.from({ length: 5 }, async () => startScheduler({ store: await f.store(), schedules, tickMs: 3_600_000, log: quiet })));
      for (let round = 0; round < 3; round++) {
        await f.makeScheduleDue('tick');
        const fired = (await Promise.all(instances.map((i) => i.tick()))).flat();
        assert.equal(fired.length, 1, `round ${round}: fired by ${fired.length}`);
      }
      // The first run is still queued (no worker here), so the later slots enqueued nothing.
      assert.equal((await ofKind('cron-tick')).length, 1);
      for (const i of instances) i.stop();
    });
  });

  describe('chains', () => {
    test('each step starts after the previous one succeeded, same chain and owner', async () => {
      const order: string[] = [];
      const step = (kind: string): JobDefinition => ({ kind, async run() { order.push(kind); await sleep(5); return kind; } });
      const r = runner(s, [step('c1'), step('c2'), step('c3')]);
      await r.start();
      const first = (await s.enqueue({ kind: 'c1', owner: 'acct-chain', then: [{ kind: 'c2' }, { kind: 'c3' }] }))!;
      assert.equal(first.chainId, first.id);
      let steps: Job[] = [];
      await waitFor(async () => {
        steps = (await s.list({ owner: 'acct-chain', limit: 10 })).jobs;
        return steps.length === 3 && steps.every((j) => j.state === 'succeeded');
      });
      await r.stop(1000);
      assert.deepEqual(order, ['c1', 'c2', 'c3']);
      assert.deepEqual(steps.map((j) => [j.kind, j.owner, j.chainId, j.result]).sort(),
        [['c1', 'acct-chain', first.id, 'c1'], ['c2', 'acct-chain', first.id, 'c2'], ['c3', 'acct-chain', first.id, 'c3']]);
    });

    test('a failed step fails the chain: later steps never run', async () => {
      const ran: string[] = [];
      const r = runner(s, [
        { kind: 'f1', async run() { ran.push('f1'); } },
        { kind: 'f2', async run() { ran.push('f2'); throw new Error('step 2 broke'); } },
        { kind: 'f3', async run() { ran.push('f3'); } },
      ]);
      await r.start();
      await s.enqueue({ kind: 'f1', then: [{ kind: 'f2', maxAttempts: 1 }, { kind: 'f3' }] });
      await waitFor(async () => (await ofKind('f2')).some((j) => j.state === 'failed'));
      // PostgreSQL never creates the later steps; in BullMQ's flow they exist and are failed with the chain.
      await waitFor(async () => (await ofKind('f3')).every((j) => j.state === 'failed'));
      await sleep(200);
      await r.stop(1000);
      assert.deepEqual(ran, ['f1', 'f2']);
    });
  });

  describe('progress and cancellation', () => {
    test('progress is recorded and announced', async () => {
      const seen: string[] = [];
      const stop = await s.listen({ onChange: (id, state) => seen.push(`${id}:${state}`) });
      let release!: () => void;
      const gate = new Promise<void>((r) => { release = r; });
      const r = runner(s, [{
        kind: 'steps',
        async run(_, ctx) { await ctx.progress(1, 3); await ctx.progress(2, 3, { read: 20, written: 18, rejected: 2 }); await gate; },
      }]);
      await r.start();
      const job = (await s.enqueue({ kind: 'steps' }))!;
      await waitFor(async () => (await s.get(job.id))!.progress.done === 2);
      // The detail (docs/jobs.md) rides beside done/total and stays once the job succeeded.
      const detail = { read: 20, written: 18, rejected: 2 };
      assert.deepEqual((await s.get(job.id))!.progress, { done: 2, total: 3, detail });
      release();
      await finished(job.id);
      assert.deepEqual((await s.get(job.id))!.progress, { done: 3, total: 3, detail });
      await r.stop(1000);
      await waitFor(() => seen.includes(`${job.id}:succeeded`));
      await stop();
      assert.ok(seen.filter((x) => x === `${job.id}:running`).length >= 3, seen.join(' '));
    });

    test('a stale worker\'s progress is refused', async () => {
      const job = (await s.enqueue({ kind: 'stale-progress' }))!;
      const [c] = await s.claim(['stale-progress'], 1, 30_000);
      assert.equal(c!.job.id, job.id);
      assert.equal(await s.progress(job.id, c!.token, 1, 2), true);
      await f.stealLease(job.id);
      assert.equal(await s.progress(job.id, c!.token, 2, 2), false);
      assert.deepEqual((await s.get(job.id))!.progress, { done: 1, total: 2 });
      assert.deepEqual(await s.succeed([{ id: job.id, token: c!.token, result: 'late' }]), []);
      assert.equal(await s.fail(job.id, c!.token, 'late', 10), 'lost');
    });

    test('a queued job cancelled never runs; a running one is aborted and stays cancelled; a finished one is refused', async () => {
      const queued = (await s.enqueue({ kind: 'cancel-me' }))!;
      const out = await s.cancel(queued.id);
      assert.equal(out?.cancelled, true);
      assert.equal(out?.job.state, 'cancelled');

      let sawAbort = false;
      let ran = 0;
      const r = runner(s, [{
        kind: 'cancel-me',
        async run(_, ctx) {
          ran++;
          await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
          sawAbort = true;
          return 'done anyway';
        },
      // A 60 s lease is extended every 20 s: an abort within 3 s came from the cancel notification.
      }], { leaseMs: 60_000 });
      await r.start();
      const running = (await s.enqueue({ kind: 'cancel-me' }))!;
      await waitFor(async () => (await stateOf(running.id)) === 'running');
      assert.equal((await s.cancel(running.id))?.cancelled, true);
      await waitFor(() => sawAbort, 3000);
      await sleep(100);
      await r.stop(1000);
      assert.equal(ran, 1, 'the queued job cancelled before any worker came never ran');
      assert.equal(await stateOf(queued.id), 'cancelled');
      const j = (await s.get(running.id))!;
      assert.equal(j.state, 'cancelled');
      assert.equal(j.result, null);
      assert.equal((await s.cancel(running.id))?.cancelled, false);
      assert.equal(await s.cancel('00000000-0000-7000-8000-000000000000'), undefined);
    });

    test('a cancelled job is not taken up again after its lease would have expired', async () => {
      const job = (await s.enqueue({ kind: 'cancel-held' }))!;
      const [c] = await s.claim(['cancel-held'], 1, 50);
      assert.equal(c!.job.id, job.id);
      assert.equal((await s.cancel(job.id))?.cancelled, true);
      await sleep(100);
      await s.reclaimExpired();
      assert.deepEqual(await s.claim(['cancel-held'], 1, 30_000), []);
      assert.equal(await stateOf(job.id), 'cancelled');
    });
  });

  describe('listing (the job API\'s owner rule and paging)', () => {
    test('newest first, by owner, state and kind, and every job once across pages', async () => {
      const mine: string[] = [];
      for (let i = 0; i < 7; i++) mine.push((await s.enqueue({ kind: 'listed', owner: 'acct-list' }))!.id);
      await s.enqueue({ kind: 'listed', owner: 'acct-other' });
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await s.list({ owner: 'acct-list', limit: 3, cursor });
        assert.ok(page.jobs.length <= 3);
        assert.ok(page.jobs.every((j) => j.owner === 'acct-list'));
        seen.push(...page.jobs.map((j) => j.id));
        cursor = page.next;
      } while (cursor);
      assert.deepEqual(seen, [...mine].reverse());
      assert.equal((await s.list({ owner: 'acct-list', state: 'succeeded', limit: 10 })).jobs.length, 0);
      assert.equal((await s.list({ owner: 'acct-list', state: 'queued', kind: 'listed', limit: 10 })).jobs.length, 7);
      assert.equal((await s.list({ kind: 'listed', limit: 100 })).jobs.length, 8);
      const counts = await s.counts();
      assert.ok(counts.some((c) => c.kind === 'listed' && c.state === 'queued' && c.count === 8), JSON.stringify(counts));
    });
  });

  describe('retention', () => {
    test('the retention job deletes jobs that ended before the period, and nothing else', async () => {
      const r = runner(s, [
        { kind: 'ret-ok', async run() {} },
        { kind: 'ret-bad', async run() { throw new Error('no'); } },
      ]);
      await r.start();
      const ok = (await s.enqueue({ kind: 'ret-ok' }))!;
      const bad = (await s.enqueue({ kind: 'ret-bad', maxAttempts: 1 }))!;
      const gone = (await s.enqueue({ kind: 'ret-cancelled' }))!;
      const waiting = (await s.enqueue({ kind: 'ret-queued' }))!;
      const recent = (await s.enqueue({ kind: 'ret-ok' }))!;
      await s.cancel(gone.id);
      await finished(ok.id);
      await finished(bad.id, 'failed');
      await finished(recent.id);
      await r.stop(1000);
      for (const id of [ok.id, bad.id, gone.id]) await f.endedDaysAgo(id, 8);
      await f.endedDaysAgo(recent.id, 6);
      const rr = runner(s, [retentionJob(() => s, 7 * 86_400_000)]);
      await rr.start();
      const job = (await s.enqueue({ kind: RETENTION_KIND }))!;
      await finished(job.id);
      await rr.stop(1000);
      assert.ok(((await s.get(job.id))!.result as { deleted: number }).deleted >= 3);
      assert.deepEqual(await Promise.all([ok.id, bad.id, gone.id, waiting.id].map(stateOf)), [undefined, undefined, undefined, 'queued']);
      assert.equal(await stateOf(recent.id), 'succeeded');
      assert.ok(!(await s.list({ kind: 'ret-ok', limit: 10 })).jobs.some((j) => j.id === ok.id), 'gone from the listing too');
    });
  });

  describe('graceful stop', () => {
    test('a claim under way when the stop comes: its jobs are counted, run or given back, never left running', async () => {
      // The store's claim answers late: its jobs are taken (running in the store) before the runner has them.
      const slowClaims: JobsStore = Object.create(s) as JobsStore;
      slowClaims.claim = async (kinds, max, leaseMs) => { const c = await s.claim(kinds, max, leaseMs); await sleep(300); return c; };
      const r = runner(slowClaims, [{ kind: 'late-claim', async run(_, ctx) { await sleep(60_000, undefined, { signal: ctx.signal }).catch(() => {}); } }]);
      const job = (await s.enqueue({ kind: 'late-claim' }))!;
      await r.start();
      await waitFor(async () => (await stateOf(job.id)) === 'running');
      assert.deepEqual(await r.stop(200), { finished: 0, returned: 1 });
      const j = (await s.get(job.id))!;
      assert.equal(j.state, 'queued');
      assert.equal(j.attempts, 0);
    });

    test('running jobs finish within the timeout; the rest go back to the queue, the attempt not counted', async () => {
      const r = runner(s, [
        { kind: 'quick', async run() { await sleep(100); return 'ok'; } },
        { kind: 'slow', async run(_, ctx) { await sleep(60_000, undefined, { signal: ctx.signal }).catch(() => {}); } },
      ]);
      await r.start();
      const quick = (await s.enqueue({ kind: 'quick' }))!;
      const slow = (await s.enqueue({ kind: 'slow' }))!;
      await waitFor(async () => (await stateOf(quick.id)) === 'running' && (await stateOf(slow.id)) === 'running');
      const t0 = Date.now();
      const out = await r.stop(500);
      assert.ok(Date.now() - t0 < 5000, `stop took ${Date.now() - t0} ms`);
      assert.deepEqual(out, { finished: 1, returned: 1 });
      assert.equal(await stateOf(quick.id), 'succeeded');
      const j = (await s.get(slow.id))!;
      assert.equal(j.state, 'queued');
      assert.equal(j.attempts, 0);
    });
  });
}
