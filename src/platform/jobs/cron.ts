/**
 * Recurring jobs on a cron schedule (UTC). Every instance runs the scheduler; for each due time exactly one of
 * them enqueues the run, because moving a schedule on is a conditional UPDATE that only one transaction wins
 * (`JobsStore.fireSchedule`). A run is enqueued with the schedule's singleton key, so it is skipped while the
 * previous run is still queued or running: runs of one schedule never overlap. Runs missed while every instance
 * was down are not caught up one by one: the schedule fires once when the service returns.
 */
import { Cron } from 'croner';
import type { JobsStore, NewJob } from './store.ts';

export interface Schedule {
  /** Stable name; the schedule's row and singleton key. */
  name: string;
  /** Five or six fields, evaluated in UTC. */
  cron: string;
  job: Pick<NewJob, 'kind' | 'payload' | 'maxAttempts'>;
}

export interface SchedulerOptions {
  store: JobsStore;
  schedules: readonly Schedule[];
  /** How often each instance checks for due schedules. */
  tickMs: number;
  log: { warn(obj: object, msg: string): void };
}

export interface Scheduler {
  /** One check now (also what each tick does); resolves with the names this instance fired. */
  tick(): Promise<string[]>;
  stop(): void;
}

/** `cron` read once (UTC); throws on an expression croner cannot read. */
const parse = (cron: string): Cron => new Cron(cron, { timezone: 'UTC', paused: true });

/** The next time after `from` on a parsed schedule. */
function nextOf(parsed: Cron, from: Date): Date {
  const next = parsed.nextRun(from);
  if (!next) throw new Error(`cron schedule "${parsed.getPattern()}" has no next run`);
  return next;
}

export async function startScheduler(o: SchedulerOptions): Promise<Scheduler> {
  // Parsed once, before touching the database: a bad expression fails the start, not a tick, and a tick (every
  // second) does not parse again (it was 5.6% of the main thread's samples while uploads ran, docs/uploads.md).
  const parsed = o.schedules.map((s) => ({ ...s, cron: parse(s.cron) }));
  for (const s of parsed) nextOf(s.cron, new Date());
  for (const s of parsed) await o.store.ensureSchedule(s.name, nextOf(s.cron, new Date()));
  let ticking: Promise<string[]> | undefined;

  async function check(): Promise<string[]> {
    const fired: string[] = [];
    for (const s of parsed) {
      const job: NewJob = { ...s.job, singletonKey: `cron:${s.name}` };
      if (await o.store.fireSchedule(s.name, nextOf(s.cron, new Date()), job)) fired.push(s.name);
    }
    return fired;
  }

  const tick = () => (ticking ??= check().finally(() => { ticking = undefined; }));
  const timer = setInterval(() => {
    tick().catch((err: unknown) => o.log.warn({ reason: (err as Error).message }, 'checking cron schedules failed; next check at the next tick'));
  }, o.tickMs);
  timer.unref();
  return { tick, stop: () => clearInterval(timer) };
}
