/**
 * The store behind @fastify/rate-limit: fixed-window counters in Redis when REDIS_URL is set (shared by every
 * instance), with an explicit policy for when Redis fails:
 *
 * - general limits fail OPEN: the same window is counted in-process instead, so the service keeps serving with
 *   per-instance limits until Redis returns;
 * - login limits fail CLOSED: the check answers 503 `rateLimiterUnavailable`, because counting per instance would
 *   multiply a brute-forcer's budget by the number of instances.
 *
 * A Redis that is down is detected without waiting: the client has no offline queue (src/platform/redis.ts), so
 * a command fails at once when disconnected, and within REDIS_COMMAND_TIMEOUT_MS when the server hangs, until
 * the circuit breaker opens; from then on it fails at once as well.
 */
import type { Redis } from 'ioredis';
import type { RedisBreaker } from './redis.ts';
import { errors } from './errors.ts';

type Callback = (err: Error | null, result?: { current: number; ttl: number }) => void;

/** Extra per-limiter options passed through @fastify/rate-limit to `child`. */
export interface LimiterParams {
  /** Namespace of this limiter's counters. */
  name?: string;
  /** Answer 503 instead of counting in-process when Redis fails. */
  failClosed?: boolean;
}

const SCRIPT = `
local current = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if current == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}`;

/** In-process fixed windows, bounded in size (oldest windows dropped first). */
class LocalCounters {
  #windows = new Map<string, { count: number; resetAt: number }>();

  constructor(private readonly maxKeys = 100_000) {}

  incr(key: string, windowMs: number): { current: number; ttl: number } {
    const now = Date.now();
    let w = this.#windows.get(key);
    if (w === undefined || w.resetAt <= now) {
      this.#windows.delete(key);
      if (this.#windows.size >= this.maxKeys) this.#windows.delete(this.#windows.keys().next().value as string);
      w = { count: 0, resetAt: now + windowMs };
      this.#windows.set(key, w);
    }
    w.count += 1;
    return { current: w.count, ttl: w.resetAt - now };
  }
}

export interface StoreLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/**
 * A store class for @fastify/rate-limit's `store` option (it constructs the root store itself and derives one
 * `child` per limiter).
 */
export function failoverStore(redis: Redis | undefined, breaker: RedisBreaker | undefined, log: StoreLog) {
  type RedisWithScript = Redis & { spateRateLimit(key: string, windowMs: number): Promise<[number, number]> };
  if (redis && !('spateRateLimit' in redis)) redis.defineCommand('spateRateLimit', { numberOfKeys: 1, lua: SCRIPT });
  let degraded = false;
  const noteFailure = (err: Error) => {
    if (!degraded) log.warn({ reason: err.message }, 'rate-limit store unreachable: general limits counted in-process, login limits closed');
    degraded = true;
  };
  const noteRecovery = () => {
    if (degraded) log.info({}, 'rate-limit store reachable again');
    degraded = false;
  };

  return class FailoverStore {
    readonly #local = new LocalCounters();
    readonly #prefix: string;
    readonly #failClosed: boolean;

    constructor(params: LimiterParams = {}) {
      this.#prefix = `spate:rl:${params.name ?? 'default'}:`;
      this.#failClosed = params.failClosed === true;
    }

    incr(key: string, cb: Callback, timeWindow: number): void {
      const fallback = (err: Error) => {
        noteFailure(err);
        if (this.#failClosed) cb(errors.rateLimiterUnavailable(err));
        else cb(null, this.#local.incr(key, timeWindow));
      };
      if (!redis) {
        cb(null, this.#local.incr(key, timeWindow));
        return;
      }
      if (redis.status !== 'ready') {
        // Counted here at once. Once degraded, a general limit builds no Error for it: its stack trace was 6% of
        // the CPU of each request with Redis down, for a log line written only the first time.
        if (degraded && !this.#failClosed) cb(null, this.#local.incr(key, timeWindow));
        else fallback(new Error(`redis ${redis.status}`));
        return;
      }
      const command = () => (redis as RedisWithScript).spateRateLimit(this.#prefix + key, timeWindow);
      (breaker ? breaker.run(command) : command()).then((res) => {
        if (!res) return fallback(new Error('empty reply'));
        noteRecovery();
        cb(null, { current: Number(res[0]), ttl: Number(res[1]) });
      }, (err: Error) => fallback(err));
    }

    child(params: LimiterParams): FailoverStore {
      return new FailoverStore(params);
    }
  };
}
