/**
 * The Redis adapter of `JobsStore` (src/platform/jobs/store.ts), the job queue of the Cassandra backend: a queue
 * in Cassandra is a known anti-pattern (tombstones on every dequeue), so jobs live in Redis (docs/jobs.md).
 *
 * The queue itself is BullMQ 5 through its manual processing API: one BullMQ queue per job kind (a claim names
 * the kinds its worker can run), `Worker.getNextJob(token)` claims, the job's lock is the lease (`extendLocks`,
 * and `moveToCompleted` / `moveToFailed` / `moveToWait` all check the token), BullMQ's stalled-job check takes up
 * a dead worker's jobs, delayed jobs are BullMQ's, a chain is a BullMQ flow (each step the parent of the one
 * before it, failing with it), and a singleton key is BullMQ's deduplication id.
 *
 * What BullMQ has no notion of is kept in a few keys of our own beside it (`spate-jobs:*`): the id -> kind,
 * owner and due time of every job (a job is looked up by id alone, and BullMQ's hash keeps only its creation
 * time), the newest-first index behind `list` (the recent failures are read from BullMQ's failed sets, which it
 * scores by the time each failed), the record of a cancelled job (BullMQ can only remove one), the
 * cron schedules (a compare-and-set each), a progress write that checks the lease (BullMQ's `updateProgress`
 * does not), and the wake-up and change announcements (pub/sub).
 */
import { randomUUID } from 'node:crypto';
import { FlowProducer, Job as BullJob, Queue, Worker, type FlowJob, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { AppError, errors } from '../../platform/errors.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import { withDeadline } from '../../platform/lib/deadline.ts';
import { currentTraceparent } from '../../platform/tracing/context.ts';
import type { CallOptions, CancelOutcome, Claim, Job, JobState, JobsStore, NewJob } from '../../platform/jobs/store.ts';
import { CURSOR_TAG, decodeCursor, encodeCursor } from '../cursor.ts';
import {
  API_TIMEOUT_MS, CHANNEL, DEFAULT_MAX_ATTEMPTS, FIRE_LUA, FORGET_AFTER_MS, K, PREFIX, PROGRESS_LUA, bullState, connectionOf, isLeaseError, toJob,
  type Data, type Meta,
} from './job-records.ts';

export interface RedisJobsOptions {
  url: string;
  log: { warn(obj: object, msg: string): void };
}

export interface RedisJobsStore extends JobsStore {
  close(): Promise<void>;
}

export function openRedisJobs(o: RedisJobsOptions): RedisJobsStore {
  const connection = connectionOf(o.url);
  const redis = new Redis(o.url, { connectionName: 'spate-jobs', maxRetriesPerRequest: 2 });
  redis.on('error', () => {}); // reported by the calls that fail; ioredis reconnects by itself
  redis.defineCommand('jobProgress', { numberOfKeys: 2, lua: PROGRESS_LUA });
  redis.defineCommand('jobFire', { numberOfKeys: 1, lua: FIRE_LUA });
  const run = redis as Redis & {
    jobProgress(lock: string, job: string, token: string, progress: string): Promise<number>;
    jobFire(key: string, now: number, next: number): Promise<number>;
  };
  const queues = new Map<string, Queue>();
  const workers = new Map<string, Worker>();
  let flows: FlowProducer | undefined;
  /** The BullMQ jobs this store's workers hold, by id: their writes need the job object. */
  const held = new Map<string, { job: BullJob; until: number }>();
  const holding = (id: string) => held.get(id)?.job;
  /** Drops what is held past its lease (a cancelled job, whose runner writes nothing more): no unbounded growth. */
  function forget(): void {
    const before = Date.now() - FORGET_AFTER_MS;
    for (const [id, h] of held) if (h.until < before) held.delete(id);
  }
  const subscribers: Redis[] = [];

  const queue = (kind: string) => {
    let q = queues.get(kind);
    if (!q) {
      q = new Queue(kind, { connection, prefix: PREFIX });
      q.on('error', (err) => o.log.warn({ reason: err.message }, 'redis job queue connection error'));
      queues.set(kind, q);
    }
    return q;
  };
  const worker = (kind: string) => {
    let w = workers.get(kind);
    if (!w) {
      w = new Worker(kind, undefined, {
        connection, prefix: PREFIX, autorun: false,
        // The runner extends leases and calls reclaimExpired itself; a stall only requeues, the attempt limit is ours.
        skipLockRenewal: true, skipStalledCheck: true, maxStalledCount: Number.MAX_SAFE_INTEGER,
        // `reclaimExpired` runs BullMQ's check on every call; BullMQ skips one within this many ms of another.
        stalledInterval: 1,
      });
      w.on('error', (err) => o.log.warn({ reason: err.message }, 'redis job worker connection error'));
      workers.set(kind, w);
    }
    return w;
  };

  /**
   * An API call (enqueue, read, list, cancel) is bounded by the request's deadline, or `API_TIMEOUT_MS`: BullMQ's
   * connections wait for a Redis that is away rather than fail, and a request must not wait with them. A Redis
   * failure is the catalogue's `unavailable`, as a database failure is.
   */
  function api<T>(fn: () => Promise<T>, opts?: CallOptions): Promise<T> {
    const ms = opts?.deadline !== undefined ? opts.deadline - performance.now() : API_TIMEOUT_MS;
    return withDeadline(fn(), ms, {
      mapError: (err) => (err instanceof AppError ? err : errors.unavailable('job queue (Redis) unavailable', err)),
    });
  }

  const announce = (pairs: [channel: string, message: string][]) => {
    if (pairs.length === 0) return Promise.resolve();
    const p = redis.pipeline();
    for (const [c, m] of pairs) p.publish(c, m);
    return p.exec().then(() => {}, () => {});
  };

  async function metas(ids: readonly string[]): Promise<(Meta | undefined)[]> {
    if (ids.length === 0) return [];
    const raw = await redis.hmget(K.meta, ...ids);
    return raw.map((r) => (r ? JSON.parse(r) as Meta : undefined));
  }
  const setDue = (pairs: [id: string, meta: Meta][]) =>
    pairs.length ? redis.hset(K.meta, Object.fromEntries(pairs.map(([id, m]) => [id, JSON.stringify(m)]))) : Promise.resolve(0);

  async function read(id: string): Promise<Job | undefined> {
    const [metaRaw, cancelledRaw] = await redis.pipeline().hget(K.meta, id).hget(K.cancelled, id).exec()
      .then((r) => r!.map(([err, v]) => { if (err) throw err; return v as string | null; }));
    if (cancelledRaw) return JSON.parse(cancelledRaw) as Job;
    if (!metaRaw) return undefined;
    const meta = JSON.parse(metaRaw) as Meta;
    const q = queue(meta.k);
    const [j, state] = await Promise.all([BullJob.fromId(q, id), q.getJobState(id)]);
    const s = bullState(state);
    return j && s ? toJob(j, s, meta) : undefined;
  }

  /** Writes the index entries of new jobs before BullMQ holds them, so a job is never in BullMQ unlisted. */
  async function index(jobs: { id: string; kind: string; owner: string | null; due: number }[]): Promise<void> {
    const p = redis.multi();
    for (const j of jobs) {
      p.hset(K.meta, j.id, JSON.stringify({ k: j.kind, o: j.owner, due: j.due } satisfies Meta));
      p.zadd(K.index, 0, j.id);
      if (j.owner !== null) p.zadd(K.owner(j.owner), 0, j.id);
      p.sadd(K.kinds, j.kind);
    }
    await p.exec();
  }
  async function unindex(entries: { id: string; owner: string | null }[]): Promise<void> {
    if (entries.length === 0) return;
    const p = redis.multi();
    for (const e of entries) {
      p.hdel(K.meta, e.id);
      p.zrem(K.index, e.id);
      if (e.owner !== null) p.zrem(K.owner(e.owner), e.id);
    }
    await p.exec();
  }

  async function add(job: NewJob): Promise<Job | undefined> {
    const now = Date.now();
    const due = Math.max(now, job.runAt?.getTime() ?? now);
    const owner = job.owner ?? null;
    const steps = [{ kind: job.kind, payload: job.payload, maxAttempts: job.maxAttempts }, ...(job.then ?? [])];
    const ids = steps.map(() => uuidv7());
    const chainId = steps.length > 1 ? ids[0]! : null;
    // Every step of a chain carries the trace it was enqueued in, as on PostgreSQL.
    const traceparent = job.traceparent !== undefined ? job.traceparent : currentTraceparent();
    const data = (i: number): Data => ({ p: steps[i]!.payload ?? {}, o: owner, c: chainId, m: steps[i]!.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, t: traceparent });
    const opts = (i: number): JobsOptions => ({
      jobId: ids[i], attempts: data(i).m, removeOnComplete: false, removeOnFail: false,
      ...(i === 0 ? { delay: due - now } : { failParentOnFailure: true }),
      ...(i === 0 && job.singletonKey ? { deduplication: { id: job.singletonKey } } : {}),
    });
    await index(steps.map((s, i) => ({ id: ids[i]!, kind: s.kind, owner, due })));
    try {
      if (steps.length === 1) {
        const added = await queue(job.kind).add(job.kind, data(0), opts(0));
        if (added.id !== ids[0]) {
          // Deduplicated: a job with this singleton key is queued or running.
          await unindex([{ id: ids[0]!, owner }]);
          return undefined;
        }
      } else {
        // The first step is the innermost child: it runs first, and its parent (the next step) waits for it.
        let node: FlowJob = { name: job.kind, queueName: job.kind, data: data(0), opts: { ...opts(0), failParentOnFailure: true } };
        for (let i = 1; i < steps.length; i++) {
          node = { name: steps[i]!.kind, queueName: steps[i]!.kind, data: data(i), opts: opts(i), children: [node] };
        }
        flows ??= new FlowProducer({ connection, prefix: PREFIX });
        await flows.add(node);
      }
    } catch (err) {
      await unindex(ids.map((id) => ({ id, owner }))).catch(() => {});
      throw err;
    }
    if (due <= now) await announce([[CHANNEL.ready, job.kind]]);
    const d = data(0);
    return {
      id: ids[0]!, kind: job.kind, state: 'queued', payload: d.p, owner, progress: { done: 0, total: null }, attempts: 0,
      maxAttempts: d.m, runAt: new Date(due).toISOString(), createdAt: new Date(now).toISOString(), startedAt: null,
      finishedAt: null, error: null, result: null, chainId, traceparent,
    };
  }

  /** The chain's next step: in BullMQ's flow, the parent of this one. */
  function parentOf(j: BullJob): { kind: string; id: string } | undefined {
    const p = j.parent;
    return p?.id ? { kind: p.queueKey.slice(PREFIX.length + 1), id: p.id } : undefined;
  }

  return {
    holder: 'redis',

    enqueue: (job, opts) => api(() => add(job), opts),

    get: (id, opts) => api(() => read(id), opts),

    list: (q, opts) => api(async () => {
      let from = '+';
      if (q.cursor !== undefined) {
        const b = decodeCursor(CURSOR_TAG.redis, q.cursor);
        from = `(${b.toString('utf8')}`;
      }
      const key = q.owner !== undefined ? K.owner(q.owner) : K.index;
      const page: Job[] = [];
      let more = false;
      // Filters by state and kind read ahead in batches: the index is by time only.
      for (;;) {
        const ids = await redis.zrevrangebylex(key, from, '-', 'LIMIT', 0, Math.max(50, q.limit + 1));
        if (ids.length === 0) break;
        const jobs = await Promise.all(ids.map((id) => read(id)));
        for (const j of jobs) {
          if (!j || (q.state && j.state !== q.state) || (q.kind && j.kind !== q.kind)) continue;
          if (page.length === q.limit) { more = true; break; }
          page.push(j);
        }
        if (more) break;
        from = `(${ids.at(-1)!}`;
      }
      const last = page.at(-1);
      return { jobs: page, next: more && last ? encodeCursor(CURSOR_TAG.redis, Buffer.from(last.id, 'utf8')) : undefined };
    }, opts),

    recentFailures: (limit, opts) => api(async () => {
      // BullMQ keeps each kind's failed jobs in a sorted set scored by the time they failed: the newest `limit` of
      // each kind, merged, are the newest `limit` of all, with no index of our own to keep.
      const kinds = await redis.smembers(K.kinds);
      if (kinds.length === 0 || limit <= 0) return [];
      const p = redis.pipeline();
      for (const kind of kinds) p.zrevrange(`${PREFIX}:${kind}:failed`, 0, limit - 1, 'WITHSCORES');
      const newest: { id: string; at: number }[] = [];
      for (const [err, flat] of (await p.exec())!) {
        if (err) throw err;
        const pairs = flat as string[];
        for (let i = 0; i < pairs.length; i += 2) newest.push({ id: pairs[i]!, at: Number(pairs[i + 1]) });
      }
      newest.sort((a, b) => b.at - a.at);
      const jobs = await Promise.all(newest.slice(0, limit).map((f) => read(f.id)));
      return jobs.filter((j): j is Job => j?.state === 'failed');
    }, opts),

    cancel: (id, opts) => api(async (): Promise<CancelOutcome> => {
      const job = await read(id);
      if (!job) return undefined;
      if (job.state !== 'queued' && job.state !== 'running') return { job, cancelled: false };
      const meta = (await metas([id]))[0]!;
      const cancelled: Job = { ...job, state: 'cancelled', finishedAt: new Date().toISOString() };
      // The record first: from now on the job reads as cancelled, whatever its worker still reports.
      if (!(await redis.hsetnx(K.cancelled, id, JSON.stringify(cancelled)))) return { job: (await read(id))!, cancelled: false };
      await redis.zadd(K.cancelledAt, Date.now(), id);
      // Then out of BullMQ. A running job's lock goes first (its worker's next write or extension fails: the lease
      // is gone); BullMQ refuses to remove a locked job. The chain's later steps go with it (removed as children of
      // the last step), so a cancelled step ends its chain. Retried while a worker re-claims it meanwhile.
      // The chain's last step: removing it removes its children, the steps before it, this one among them.
      let top = await BullJob.fromId(queue(meta.k), id);
      const later: { id: string; owner: string | null }[] = [];
      for (let p = top && parentOf(top); p; p = top && parentOf(top)) {
        later.push({ id: p.id, owner: meta.o });
        top = await BullJob.fromId(queue(p.kind), p.id);
      }
      for (let i = 0; i < 20 && top; i++) {
        await redis.del(`${PREFIX}:${meta.k}:${id}:lock`);
        try {
          await top.remove({ removeChildren: true });
          break;
        } catch {
          // Locked again by a worker that claimed it between our two calls: once more.
        }
      }
      await unindex(later);
      await announce([[CHANNEL.changed, `${id}:cancelled`], ...(job.state === 'running' ? [[CHANNEL.cancelled, id] as [string, string]] : [])]);
      return { job: cancelled, cancelled: true };
    }, opts),

    async claim(kinds, max, leaseMs) {
      const claimed: { job: BullJob; token: string }[] = [];
      for (const kind of kinds) {
        const w = worker(kind);
        w.opts.lockDuration = Math.max(1, Math.round(leaseMs));
        // BullMQ moves one job per call: the calls for every free slot go out together (one pipeline of scripts).
        let empty = false;
        while (!empty && claimed.length < max) {
          const tokens = Array.from({ length: max - claimed.length }, () => randomUUID());
          const got = await Promise.all(tokens.map((t) => w.getNextJob(t, { block: false }) as Promise<BullJob | undefined>));
          for (let i = 0; i < got.length; i++) {
            const j = got[i];
            if (!j) { empty = true; continue; }
            const token = tokens[i]!;
            const d = j.data as Data;
            if (j.attemptsStarted > d.m) {
              // Taken up again after its last attempt's worker died: failed for good, as the lease expiry asks.
              j.discard();
              await j.moveToFailed(new Error('worker lost: lease expired'), token).catch(() => {});
              await announce([[CHANNEL.changed, `${j.id}:failed`]]);
              continue;
            }
            claimed.push({ job: j, token });
          }
        }
        if (claimed.length >= max) break;
      }
      const ms = await metas(claimed.map((c) => c.job.id!));
      forget();
      for (const c of claimed) held.set(c.job.id!, { job: c.job, until: Date.now() + leaseMs });
      await announce(claimed.map((c) => [CHANNEL.changed, `${c.job.id}:running`]));
      return claimed.map((c, i) => ({ job: toJob(c.job, 'running', ms[i]), token: c.token }) satisfies Claim);
    },

    async extend(claims, leaseMs) {
      const lost: string[] = [];
      const byKind = new Map<string, { id: string; token: string }[]>();
      for (const c of claims) {
        const j = holding(c.id);
        if (!j) { lost.push(c.id); continue; }
        const list = byKind.get(j.name) ?? [];
        list.push(c);
        byKind.set(j.name, list);
      }
      await Promise.all([...byKind].map(async ([kind, cs]) => {
        const failed = await worker(kind).extendJobLocks(cs.map((c) => c.id), cs.map((c) => c.token), Math.max(1, Math.round(leaseMs)));
        lost.push(...failed);
      }));
      const until = Date.now() + leaseMs;
      for (const c of claims) { const h = held.get(c.id); if (h) h.until = until; }
      for (const id of lost) held.delete(id);
      return lost;
    },

    async progress(id, token, done, total, detail) {
      const j = holding(id);
      if (!j) return false;
      const key = `${PREFIX}:${j.name}:${id}`;
      const ok = await run.jobProgress(`${key}:lock`, key, token, JSON.stringify({ done, total, detail }));
      if (ok) await announce([[CHANNEL.changed, `${id}:running`]]);
      return ok === 1;
    },

    async succeed(done) {
      const recorded: string[] = [];
      const notes: [string, string][] = [];
      const due: [string, Meta][] = [];
      await Promise.all(done.map(async (d) => {
        const j = holding(d.id);
        if (!j) return;
        try {
          await j.moveToCompleted(d.result ?? null, d.token, false);
        } catch (err) {
          if (isLeaseError(err)) { held.delete(d.id); return; }
          throw err;
        }
        held.delete(d.id);
        recorded.push(d.id);
        notes.push([CHANNEL.changed, `${d.id}:succeeded`]);
        // The chain's next step (the parent in BullMQ's flow) became due in the same script.
        const next = parentOf(j);
        if (next) {
          notes.push([CHANNEL.ready, next.kind]);
          due.push([next.id, { k: next.kind, o: (j.data as Data).o, due: Date.now() }]);
        }
      }));
      await setDue(due);
      await announce(notes);
      return recorded;
    },

    async fail(id, token, error, retryInMs) {
      const j = holding(id);
      if (!j) return 'lost';
      const d = j.data as Data;
      const retry = retryInMs !== null && j.attemptsStarted < d.m;
      const delay = Math.max(1, Math.round(retryInMs ?? 0));
      // Our own backoff (the runner's, with jitter) and our own attempt count: BullMQ counts a stalled attempt
      // differently, so the decision is made here and BullMQ is told it.
      j.opts.backoff = { type: 'fixed', delay };
      if (!retry) j.discard();
      try {
        await j.moveToFailed(new Error(error), token);
      } catch (err) {
        if (isLeaseError(err)) { held.delete(id); return 'lost'; }
        throw err;
      } finally {
        held.delete(id);
      }
      const meta = (await metas([id]))[0];
      if (retry && meta) await setDue([[id, { ...meta, due: Date.now() + delay }]]);
      await announce([[CHANNEL.changed, `${id}:${retry ? 'queued' : 'failed'}`]]);
      return retry ? 'retried' : 'failed';
    },

    async release(id, token) {
      const j = holding(id);
      if (!j) return;
      held.delete(id);
      try {
        await j.moveToWait(token);
      } catch (err) {
        if (isLeaseError(err)) return;
        throw err;
      }
      // This attempt is not counted (BullMQ counted it when the job became active).
      await redis.hincrby(`${PREFIX}:${j.name}:${id}`, 'ats', -1);
      await announce([[CHANNEL.ready, j.name], [CHANNEL.changed, `${id}:queued`]]);
    },

    async reclaimExpired() {
      // BullMQ's stalled-job check, per kind: a pass takes up the active jobs the previous pass marked whose lock
      // is gone, then marks every active job. Two passes in a row: whatever is active without a lock now.
      const kinds = await redis.smembers(K.kinds);
      let n = 0;
      const notes: [string, string][] = [];
      for (const kind of kinds) {
        const w = worker(kind);
        for (let pass = 0; pass < 2; pass++) {
          await redis.del(`${PREFIX}:${kind}:stalled-check`);
          const ids = await w.scripts.moveStalledJobsToWait() as string[];
          n += ids.length;
          for (const id of ids) notes.push([CHANNEL.changed, `${id}:queued`]);
          if (ids.length) notes.push([CHANNEL.ready, kind]);
        }
      }
      await announce(notes);
      return n;
    },

    async ensureSchedule(name, firstAt) {
      await redis.set(K.schedule(name), String(firstAt.getTime()), 'NX');
    },

    async fireSchedule(name, nextAt, job) {
      // Not one transaction with the enqueue as on PostgreSQL: the run is enqueued first (deduplicated by the
      // schedule's singleton key), then the schedule moved on by a compare-and-set that one instance wins. A
      // crash between the two enqueues the run again at the next tick (deduplicated while it is still queued):
      // a run is never lost, and repeated only when a process died at that instant.
      const at = Number(await redis.get(K.schedule(name)));
      if (!at || at > Date.now()) return false;
      await add(job);
      return (await run.jobFire(K.schedule(name), Date.now(), nextAt.getTime())) === 1;
    },

    async listen(handlers) {
      const sub = redis.duplicate({ connectionName: 'spate-jobs-listen' });
      sub.on('error', () => {});
      subscribers.push(sub);
      const channels = [
        handlers.onReady && CHANNEL.ready, handlers.onChange && CHANNEL.changed, handlers.onCancel && CHANNEL.cancelled,
      ].filter((c): c is string => Boolean(c));
      sub.on('message', (channel: string, msg: string) => {
        if (channel === CHANNEL.ready) handlers.onReady?.(msg);
        else if (channel === CHANNEL.cancelled) handlers.onCancel?.(msg);
        else if (channel === CHANNEL.changed) {
          const at = msg.lastIndexOf(':');
          handlers.onChange?.(msg.slice(0, at), msg.slice(at + 1) as JobState);
        }
      });
      // ioredis subscribes again by itself after a reconnection.
      if (channels.length) await sub.subscribe(...channels);
      return async () => {
        subscribers.splice(subscribers.indexOf(sub), 1);
        sub.disconnect();
      };
    },

    async purgeFinished(before, batch) {
      const grace = Math.max(0, Date.now() - before.getTime());
      let removed = 0;
      for (const kind of await redis.smembers(K.kinds)) {
        for (const type of ['completed', 'failed'] as const) {
          if (removed >= batch) break;
          const ids = await queue(kind).clean(grace, batch - removed, type);
          const ms = await metas(ids);
          await unindex(ids.map((id, i) => ({ id, owner: ms[i]?.o ?? null })));
          removed += ids.length;
        }
      }
      if (removed < batch) {
        const ids = await redis.zrangebyscore(K.cancelledAt, '-inf', before.getTime(), 'LIMIT', 0, batch - removed);
        const ms = await metas(ids);
        if (ids.length) await redis.multi().hdel(K.cancelled, ...ids).zrem(K.cancelledAt, ...ids).exec();
        await unindex(ids.map((id, i) => ({ id, owner: ms[i]?.o ?? null })));
        removed += ids.length;
      }
      return removed;
    },

    async counts() {
      const out: { kind: string; state: JobState; count: number }[] = [];
      for (const kind of await redis.smembers(K.kinds)) {
        const c = await queue(kind).getJobCounts('waiting', 'delayed', 'prioritized', 'waiting-children', 'active');
        const queued = (c.waiting ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0) + (c['waiting-children'] ?? 0);
        if (queued) out.push({ kind, state: 'queued', count: queued });
        if (c.active) out.push({ kind, state: 'running', count: c.active });
      }
      return out;
    },

    ping: (opts) => api(async () => { await redis.ping(); }, opts),

    async close() {
      await Promise.all([
        ...[...workers.values()].map((w) => w.close(true).catch(() => {})),
        ...[...queues.values()].map((q) => q.close().catch(() => {})),
        flows?.close().catch(() => {}),
      ]);
      for (const s of subscribers) s.disconnect();
      await redis.quit().catch(() => {});
    },
  };
}
