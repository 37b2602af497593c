/**
 * Cache invalidation across instances over Redis pub/sub, for any feature with a cache (auth, the users cache).
 *
 * Every instance subscribes to the feature's channel. For auth, a revocation (API key revoked, account disabled, deleted or
 * re-roled, session logged out or revoked on refresh-token reuse) is evicted locally at once, then published;
 * every other instance evicts on receipt. Pub/sub delivers only to connected subscribers, so while this
 * instance's subscription is down the bus reports `usable: false` and the caches are bypassed (every check goes
 * to the database), and when it comes back the caches are cleared, since messages may have been missed.
 *
 * A hung Redis keeps the subscription's connection open and silent, which looks like "no revocations". So the
 * subscription proves it is alive: a PING every `heartbeatMs` on the subscriber connection, whose PONG comes
 * back on the same ordered stream as the messages, so a PONG means every invalidation Redis had accepted before
 * that PING has been received. Without a PONG for two heartbeats the bus is not usable (caches bypassed), and
 * when PONGs return the caches are cleared first, since a publish made meanwhile may have been lost.
 */
import type { Redis } from 'ioredis';
import { closeRedis, createRedis, keepSubscribed, type RedisBreaker, type RedisLog } from './redis.ts';

/**
 * How invalidations travel between instances; `M` is the message a feature publishes (auth: which account,
 * session or key changed). `usable` is false while changes made elsewhere might be missed (Redis subscription
 * down or silent); callers then skip their caches.
 */
export interface InvalidationBus<M = unknown> {
  /**
   * Never throws: false when Redis did not take the message (others whose subscription is up keep their entries
   * until their TTL), so a caller can remember what it could not tell and tell it again later.
   */
  publish(msg: M): Promise<boolean>;
  subscribe(onMessage: (msg: M) => void): void;
  readonly usable: boolean;
  close(): Promise<void>;
}

/** A single instance (no Redis): nothing to tell anyone, and the local caches are always consistent. */
export const localBus: InvalidationBus<never> = {
  publish: async () => true,
  subscribe: () => {},
  usable: true,
  close: async () => {},
};

export interface BusOptions<M> {
  /** The Redis channel of this feature's messages. */
  channel: string;
  /** The message that means "anything may have changed": delivered for one that cannot be read. */
  everything: M;
  /** How often the subscription proves it is alive. */
  heartbeatMs: number;
  /** The commands client's breaker: a publish to a failing Redis fails at once. */
  breaker?: RedisBreaker;
}

export function createRedisBus<M>(url: string, publisher: Redis, log: RedisLog, opts: BusOptions<M>): InvalidationBus<M> {
  const subscriber = createRedis(url, log, opts.channel);
  const listeners: ((msg: M) => void)[] = [];
  let subscribed = false;
  let aliveAt = -Infinity;
  const emit = (msg: M) => { for (const l of listeners) l(msg); };
  const fresh = () => performance.now() - aliveAt < 2 * opts.heartbeatMs;

  const heartbeat = setInterval(() => {
    if (!subscribed || subscriber.status !== 'ready') return;
    subscriber.ping().then(() => {
      if (!fresh()) {
        log.info({ channel: opts.channel }, 'invalidation subscription answering again: caches cleared');
        emit(opts.everything);
      }
      aliveAt = performance.now();
    }, () => {});
  }, opts.heartbeatMs);
  heartbeat.unref();

  keepSubscribed(subscriber, opts.channel, log, () => {
    // Anything published while we were away is lost: start from empty caches.
    emit(opts.everything);
    subscribed = true;
    aliveAt = performance.now();
  });
  subscriber.on('close', () => { subscribed = false; });
  subscriber.on('end', () => { subscribed = false; });
  subscriber.on('message', (_channel: string, raw: string) => {
    try {
      emit(JSON.parse(raw) as M);
    } catch {
      emit(opts.everything);
    }
  });

  return {
    get usable() {
      return subscribed && subscriber.status === 'ready' && fresh();
    },
    subscribe(onMessage) {
      listeners.push(onMessage);
    },
    async publish(msg) {
      try {
        const send = () => publisher.publish(opts.channel, JSON.stringify(msg));
        await (opts.breaker ? opts.breaker.run(send) : send());
        return true;
      } catch (err) {
        // Other instances whose own subscription is up will serve from cache until the TTL; say so.
        log.warn({ reason: (err as Error).message, channel: opts.channel }, 'could not publish an invalidation');
        return false;
      }
    },
    close: () => {
      clearInterval(heartbeat);
      return closeRedis(subscriber);
    },
  };
}
