/**
 * The Cassandra schema: the keyspace, the `users` table, the accounts tables (src/db/cassandra/accounts.ts) and
 * the events and webhooks tables (docs/webhooks.md), created at start when missing, never dropped. The one
 * alteration: a `users` table made before events existed gets their two columns added (ALTER TABLE ... ADD).
 *
 * Only CQL that Cassandra 2.1 through 5.0 all accept: no table options (compression, read repair and compaction
 * keep the server's defaults), no types newer than 2.1. An existing keyspace keeps its replication whatever the
 * configuration says: changing replication is an operator's decision (ALTER KEYSPACE, then a repair).
 *
 * Several instances starting at once against a fresh cluster may race on CREATE TABLE; the driver waits for schema
 * agreement after each change, and each statement is skipped when the driver's metadata already shows the object.
 */
import { errors } from '../../platform/errors.ts';
import type { Session } from './session.ts';

export interface Replication {
  strategy: 'SimpleStrategy' | 'NetworkTopologyStrategy';
  factor: number;
}

/** The columns this build reads and writes, with their CQL types. */
export const USERS_COLUMNS = {
  id: 'uuid', name: 'text', email: 'text', age: 'int', created_at: 'timestamp', updated_at: 'timestamp',
} as const;

/**
 * What a users row carries besides the user (src/db/cassandra/user-events.ts): the events of its changes not yet
 * relayed, written by the change's own conditional write, and the time of a delete whose event is pending (the row
 * reads as absent; the relay removes it once the event is relayed).
 */
export const USERS_EVENT_COLUMNS = { events: 'map<timeuuid, text>', deleted_at: 'timestamp' } as const;

/** The events relay's tables (src/db/cassandra/outbox-take.ts) and the webhook endpoints (webhooks.ts). */
export const EVENTS_TABLES = {
  /** A pointer to each event written, written before the change: where the relay finds rows with events. */
  outbox_pending: 'shard int, day int, event_id timeuuid, user_id uuid, PRIMARY KEY ((shard, day), event_id, user_id)',
  /** One row per shard of `outbox_pending`: the relay holding it (a lease that expires) and the oldest day to read. */
  outbox_shards: 'shard int, owner uuid, low_day int, PRIMARY KEY (shard)',
  /** Every endpoint in one partition (they are few), in id (creation) order. */
  webhooks: 'shard int, id text, url text, events list<text>, secret text, created_at timestamp, PRIMARY KEY (shard, id)',
  webhook_deliveries: 'webhook_id text, seq timeuuid, event_id text, event_type text, attempt int, status_code int, '
    + 'error text, at timestamp, PRIMARY KEY (webhook_id, seq)',
} as const;

/**
 * The accounts tables, designed query first: one table per way of reaching a row, each read touching one
 * partition (src/db/cassandra/accounts.ts says which statement uses which). Ids are UUIDv7 strings where a
 * clustering order must be the ids' order (`account_ids`): 2.1 does not order non-time UUIDs as PostgreSQL does.
 */
/**
 * Idempotency keys of creates (src/db/cassandra/idempotency.ts): claimed with INSERT ... IF NOT EXISTS before the
 * users are written, with the users the request will write (`response`), so a retry finishes or replays it.
 */
export const IDEMPOTENCY_TABLE = 'scope text, key text, claim_id uuid, fingerprint text, response text, done boolean, '
  + 'created_at timestamp, PRIMARY KEY ((scope, key))';

export const ACCOUNTS_TABLES = {
  /** `write_id`: a fresh id per write, so a conditional update sent twice recognises its own first copy. */
  accounts: 'id uuid, email text, password_hash text, role text, disabled boolean, created_at timestamp, '
    + 'updated_at timestamp, write_id uuid, PRIMARY KEY (id)',
  /** The lower-cased email, claimed with INSERT ... IF NOT EXISTS: what makes an email unique. */
  accounts_by_email: 'email_lower text, account_id uuid, claimed_at timestamp, PRIMARY KEY (email_lower)',
  /** Every account id in one partition, in id (creation) order, for `listAccounts` pages. */
  account_ids: 'shard int, id text, PRIMARY KEY (shard, id)',
  auth_sessions: 'id uuid, account_id uuid, created_at timestamp, revoked_at timestamp, PRIMARY KEY (id)',
  auth_sessions_by_account: 'account_id uuid, session_id uuid, PRIMARY KEY (account_id, session_id)',
  refresh_tokens: 'token_hash text, session_id uuid, created_at timestamp, expires_at timestamp, used_at timestamp, '
    + 'used_by uuid, PRIMARY KEY (token_hash)',
  refresh_tokens_by_session: 'session_id uuid, token_hash text, PRIMARY KEY (session_id, token_hash)',
  /** Tokens by the hour they expire in (hours since the epoch), for pruning without a scan. */
  refresh_tokens_by_expiry: 'hour bigint, expires_at timestamp, token_hash text, session_id uuid, '
    + 'PRIMARY KEY (hour, expires_at, token_hash)',
  /** The hours that still hold tokens in `refresh_tokens_by_expiry`: where pruning starts. */
  refresh_token_expiry_hours: 'shard int, hour bigint, PRIMARY KEY (shard, hour)',
  api_keys: 'id uuid, account_id uuid, name text, prefix text, key_hash text, scopes list<text>, created_at timestamp, '
    + 'expires_at timestamp, revoked_at timestamp, PRIMARY KEY (id)',
  api_keys_by_hash: 'key_hash text, id uuid, PRIMARY KEY (key_hash)',
  api_keys_by_account: 'account_id uuid, id uuid, PRIMARY KEY (account_id, id)',
} as const;

/** `countActiveAdmins`: admins are few, so a secondary index on the low-cardinality role finds them. */
const ACCOUNTS_ROLE_INDEX = 'accounts_role_idx';

/** DDL may wait for schema agreement across the cluster. */
const DDL_TIMEOUT_MS = 30_000;

export interface Schema {
  /** Creates what is missing; resolves when every table exists with every column this build needs. */
  ensure(): Promise<void>;
  /** True once `ensure` has succeeded in this process. */
  readonly ready: boolean;
}

export function createSchema(session: Session, replication: Replication): Schema {
  const { client, keyspace } = session;
  let ready = false;
  let pending: Promise<void> | undefined;

  /** A table of that name that lacks a column we use is someone else's: refuse to start on it. */
  async function checkColumns(name: string, wanted: readonly string[]): Promise<void> {
    const table = await client.metadata.getTable(keyspace, name);
    const have = new Set((table?.columns ?? []).map((c) => c.name));
    const missing = wanted.filter((column) => !have.has(column));
    if (missing.length) {
      throw new Error(`table ${keyspace}.${name} exists but lacks columns ${missing.join(', ')}; it was not created by Spate`);
    }
  }

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
    const users = { ...USERS_COLUMNS, ...USERS_EVENT_COLUMNS };
    if (!(await client.metadata.getTable(keyspace, 'users'))) {
      const columns = Object.entries(users).map(([name, type]) => `${name} ${type}`).join(', ');
      await ddl(`CREATE TABLE IF NOT EXISTS "${keyspace}".users (${columns}, PRIMARY KEY (id))`);
    }
    await checkColumns('users', Object.keys(USERS_COLUMNS));
    const have = new Set(((await client.metadata.getTable(keyspace, 'users'))?.columns ?? []).map((c) => c.name));
    for (const [name, type] of Object.entries(USERS_EVENT_COLUMNS)) {
      if (!have.has(name)) await ddl(`ALTER TABLE "${keyspace}".users ADD ${name} ${type}`);
    }
    for (const [name, body] of Object.entries({ ...ACCOUNTS_TABLES, idempotency_keys: IDEMPOTENCY_TABLE, ...EVENTS_TABLES })) {
      if (!(await client.metadata.getTable(keyspace, name))) await ddl(`CREATE TABLE IF NOT EXISTS "${keyspace}".${name} (${body})`);
      await checkColumns(name, body.slice(0, body.indexOf(', PRIMARY KEY')).split(', ').map((column) => column.split(' ')[0]!));
    }
    const accounts = await client.metadata.getTable(keyspace, 'accounts');
    if (!accounts?.indexes?.some((i) => i.name === ACCOUNTS_ROLE_INDEX)) {
      await ddl(`CREATE INDEX IF NOT EXISTS ${ACCOUNTS_ROLE_INDEX} ON "${keyspace}".accounts (role)`);
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

/**
 * Resolves once the schema exists, creating what is missing first; `unavailable` while it cannot be created.
 * Statements wait for it: before the tables exist every one would fail as "unconfigured table" (a 400, wrongly).
 */
export async function awaitSchema(schema: Schema): Promise<void> {
  if (schema.ready) return;
  try {
    await schema.ensure();
  } catch (err) {
    throw errors.unavailable('database not ready', err);
  }
}
