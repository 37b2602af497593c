/**
 * Opens the PostgreSQL backend: the pool, the health connection, the schema, and the users repository on top.
 *
 * The service must start while the database is down (reporting not ready) and recover by itself, so when the
 * first migration attempt cannot reach the server it is retried in the background until it succeeds.
 */
import type { QueryObserver, UsersRepository } from '../repository.ts';
import { createDb } from './db.ts';
import { errorCode, toAppError } from './errors.ts';
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

  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<void> => {
    try {
      const applied = await migrate(db.sql);
      if (applied.length) opts.log.info(`applied migrations: ${applied.join(', ')}`);
    } catch (err) {
      // Only an unreachable database is worth waiting for; a failing migration is a bug to surface at once.
      if (toAppError(err).statusCode !== 503) throw err;
      opts.log.warn({ code: errorCode(err) }, 'database unavailable; will apply migrations when it returns');
      if (!closed) retry = setTimeout(() => void attempt().catch((e) => opts.log.warn({ err: e }, 'migration failed')), MIGRATE_RETRY_MS);
    }
  };
  await attempt();
  return {
    ...repo,
    async close() {
      closed = true;
      clearTimeout(retry);
      await repo.close();
    },
  };
}
