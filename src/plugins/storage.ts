/**
 * The storage plugin: opens the configured backend once, decorates the instance with the repository and the
 * users service, and closes the backend when the app closes.
 *
 * This is the only place that knows about concrete adapters. Tests may hand in a repository of their own.
 */
import fp from 'fastify-plugin';
import type { Config } from '../config.ts';
import { openCassandra } from '../storage/cassandra/index.ts';
import { openPostgres } from '../storage/postgres/index.ts';
import type { QueryObserver, UsersRepository } from '../storage/repository.ts';
import { createUsersService, type UsersService } from '../users/service.ts';

declare module 'fastify' {
  interface FastifyInstance {
    repository: UsersRepository;
    users: UsersService;
  }
}

export interface StorageOptions {
  config: Config;
  /** Use this repository instead of opening one from config; the caller then owns closing it. */
  repository?: UsersRepository;
  /** Told about every database call (duration, error kind): the metrics plugin's hook. */
  onQuery?: QueryObserver;
}

export default fp<StorageOptions>(
  async (app, { config, repository, onQuery }) => {
    const repo = repository ?? (await openRepository(config, app.log, onQuery));
    app.decorate('repository', repo);
    app.decorate('users', createUsersService(repo));
    if (!repository) app.addHook('onClose', async () => repo.close());
  },
  { name: 'storage' },
);

async function openRepository(
  config: Config,
  log: Parameters<typeof openPostgres>[0]['log'],
  onQuery: StorageOptions['onQuery'],
): Promise<UsersRepository> {
  if (config.cassandra) return openCassandra({ ...config.cassandra, log, onQuery });
  if (!config.databaseUrl) throw new Error('DATABASE_URL is unset and no embedded database was started');
  return openPostgres({ url: config.databaseUrl, ...config.pool, log, onQuery });
}
