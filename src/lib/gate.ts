/**
 * A counting gate in front of the connection pool: at most `size` holders at once, and a deadline on waiting.
 *
 * postgres.js queues queries without limit when every connection is busy, so a saturated pool would make
 * requests hang. The gate admits at most as many callers as there are connections; the rest wait in FIFO order
 * until a permit frees or their deadline passes, when they get `unavailable` (503) instead of a hang. It also
 * yields the pool figures (active, waiting) that the driver does not expose.
 */
import { errors } from '../errors.ts';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
}

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
   * allocates no promise; otherwise returns a promise that rejects with `unavailable` after `timeoutMs`.
   */
  acquire(timeoutMs: number): Promise<void> | undefined {
    if (this.#free > 0 && this.#waiting === 0) {
      this.#free--;
      return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined, settled: false };
      waiter.timer = setTimeout(() => {
        waiter.settled = true;
        this.#waiting--;
        reject(errors.unavailable(`no database connection free within ${timeoutMs} ms`));
      }, Math.max(0, timeoutMs));
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
