/**
 * The uploads module's place in the app: the expiry sweep in every process that runs jobs, and the `/uploads`
 * routes where the API is served (not ROLE=worker). The per-upload lock is Redis's when REDIS_URL is set, so
 * every instance sharing UPLOADS_DIR (a shared volume) sees one lock per upload; else the in-process one.
 */
import type { FastifyPluginAsync } from 'fastify';
import type { Config } from '../../platform/config.ts';
import { EXPIRE_EVERY_MS, EXPIRE_SCHEDULE, expireJob, sweepExpired } from './expiry.ts';
import { uploadsDir } from './files.ts';
import { createRedisLocker } from './redis-locker.ts';
import uploadsRoutes from './routes.ts';

export interface UploadsPluginOptions {
  config: Config;
}

const uploads: FastifyPluginAsync<UploadsPluginOptions> = async (app, { config }) => {
  const dir = uploadsDir(config);
  const { expiryMs } = config.uploads;
  if (app.backend.jobs !== undefined) {
    app.jobs.define(expireJob(dir, expiryMs));
    app.jobs.schedule(EXPIRE_SCHEDULE);
  } else if (config.jobs.role !== 'api') {
    // No queue (Cassandra): every instance sweeps on an interval; overlapping sweeps delete nothing twice.
    const timer = setInterval(() => {
      sweepExpired(dir, expiryMs).catch((err: unknown) => app.log.warn({ reason: (err as Error).message }, 'upload expiry sweep failed'));
    }, EXPIRE_EVERY_MS);
    timer.unref();
    app.addHook('onClose', async () => clearInterval(timer));
  }
  if (config.jobs.role === 'worker') return;
  const locker = app.redis ? createRedisLocker(app.redis, app.redisBreaker) : undefined;
  await app.register(uploadsRoutes, { config: config.uploads, locker });
};

export default uploads;
