/**
 * The Redis client, configured so that nothing ever waits on a dead Redis: no offline queue (a command issued
 * while disconnected fails at once), no retries of a failed command, short connect and command timeouts, and
 * endless background reconnection with a capped backoff. Callers decide what a failure means (rate limits
 * fall back or fail closed; the auth caches are bypassed).
 */
import { Redis } from 'ioredis';

export interface RedisLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export const REDIS_COMMAND_TIMEOUT_MS = 250;

export function createRedis(url: string, log: RedisLog, name: string): Redis {
  const client = new Redis(url, {
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
    if (up) log.warn({ redis: name, err: { message: err.message } }, 'redis connection lost');
    up = false;
  });
  client.on('close', () => {
    if (up) log.warn({ redis: name }, 'redis connection closed');
    up = false;
  });
  return client;
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
