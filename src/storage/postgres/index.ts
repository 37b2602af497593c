/**
 * Opens the PostgreSQL backend: the pool, the health connection, the schema, and the users repository on top.
 *
 * The service must start while the database is down (reporting not ready) and recover by itself: migrations
 * run through `runWhenReachable`, which retries them in the background while the server cannot be reached.
 */
import type { QueryObserver, UsersRepository } from '../repository.ts';
import { createDb } from './db.ts';
import { runWhenReachable } from '../when-reachable.ts';
import { toAppError } from './errors.ts';
import { createHealth } from './health.ts';
import { migrate } from './migrate.ts';
import { createPostgresUsersRepository } from './users.ts';

export interface PostgresOptions {
  url: string;
  max: number;
  acquireTimeoutMs: number;
  statementTimeoutMs: number;
  /** Apply pending migrations at start (default true). */
  migrate?: boolean;
  log: { info(msg: string): void; warn(obj: object, msg: string): void };
  onQuery?: QueryObserver;
}

const MIGRATE_RETRY_MS = 1000;

export async function openPostgres(opts: PostgresOptions): Promise<UsersRepository> {
  const db = createDb(opts);
  const repo = createPostgresUsersRepository(db, createHealth(opts.url));
  if (opts.migrate === false) return repo;

  const stopRetrying = await runWhenReachable({
    run: async () => {
      const applied = await migrate(db.sql);
      if (applied.length) opts.log.info(`applied migrations: ${applied.join(', ')}`);
    },
    classify: toAppError,
    retryOn: [503],
    retryMs: MIGRATE_RETRY_MS,
    log: opts.log,
    what: 'apply migrations',
  });
  return {
    ...repo,
    async close() {
      stopRetrying();
      await repo.close();
    },
  };
}
