/**
 * The Cassandra schema: the keyspace and the `users` table, created at start when missing, never dropped or
 * altered.
 *
 * Only CQL that Cassandra 2.1 through 5.0 all accept: no table options (compression, read repair and compaction
 * keep the server's defaults), no types newer than 2.1. An existing keyspace keeps its replication whatever the
 * configuration says: changing replication is an operator's decision (ALTER KEYSPACE, then a repair).
 *
 * Several instances starting at once against a fresh cluster may race on CREATE TABLE; the driver waits for schema
 * agreement after each change, and each statement is skipped when the driver's metadata already shows the object.
 */
import type { Session } from './session.ts';

export interface Replication {
  strategy: 'SimpleStrategy' | 'NetworkTopologyStrategy';
  factor: number;
}

/** The columns this build reads and writes, with their CQL types. */
export const USERS_COLUMNS = {
  id: 'uuid', name: 'text', email: 'text', age: 'int', created_at: 'timestamp', updated_at: 'timestamp',
} as const;

/** DDL may wait for schema agreement across the cluster. */
const DDL_TIMEOUT_MS = 30_000;

export interface Schema {
  /** Creates what is missing; resolves when the table exists with every column this build needs. */
  ensure(): Promise<void>;
  /** True once `ensure` has succeeded in this process. */
  readonly ready: boolean;
}

export function createSchema(session: Session, replication: Replication): Schema {
  const { client, keyspace } = session;
  let ready = false;
  let pending: Promise<void> | undefined;

  async function apply(): Promise<void> {
    await client.connect();
    const ddl = (cql: string) =>
      session.execute(cql, [], { kind: 'probe', idempotent: true, deadline: performance.now() + DDL_TIMEOUT_MS });
    if (!(client.metadata.keyspaces as Record<string, unknown>)[keyspace]) {
      const options = replication.strategy === 'SimpleStrategy'
        ? `{'class': 'SimpleStrategy', 'replication_factor': ${replication.factor}}`
        : `{'class': 'NetworkTopologyStrategy', '${session.options.localDc.replace(/'/g, "''")}': ${replication.factor}}`;
      await ddl(`CREATE KEYSPACE IF NOT EXISTS "${keyspace}" WITH replication = ${options}`);
    }
    if (!(await client.metadata.getTable(keyspace, 'users'))) {
      const columns = Object.entries(USERS_COLUMNS).map(([name, type]) => `${name} ${type}`).join(', ');
      await ddl(`CREATE TABLE IF NOT EXISTS "${keyspace}".users (${columns}, PRIMARY KEY (id))`);
    }
    const table = await client.metadata.getTable(keyspace, 'users');
    const have = new Map((table?.columns ?? []).map((c) => [c.name, c.type.code]));
    const missing = Object.keys(USERS_COLUMNS).filter((name) => !have.has(name));
    if (missing.length) {
      throw new Error(`table ${keyspace}.users exists but lacks columns ${missing.join(', ')}; it was not created by Spate`);
    }
    // The replica checks (availability.ts) need the keyspace's replication in the driver's metadata.
    await client.metadata.refreshKeyspace(keyspace);
    ready = true;
  }

  return {
    get ready() {
      return ready;
    },
    ensure() {
      if (ready) return Promise.resolve();
      pending ??= apply().finally(() => { pending = undefined; });
      return pending;
    },
  };
}
