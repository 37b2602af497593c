/**
 * A counting gate in front of the connection pool: at most `size` holders at once, and a deadline on waiting.
 *
 * postgres.js queues queries without limit when every connection is busy, so a saturated pool would make
 * requests hang. The gate admits at most as many callers as there are connections; the rest wait in FIFO order
 * until a permit frees or their deadline passes, when they get `unavailable` (503) instead of a hang. Each
 * waiter's deadline is its own, counted from when it started waiting, and a waiter whose `signal` aborts (its
 * client went away) leaves the queue at once. It also yields the pool figures (active, waiting) that the driver
 * does not expose.
 */
import { errors } from '../errors.ts';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
  /** Removes the abort listener, if any. */
  unlisten: () => void;
}

const nothing = () => {};

/** The refusal of a caller that found no connection free within `ms`. */
export const noConnectionFree = (ms: number) => errors.unavailable(`no database connection free within ${ms} ms`);

export class Gate {
  #free: number;
  #queue: Waiter[] = [];
  #head = 0;
  #waiting = 0;

  constructor(readonly size: number) {
    this.#free = size;
  }

  get active(): number {
    return this.size - this.#free;
  }

  get waiting(): number {
    return this.#waiting;
  }

  /**
   * Takes a permit. Resolves synchronously (returns undefined) on the fast path so an uncontended caller
   * allocates no promise; otherwise returns a promise that rejects with `unavailable` after `timeoutMs`, or
   * with the signal's reason when `signal` aborts first (then the caller no longer wants the permit).
   */
  acquire(timeoutMs: number, signal?: AbortSignal): Promise<void> | undefined {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.#free > 0 && this.#waiting === 0) {
      this.#free--;
      return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined, settled: false, unlisten: nothing };
      const leave = (err: Error) => {
        if (waiter.settled) return;
        waiter.settled = true;
        this.#waiting--;
        clearTimeout(waiter.timer);
        waiter.unlisten();
        reject(err);
      };
      waiter.timer = setTimeout(
        () => leave(noConnectionFree(timeoutMs)),
        Math.max(0, timeoutMs),
      );
      if (signal) {
        const onAbort = () => leave(signal.reason as Error);
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
      this.#queue.push(waiter);
      this.#waiting++;
    });
  }

  /** Returns a permit, handing it straight to the oldest live waiter if there is one. */
  release(): void {
    while (this.#head < this.#queue.length) {
      const next = this.#queue[this.#head++]!;
      if (next.settled) continue;
      next.settled = true;
      this.#waiting--;
      clearTimeout(next.timer);
      next.unlisten();
      this.#compact();
      next.resolve();
      return;
    }
    this.#compact();
    this.#free++;
  }

  /** Rejects every waiter at once (pool closing). */
  drain(err: Error): void {
    for (let i = this.#head; i < this.#queue.length; i++) {
      const w = this.#queue[i]!;
      if (w.settled) continue;
      w.settled = true;
      clearTimeout(w.timer);
      w.unlisten();
      w.reject(err);
    }
    this.#queue = [];
    this.#head = 0;
    this.#waiting = 0;
  }

  #compact(): void {
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }
}
