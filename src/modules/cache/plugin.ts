/**
 * The cache plugin: wraps the backend's users store once in the users cache (src/modules/cache/cached-users.ts)
 * as configured by CACHE_MODE, and decorates the instance with it as `usersCache`. With CACHE_MODE=off the
 * store is the backend's own. The app assembly hands `usersCache.users` to the users routes.
 */
import fp from 'fastify-plugin';
import type { Config } from '../../platform/config.ts';
import { closeRedis, createRedis } from '../../platform/redis.ts';
import type { UsersStore } from '../../db/users-store.ts';
import { createRedisBus, localBus, type InvalidationBus } from '../../platform/bus.ts';
import { CACHE_CHANNEL, EVERYTHING, type CacheMessage } from './messages.ts';
import { createCachedUsers, type CachedUsersOptions, type CacheStatus, type UsersCache } from './cached-users.ts';
import { registerCacheMetrics } from './metrics.ts';
import { RedisLayer } from './redis-layer.ts';

/** What the routes and operations see: the store to read through, and the cache when there is one. */
export interface UsersCacheHandle {
  readonly users: UsersStore;
  readonly cache: UsersCache | undefined;
  status(): CacheStatus | { mode: 'off'; layers: []; bus: { kind: 'none'; connected: false } };
}

declare module 'fastify' {
  interface FastifyInstance {
    usersCache: UsersCacheHandle;
  }
}

export interface CachePluginOptions {
  config: Config;
  /** Tests only (see `CachedUsersOptions.afterLoad`). */
  afterLoad?: CachedUsersOptions['afterLoad'];
}

/** Key prefix of the shared layer in Redis. */
export const REDIS_PREFIX = 'spate:cache:';

export default fp<CachePluginOptions>(
  async (app, { config, afterLoad }) => {
    const { mode, ttlMs, maxEntries, maxBytes } = config.cache;
    // The series read the cache when scraped; it is made below, once the observer of delays exists.
    const made: { cache?: UsersCache } = {};
    const onInvalidationDelay = registerCacheMetrics(app.metrics.registry, () => made.cache);
    if (mode === 'off') {
      const users = app.backend.users;
      app.decorate('usersCache', {
        users, cache: undefined, status: () => ({ mode: 'off' as const, layers: [] as [], bus: { kind: 'none' as const, connected: false as const } }),
      });
      return;
    }
    let shared: RedisLayer | undefined;
    let bus: InvalidationBus<CacheMessage> = localBus;
    if (mode === 'redis' && config.redisUrl) {
      const redis = createRedis(config.redisUrl, app.log, 'cache', { autoPipelining: true });
      app.addHook('onClose', () => closeRedis(redis));
      shared = new RedisLayer(redis, REDIS_PREFIX);
      // The subscription proves it is alive as auth's does: a silent (hung) Redis makes the bus unusable, so the
      // cache is bypassed until it answers again and everything local is dropped.
      bus = createRedisBus(config.redisUrl, redis, app.log, {
        channel: CACHE_CHANNEL, everything: EVERYTHING, heartbeatMs: config.resilience.busHeartbeatMs,
      });
      app.addHook('onClose', () => bus.close());
    }
    const cache = createCachedUsers(app.backend.users, {
      mode, ttlMs, maxEntries, maxBytes, bus, shared, afterLoad, onInvalidationDelay, log: app.log,
    });
    made.cache = cache;
    app.addHook('onClose', async () => cache.close());
    app.decorate('usersCache', { users: cache.users, cache, status: () => cache.status() });
  },
  { name: 'users-cache', dependencies: ['backend', 'metrics'] },
);
