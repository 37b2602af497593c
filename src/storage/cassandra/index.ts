/**
 * Opens the Cassandra backend: the driver session, the schema, and the users repository on top.
 *
 * The service must start while Cassandra is down (reporting not ready) and recover by itself, so when the first
 * attempt to reach the cluster and create the schema fails for lack of a reachable cluster, it is retried in the
 * background until it succeeds; meanwhile every request answers 503. Any other failure (a table that is not
 * ours, a replication the cluster refuses) stops the start with the reason.
 */
import type { CassandraConfig } from '../../config.ts';
import type { QueryObserver, UsersRepository } from '../repository.ts';
import { runWhenReachable } from '../when-reachable.ts';
import { toAppError } from './errors.ts';
import { createSchema } from './schema.ts';
import { createSession } from './session.ts';
import { createCassandraUsersRepository } from './users.ts';

export interface CassandraOptions extends CassandraConfig {
  log: { info(msg: string): void; warn(obj: object, msg: string): void };
  onQuery?: QueryObserver;
}

const SCHEMA_RETRY_MS = 1000;

export async function openCassandra(opts: CassandraOptions): Promise<UsersRepository> {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(opts.keyspace)) throw new Error(`invalid Cassandra keyspace name '${opts.keyspace}'`);
  const session = createSession({
    hosts: opts.hosts,
    port: opts.port,
    keyspace: opts.keyspace,
    localDc: opts.localDc,
    readConsistency: opts.readConsistency ?? 'LOCAL_QUORUM',
    writeConsistency: opts.writeConsistency ?? 'LOCAL_QUORUM',
    serialConsistency: opts.serialConsistency ?? 'LOCAL_SERIAL',
    requestTimeoutMs: opts.requestTimeoutMs ?? 12_000,
    speculativeDelayMs: opts.speculativeDelayMs,
    failFast: opts.failFast ?? true,
    protocolVersion: opts.protocolVersion,
    credentials: opts.credentials,
    onQuery: opts.onQuery,
    log: opts.log,
  });
  const schema = createSchema(session, opts.replication ?? { strategy: 'SimpleStrategy', factor: 1 });
  const repo = createCassandraUsersRepository(session, schema);

  let stopRetrying: () => void;
  try {
    stopRetrying = await runWhenReachable({
      run: async () => {
        await schema.ensure();
        opts.log.info(`Cassandra schema ready in keyspace ${opts.keyspace}`);
      },
      classify: toAppError,
      // An overloaded cluster (timeouts) is worth waiting for too.
      retryOn: [503, 504],
      retryMs: SCHEMA_RETRY_MS,
      log: opts.log,
      what: 'create the Cassandra schema',
    });
  } catch (err) {
    await session.close();
    throw err;
  }
  return {
    ...repo,
    async close() {
      stopRetrying();
      await repo.close();
    },
  };
}
