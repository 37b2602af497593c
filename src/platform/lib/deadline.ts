/**
 * The deadline race: a promise that settles with the work, or rejects with the catalogue's `timeout` once its
 * time is up. Every database call and probe is bounded by it, so a server that stops answering cannot hold a
 * request past its deadline.
 */
import { errors } from '../errors.ts';

export interface RaceOptions {
  /** Called when the time runs out, before the rejection (cancel the work on the server). */
  onExpire?: () => void;
  /** Maps the work's own failure (a driver error onto the catalogue). */
  mapError?: (err: unknown) => unknown;
  /** Ends the wait early, as the deadline would (the client went away): `onExpire`, then `timeout`. */
  signal?: AbortSignal;
}

/**
 * Settles with `work`, or rejects with `timeout` once `ms` pass. The work itself goes on until it settles: the
 * caller still owns whatever it holds (a connection) until then.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, { onExpire, mapError, signal }: RaceOptions = {}): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const expire = () => {
      onExpire?.();
      reject(errors.timeout());
    };
    const timer = setTimeout(expire, Math.max(0, ms));
    signal?.addEventListener('abort', expire, { once: true });
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', expire);
    };
    work.then(
      (v) => { done(); resolve(v); },
      (err) => { done(); reject(mapError ? mapError(err) : err); },
    );
  });
}

/**
 * `load` run one at a time, each caller waiting at most `ms` for it: callers that come while a load runs share
 * it. A source that hangs (a locked table, a silent Redis) then holds one call, not one more for every caller,
 * and no caller waits past its deadline (it rejects with `timeout`).
 */
export function sharedWithDeadline<T>(load: () => Promise<T>, ms: number): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () => {
    running ??= load().finally(() => { running = undefined; });
    return withDeadline(running, ms);
  };
}
