/**
 * How the Redis queue (src/db/redis/jobs.ts) records a Spate job: the keys of our own beside BullMQ's, the data a
 * BullMQ job carries, the lease-checked Lua scripts, and the mapping of a BullMQ job onto `Job`. No connection here.
 */
import type { ConnectionOptions, Job as BullJob } from 'bullmq';
import type { Job, JobProgress, JobState, ProgressDetail } from '../../platform/jobs/store.ts';

export const DEFAULT_MAX_ATTEMPTS = 5;
/** How long an API call without a request deadline waits for Redis. */
export const API_TIMEOUT_MS = 5000;
/** A held job whose lease ran out this long ago is forgotten: its worker can no longer write about it anyway. */
export const FORGET_AFTER_MS = 60_000;
/** BullMQ's key prefix, and ours beside it. */
export const PREFIX = 'spate-jobs';
export const K = {
  /** id -> JSON `Meta`. */
  meta: `${PREFIX}:meta`,
  /** Every job's id, newest first by `ZREVRANGEBYLEX` (UUIDv7 ids sort by creation time). */
  index: `${PREFIX}:index`,
  owner: (owner: string) => `${PREFIX}:owner:${owner}`,
  /** Every kind ever enqueued: the stalled-job check covers them all, not only the kinds this process runs. */
  kinds: `${PREFIX}:kinds`,
  /** id -> JSON `Job` of a cancelled job, and id by the time it was cancelled (for retention). */
  cancelled: `${PREFIX}:cancelled`,
  cancelledAt: `${PREFIX}:cancelled-at`,
  schedule: (name: string) => `${PREFIX}:schedule:${name}`,
};
export const CHANNEL = { ready: `${PREFIX}:ready`, changed: `${PREFIX}:changed`, cancelled: `${PREFIX}:cancelled` };

/** What we keep about a job beside BullMQ's hash: its kind (its queue), owner, and when it was last due. */
export interface Meta { k: string; o: string | null; due: number }
/** A job's data in BullMQ: payload, owner, chain, max attempts, and the traceparent it was enqueued under. */
export interface Data { p: unknown; o: string | null; c: string | null; m: number; t?: string | null }

/**
 * The lease-checked progress write: only the holder of the job's lock may report (the runner ignores reports
 * after its lease is gone, and a stalled worker's late one must not land either).
 */
export const PROGRESS_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'progress', ARGV[2])
return 1`;

/** Moves a schedule due at or before now (ms) on to its next time; 1 when this call did. */
export const FIRE_LUA = `
local at = tonumber(redis.call('GET', KEYS[1]))
if at == nil or at > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1`;

const iso = (ms: number | undefined | null) => (ms ? new Date(ms).toISOString() : null);

/** BullMQ's lease errors: the lock is missing or another's, or the job is gone (cancelled). */
export const isLeaseError = (err: unknown) => err instanceof Error && /^(Missing lock|Lock mismatch|Missing key for job|Job .* is not in the active state)/.test(err.message);

export function bullState(s: string): JobState | undefined {
  switch (s) {
    case 'active': return 'running';
    case 'completed': return 'succeeded';
    case 'failed': return 'failed';
    case 'waiting': case 'delayed': case 'prioritized': case 'waiting-children': return 'queued';
    default: return undefined;
  }
}

export function toJob(j: BullJob, state: JobState, meta: Meta | undefined): Job {
  const d = j.data as Data;
  const p = j.progress as { done?: number; total?: number | null; detail?: ProgressDetail } | number;
  const progress: JobProgress = typeof p === 'object' && p !== null
    ? { done: p.done ?? 0, total: p.total ?? null, ...(p.detail ? { detail: p.detail } : {}) }
    : { done: 0, total: null };
  const ended = state === 'succeeded' || state === 'failed';
  return {
    id: j.id!,
    kind: j.name,
    state,
    payload: d.p ?? {},
    owner: d.o ?? null,
    traceparent: d.t ?? null,
    progress: state === 'succeeded' && progress.total !== null ? { ...progress, done: progress.total } : progress,
    // A job taken up again after its last attempt's worker died started once more than it may run; it is failed
    // at that claim (below), and its count stays at the maximum, as on PostgreSQL.
    attempts: Math.min(j.attemptsStarted, d.m),
    maxAttempts: d.m,
    runAt: new Date(meta?.due ?? j.timestamp + (j.delay ?? 0)).toISOString(),
    createdAt: new Date(j.timestamp).toISOString(),
    startedAt: iso(j.processedOn),
    finishedAt: ended ? iso(j.finishedOn) : null,
    error: state === 'succeeded' ? null : (j.failedReason || null),
    result: state === 'succeeded' ? (j.returnvalue ?? null) : null,
    chainId: d.c ?? null,
  };
}

/** ioredis options from a redis:// URL, for the connections BullMQ opens itself (with its own ioredis 5). */
export function connectionOf(url: string): ConnectionOptions {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    tls: u.protocol === 'rediss:' ? {} : undefined,
    // BullMQ's requirement for its blocking connections; commands wait for a reconnection instead of failing.
    maxRetriesPerRequest: null,
  };
}
