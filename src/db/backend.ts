/**
 * A backend: everything one database provides, opened by one factory.
 *
 * `openBackend` is the only place that knows the concrete adapters (`postgres/`, `cassandra/`); the rest of the
 * service sees the stores (users, accounts), the probes, and `close`. Stores are small interfaces that decorators
 * wrap; probes, pools and lifecycle live here, apart from them.
 */
import type { Config } from '../platform/config.ts';
import type { JobsStore } from '../platform/jobs/store.ts';
import type { PoolStats, QueryObserver, ReplicaStats } from '../platform/probes.ts';
import type { RedisLog } from '../platform/redis.ts';
import type { AccountsStore } from './accounts-store.ts';
import type { BulkStore } from './bulk-store.ts';
import type { OutboxStore, WebhooksStore } from './events-store.ts';
import { migratePostgres, openPostgres } from './postgres/index.ts';
import { openPostgresReplicas } from './postgres/replicas.ts';
import { withReplicas } from './replica-router.ts';
import type { CallOptions, UsersStore } from './users-store.ts';

export type BackendName = 'postgres' | 'cassandra';

/** What health, metrics and the slow endpoints ask of a database, apart from its data. */
export interface BackendProbes {
  /** Resolves when the database answers. */
  ping(opts?: CallOptions): Promise<void>;
  /** True when the schema is at the version this build expects. */
  schemaReady(opts?: CallOptions): Promise<boolean>;
  /** Figures of every pool the backend opened, by name; `users` is the main one. */
  pools(): { users: PoolStats } & Record<string, PoolStats>;
  /** Runs a real database operation lasting `seconds` (for the contract's slow endpoints). */
  sleep(seconds: number, opts?: CallOptions): Promise<void>;
  /** Each read replica and its measured lag; absent when none are configured (src/db/replica-router.ts). */
  replicas?(): ReplicaStats[];
}

export interface Backend {
  readonly name: BackendName;
  readonly users: UsersStore;
  readonly accounts: AccountsStore;
  readonly probes: BackendProbes;
  /** The durable job queue (docs/jobs.md): in the database on PostgreSQL, in Redis (REDIS_URL) on Cassandra. */
  readonly jobs?: JobsStore;
  /** Bulk imports (docs/bulk.md). */
  readonly bulk: BulkStore;
  /**
   * With read replicas: throws `invalidConsistencyToken` (bad_input) for a token this backend cannot have issued,
   * for a caller that hands the token on (an export job) and must refuse it before anything is written.
   */
  readonly checkConsistencyToken?: (token: string) => void;
  /** Users events and webhook endpoints (docs/webhooks.md). */
  readonly outbox: OutboxStore;
  readonly webhooks: WebhooksStore;
  /** Closes every pool and session the backend opened. */
  close(): Promise<void>;
}

export interface BackendDeps {
  log: { info(msg: string): void; warn(obj: object, msg: string): void } & RedisLog;
  /** Told about every database call of every store (the metrics plugin's hook). */
  onQuery?: QueryObserver;
}

/** Opens the configured backend: Cassandra when CASSANDRA_HOSTS is set, else PostgreSQL at DATABASE_URL. */
export async function openBackend(config: Config, deps: BackendDeps): Promise<Backend> {
  if (config.cassandra) {
    // Loaded only when chosen: cassandra-driver alone is a tenth of a PostgreSQL start-up (docs/startup.md).
    const { openCassandra } = await import('./cassandra/index.ts');
    const cassandra = await openCassandra({
      ...config.cassandra, idempotencyTtlS: config.idempotencyTtlS, events: config.webhooks.events, redisUrl: config.redisUrl, ...deps,
    });
    // The job queue is in Redis, not Cassandra (docs/jobs.md); config.ts refuses CASSANDRA_HOSTS without REDIS_URL.
    const { openRedisJobs } = await import('./redis/jobs.ts');
    const jobs = openRedisJobs({ url: config.redisUrl!, log: deps.log });
    return { ...cassandra, jobs, close: async () => { await Promise.all([jobs.close(), cassandra.close()]); } };
  }
  if (!config.databaseUrl) throw new Error('DATABASE_URL is unset and no embedded database was started');
  const backend = await openPostgres({
     url: config.databaseUrl, ...config.pool, accountsPoolMax: config.auth.poolMax, idempotencyTtlS: config.idempotencyTtlS,
    jobsPoolMax: config.jobs.poolMax, events: config.webhooks.events, ...deps,
  });
  if (!config.replicas) return backend;
  const replicas = openPostgresReplicas({ primaryUrl: config.databaseUrl, ...config.replicas, ...config.pool, ...deps });
  return withReplicas(backend, replicas, deps);
}

/**
 * Brings the configured database's schema up to date and returns what was applied, failing at once when the
 * database cannot be reached (`npm run migrate`, for deploys that migrate as a step of their own). Cassandra
 * creates its schema when the backend opens: nothing to apply ahead.
 */
export async function migrateDatabase(config: Config): Promise<string[]> {
  if (config.cassandra) return [];
  if (!config.databaseUrl) throw new Error('DATABASE_URL is unset and no embedded database was started');
  return migratePostgres(config.databaseUrl);
}
