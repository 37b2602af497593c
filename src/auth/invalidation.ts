/**
 * Cache invalidation across instances over Redis pub/sub.
 *
 * Every instance subscribes to one channel. A revocation (API key revoked, account disabled, deleted or
 * re-roled, session logged out or revoked on refresh-token reuse) is evicted locally at once, then published;
 * every other instance evicts on receipt. Pub/sub delivers only to connected subscribers, so while this
 * instance's subscription is down the bus reports `usable: false` and the caches are bypassed (every check goes
 * to the database), and when it comes back the caches are cleared, since messages may have been missed.
 */
import type { Redis } from 'ioredis';
import type { Invalidation, InvalidationBus } from './cache.ts';
import { closeRedis, createRedis, type RedisLog } from './redis.ts';

export const INVALIDATION_CHANNEL = 'spate:auth:invalidate';

export function createRedisBus(url: string, publisher: Redis, log: RedisLog): InvalidationBus {
  const subscriber = createRedis(url, log, 'auth-invalidation');
  const listeners: ((msg: Invalidation) => void)[] = [];
  let subscribed = false;
  const emit = (msg: Invalidation) => { for (const l of listeners) l(msg); };

  subscriber.on('ready', () => {
    subscriber.subscribe(INVALIDATION_CHANNEL).then(
      () => {
        // Anything published while we were away is lost: start from empty caches.
        emit({ kind: 'all' });
        subscribed = true;
      },
      (err: Error) => log.warn({ err: { message: err.message } }, 'redis subscribe failed'),
    );
  });
  subscriber.on('close', () => { subscribed = false; });
  subscriber.on('end', () => { subscribed = false; });
  subscriber.on('message', (_channel: string, raw: string) => {
    try {
      emit(JSON.parse(raw) as Invalidation);
    } catch {
      emit({ kind: 'all' });
    }
  });

  return {
    get usable() {
      return subscribed && subscriber.status === 'ready';
    },
    subscribe(onMessage) {
      listeners.push(onMessage);
    },
    async publish(msg) {
      try {
        await publisher.publish(INVALIDATION_CHANNEL, JSON.stringify(msg));
      } catch (err) {
        // Other instances whose own subscription is up will serve from cache until the TTL; say so.
        log.warn({ err: { message: (err as Error).message }, invalidation: msg.kind }, 'could not publish an auth invalidation');
      }
    },
    close: () => closeRedis(subscriber),
  };
}
