/**
 * The Redis client, configured so that nothing ever waits on a dead Redis: no offline queue (a command issued
 * while disconnected fails at once), no retries of a failed command, short connect and command timeouts, and
 * endless background reconnection with a capped backoff. Callers decide what a failure means (rate limits
 * fall back or fail closed; the auth caches are bypassed).
 *
 * A Redis that hangs (process stopped, network black hole) keeps its connection `ready`, so each command would
 * still wait out the command timeout. Commands therefore go through a circuit breaker (cockatiel): after
 * `failures` consecutive failures it opens and every command fails at once, without touching Redis; after
 * `halfOpenMs` one command is let through to try, and its success closes the breaker again.
 */
import { ConsecutiveBreaker, circuitBreaker, handleAll, type CircuitBreakerPolicy } from 'cockatiel';
import { Redis } from 'ioredis';

export interface RedisLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export const REDIS_COMMAND_TIMEOUT_MS = 250;

/** Pause before subscribing again after a SUBSCRIBE that failed (timed out while the process was busy starting). */
const RESUBSCRIBE_MS = 200;

/**
 * Subscribes `subscriber` to `channel` each time it is (re)connected, retrying a SUBSCRIBE that fails while the
 * connection is up: a subscription given up on would leave its bus unusable until the next reconnection.
 */
export function keepSubscribed(subscriber: Redis, channel: string, log: RedisLog, onSubscribed: () => void): void {
  const attempt = () => {
    if (subscriber.status !== 'ready') return;
    subscriber.subscribe(channel).then(onSubscribed, (err: Error) => {
      log.warn({ reason: err.message, channel }, 'redis subscribe failed; retrying');
      setTimeout(attempt, RESUBSCRIBE_MS).unref();
    });
  };
  subscriber.on('ready', attempt);
}

export interface RedisClientOptions {
  /**
   * Send the commands issued in one tick of the event loop as one pipeline (ioredis auto-pipelining): under load
   * many requests' commands then share a write and a read on each side instead of one each. For command
   * clients; a subscriber's connection is in subscribe mode, which pipelining does not serve.
   */
  autoPipelining?: boolean;
}

export function createRedis(url: string, log: RedisLog, name: string, opts: RedisClientOptions = {}): Redis {
  const client = new Redis(url, {
    enableAutoPipelining: opts.autoPipelining ?? false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 10), 2000),
    connectionName: `spate-${name}`,
    lazyConnect: false,
  });
  // Log state changes once, not every failed reconnection attempt; never the URL (it may carry a password).
  let up = false;
  client.on('ready', () => {
    up = true;
    log.info({ redis: name }, 'redis connected');
  });
  client.on('error', (err: Error) => {
    if (up) log.warn({ redis: name, reason: err.message }, 'redis connection lost');
    up = false;
  });
  client.on('close', () => {
    if (up) log.warn({ redis: name }, 'redis connection closed');
    up = false;
  });
  return client;
}

/** Runs Redis commands, or fails them at once while Redis is known to be failing. */
export interface RedisBreaker {
  run<T>(command: () => Promise<T>): Promise<T>;
  /** True while commands are refused without being tried (open, or half-open with its trial in flight). */
  readonly open: boolean;
}

export interface BreakerOptions {
  failures: number;
  halfOpenMs: number;
}

export function createRedisBreaker(opts: BreakerOptions, log: RedisLog, name: string): RedisBreaker {
  const policy: CircuitBreakerPolicy = circuitBreaker(handleAll, {
    halfOpenAfter: opts.halfOpenMs,
    breaker: new ConsecutiveBreaker(opts.failures),
  });
  let open = false;
  policy.onBreak(() => {
    open = true;
    log.warn({ redis: name, retryInMs: opts.halfOpenMs }, 'redis failing: circuit breaker open, commands fail fast');
  });
  policy.onReset(() => {
    open = false;
    log.info({ redis: name }, 'redis answering again: circuit breaker closed');
  });
  return {
    run: (command) => policy.execute(command),
    get open() {
      return open;
    },
  };
}

/** Closes a client without waiting on a dead server. */
export async function closeRedis(client: Redis): Promise<void> {
  try {
    if (client.status === 'ready') await client.quit();
    else client.disconnect();
  } catch {
    client.disconnect();
  }
}
