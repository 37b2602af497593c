/**
 * Opens the PostgreSQL backend: the users pool, a small pool of the accounts store's own (so logins and token
 * checks never queue behind long user queries and streams), the health connection, the schema, and the stores.
 *
 * The service must start while the database is down (reporting not ready) and recover by itself: migrations
 * run through `runWhenReachable`, which retries them in the background while the server cannot be reached.
 */
import type { QueryObserver } from '../../platform/probes.ts';
import type { Backend } from '../backend.ts';
import { rethrowMapped, runWhenReachable } from '../when-reachable.ts';
import { createPostgresAccountsStore } from './accounts.ts';
import { createPostgresBulkStore } from './bulk.ts';
import postgres from 'postgres';
import { createDb, type Db } from './db.ts';
import { toAppError } from './errors.ts';
import { createHealth } from './health.ts';
import { createPostgresJobsStore } from './jobs.ts';
import { migrate } from './migrate.ts';
import { createPostgresOutbox, wakeRelays } from './outbox.ts';
import { createPostgresUsersStore } from './users.ts';
import { createPostgresWebhooksStore } from './webhooks.ts';

export interface PostgresOptions {
  url: string;
  max: number;
  /** Connections of the accounts store's pool. */
  accountsPoolMax: number;
  /** Connections of the job queue's pool (its workers and the job routes), apart from user traffic. Default 4. */
  jobsPoolMax?: number;
  acquireTimeoutMs: number;
  statementTimeoutMs: number;
  /** Seconds an Idempotency-Key is remembered. Default one day. */
  idempotencyTtlS?: number;
  /** Record users events in the outbox (docs/webhooks.md). Default on. */
  events?: boolean;
  /** Warm connections and the idle timeout above them (DbOptions). */
  min?: number;
  idleTimeoutS?: number;
  /** Apply pending migrations at start (default true). */
  migrate?: boolean;
  log: { info(msg: string): void; warn(obj: object, msg: string): void };
  onQuery?: QueryObserver;
}

const MIGRATE_RETRY_MS = 1000;
const DAY_S = 86_400;
/** Expired idempotency keys are deleted hourly, 1,000 per statement. */
const PRUNE_EVERY_MS = 3_600_000;
const PRUNE_BATCH = 1000;

/** Deletes idempotency keys older than `ttlS`, in batches, until none is left; logs (and survives) a failure. */
function startKeyPruning(db: Db, ttlS: number, log: PostgresOptions['log']): () => void {
  const prune = async () => {
    try {
      for (;;) {
        const gone = await db.query((sql) => sql`DELETE FROM idempotency_keys WHERE ctid IN (
          SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => ${ttlS}) LIMIT ${PRUNE_BATCH})`);
        if ((gone as unknown as { count: number }).count < PRUNE_BATCH) return;
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'pruning expired idempotency keys failed; will retry');
    }
  };
  const timer = setInterval(() => void prune(), PRUNE_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}

export async function openPostgres(opts: PostgresOptions): Promise<Backend> {
  const idempotencyTtlS = opts.idempotencyTtlS ?? DAY_S;
  const db = createDb(opts);
  const accountsDb = createDb({
    ...opts, max: opts.accountsPoolMax, min: Math.min(opts.min ?? 0, opts.accountsPoolMax), applicationName: 'spate-accounts',
  });
  const jobsDb = createDb({ ...opts, max: opts.jobsPoolMax ?? 4, min: 0, applicationName: 'spate-jobs' });
  // The workers' writes (claims, leases, outcomes) without waiting for the WAL flush (docs/jobs.md).
  const jobsWorkerDb = createDb({ ...opts, max: opts.jobsPoolMax ?? 4, min: 0, applicationName: 'spate-jobs-worker', asyncCommit: true });
  const health = createHealth(opts.url);
  const stopRetrying = opts.migrate === false ? () => {} : await runWhenReachable({
    run: async () => {
      const applied = await migrate(db.sql).catch(rethrowMapped(toAppError));
      if (applied.length) opts.log.info(`applied migrations: ${applied.join(', ')}`);
    },
    retryOn: ['unavailable'],
    retryMs: MIGRATE_RETRY_MS,
    log: opts.log,
    what: 'apply migrations',
  });
  const stopPruning = startKeyPruning(db, idempotencyTtlS, opts.log);
  return {
    name: 'postgres',
    users: createPostgresUsersStore(db, {
      idempotencyTtlS, events: opts.events, onEventsCommitted: wakeRelays(jobsDb), copyUrl: opts.url,
    }),
    accounts: createPostgresAccountsStore(accountsDb),
    jobs: createPostgresJobsStore(jobsDb, jobsWorkerDb),
    bulk: createPostgresBulkStore({ url: opts.url, connectTimeoutS: Math.max(1, Math.ceil(opts.acquireTimeoutMs / 1000)) }),
    outbox: createPostgresOutbox(jobsDb),
    webhooks: createPostgresWebhooksStore(jobsDb),
    probes: {
      ping: (o) => health.ping(o),
      schemaReady: (o) => health.schemaReady(o),
      pools: () => ({ users: db.stats(), accounts: accountsDb.stats(), jobs: jobsDb.stats(), jobsWorker: jobsWorkerDb.stats() }),
      async sleep(seconds, o) {
        await db.query((sql) => sql`SELECT pg_sleep(${seconds})`, o);
      },
    },
    async close() {
      stopRetrying();
      stopPruning();
      await Promise.all([db.close(), accountsDb.close(), jobsDb.close(), jobsWorkerDb.close(), health.close()]);
    },
  };
}

/** Applies pending migrations on a connection of its own and returns their names (`npm run migrate`). */
export async function migratePostgres(url: string): Promise<string[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await migrate(sql);
  } finally {
    await sql.end();
  }
}
