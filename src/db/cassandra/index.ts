/**
 * Opens the Cassandra backend: the driver session, the schema, and on top the users repository, the accounts,
 * the events outbox and the webhooks store (docs/webhooks.md), all on the one session.
 *
 * The service must start while Cassandra is down (reporting not ready) and recover by itself, so when the first
 * attempt to reach the cluster and create the schema fails for lack of a reachable cluster, it is retried in the
 * background until it succeeds; meanwhile every request answers 503. Any other failure (a table that is not
 * ours, a replication the cluster refuses) stops the start with the reason.
 */
import { CASSANDRA_DEFAULTS, type CassandraConfig } from '../../platform/config.ts';
import type { QueryObserver } from '../../platform/probes.ts';
import type { RedisLog } from '../../platform/redis.ts';
import type { Backend } from '../backend.ts';
import { rethrowMapped, runWhenReachable } from '../when-reachable.ts';
import { createCassandraAccountsStore } from './accounts.ts';
import { createCassandraBulkStore } from './bulk.ts';
import { toAppError } from './errors.ts';
import { redisEventsSignal } from './events-signal.ts';
import { createCassandraOutbox } from './outbox-take.ts';
import { createCassandraProbes } from './probes.ts';
import { createSchema } from './schema.ts';
import { createSession } from './session.ts';
import { eventsSignal } from './user-events.ts';
import { createCassandraUsersStore } from './users.ts';
import { createCassandraWebhooksStore } from './webhooks.ts';

/** An idempotency key's default lifetime. */
const DAY_S = 86_400;

export interface CassandraOptions extends CassandraConfig {
  /** Seconds an Idempotency-Key is remembered. Default one day. */
  idempotencyTtlS?: number;
  /** Record users events (docs/webhooks.md). Default on. */
  events?: boolean;
  log: { info(msg: string): void; warn(obj: object, msg: string): void } & RedisLog;
  onQuery?: QueryObserver;
  /** Redis to wake other instances' relays through (src/db/cassandra/events-signal.ts); without it, this one's only. */
  redisUrl?: string;
}

const SCHEMA_RETRY_MS = 1000;

export async function openCassandra(opts: CassandraOptions): Promise<Backend> {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(opts.keyspace)) throw new Error(`invalid Cassandra keyspace name '${opts.keyspace}'`);
  const session = createSession({
    hosts: opts.hosts,
    port: opts.port,
    keyspace: opts.keyspace,
    localDc: opts.localDc,
    readConsistency: opts.readConsistency ?? CASSANDRA_DEFAULTS.readConsistency,
    writeConsistency: opts.writeConsistency ?? CASSANDRA_DEFAULTS.writeConsistency,
    serialConsistency: opts.serialConsistency ?? CASSANDRA_DEFAULTS.serialConsistency,
    requestTimeoutMs: opts.requestTimeoutMs ?? CASSANDRA_DEFAULTS.requestTimeoutMs,
    speculativeDelayMs: opts.speculativeDelayMs,
    failFast: opts.failFast ?? CASSANDRA_DEFAULTS.failFast,
    protocolVersion: opts.protocolVersion,
    credentials: opts.credentials,
    onQuery: opts.onQuery,
    log: opts.log,
  });
  const schema = createSchema(session, opts.replication ?? CASSANDRA_DEFAULTS.replication);

  let stopRetrying: () => void;
  try {
    stopRetrying = await runWhenReachable({
      run: async () => {
        await schema.ensure().catch(rethrowMapped(toAppError));
        opts.log.info(`Cassandra schema ready in keyspace ${opts.keyspace}`);
      },
      // An overloaded cluster (timeouts) is worth waiting for too.
      retryOn: ['unavailable', 'timeout'],
      retryMs: SCHEMA_RETRY_MS,
      log: opts.log,
      what: 'create the Cassandra schema',
    });
  } catch (err) {
    await session.close();
    throw err;
  }
  const signal = opts.redisUrl ? redisEventsSignal(opts.redisUrl, opts.log) : { ...eventsSignal(), close: async () => {} };
  const requestTimeoutMs = opts.requestTimeoutMs ?? CASSANDRA_DEFAULTS.requestTimeoutMs;
  return {
    name: 'cassandra',
    users: createCassandraUsersStore(session, schema, {
      idempotencyTtlS: opts.idempotencyTtlS ?? DAY_S, events: opts.events === false ? undefined : signal,
    }),
    outbox: createCassandraOutbox(session, schema, { requestTimeoutMs, signal }),
    webhooks: createCassandraWebhooksStore(session, schema),
    // On the same session: one set of connections, one close.
    accounts: createCassandraAccountsStore(session, schema),
    probes: createCassandraProbes(session, schema),
    bulk: createCassandraBulkStore(session, schema),
    async close() {
      stopRetrying();
      await Promise.all([session.close(), signal.close()]);
    },
  };
}
