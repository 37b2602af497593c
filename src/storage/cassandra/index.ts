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

  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<void> => {
    try {
      await schema.ensure();
      opts.log.info(`Cassandra schema ready in keyspace ${opts.keyspace}`);
    } catch (err) {
      // Only an unreachable or overloaded cluster is worth waiting for; anything else is a problem to surface.
      const status = toAppError(err).statusCode;
      if (status !== 503 && status !== 504) throw err;
      opts.log.warn({ err: (err as Error).message }, 'Cassandra unavailable; will create the schema when it returns');
      if (!closed) {
        retry = setTimeout(() => void attempt().catch((e) => opts.log.warn({ err: e }, 'Cassandra schema creation failed')), SCHEMA_RETRY_MS);
      }
    }
  };
  try {
    await attempt();
  } catch (err) {
    await session.close();
    throw err;
  }
  return {
    ...repo,
    async close() {
      closed = true;
      clearTimeout(retry);
      await repo.close();
    },
  };
}
