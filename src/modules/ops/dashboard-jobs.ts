/**
 * The dashboard's read of the job queue: jobs queued and running (the store's `counts()`, across every instance
 * at once) and the most recent failures, within a deadline.
 *
 * The read never fails a frame: a queue that errs or does not answer within READ_MS makes the panel say
 * `unavailable`, and the stream goes on. One read at a time goes to the queue, shared by every open dashboard: a
 * hung queue holds one connection, not one more each second per stream; callers arriving while it hangs wait
 * on it, each within its own deadline.
 */
import { sharedWithDeadline } from '../../platform/lib/deadline.ts';
import type { JobsStore } from '../../platform/jobs/store.ts';

/** How long a frame waits for the queue: half the frame interval, so a slow queue never delays the next frame. */
export const READ_MS = 500;
/** Failed jobs shown: the store's newest by the time they failed, whenever they were created. */
export const RECENT_FAILURES = 5;
/** An error is shown up to this many characters (handlers' errors may carry a whole response body). */
const ERROR_CHARS = 200;

export interface RecentFailure {
  id: string;
  kind: string;
  error: string;
  finished_at: string | null;
}

/** What the queue said, or that it did not say it in time. */
export type QueueRead =
  | { unavailable: false; queued: number; running: number; recent_failures: RecentFailure[] }
  | { unavailable: true };

const UNAVAILABLE: QueueRead = { unavailable: true };

const clip = (s: string) => (s.length > ERROR_CHARS ? `${s.slice(0, ERROR_CHARS - 1)}…` : s);

async function load(store: JobsStore): Promise<QueueRead> {
  const [counts, failed] = await Promise.all([
    store.counts(),
    store.recentFailures(RECENT_FAILURES, { deadline: performance.now() + READ_MS }),
  ]);
  const total = (state: string) => counts.filter((c) => c.state === state).reduce((n, c) => n + c.count, 0);
  const recent = failed.map((j) => ({ id: j.id, kind: j.kind, error: clip(j.error ?? ''), finished_at: j.finishedAt }));
  return { unavailable: false, queued: total('queued'), running: total('running'), recent_failures: recent };
}

export interface QueueReaderOptions {
  log: { warn(obj: object, msg: string): void; info(msg: string): void };
}

/** A reader of `store` for the dashboard: resolves within READ_MS, never rejects. */
export function queueReader(store: JobsStore, { log }: QueueReaderOptions): () => Promise<QueueRead> {
  const read = sharedWithDeadline(() => load(store), READ_MS);
  let away = false;
  return async () => {
    try {
      const figures = await read();
      if (away) log.info('dashboard: the job queue answers again');
      away = false;
      return figures;
    } catch (err) {
      // Once per outage: the panel says it every second.
      if (!away) log.warn({ reason: (err as Error).message }, 'dashboard: the job queue did not answer; its panel shows it unavailable');
      away = true;
      return UNAVAILABLE;
    }
  };
}
