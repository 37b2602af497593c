/**
 * Test support: every storage backend behind one small interface, so the storage contract suite and the HTTP suite
 * run unchanged against each. A `TestBackend` is one real database (a PostgreSQL database, or a keyspace on a real
 * Cassandra node started for the test file) plus the few direct reads the suites need to check what was stored
 * without going through the code under test.
 */
import { after } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Client, types } from 'cassandra-driver';
import postgres from 'postgres';
import { buildApp, type BuildOptions } from '../../src/app.ts';
import { loadConfig } from '../../src/platform/config.ts';
import { openCassandra } from '../../src/db/cassandra/index.ts';
import { openPostgres } from '../../src/db/postgres/index.ts';
import type { Backend } from '../../src/db/backend.ts';
import type { QueryObserver } from '../../src/platform/probes.ts';
import { LOCAL_DATA_CENTER, findJava, startCassandraNode, type CassandraNode } from '../../tools/cassandra-harness/index.ts';
import { UNSHED } from './app.ts';
import { createTestDatabase } from './postgres.ts';
import { startRedis } from './redis.ts';

export type BackendName = 'postgres' | 'cassandra';
export const BACKENDS: readonly BackendName[] = ['postgres', 'cassandra'];

/**
 * Why a backend's tests are skipped here, or false. Without Java there is no Cassandra to test against: skipped
 * with this message locally, but under CI=true they run (and fail), since CI installs Java first.
 */
export function skipReason(name: BackendName): string | false {
  if (name === 'cassandra' && findJava() === null && process.env.CI !== 'true') {
    return 'no Java found (JAVA_HOME or PATH): Cassandra tests skipped; install a JRE, or run with CI=true to make this a failure';
  }
  return false;
}

/**
 * Lets a test file's process end once its tests are done, even if cassandra-driver left a timer behind.
 *
 * cassandra-driver 4.10 sometimes keeps a Host object's health-check interval (and a reconnection timer) alive
 * after `client.shutdown()`, when the client lived through a node stop and restart: the Host is no longer in the
 * client's host map, so shutdown does not reach it. Every Client here is shut down (checked), the timer does no
 * work, and the server process exits on its own after a graceful close anyway; but a test process would wait on
 * it forever. Call once at the top level of a file that uses Cassandra.
 */
export function exitWhenDone(): void {
  after(() => {
    setTimeout(() => process.exit(), 3000).unref();
  });
}

export interface TestBackend {
  readonly name: BackendName;
  /** Configuration variables that point the app at this database. */
  readonly env: Record<string, string>;
  /** The backend on this database, opened as the app opens it; the caller closes it. */
  openBackend(opts?: { onQuery?: QueryObserver }): Promise<Backend>;
  /** The real app on this database (quiet logs), ready. */
  startApp(env?: Record<string, string>, opts?: BuildOptions): Promise<FastifyInstance>;
  /**
   * Runs one statement on this database directly, beside the code under test, to check what was stored or to
   * put a row in a state no API call makes (an expired token). `{ks}` stands for the Cassandra keyspace.
   */
  direct(statement: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  countUsers(): Promise<number>;
  userExists(id: string): Promise<boolean>;
  allIds(): Promise<string[]>;
  /** `ids` in the order this backend's listings return them (PostgreSQL: by id; Cassandra: by token). */
  listingOrder(ids: string[]): Promise<string[]>;
  /** Why this backend's server cannot be stopped here (a shared TEST_DATABASE_URL server), or false. */
  readonly cannotStop: string | false;
  /** Stops the database server (the data stays), for outage tests; `startDatabase` brings it back. */
  stopDatabase(): Promise<void>;
  startDatabase(): Promise<void>;
  destroy(): Promise<void>;
}

export async function startBackend(name: BackendName): Promise<TestBackend> {
  return name === 'postgres' ? startPostgresBackend() : startCassandraBackend();
}

const quiet = { info: () => {}, warn: () => {} };
const logLevel = () => process.env.TEST_LOG_LEVEL ?? 'silent';

async function appOn(base: Record<string, string>, env: Record<string, string>, opts: BuildOptions): Promise<FastifyInstance> {
  const config = loadConfig({ LOG_LEVEL: logLevel(), ...UNSHED, ...base, ...env });
  const app = await buildApp(config, { logger: { level: config.logLevel }, ...opts });
  await app.ready();
  return app;
}

async function startPostgresBackend(): Promise<TestBackend> {
  const db = await createTestDatabase();
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  const env = { DATABASE_URL: db.url };
  return {
    name: 'postgres',
    env,
    openBackend: (o = {}) =>
      openPostgres({ url: db.url, max: 10, accountsPoolMax: 2, acquireTimeoutMs: 2000, statementTimeoutMs: 30_000, log: quiet, onQuery: o.onQuery }),
    startApp: (extra = {}, opts = {}) => appOn(env, extra, opts),
    direct: async (statement, params = []) => [...(await sql.unsafe(statement, params as never[]))],
    countUsers: async () => Number((await sql`SELECT count(*)::int AS n FROM users`)[0]!.n),
    userExists: async (id) => (await sql`SELECT 1 FROM users WHERE id = ${id}`).length > 0,
    allIds: async () => (await sql<{ id: string }[]>`SELECT id FROM users`).map((r) => r.id),
    listingOrder: async (ids) => [...ids].sort(),
    cannotStop: db.embedded ? false : 'the server at TEST_DATABASE_URL is shared: only the embedded one may be stopped',
    stopDatabase: () => db.stopServer(),
    startDatabase: () => db.startServer(),
    async destroy() {
      await sql.end();
      await db.destroy();
    },
  };
}

let keyspaceSeq = 0;

async function startCassandraBackend(): Promise<TestBackend> {
  const node: CassandraNode = await startCassandraNode();
  // The Cassandra backend's job queue is in Redis (docs/jobs.md): config.ts requires REDIS_URL beside it.
  const redis = await startRedis();
  const keyspace = `spate_test_${process.pid}_${++keyspaceSeq}`;
  const env = {
    REDIS_URL: redis.url,
    CASSANDRA_HOSTS: node.host,
    CASSANDRA_PORT: String(node.cqlPort),
    CASSANDRA_KEYSPACE: keyspace,
    CASSANDRA_LOCAL_DC: LOCAL_DATA_CENTER,
    // Cassandra 2.1 speaks protocol v3 at most; saying so skips a failed v4 handshake at every connect.
    CASSANDRA_PROTOCOL_VERSION: '3',
  };
  // The test's own view of the data, beside the code under test. Created lazily: after a restart of the node it
  // is replaced, so a check never waits on a reconnection schedule.
  let client: Client | undefined;
  const direct = async () => {
    if (!client) {
      client = new Client({
        contactPoints: [node.contactPoint], localDataCenter: LOCAL_DATA_CENTER,
        protocolOptions: { port: node.cqlPort, maxVersion: 3 },
        queryOptions: { consistency: types.consistencies.all, prepare: true },
      });
      await client.connect();
    }
    return client;
  };
  const query = async (cql: string, params: unknown[] = []) => {
    const c = await direct();
    const rows: types.Row[] = [];
    // eachRow-style full read with paging, as a table may exceed one page.
    let pageState: string | undefined;
    do {
      const rs = await c.execute(cql, params, { fetchSize: 5000, ...(pageState ? { pageState } : {}) });
      rows.push(...(rs.rows ?? []));
      pageState = rs.pageState ?? undefined;
    } while (pageState);
    return rows;
  };
  const table = `"${keyspace}".users`;
  const liveIds = async () =>
    (await query(`SELECT id, deleted_at FROM ${table}`)).filter((r) => r.get('deleted_at') == null).map((r) => String(r.get('id')));
  return {
    name: 'cassandra',
    env,
    openBackend: (o = {}) =>
      openCassandra({
        hosts: [node.host], port: node.cqlPort, keyspace, localDc: LOCAL_DATA_CENTER, protocolVersion: 3,
        log: quiet, onQuery: o.onQuery,
      }),
    startApp: (extra = {}, opts = {}) => appOn(env, extra, opts),
    async direct(statement, params = []) {
      const rows = await query(statement.replaceAll('{ks}', `"${keyspace}"`), params);
      return rows.map((r) => Object.fromEntries(r.keys().map((k) => [k, r.get(k)])));
    },
    // A row with `deleted_at` is a delete whose event the relay has not removed yet: not a user (users-rows.ts).
    countUsers: async () => (await liveIds()).length,
    userExists: async (id) => (await query(`SELECT id, deleted_at FROM ${table} WHERE id = ?`, [id])).some((r) => r.get('deleted_at') == null),
    allIds: liveIds,
    async listingOrder(ids) {
      const tokens = new Map((await query(`SELECT id, token(id) FROM ${table}`)).map((r) => [String(r.get(0)), BigInt(String(r.get(1)))]));
      return [...ids].sort((a, b) => {
        const ta = tokens.get(a);
        const tb = tokens.get(b);
        if (ta === undefined || tb === undefined) throw new Error(`no token for ${ta === undefined ? a : b}`);
        return ta < tb ? -1 : ta > tb ? 1 : 0;
      });
    },
    cannotStop: false,
    async stopDatabase() {
      await client?.shutdown();
      client = undefined;
      await node.stop();
    },
    startDatabase: () => node.restart(),
    async destroy() {
      await client?.shutdown();
      await node.stop();
      await redis.stop();
    },
  };
}
