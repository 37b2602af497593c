/**
 * The outbox's wake-up across instances on Cassandra (docs/webhooks.md, "Cassandra"), which PostgreSQL has in
 * LISTEN/NOTIFY (src/db/postgres/outbox.ts): a write wakes this process's relay at once and, over Redis pub/sub
 * (the Redis a Cassandra deployment has for its job queue), every other instance's, so the relay that leases the
 * user's shard takes the event within a round trip wherever it runs, rather than at its next OUTBOX_POLL_MS.
 *
 * Publishes are coalesced as the NOTIFYs are: one in flight, and one more after it when writes came meanwhile. A
 * wake-up lost (Redis down, a subscription reconnecting) costs latency only: the poll still finds the event, and
 * every (re)subscription wakes the relays once, for what they may have missed.
 */
import { oneInFlight } from '../../platform/lib/coalesce.ts';
import { closeRedis, createRedis, keepSubscribed, type RedisLog } from '../../platform/redis.ts';
import { eventsSignal, type EventsSignal } from './user-events.ts';

const CHANNEL = 'spate:outbox';

export interface SharedEventsSignal extends EventsSignal {
  close(): Promise<void>;
}

export function redisEventsSignal(url: string, log: RedisLog): SharedEventsSignal {
  const local = eventsSignal();
  const publisher = createRedis(url, log, 'outbox-wake');
  const subscriber = createRedis(url, log, CHANNEL);
  keepSubscribed(subscriber, CHANNEL, log, () => local.notify());
  subscriber.on('message', () => local.notify());

  // The relays' poll covers a wake-up that could not be sent.
  const publish = oneInFlight(() => publisher.publish(CHANNEL, '').catch(() => {}));
  return {
    notify() {
      local.notify();
      publish();
    },
    listen: (fn) => local.listen(fn),
    async close() {
      await Promise.all([closeRedis(publisher), closeRedis(subscriber)]);
    },
  };
}
