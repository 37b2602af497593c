/**
 * The job queue's storage interface: what the runner, the scheduler and the job routes ask of the database that
 * holds the jobs. The PostgreSQL adapter is src/db/postgres/jobs.ts; docs/jobs.md states the guarantees.
 *
 * A worker holds a job through a lease: a token fresh for each claim, valid until a visibility timeout that the
 * worker keeps extending while the job runs. Every write a worker makes about a job names its token, so a worker
 * whose lease was lost (it stalled past the timeout, or the job was cancelled) changes nothing.
 */

/** A request's deadline (a `performance.now()` timestamp), as the other stores take it. */
export interface CallOptions {
  deadline?: number;
}

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
export const isTerminal = (s: JobState) => s === 'succeeded' || s === 'failed' || s === 'cancelled';

/**
 * Named counts a job reports beside `done` and `total` (an import: rows `read`, `written`, `rejected`), for a
 * person watching it; `done`/`total` stay the contract's figures.
 */
export type ProgressDetail = Readonly<Record<string, number>>;

export interface JobProgress {
  done: number;
  total: number | null;
  /** Absent when the job reported none. */
  detail?: ProgressDetail;
}

/** A job as stored; times are ISO-8601 strings with milliseconds, `null` until reached. */
export interface Job {
  id: string;
  kind: string;
  state: JobState;
  payload: unknown;
  /** The account that started it; null for the service's own jobs. */
  owner: string | null;
  progress: JobProgress;
  attempts: number;
  maxAttempts: number;
  runAt: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
  result: unknown;
  /** The first job's id for every step of a chain; null outside chains. */
  chainId: string | null;
  /** The W3C traceparent of the trace it was enqueued in (docs/tracing.md); null when none was traced. */
  traceparent: string | null;
}

/** One step of a chain, enqueued when the step before it succeeded. */
export interface ChainStep {
  kind: string;
  payload?: unknown;
  maxAttempts?: number;
}

export interface NewJob extends ChainStep {
  owner?: string | null;
  /** Not before this time (a delayed job). */
  runAt?: Date;
  /** While a job with this key is queued or running, enqueueing another with it does nothing. */
  singletonKey?: string;
  /** Steps to run after this one, in order; a step that fails fails the rest of the chain (never enqueued). */
  then?: ChainStep[];
  /** The trace it joins; by default the caller's (`currentTraceparent()`): every store records it with the job. */
  traceparent?: string | null;
}

/** A job a worker claimed, with the token of its lease. */
export interface Claim {
  job: Job;
  token: string;
}

export interface ListJobsQuery {
  /** Only this account's jobs; undefined lists everyone's. */
  owner?: string;
  state?: JobState;
  kind?: string;
  limit: number;
  /** An opaque cursor from a previous page. */
  cursor?: string;
}

/** What a failed attempt becomes: queued again after `retryInMs`, or failed for good. */
export type FailOutcome = 'retried' | 'failed' | 'lost';

/** What cancelling found: the job (cancelled now, or already finished), or nothing. */
export type CancelOutcome = { job: Job; cancelled: boolean } | undefined;

export interface JobsStore {
  /** Where the queue is held (`/health`'s `dependencies.job_queue.store`). */
  readonly holder: 'postgres' | 'redis';
  /** Adds a job; undefined when its singleton key is taken. Workers waiting for its kind hear of it at commit. */
  enqueue(job: NewJob, opts?: CallOptions): Promise<Job | undefined>;
  get(id: string, opts?: CallOptions): Promise<Job | undefined>;
  /** Newest first; `next` is the cursor of the following page when there is one. */
  list(q: ListJobsQuery, opts?: CallOptions): Promise<{ jobs: Job[]; next: string | undefined }>;
  /**
   * Up to `limit` jobs failed for good, the one that failed last first (by `finishedAt`, not by creation: a job
   * enqueued long ago that fails now comes first). The dashboard's recent failures.
   */
  recentFailures(limit: number, opts?: CallOptions): Promise<Job[]>;
  cancel(id: string, opts?: CallOptions): Promise<CancelOutcome>;

  /** Claims up to `max` due jobs of these kinds for `leaseMs`, oldest due first, skipping jobs others hold. */
  claim(kinds: readonly string[], max: number, leaseMs: number): Promise<Claim[]>;
  /** Extends the leases still held; returns the ids whose lease is gone (expired and taken, or cancelled). */
  extend(claims: readonly { id: string; token: string }[], leaseMs: number): Promise<string[]>;
  /** False when the lease is gone. A report without `detail` clears the one before. */
  progress(id: string, token: string, done: number, total: number | null, detail?: ProgressDetail): Promise<boolean>;
  /**
   * Marks these jobs succeeded and, atomically with each, enqueues its chain's next step. Returns the ids
   * recorded; a job whose lease is gone is left out.
   */
  succeed(done: readonly { id: string; token: string; result: unknown }[]): Promise<string[]>;
  /**
   * Queues it again after `retryInMs` while attempts remain, else fails it for good (kept for inspection);
   * `retryInMs` null fails it for good at once (a failure that another attempt would only repeat).
   */
  fail(id: string, token: string, error: string, retryInMs: number | null): Promise<FailOutcome>;
  /** Gives a held job back untouched (shutdown): queued again at once, this attempt not counted. */
  release(id: string, token: string): Promise<void>;
  /** Jobs whose lease expired (their worker died): queued again, or failed when no attempt remains. */
  reclaimExpired(): Promise<number>;

  /** Creates the schedule if new, due at `firstAt`. */
  ensureSchedule(name: string, firstAt: Date): Promise<void>;
  /**
   * When the schedule is due, moves it on to `nextAt` and enqueues `job` in one transaction: of several instances
   * ticking at once, exactly one does. Returns whether this call fired it.
   */
  fireSchedule(name: string, nextAt: Date, job: NewJob): Promise<boolean>;

  /**
   * Calls `onReady(kind)` when a job of a kind becomes due now, `onChange(id, state)` when a job changes, and
   * `onCancel(id)` when a running job is cancelled. Resolves once listening; the returned function stops.
   */
  listen(handlers: {
    onReady?(kind: string): void;
    onChange?(id: string, state: JobState): void;
    onCancel?(id: string): void;
  }): Promise<() => Promise<void>>;

  /** Deletes up to `batch` jobs that ended before `before` (the retention job); returns how many went. */
  purgeFinished(before: Date, batch: number): Promise<number>;

  /** Jobs by kind and state, for the gauges. */
  counts(): Promise<{ kind: string; state: JobState; count: number }[]>;
  /** Resolves when the store holding the queue answers one cheap round trip (`/health`). */
  ping(opts?: CallOptions): Promise<void>;
}
