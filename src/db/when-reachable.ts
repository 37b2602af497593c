/**
 * Start-up work that needs the database (migrations, schema creation), for a service that must start while its
 * database is down and recover by itself.
 *
 * The task runs once now. If it fails with a kind that means "not reachable yet", start-up goes on (the service
 * reports not ready and answers 503) and the task is retried in the background until it succeeds; any other
 * failure is a bug or a misconfiguration and is thrown at once. Adapters map their driver's errors onto the
 * catalogue where they arise, so the kind is read here, never worked out again.
 */
import { kindOf, type AppError, type ErrorKind } from '../platform/errors.ts';

export interface StartupTask {
  run: () => Promise<void>;
  /** Kinds that mean "not reachable yet". */
  retryOn: readonly ErrorKind[];
  retryMs: number;
  log: { warn(obj: object, msg: string): void };
  /** What is being waited for, for the log line. */
  what: string;
}

/**
 * A `.catch` for start-up work: rethrows a failure mapped by the adapter's `toAppError`, so the retry reads its
 * kind; one that is no database condition (kind `internal`: a table that is not ours) keeps its own message,
 * which says what to fix.
 */
export const rethrowMapped = (toAppError: (err: unknown) => AppError) => (err: unknown): never => {
  const mapped = toAppError(err);
  throw mapped.kind === 'internal' ? err : mapped;
};

/** Runs `task` as described above; the returned function stops the retries (call it on close). */
export async function runWhenReachable(task: StartupTask): Promise<() => void> {
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<void> => {
    try {
      await task.run();
    } catch (err) {
      const kind = kindOf(err);
      if (!task.retryOn.includes(kind)) throw err;
      task.log.warn({ kind, err: (err as Error).message }, `database unavailable; will ${task.what} when it returns`);
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
