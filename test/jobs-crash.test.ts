/**
 * A worker process SIGKILLed with 1,000 jobs in flight (50 running, the rest queued): after its lease expires
 * (the visibility timeout), another worker takes its jobs up again, and every job's effect is present exactly
 * once; jobs the dead worker had started ran again (at-least-once), which the idempotent effect absorbs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import postgres from 'postgres';
import type { Backend } from '../src/db/backend.ts';
import { EFFECT_TABLES, effectJob } from './jobs-effect.ts';
import { startJobsHarness, waitFor, type JobsHarness } from './jobs-support.ts';

let h: JobsHarness;
let b: Backend;

before(async () => {
  h = await startJobsHarness();
  b = await h.backend();
  await h.sql.unsafe(EFFECT_TABLES);
});
after(async () => h.destroy());

const count = async (q: string) => Number((await h.sql.unsafe(q))[0]!.n);

test('a SIGKILLed worker\'s jobs are taken up again after the visibility timeout, each effect exactly once', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/jobs-crash-worker.ts'], {
    env: { ...process.env, DATABASE_URL: h.db.url }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  await waitFor(() => out.includes('ready'), 30_000);

  for (let i = 0; i < 100; i++) await Promise.all(Array.from({ length: 10 }, () => b.jobs!.enqueue({ kind: 'effect' })));
  await waitFor(async () => (await count(`SELECT count(*) AS n FROM job_effects`)) >= 150, 30_000);
  child.kill('SIGKILL');
  await once(child, 'exit');
  const running = await count(`SELECT count(*) AS n FROM jobs WHERE state = 'running'`);
  const done = await count(`SELECT count(*) AS n FROM jobs WHERE state = 'succeeded'`);
  assert.ok(running > 0, 'the worker died holding jobs');
  assert.ok(done < 1000, 'the worker died before finishing');

  const sql = postgres(h.db.url, { max: 10, onnotice: () => {} });
  const survivor = h.runner(b, [effectJob(sql)], { concurrency: 20, leaseMs: 1000, pollMs: 100 });
  const t0 = Date.now();
  await survivor.start();
  await waitFor(async () => (await count(`SELECT count(*) AS n FROM jobs WHERE state = 'succeeded'`)) === 1000, 60_000);
  await survivor.stop(1000);
  await sql.end();

  assert.equal(await count(`SELECT count(*) AS n FROM job_effects`), 1000);
  assert.equal(await count(`SELECT count(DISTINCT job_id) AS n FROM job_runs`), 1000);
  const reruns = await count(`SELECT count(*) - count(DISTINCT job_id) AS n FROM job_runs`);
  assert.ok(reruns > 0, 'jobs the dead worker held ran again');
  const reclaimed = await count(`SELECT count(*) AS n FROM jobs WHERE attempts = 2`);
  assert.ok(reclaimed >= running, `${reclaimed} jobs on a second attempt, ${running} held by the dead worker`);
  console.log(`# held by the dead worker: ${running}; re-runs: ${reruns}; all 1000 done ${Date.now() - t0} ms after restart`);
});
