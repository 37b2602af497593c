/**
 * The background job that keeps the refresh-token tables from growing without bound: every login leaves a
 * session and one token per refresh, and nothing else ever deletes them once they expire.
 *
 * Every instance runs it; runs that overlap are harmless (each deletes what is still there). A run that fails
 * (database away) is logged and tried again at the next tick.
 */
import type { AccountsRepository } from './accounts-repository.ts';

/** The two log calls the job makes (a pino logger fits). */
export interface PruneLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface PruneOptions {
  accounts: AccountsRepository;
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

export function startPruning(o: PruneOptions): Pruner {
  let running: Promise<{ tokens: number; sessions: number }> | undefined;

  async function prune(): Promise<{ tokens: number; sessions: number }> {
    const total = { tokens: 0, sessions: 0 };
    for (;;) {
      const r = await o.accounts.pruneExpired(new Date(), o.batch);
      total.tokens += r.tokens;
      total.sessions += r.sessions;
      if (r.tokens < o.batch && r.sessions < o.batch) return total;
    }
  }

  function run(): Promise<{ tokens: number; sessions: number }> {
    running ??= prune().finally(() => { running = undefined; });
    return running;
  }

  const timer = setInterval(() => {
    run().then(
      (r) => { if (r.tokens + r.sessions > 0) o.log.info(r, 'pruned expired refresh tokens and sessions'); },
      (err: unknown) => o.log.warn({ err: { message: (err as Error).message } }, 'pruning expired refresh tokens failed; next run in the next interval'),
    );
  }, o.everyMs);
  // Never the reason the process stays up.
  timer.unref();
  return { run, stop: () => clearInterval(timer) };
}
