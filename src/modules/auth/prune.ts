/**
 * The background job that keeps the refresh-token tables from growing without bound: every login leaves a
 * session and one token per refresh, and nothing else ever deletes them once they expire.
 *
 * With a job queue (PostgreSQL) it is a cron job (`pruneJob`, `PRUNE_SCHEDULE`): one instance runs each hourly
 * run, and a failed run is retried with backoff. Without one (Cassandra, until its queue exists) every instance
 * runs it on an interval (`startPruning`); runs that overlap are harmless (each deletes what is still there), and
 * a run that fails (database away) is logged and tried again at the next tick.
 */
import type { AccountsStore } from '../../db/accounts-store.ts';
import type { Schedule } from '../../platform/jobs/cron.ts';
import type { JobDefinition } from '../../platform/jobs/runner.ts';

/** The two log calls the job makes (a pino logger fits). */
export interface PruneLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface PruneOptions {
  accounts: AccountsStore;
  log: PruneLog;
  /** Between runs; the first run comes one interval after start, away from the start-up work. */
  everyMs: number;
  /** Most rows of each kind deleted per statement; a run repeats until less than a batch went. */
  batch: number;
}

export interface Pruner {
  /** One run now (also what each tick does); resolves with what it deleted. */
  run(): Promise<{ tokens: number; sessions: number }>;
  stop(): void;
}

/** Deletes what expired, a batch per statement, until less than a batch went. */
async function prune(accounts: AccountsStore, batch: number): Promise<{ tokens: number; sessions: number }> {
  const total = { tokens: 0, sessions: 0 };
  for (;;) {
    const r = await accounts.pruneExpired(new Date(), batch);
    total.tokens += r.tokens;
    total.sessions += r.sessions;
    if (r.tokens < batch && r.sessions < batch) return total;
  }
}

export const PRUNE_KIND = 'auth.prune';

/** Hourly, at a minute away from the top of the hour when other cron work tends to pile up. */
export const PRUNE_SCHEDULE: Schedule = { name: 'auth.prune', cron: '17 * * * *', job: { kind: PRUNE_KIND, maxAttempts: 3 } };

/** The pruning as a job kind; its result is what it deleted. `accounts` is read when a run starts. */
export function pruneJob(accounts: () => AccountsStore, batch: number): JobDefinition {
  return { kind: PRUNE_KIND, run: () => prune(accounts(), batch) };
}

export function startPruning(o: PruneOptions): Pruner {
  let running: Promise<{ tokens: number; sessions: number }> | undefined;

  function run(): Promise<{ tokens: number; sessions: number }> {
    running ??= prune(o.accounts, o.batch).finally(() => { running = undefined; });
    return running;
  }

  const timer = setInterval(() => {
    run().then(
      (r) => { if (r.tokens + r.sessions > 0) o.log.info(r, 'pruned expired refresh tokens and sessions'); },
      (err: unknown) => o.log.warn({ reason: (err as Error).message }, 'pruning expired refresh tokens failed; next run in the next interval'),
    );
  }, o.everyMs);
  // Never the reason the process stays up.
  timer.unref();
  return { run, stop: () => clearInterval(timer) };
}
