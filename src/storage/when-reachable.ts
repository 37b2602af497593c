/**
 * Start-up work that needs the database (migrations, schema creation), for a service that must start while its
 * database is down and recover by itself.
 *
 * The task runs once now. If it fails because the database cannot be reached, start-up goes on (the service
 * reports not ready and answers 503) and the task is retried in the background until it succeeds; any other
 * failure is a bug or a misconfiguration and is thrown at once.
 */
import type { AppError } from '../errors.ts';

export interface StartupTask {
  run: () => Promise<void>;
  /** Maps a failure onto the catalogue, to tell "unreachable" (retry) from anything else (throw). */
  classify: (err: unknown) => AppError;
  /** Statuses that mean "not reachable yet". */
  retryOn: readonly number[];
  retryMs: number;
  log: { warn(obj: object, msg: string): void };
  /** What is being waited for, for the log line. */
  what: string;
}

/** Runs `task` as described above; the returned function stops the retries (call it on close). */
export async function runWhenReachable(task: StartupTask): Promise<() => void> {
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<void> => {
    try {
      await task.run();
    } catch (err) {
      const status = task.classify(err).statusCode;
      if (!task.retryOn.includes(status)) throw err;
      task.log.warn({ status, err: (err as Error).message }, `database unavailable; will ${task.what} when it returns`);
      if (!stopped) {
        retry = setTimeout(() => void attempt().catch((e) => task.log.warn({ err: e }, `${task.what} failed`)), task.retryMs);
      }
    }
  };
  await attempt();
  return () => {
    stopped = true;
    clearTimeout(retry);
  };
}
