/**
 * Logging of expected refusals: the 503s of an outage, a drain or overload, and the 504s of a deadline. They
 * are the service working as designed, so each is one line at warn with its code and reason (no stack), at
 * most `perWindow` of them per code per window, and one summary line per window counts the ones left out.
 * A database outage at 200 requests a second thus writes a handful of lines a second, not 200 stack traces.
 */
import type { AppError } from '../errors.ts';

/** Kinds that mean "not now" rather than "something is broken": a dependency unavailable, a deadline passed. */
export const isExpectedRefusal = (err: AppError): boolean => err.kind === 'unavailable' || err.kind === 'timeout';

interface Log {
  warn(obj: object, msg: string): void;
}

export class RefusalLog {
  #counts = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Log,
    private readonly perWindow = 5,
    private readonly windowMs = 1000,
  ) {}

  /** Logs the refusal on `requestLog` unless this window already holds `perWindow` of its code. */
  note(requestLog: Log, err: AppError, status: number): void {
    const n = (this.#counts.get(err.code) ?? 0) + 1;
    this.#counts.set(err.code, n);
    if (this.#timer === undefined) this.#timer = setTimeout(() => this.flush(), this.windowMs).unref();
    if (n <= this.perWindow) requestLog.warn({ code: err.code, status }, `request refused: ${err.message}`);
  }

  /** Writes the current window's summary now: at close, so a drain that ends the process within it loses no count. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const suppressed: Record<string, number> = {};
    for (const [code, n] of this.#counts) if (n > this.perWindow) suppressed[code] = n - this.perWindow;
    this.#counts.clear();
    if (Object.keys(suppressed).length > 0) {
      this.log.warn({ suppressed, windowMs: this.windowMs }, 'more requests refused than logged in the last window');
    }
  }
}
