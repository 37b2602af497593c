/**
 * The job queue's figures (docs/jobs.md) against issue 14's targets: no-op jobs per second through one worker
 * (target 2,000/s) and enqueue-to-start latency when the queue is idle (target p50 under 10 ms), on PostgreSQL
 * (an embedded one in a temporary directory, or BENCH_DATABASE_URL) and on the Redis queue of the Cassandra
 * backend (a redis-server of its own, or BENCH_REDIS_URL). `npm run bench` runs it as a stage (bench/run.ts).
 *
 *   npx tsx bench/jobs.ts [jobs=20000] [concurrency=50] [postgres,redis]
 *
 * The load average is printed beside the figures: on a shared machine they move with it.
 */
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { openBackend } from '../src/db/backend.ts';
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.ts';
import { openRedisJobs } from '../src/db/redis/jobs.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createRunner } from '../src/platform/jobs/runner.ts';
import type { JobsStore } from '../src/platform/jobs/store.ts';
import { startRedis } from '../test/support/redis.ts';

export const JOB_TARGETS = { jobsPerSecond: 2000, idleP50Ms: 10 };

export interface JobFigures {
  store: string;
  total: number;
  concurrency: number;
  jobsPerSecond: number;
  idle: { p50: number; p95: number; p99: number };
  load: string;
}

const quiet = { info: () => {}, warn: () => {} };
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

/** Drains a backlog of `total` no-op jobs through one runner, then times 200 single jobs into an idle queue. */
export async function measureJobs(name: string, store: JobsStore, total: number, concurrency: number): Promise<JobFigures> {
  for (let i = 0; i < total; i += 100) await Promise.all(Array.from({ length: Math.min(100, total - i) }, () => store.enqueue({ kind: 'noop' })));
  let done = 0;
  let allDone!: () => void;
  const finished = new Promise<void>((r) => { allDone = r; });
  const runner = createRunner({
    store, concurrency, leaseMs: 30_000, pollMs: 1000, log: quiet,
    definitions: [{ kind: 'noop', async run() {} }],
    observer: { started() {}, finished() { if (++done === total) allDone(); } },
  });
  const t0 = performance.now();
  await runner.start();
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  await runner.stop(1000);

  // One job at a time into an idle queue, from the enqueue call to the handler's start; a 60 s poll, so every
  // start came from the wake-up notification.
  const samples: number[] = [];
  let started: (() => void) | undefined;
  const idle = createRunner({
    store, concurrency, leaseMs: 30_000, pollMs: 60_000, log: quiet,
    definitions: [{ kind: 'ping', async run() { started?.(); } }],
  });
  await idle.start();
  for (let i = 0; i < 200; i++) {
    await sleep(5);
    const begun = new Promise<void>((r) => { started = r; });
    const t = performance.now();
    await store.enqueue({ kind: 'ping' });
    await begun;
    samples.push(performance.now() - t);
  }
  await idle.stop(1000);
  samples.sort((a, b) => a - b);
  const pct = (p: number) => samples[Math.ceil(p * samples.length) - 1]!;
  return { store: name, total, concurrency, jobsPerSecond: total / seconds, idle: { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99) }, load: load() };
}

export function formatJobs(f: JobFigures): string {
  const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
  return `jobs on ${f.store}: ${Math.round(f.jobsPerSecond)} no-op jobs/s (target ${JOB_TARGETS.jobsPerSecond}: ${mark(f.jobsPerSecond >= JOB_TARGETS.jobsPerSecond)}; `
    + `${f.total} jobs, concurrency ${f.concurrency}); idle enqueue-to-start p50 ${f.idle.p50.toFixed(2)} ms (target < ${JOB_TARGETS.idleP50Ms}: `
    + `${mark(f.idle.p50 < JOB_TARGETS.idleP50Ms)}), p95 ${f.idle.p95.toFixed(2)} ms, p99 ${f.idle.p99.toFixed(2)} ms; load ${f.load}`;
}

/** The PostgreSQL queue at `url`, or an embedded PostgreSQL of its own when `url` is unset. */
export async function jobsOnPostgres(url: string | undefined, total: number, concurrency: number): Promise<JobFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'spate-bench-jobs-'));
  chmodSync(dir, 0o755);
  const embedded = url ? undefined : await startEmbeddedPostgres(dir, () => {});
  const backend = await openBackend(loadConfig({ DATABASE_URL: url ?? embedded!.url, LOG_LEVEL: 'silent', JOB_POOL_MAX: '8' }), { log: quiet });
  try {
    while (!(await backend.probes.schemaReady())) await sleep(50);
    // A shared database may hold jobs of an earlier run: only this run's kinds are counted, but start clean.
    return await measureJobs('postgres', backend.jobs!, total, concurrency);
  } finally {
    await backend.close();
    await embedded?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The Redis queue at `url`, or on a redis-server of its own when `url` is unset. */
export async function jobsOnRedis(url: string | undefined, total: number, concurrency: number): Promise<JobFigures> {
  const server = url ? undefined : await startRedis();
  const store = openRedisJobs({ url: url ?? server!.url, log: quiet });
  try {
    return await measureJobs('redis', store, total, concurrency);
  } finally {
    await store.close();
    await server?.stop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const total = Number(process.argv[2] ?? 20_000);
  const concurrency = Number(process.argv[3] ?? 50);
  const stores = (process.argv[4] ?? 'postgres,redis').split(',');
  if (stores.includes('postgres')) console.log(formatJobs(await jobsOnPostgres(process.env.BENCH_DATABASE_URL, total, concurrency)));
  if (stores.includes('redis')) console.log(formatJobs(await jobsOnRedis(process.env.BENCH_REDIS_URL, total, concurrency)));
}
