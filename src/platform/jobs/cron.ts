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

/** The next time after `from` on `cron`'s schedule; throws on an expression croner cannot read. */
export function nextRun(cron: string, from: Date): Date {
  const next = new Cron(cron, { timezone: 'UTC', paused: true }).nextRun(from);
  if (!next) throw new Error(`cron schedule "${cron}" has no next run`);
  return next;
}

export async function startScheduler(o: SchedulerOptions): Promise<Scheduler> {
  // Parse every expression before touching the database: a bad one fails the start, not a tick.
  for (const s of o.schedules) nextRun(s.cron, new Date());
  for (const s of o.schedules) await o.store.ensureSchedule(s.name, nextRun(s.cron, new Date()));
  let ticking: Promise<string[]> | undefined;

  async function check(): Promise<string[]> {
    const fired: string[] = [];
    for (const s of o.schedules) {
      const job: NewJob = { ...s.job, singletonKey: `cron:${s.name}` };
      if (await o.store.fireSchedule(s.name, nextRun(s.cron, new Date()), job)) fired.push(s.name);
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
