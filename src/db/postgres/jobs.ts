/**
 * The PostgreSQL adapter of `JobsStore` (src/platform/jobs/store.ts): the job queue in the service's own database,
 * so the embedded default needs nothing more (docs/jobs.md).
 *
 * Workers claim with `FOR UPDATE SKIP LOCKED`, so concurrent claims never block on or take each other's rows, and
 * a claim sets a fresh lease token that every later write of that worker must name. Enqueues and changes are
 * announced with NOTIFY, delivered at commit: idle workers start a new job within milliseconds instead of waiting
 * for their next poll, and event streams see every change.
 */
import type { PendingQuery, Row, Sql } from 'postgres';
import { errors } from '../../platform/errors.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import { currentTraceparent } from '../../platform/tracing/context.ts';
import type { CallOptions, Claim, Job, JobState, JobsStore, NewJob, ProgressDetail } from '../../platform/jobs/store.ts';
import { CURSOR_TAG, decodeCursor, encodeCursor } from '../cursor.ts';
import type { Db } from './db.ts';

/**
 * Channels: a kind whose job became due now; `id:state` of a job that changed (event streams); the id of a job
 * cancelled (workers, which so need not hear every change of every job).
 */
const READY = 'spate_jobs_ready';
const CHANGED = 'spate_jobs_changed';
const CANCELLED = 'spate_jobs_cancelled';
const DEFAULT_MAX_ATTEMPTS = 5;

interface JobRow extends Row {
  id: string;
  kind: string;
  state: JobState;
  payload: unknown;
  owner: string | null;
  attempts: number;
  max_attempts: number;
  run_at: Date;
  progress_done: string;
  progress_total: string | null;
  progress_detail: ProgressDetail | null;
  error: string | null;
  result: unknown;
  chain_id: string | null;
  traceparent: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

/** The columns a `Job` is read from, written once. */
const COLUMNS = ['id', 'kind', 'state', 'payload', 'owner', 'attempts', 'max_attempts', 'run_at', 'progress_done',
  'progress_total', 'progress_detail', 'error', 'result', 'chain_id', 'created_at', 'started_at', 'finished_at', 'traceparent'];

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function toJob(r: JobRow): Job {
  return {
    id: r.id,
    kind: r.kind,
    state: r.state,
    payload: r.payload,
    owner: r.owner,
    progress: {
      done: Number(r.progress_done), total: r.progress_total === null ? null : Number(r.progress_total),
      ...(r.progress_detail === null ? {} : { detail: r.progress_detail }),
    },
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    runAt: r.run_at.toISOString(),
    createdAt: r.created_at.toISOString(),
    startedAt: iso(r.started_at),
    finishedAt: iso(r.finished_at),
    error: r.error,
    result: r.result ?? null,
    chainId: r.chain_id,
    traceparent: r.traceparent,
  };
}

const json = (sql: Sql, v: unknown) => sql.json((v ?? null) as Parameters<Sql['json']>[0]);

/** One INSERT of a job (or a chain's next step), announcing it when it is due now; no row when the key is taken. */
function insertJob(sql: Sql, job: NewJob, chainId: string | null): PendingQuery<JobRow[]> {
  const id = uuidv7();
  const steps = job.then?.length ? json(sql, job.then) : null;
  return sql<JobRow[]>`
    INSERT INTO jobs (id, kind, payload, owner, max_attempts, run_at, next_steps, chain_id, singleton_key, traceparent)
    VALUES (${id}, ${job.kind}, ${json(sql, job.payload ?? {})}, ${job.owner ?? null},
      ${job.maxAttempts ?? DEFAULT_MAX_ATTEMPTS}, ${job.runAt ?? new Date()}, ${steps},
      ${chainId ?? (steps ? id : null)}, ${job.singletonKey ?? null}, ${job.traceparent !== undefined ? job.traceparent : currentTraceparent()})
    ON CONFLICT (singleton_key) WHERE state IN ('queued', 'running') DO NOTHING
    RETURNING ${sql(COLUMNS)}, (SELECT pg_notify(${READY}, kind) WHERE run_at <= now()) AS _`;
}

/**
 * `db` serves enqueues, reads, cancels and schedules: durable when they return. `worker` serves the workers'
 * writes (claim, lease, progress, outcome) on connections with asynchronous commit: a database crash may lose the
 * last of them, which at-least-once absorbs (the job is queued or running again, and runs again), and an idle
 * worker's start waits for one WAL flush (the enqueue's) instead of two.
 */
export function createPostgresJobsStore(db: Db, workerDb: Db = db): JobsStore {
  /**
   * postgres.js serializes an array parameter by the array types it reads when its pool first connects: a claim
   * that is a fresh pool's first statement would go out as a malformed literal. A first round trip settles them.
   */
  let typesKnown: Promise<unknown> | undefined;
  const worker: Pick<Db, 'query'> = {
    async query(build, opts) {
      await (typesKnown ??= workerDb.query((sql) => sql`SELECT 1 AS x`).catch((err: unknown) => { typesKnown = undefined; throw err; }));
      return workerDb.query(build, opts);
    },
  };

  const lease = (ms: number) => `${Math.max(1, Math.round(ms))} milliseconds`;

  return {
    holder: 'postgres',

    async enqueue(job, opts?: CallOptions) {
      // One statement: atomic without a transaction's extra round trips.
      const rows = await db.query((sql) => insertJob(sql, job, null), opts);
      return rows[0] ? toJob(rows[0]) : undefined;
    },

    async get(id, opts) {
      const rows = await db.query((sql) => sql<JobRow[]>`SELECT ${sql(COLUMNS)} FROM jobs WHERE id = ${id}`, opts);
      return rows[0] ? toJob(rows[0]) : undefined;
    },

    async list(q, opts) {
      let before: string | null = null;
      if (q.cursor !== undefined) {
        const b = decodeCursor(CURSOR_TAG.postgres, q.cursor);
        if (b.length !== 16) throw errors.invalidCursor();
        const h = b.toString('hex');
        before = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
      }
      const rows = await db.query((sql) => sql<JobRow[]>`
        SELECT ${sql(COLUMNS)} FROM jobs
        WHERE (${q.owner ?? null}::text IS NULL OR owner = ${q.owner ?? null})
          AND (${q.state ?? null}::text IS NULL OR state = ${q.state ?? null})
          AND (${q.kind ?? null}::text IS NULL OR kind = ${q.kind ?? null})
          AND (${before}::uuid IS NULL OR id < ${before})
        ORDER BY id DESC LIMIT ${q.limit + 1}`, opts);
      const page = rows.slice(0, q.limit).map(toJob);
      const last = page.at(-1);
      const next = rows.length > q.limit && last
        ? encodeCursor(CURSOR_TAG.postgres, Buffer.from(last.id.replace(/-/g, ''), 'hex'))
        : undefined;
      return { jobs: page, next };
    },

    async recentFailures(limit, opts) {
      // jobs_failed_idx (migration 0010): a backward walk of the failed jobs alone, whatever else has ended.
      const rows = await db.query((sql) => sql<JobRow[]>`
        SELECT ${sql(COLUMNS)} FROM jobs WHERE state = 'failed' ORDER BY finished_at DESC LIMIT ${limit}`, opts);
      return rows.map(toJob);
    },

    async cancel(id, opts) {
      const rows = await db.query((sql) => sql<(JobRow & { was: JobState })[]>`
        WITH old AS (SELECT id, state AS was FROM jobs WHERE id = ${id} FOR UPDATE)
        UPDATE jobs j SET
          state = CASE WHEN old.was IN ('queued', 'running') THEN 'cancelled' ELSE j.state END,
          finished_at = CASE WHEN old.was IN ('queued', 'running') THEN now() ELSE j.finished_at END,
          lease_token = CASE WHEN old.was IN ('queued', 'running') THEN NULL ELSE j.lease_token END
        FROM old WHERE j.id = old.id
        RETURNING ${sql(COLUMNS.map((c) => `j.${c}`))}, old.was,
          (SELECT pg_notify(${CHANGED}, j.id || ':' || j.state) WHERE old.was IN ('queued', 'running')) AS a,
          (SELECT pg_notify(${CANCELLED}, j.id::text) WHERE old.was = 'running') AS b`, opts);
      const row = rows[0];
      if (!row) return undefined;
      return { job: toJob(row), cancelled: row.was === 'queued' || row.was === 'running' };
    },

    async claim(kinds, max, leaseMs) {
      const rows = await worker.query((sql) => sql<(JobRow & { lease_token: string })[]>`
        WITH picked AS (
          SELECT id FROM jobs
          WHERE state = 'queued' AND run_at <= now() AND kind = ANY(${sql.array(kinds as string[])}::text[])
          ORDER BY run_at LIMIT ${max}
          FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_token = gen_random_uuid(),
          lease_until = now() + ${lease(leaseMs)}::interval, started_at = coalesce(j.started_at, now())
        FROM picked WHERE j.id = picked.id
        RETURNING ${sql(COLUMNS.map((c) => `j.${c}`))}, j.lease_token,
          (SELECT pg_notify(${CHANGED}, j.id || ':running')) AS _`);
      return rows.map((r) => ({ job: toJob(r), token: r.lease_token }) satisfies Claim);
    },

    async extend(claims, leaseMs) {
      if (claims.length === 0) return [];
      const rows = await worker.query((sql) => sql<{ id: string }[]>`
        UPDATE jobs j SET lease_until = now() + ${lease(leaseMs)}::interval
        FROM unnest(${sql.array(claims.map((c) => c.id))}::uuid[], ${sql.array(claims.map((c) => c.token))}::uuid[])
          AS held(id, token)
        WHERE j.id = held.id AND j.lease_token = held.token AND j.state = 'running'
        RETURNING j.id`);
      const kept = new Set(rows.map((r) => r.id));
      return claims.filter((c) => !kept.has(c.id)).map((c) => c.id);
    },

    async progress(id, token, done, total, detail) {
      const rows = await worker.query((sql) => sql`
        UPDATE jobs SET progress_done = ${done}, progress_total = ${total},
          progress_detail = ${detail === undefined ? null : sql.json(detail)}
        WHERE id = ${id} AND lease_token = ${token} AND state = 'running'
        RETURNING (SELECT pg_notify(${CHANGED}, ${id} || ':running')) AS _`);
      return rows.length > 0;
    },

    async succeed(done) {
      if (done.length === 0) return [];
      // One statement for the whole batch (no transaction's extra round trips) that also enqueues each chain's
      // next step: a job's success and its next step happen together or not at all. Each job gets an id for a
      // next step, used only when it has one.
      const rows = await worker.query((sql) => sql<{ id: string }[]>`
        WITH input AS (
          SELECT * FROM unnest(${sql.array(done.map((d) => d.id))}::uuid[], ${sql.array(done.map((d) => d.token))}::uuid[],
            ${sql.array(done.map((d) => JSON.stringify(d.result ?? null)))}::jsonb[], ${sql.array(done.map(() => uuidv7()))}::uuid[])
            AS i(id, token, result, next_id)
        ), finished AS (
          UPDATE jobs j SET state = 'succeeded', result = input.result, finished_at = now(),
            lease_token = NULL, lease_until = NULL, error = NULL,
            progress_done = coalesce(j.progress_total, j.progress_done)
          FROM input
          WHERE j.id = input.id AND j.lease_token = input.token AND j.state = 'running'
          RETURNING j.id, j.next_steps, j.chain_id, j.owner, j.traceparent, input.next_id
        ), next AS (
          -- A chain's next step stays in the trace its first step was enqueued in.
          INSERT INTO jobs (id, kind, payload, owner, max_attempts, next_steps, chain_id, traceparent)
          SELECT f.next_id, f.next_steps->0->>'kind', coalesce(f.next_steps->0->'payload', '{}'::jsonb), f.owner,
            coalesce((f.next_steps->0->>'maxAttempts')::int, ${DEFAULT_MAX_ATTEMPTS}),
            CASE WHEN jsonb_array_length(f.next_steps) > 1 THEN f.next_steps - 0 END, f.chain_id, f.traceparent
          FROM finished f
          WHERE jsonb_array_length(coalesce(f.next_steps, '[]'::jsonb)) > 0
          RETURNING (SELECT pg_notify(${READY}, kind)) AS _
        )
        SELECT id, (SELECT pg_notify(${CHANGED}, id || ':succeeded')) AS _ FROM finished`);
      return rows.map((r) => r.id);
    },

    async fail(id, token, error, retryInMs) {
      // Attempts left, unless the failure is final (retryInMs null).
      const left = retryInMs === null ? 'false' : 'attempts < max_attempts';
      const rows = await worker.query((sql) => sql<{ state: JobState }[]>`
        UPDATE jobs SET
          state = CASE WHEN ${sql.unsafe(left)} THEN 'queued' ELSE 'failed' END,
          run_at = CASE WHEN ${sql.unsafe(left)} THEN now() + ${lease(retryInMs ?? 0)}::interval ELSE run_at END,
          finished_at = CASE WHEN ${sql.unsafe(left)} THEN NULL ELSE now() END,
          error = ${error}, lease_token = NULL, lease_until = NULL
        WHERE id = ${id} AND lease_token = ${token} AND state = 'running'
        RETURNING state, (SELECT pg_notify(${CHANGED}, ${id} || ':' || state)) AS _`);
      const row = rows[0];
      if (!row) return 'lost';
      return row.state === 'queued' ? 'retried' : 'failed';
    },

    async release(id, token) {
      await worker.query((sql) => sql`
        UPDATE jobs SET state = 'queued', attempts = greatest(attempts - 1, 0), run_at = now(),
          lease_token = NULL, lease_until = NULL
        WHERE id = ${id} AND lease_token = ${token} AND state = 'running'
        RETURNING (SELECT pg_notify(${READY}, kind)) AS a, (SELECT pg_notify(${CHANGED}, ${id} || ':queued')) AS b`);
    },

    async reclaimExpired() {
      const rows = await worker.query((sql) => sql`
        WITH expired AS (
          SELECT id FROM jobs WHERE state = 'running' AND lease_until < now() FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs j SET
          state = CASE WHEN j.attempts < j.max_attempts THEN 'queued' ELSE 'failed' END,
          finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
          run_at = now(), error = 'worker lost: lease expired', lease_token = NULL, lease_until = NULL
        FROM expired WHERE j.id = expired.id
        RETURNING (SELECT pg_notify(${READY}, j.kind)) AS a, (SELECT pg_notify(${CHANGED}, j.id || ':' || j.state)) AS b`);
      return rows.length;
    },

    async ensureSchedule(name, firstAt) {
      await db.query((sql) => sql`
        INSERT INTO job_schedules (name, next_run_at) VALUES (${name}, ${firstAt}) ON CONFLICT (name) DO NOTHING`);
    },

    async fireSchedule(name, nextAt, job) {
      return db.transaction(async (tx) => {
        const sql = tx as unknown as Sql;
        const moved = await sql`
          UPDATE job_schedules SET next_run_at = ${nextAt} WHERE name = ${name} AND next_run_at <= now() RETURNING name`;
        if (moved.length === 0) return false;
        await insertJob(sql, job, null);
        return true;
      });
    },

    async listen(handlers) {
      const subs: { unlisten(): Promise<void> }[] = [];
      if (handlers.onReady) subs.push(await db.sql.listen(READY, (kind) => handlers.onReady!(kind)));
      if (handlers.onCancel) subs.push(await db.sql.listen(CANCELLED, (id) => handlers.onCancel!(id)));
      if (handlers.onChange) {
        subs.push(await db.sql.listen(CHANGED, (p) => {
          const at = p.lastIndexOf(':');
          handlers.onChange!(p.slice(0, at), p.slice(at + 1) as JobState);
        }));
      }
      return async () => { await Promise.all(subs.map((s) => s.unlisten().catch(() => {}))); };
    },

    async purgeFinished(before, batch) {
      const rows = await db.query((sql) => sql`
        DELETE FROM jobs WHERE id IN (
          SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < ${before}
          LIMIT ${batch})
        RETURNING 1 AS x`);
      return rows.length;
    },

    async counts() {
      const rows = await db.query((sql) => sql<{ kind: string; state: JobState; count: string }[]>`
        SELECT kind, state, count(*) AS count FROM jobs WHERE state IN ('queued', 'running') GROUP BY kind, state`);
      return rows.map((r) => ({ kind: r.kind, state: r.state, count: Number(r.count) }));
    },

    async ping(opts) {
      // On the queue's own pool: the users pool answering says nothing of this one.
      await db.query((sql) => sql`SELECT 1 AS x`, opts);
    },
  };
}
