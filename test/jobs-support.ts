/**
 * Helpers of the job tests: a real PostgreSQL with the queue's schema, backends on it, runners with quiet logs.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { openBackend, type Backend } from '../src/db/backend.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createRunner, type JobDefinition, type Runner, type RunnerOptions } from '../src/platform/jobs/runner.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

export const quiet = { info: () => {}, warn: () => {} };

export interface JobsHarness {
  db: TestDatabase;
  /** A raw connection for inspecting and arranging rows. */
  sql: postgres.Sql;
  /** A backend of its own (own pools), closed by `destroy`. */
  backend(): Promise<Backend>;
  runner(b: Backend, definitions: JobDefinition[], o?: Partial<RunnerOptions>): Runner;
  destroy(): Promise<void>;
}

export async function startJobsHarness(): Promise<JobsHarness> {
  const db = await createTestDatabase();
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  const opened: Backend[] = [];
  const runners: Runner[] = [];
  const harness: JobsHarness = {
    db,
    sql,
    async backend() {
      // No warm connections: a test opens several backends on one server, and these are not pool tests.
      const b = await openBackend(loadConfig({ DATABASE_URL: db.url, LOG_LEVEL: 'silent', POOL_MIN: '0' }), { log: quiet });
      opened.push(b);
      // Migrations run in the background when the server is away; here it is up, so wait for the schema.
      await waitFor(() => b.probes.schemaReady(), 20_000);
      return b;
    },
    runner(b, definitions, o = {}) {
      const r = createRunner({ store: b.jobs!, definitions, concurrency: 4, leaseMs: 2000, pollMs: 50, log: quiet, ...o });
      runners.push(r);
      return r;
    },
    async destroy() {
      await Promise.all(runners.map((r) => r.stop(0)));
      await Promise.all(opened.map((b) => b.close()));
      await sql.end();
      await db.destroy();
    },
  };
  return harness;
}

/** Resolves with `check`'s first truthy value; throws after `timeoutMs`. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 20): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/**
 * The Prometheus text once the metrics scenario's two outcomes are counted. The runner counts an outcome when its
 * write has returned, which can be a moment after the store already shows the job finished (CI saw NaN).
 */
export async function finishedJobMetrics(scrape: () => Promise<string>): Promise<string> {
  return waitFor(async () => {
    const text = await scrape();
    const counted = text.includes('jobs_finished_total{kind="m-ok",outcome="succeeded"} ')
      && text.includes('jobs_finished_total{kind="m-bad",outcome="failed"} ');
    return counted ? text : undefined;
  });
}

/**
 * The job metrics in Prometheus `text` after the metrics scenario: one `m-ok` job succeeded, one `m-bad` job failed
 * twice (retried, then failed for good), one `m-nobody` job queued with no worker for its kind.
 */
export function assertJobMetrics(text: string): void {
  const value = (series: string) => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1]);
  assert.equal(value('jobs_finished_total{kind="m-ok",outcome="succeeded"}'), 1, text.slice(0, 300));
  assert.equal(value('jobs_finished_total{kind="m-bad",outcome="retried"}'), 1);
  assert.equal(value('jobs_finished_total{kind="m-bad",outcome="failed"}'), 1);
  assert.equal(value('jobs_started_total{kind="m-bad"}'), 2);
  assert.equal(value('job_queue_latency_seconds_count{kind="m-ok"}'), 1);
  assert.equal(value('job_run_duration_seconds_count{kind="m-bad"}'), 2);
  assert.equal(value('jobs{kind="m-nobody",state="queued"}'), 1);
}
