/**
 * The delay before a failed job's next attempt: exponential in the attempt number, capped, with jitter so that
 * jobs that failed together (a dependency went away) do not all come back at the same instant.
 */

export interface BackoffPolicy {
  /** The delay after the first failed attempt, before jitter. */
  baseMs: number;
  /** No delay exceeds this. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, maxMs: 10 * 60_000 };

/**
 * "Equal jitter": half of the exponential step fixed, half random, so the delay grows with every attempt
 * (`attempt` counts from 1) and two failures at once never retry in lock-step. `random` is for tests.
 */
export function retryDelayMs(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random = Math.random): number {
  const step = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  return step / 2 + random() * (step / 2);
}
