/**
 * The event stream of one job (`GET /jobs/{id}/events`): a snapshot when it starts, one per change, and the end
 * after the terminal state. Changes arrive through the store's notifications (one listener per app, shared by
 * every stream); a slow re-read also runs, so a notification lost while the listener reconnected delays an event
 * by at most `RECHECK_MS`, never loses the end.
 */
import { isTerminal, type JobsStore } from '../../platform/jobs/store.ts';
import { presentJob } from './job-schemas.ts';

const RECHECK_MS = 1000;
/** A comment line now and then keeps proxies from closing a quiet stream. */
const KEEPALIVE_MS = 15_000;

export interface JobWatch {
  /** Calls `fn` whenever job `id` changes; returns the unsubscribe. */
  subscribe(id: string, fn: () => void): Promise<() => void>;
  close(): Promise<void>;
}

/** One notification listener, opened with the first subscriber, fanned out by job id. */
export function createJobWatch(store: () => JobsStore): JobWatch {
  const subscribers = new Map<string, Set<() => void>>();
  let listening: Promise<() => Promise<void>> | undefined;
  return {
    async subscribe(id, fn) {
      listening ??= store().listen({ onChange: (changed) => subscribers.get(changed)?.forEach((f) => f()) });
      await listening.catch(() => { listening = undefined; });
      let set = subscribers.get(id);
      if (!set) subscribers.set(id, (set = new Set()));
      set.add(fn);
      return () => {
        set.delete(fn);
        if (set.size === 0) subscribers.delete(id);
      };
    },
    async close() {
      const stop = await listening?.catch(() => undefined);
      await stop?.();
    },
  };
}

/** The SSE lines of job `id` until it ends or `signal` aborts (the client left). */
export async function* jobEvents(store: JobsStore, watch: JobWatch, id: string, signal: AbortSignal): AsyncGenerator<string> {
  let dirty = true;
  let wake = () => {};
  const unsubscribe = await watch.subscribe(id, () => { dirty = true; wake(); });
  const onAbort = () => wake();
  signal.addEventListener('abort', onAbort);
  try {
    let last = '';
    let quietSince = Date.now();
    while (!signal.aborted) {
      if (dirty) {
        dirty = false;
        const job = await store.get(id);
        if (!job) return;
        const data = JSON.stringify(presentJob(job));
        if (data !== last) {
          last = data;
          quietSince = Date.now();
          yield `event: job\ndata: ${data}\n\n`;
        }
        if (isTerminal(job.state)) return;
      }
      if (Date.now() - quietSince >= KEEPALIVE_MS) {
        quietSince = Date.now();
        yield ': keep-alive\n\n';
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { dirty = true; resolve(); }, RECHECK_MS);
        wake = () => { clearTimeout(timer); resolve(); };
        if (dirty || signal.aborted) wake();
      });
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    unsubscribe();
  }
}
