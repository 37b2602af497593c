/**
 * The worker: claims due jobs of the kinds it has handlers for, runs up to `concurrency` at a time, keeps their
 * leases alive, and records each outcome (docs/jobs.md states the guarantees this gives).
 *
 * It wakes on the store's "job ready" notification, so an idle worker starts a new job within milliseconds; a
 * poll every `pollMs` covers delayed jobs coming due, notifications lost while disconnected, and the reclaiming
 * of jobs whose worker died. A handler whose lease is lost (it could not be extended, or the job was cancelled)
 * has its `signal` aborted, and nothing it reports afterwards is recorded.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '../errors.ts';
import { runTracedJob } from '../tracing/context.ts';
import { DEFAULT_BACKOFF, retryDelayMs, type BackoffPolicy } from './backoff.ts';
import type { Claim, Job, JobsStore, ProgressDetail } from './store.ts';

export interface JobContext {
  readonly job: Job;
  /** Aborted when the job is cancelled, its lease is lost, or the worker gives it back at shutdown. */
  readonly signal: AbortSignal;
  /** Records progress (visible in the API and its event stream); ignored once the lease is gone. */
  progress(done: number, total?: number | null, detail?: ProgressDetail): Promise<void>;
}

export interface JobDefinition {
  kind: string;
  /** Its resolved value becomes the job's `result`; a throw is a failed attempt. */
  run(payload: unknown, ctx: JobContext): Promise<unknown>;
  backoff?: BackoffPolicy;
}

export type JobOutcome = 'succeeded' | 'retried' | 'failed' | 'cancelled' | 'lost' | 'returned';

/** Told about every job the runner starts and ends (the metrics plugin's hook). */
export interface RunnerObserver {
  /** `waitS`: from when the job was due to its start. */
  started(kind: string, waitS: number): void;
  finished(kind: string, outcome: JobOutcome, runS: number): void;
}

export interface RunnerOptions {
  store: JobsStore;
  definitions: readonly JobDefinition[];
  concurrency: number;
  /** The visibility timeout: a job whose worker stops extending its lease for this long is taken up again. */
  leaseMs: number;
  pollMs: number;
  log: { warn(obj: object, msg: string): void };
  observer?: RunnerObserver;
}

export interface Runner {
  start(): Promise<void>;
  /** Stops claiming, lets running jobs finish for up to `timeoutMs`, then gives the rest back to the queue. */
  stop(timeoutMs: number): Promise<{ finished: number; returned: number }>;
  /** Jobs running now. */
  readonly running: number;
}

interface Active {
  claim: Claim;
  ctrl: AbortController;
  /** Set when the runner gave the job back: its handler's outcome is no longer ours to record. */
  released: boolean;
  done: Promise<void>;
}

/** Most successes written by one statement. */
const SUCCESS_BATCH = 200;

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err)).slice(0, 2000);

export function createRunner(o: RunnerOptions): Runner {
  const defs = new Map(o.definitions.map((d) => [d.kind, d]));
  const kinds = [...defs.keys()];
  const active = new Map<string, Active>();
  const observer = o.observer;
  let stopping = false;
  let filling: Promise<void> | undefined;
  let again = false;
  let unlisten: (() => Promise<void>) | undefined;
  const timers: NodeJS.Timeout[] = [];

  /**
   * Handlers running now; `active` also holds jobs whose handler returned and whose outcome is being written.
   * Claims fill the handlers' slots (`concurrency`) without waiting for those writes, up to twice `concurrency`
   * held in all, so claiming and recording overlap instead of taking turns.
   */
  let handlers = 0;
  const free = () => Math.min(o.concurrency - handlers, 2 * o.concurrency - active.size);

  const warn = (err: unknown, msg: string) => o.log.warn({ reason: messageOf(err) }, msg);

  /** Claims until the slots are full or nothing is due; calls arriving meanwhile make it go round once more. */
  function fill(): Promise<void> {
    if (filling) { again = true; return filling; }
    const p: Promise<void> = claimAll().finally(() => {
      if (filling !== p) return;
      filling = undefined;
      // A wake-up that came after the last round looked: one more round.
      if (again && !stopping) void fill();
    });
    filling = p;
    return p;
  }
  async function claimAll(): Promise<void> {
    try {
      do {
        again = false;
        while (!stopping && free() > 0) {
          const want = free();
          const claims = await o.store.claim(kinds, want, o.leaseMs);
          for (const c of claims) launch(c);
          if (claims.length < want) break;
        }
      } while (again && !stopping);
    } catch (err) {
      warn(err, 'claiming jobs failed; trying again at the next poll');
    }
  }

  function launch(claim: Claim): void {
    const { job, token } = claim;
    const def = defs.get(job.kind)!;
    const ctrl = new AbortController();
    const entry: Active = { claim, ctrl, released: false, done: Promise.resolve() };
    active.set(job.id, entry);
    handlers++;
    const t0 = performance.now();
    observer?.started(job.kind, Math.max(0, Date.now() - Date.parse(job.runAt)) / 1000);
    const ctx: JobContext = {
      job,
      signal: ctrl.signal,
      async progress(done, total = null, detail) {
        if (!ctrl.signal.aborted) await o.store.progress(job.id, token, done, total, detail);
      },
    };
    entry.done = (async () => {
      let outcome: JobOutcome;
      try {
        let r: { ok: true; value: unknown } | { ok: false; error: unknown };
        try {
          // In the job's span (a child of the trace it was enqueued in) when tracing is on.
          r = await runTracedJob(job, () => def.run(job.payload, ctx)).then(
            (value) => ({ ok: true as const, value }),
            (error: unknown) => ({ ok: false as const, error }),
          );
        } finally {
          // The slot is free once the handler returned: the next claim goes out while this outcome is written.
          handlers--;
          refill();
        }
        outcome = await settle(entry, def, r);
      } catch (err) {
        // The database failed us while recording: the lease runs out and the job is taken up again.
        warn(err, `recording the outcome of job ${job.id} failed; it runs again after its lease expires`);
        outcome = 'lost';
      }
      active.delete(job.id);
      observer?.finished(job.kind, outcome, (performance.now() - t0) / 1000);
      refill();
    })();
  }

  async function settle(
    entry: Active,
    def: JobDefinition,
    r: { ok: true; value: unknown } | { ok: false; error: unknown },
  ): Promise<JobOutcome> {
    if (entry.released) return 'returned';
    const reason = entry.ctrl.signal.aborted ? entry.ctrl.signal.reason : undefined;
    if (reason === 'cancelled' || reason === 'lost') return reason;
    const { job, token } = entry.claim;
    if (r.ok) return (await succeedSoon(job.id, token, r.value)) ? 'succeeded' : 'lost';
    // A job refused on its own input (a bad_input or validation error: an import's invalid rows) fails for good at
    // once: another attempt reads the same input and is refused again. Anything else is retried with backoff.
    const final = r.error instanceof AppError && (r.error.kind === 'bad_input' || r.error.kind === 'validation');
    return o.store.fail(job.id, token, messageOf(r.error), final ? null : retryDelayMs(job.attempts, def.backoff ?? DEFAULT_BACKOFF));
  }

  /**
   * Successes are recorded in batches: those that come while a batch is being written go together in the next
   * one (one statement each), so a busy worker writes far fewer statements than it finishes jobs, and an idle
   * one writes at once. A success not yet written when the process dies is at-least-once's re-run.
   */
  const successes: { id: string; token: string; result: unknown; settle(ok: boolean | Error): void }[] = [];
  let writing = false;
  function succeedSoon(id: string, token: string, result: unknown): Promise<boolean> {
    return new Promise((resolve, reject) => {
      successes.push({ id, token, result, settle: (ok) => (ok instanceof Error ? reject(ok) : resolve(ok)) });
      if (!writing) setImmediate(writeSuccesses);
    });
  }
  async function writeSuccesses(): Promise<void> {
    if (writing) return;
    writing = true;
    try {
      while (successes.length > 0) {
        const batch = successes.splice(0, SUCCESS_BATCH);
        try {
          const recorded = new Set(await o.store.succeed(batch));
          for (const s of batch) s.settle(recorded.has(s.id));
        } catch (err) {
          for (const s of batch) s.settle(err instanceof Error ? err : new Error(String(err)));
        }
      }
    } finally {
      writing = false;
    }
  }

  /** Many jobs ending in one turn of the event loop make one claim for their slots, not one each. */
  let fillSoon = false;
  function refill(): void {
    if (fillSoon || stopping) return;
    fillSoon = true;
    setImmediate(() => { fillSoon = false; void fill(); });
  }

  async function heartbeat(): Promise<void> {
    const held = [...active.values()].filter((a) => !a.ctrl.signal.aborted).map((a) => ({ id: a.claim.job.id, token: a.claim.token }));
    try {
      for (const id of await o.store.extend(held, o.leaseMs)) active.get(id)?.ctrl.abort('lost');
    } catch (err) {
      warn(err, 'extending job leases failed; trying again');
    }
  }

  async function poll(): Promise<void> {
    try {
      await o.store.reclaimExpired();
    } catch (err) {
      warn(err, 'reclaiming expired jobs failed; trying again at the next poll');
    }
    await fill();
  }

  const every = (ms: number, fn: () => Promise<void>) => {
    const t = setInterval(() => void fn(), ms);
    t.unref();
    timers.push(t);
  };

  return {
    get running() { return active.size; },

    async start() {
      if (kinds.length === 0) return;
      unlisten = await o.store.listen({
        onReady: (kind) => { if (defs.has(kind)) void fill(); },
        onCancel: (id) => active.get(id)?.ctrl.abort('cancelled'),
      });
      every(Math.max(50, Math.floor(o.leaseMs / 3)), heartbeat);
      every(o.pollMs, poll);
      void poll();
    },

    async stop(timeoutMs) {
      stopping = true;
      for (const t of timers) clearInterval(t);
      // A claim under way has taken its jobs already: they are launched, and count as running, before the wait.
      await filling;
      const running = [...active.values()];
      const limit = sleep(timeoutMs, undefined, { ref: false });
      await Promise.race([Promise.all(running.map((a) => a.done)), limit]);
      const left = [...active.values()];
      await Promise.all(left.map(async (a) => {
        a.released = true;
        a.ctrl.abort('shutdown');
        await o.store.release(a.claim.job.id, a.claim.token).catch((err: unknown) =>
          warn(err, `giving back job ${a.claim.job.id} failed; it runs again after its lease expires`));
      }));
      await unlisten?.();
      return { finished: running.length - left.length, returned: left.length };
    },
  };
}
