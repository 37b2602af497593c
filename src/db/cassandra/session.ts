/**
 * The Cassandra database layer under the users adapter: one driver `Client`, and one `execute` that every request
 * goes through, so each one is prepared, bounded in time, checked against the replicas the driver sees up, timed
 * for metrics, and has its error mapped onto the catalogue exactly once.
 *
 * Deadlines: a request gets the time left before its deadline (or `requestTimeoutMs`) as the driver's per-query
 * `readTimeout`, and is raced against a timer of the same length, because the driver's timeout is per attempt and
 * a retry on another host would start a new one. Cassandra cannot cancel a request it is running: when the time
 * is up we stop waiting and answer 504, and the server's own timeouts (2 s writes, 5 s reads by default) end it.
 */
import { Client, auth, policies, types } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';
import { withDeadline } from '../../platform/lib/deadline.ts';
import type { HostStats, PoolStats, QueryObserver } from '../../platform/probes.ts';
import { tracer } from '../../platform/tracing/context.ts';
import type { CallOptions } from '../users-store.ts';
import { createAvailability, type Level } from './availability.ts';
import { toAppError } from './errors.ts';

export interface SessionOptions {
  hosts: string[];
  port: number;
  keyspace: string;
  localDc: string;
  readConsistency: Level;
  writeConsistency: Level;
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
  requestTimeoutMs: number;
  speculativeDelayMs?: number;
  failFast: boolean;
  protocolVersion?: number;
  credentials?: { username: string; password: string };
  onQuery?: QueryObserver;
  log: { warn(obj: object, msg: string): void };
}

/** What a request does, which decides its consistency levels. */
export type RequestKind = 'read' | 'write' | 'cas' | 'probe';

export interface ExecOptions extends CallOptions {
  kind: RequestKind;
  /** Partition keys the request touches, for routing and the replica check; undefined for a scan of the table. */
  keys?: readonly Buffer[];
  /**
   * Safe for the driver to send again (to another host, or speculatively): true unless sending it twice could
   * do something sending it once would not.
   */
  idempotent: boolean;
  fetchSize?: number;
  pageState?: Buffer;
  /** Overrides the read consistency of this request (a serial read after a failed conditional update). */
  consistency?: Level;
}

export interface Session {
  readonly client: Client;
  readonly keyspace: string;
  readonly options: SessionOptions;
  execute(query: string, params: unknown[], o: ExecOptions): Promise<types.ResultSet>;
  /** One logged batch: all of its statements are applied, or none. */
  batch(queries: { query: string; params: unknown[] }[], o: ExecOptions): Promise<void>;
  /** Resolves when a node answers (not bounded by replicas: the database is reachable). */
  ping(opts?: CallOptions): Promise<void>;
  stats(): PoolStats;
  close(): Promise<void>;
}

/** Probe timeout when the caller gives no deadline: /health must answer within a second. */
const PROBE_TIMEOUT_MS = 900;
/** Connections per host in the local data center (each multiplexes thousands of requests). */
const LOCAL_CONNECTIONS = 2;

const consistency = (level: Level): number => {
  const key = level.toLowerCase().replace(/_(\w)/g, (_, c: string) => c.toUpperCase()) as keyof typeof types.consistencies;
  return types.consistencies[key];
};

export function createSession(opts: SessionOptions): Session {
  const client = new Client({
    contactPoints: opts.hosts,
    localDataCenter: opts.localDc,
    protocolOptions: { port: opts.port, ...(opts.protocolVersion ? { maxVersion: opts.protocolVersion } : {}) },
    ...(opts.credentials ? { authProvider: new auth.PlainTextAuthProvider(opts.credentials.username, opts.credentials.password) } : {}),
    pooling: { coreConnectionsPerHost: { [types.distance.local]: LOCAL_CONNECTIONS, [types.distance.remote]: 1 } },
    socketOptions: { connectTimeout: 2000, readTimeout: opts.requestTimeoutMs, keepAlive: true },
    policies: {
      // A node that returns is used again within about a second, without a restart.
      reconnection: new policies.reconnection.ExponentialReconnectionPolicy(200, 2000, true),
      ...(opts.speculativeDelayMs !== undefined
        ? { speculativeExecution: new policies.speculativeExecution.ConstantSpeculativeExecutionPolicy(opts.speculativeDelayMs, 1) }
        : {}),
      // Write timestamps come from the coordinator, like the ballots of conditional updates: one clock domain
      // (the cluster's, which Cassandra needs synchronised anyway), so a plain write and a later conditional
      // update on the same row are ordered by the cluster, not by this machine's clock against the cluster's.
      timestampGeneration: null as unknown as policies.timestampGeneration.TimestampGenerator,
    },
  });
  client.on('log', (level: string, className: string, message: string) => {
    if (level === 'error' || level === 'warning') opts.log.warn({ cassandra: className }, message);
  });
  const availability = createAvailability(client, opts.keyspace, opts.localDc, opts.failFast);
  const observe = opts.onQuery ?? (() => {});
  const write = consistency(opts.writeConsistency);
  const serial = consistency(opts.serialConsistency);
  let closed = false;

  const levelsOf = (o: ExecOptions): Level[] => {
    switch (o.kind) {
      case 'read': return [o.consistency ?? opts.readConsistency];
      case 'write': return [opts.writeConsistency];
      case 'cas': return [opts.serialConsistency, opts.writeConsistency];
      case 'probe': return [];
    }
  };

  /**
   * Runs `start` with the time left before the deadline (its budget), checked against the replicas first, and
   * settles with it, or with 503 when replicas are lost meanwhile, or 504 when the time runs out.
   */
  async function run<T>(o: ExecOptions, start: (budget: number) => Promise<T>, statement?: string): Promise<T> {
    if (closed) throw errors.unavailable('Cassandra session closed');
    const started = performance.now();
    const span = tracer()?.dbCall('cassandra', o.kind === 'probe' ? 'probe' : 'BATCH', statement);
    const ms = o.deadline === undefined ? opts.requestTimeoutMs : o.deadline - started;
    const levels = levelsOf(o);
    try {
      if (ms <= 0) throw errors.timeout();
      availability.check(o.keys, levels);
      const work = availability.guard(start(Math.ceil(ms)), o.keys, levels);
      const result = await withDeadline(work, ms);
      observe((performance.now() - started) / 1000, undefined);
      span?.end();
      return result;
    } catch (err) {
      const appErr = toAppError(err);
      observe((performance.now() - started) / 1000, appErr.kind);
      span?.end(appErr.kind);
      throw appErr;
    }
  }

  function queryOptions(o: ExecOptions, budget: number) {
    const key = o.keys?.length === 1 ? o.keys[0] : undefined;
    // An idempotent request gets half its time per attempt: a coordinator that hangs (a frozen node, or one
    // waiting on a replica that just died) is then abandoned in time for the driver to try the next one.
    const readTimeout = o.idempotent ? Math.max(1, Math.floor(budget / 2)) : budget;
    return {
      prepare: true,
      consistency: o.kind === 'read' ? consistency(o.consistency ?? opts.readConsistency) : o.kind === 'probe' ? types.consistencies.one : write,
      serialConsistency: serial,
      readTimeout,
      isIdempotent: o.idempotent,
      ...(key ? { routingKey: key } : {}),
      ...(o.fetchSize !== undefined ? { fetchSize: o.fetchSize } : {}),
      ...(o.pageState !== undefined ? { pageState: o.pageState } : {}),
    };
  }

  return {
    client,
    keyspace: opts.keyspace,
    options: opts,

    execute: (query, params, o) => run(o, (budget) => client.execute(query, params, queryOptions(o, budget)), query),

    async batch(queries, o) {
      await run(o, (budget) => client.batch(queries, { ...queryOptions(o, budget), logged: true }));
    },

    async ping(o) {
      const ms = o?.deadline === undefined ? PROBE_TIMEOUT_MS : Math.min(PROBE_TIMEOUT_MS, o.deadline - performance.now());
      // Half the time per attempt (see queryOptions): a node that hangs does not spoil the probe.
      await run({ kind: 'probe', idempotent: true, deadline: performance.now() + ms }, (budget) =>
        client.execute('SELECT release_version FROM system.local', [], queryOptions({ kind: 'probe', idempotent: true }, budget)));
    },

    stats() {
      // Before the first successful connect the driver has no host map (and getState() would throw).
      if (!client.hosts) return { active: 0, idle: 0, waiting: 0, max: 0, hosts: [] };
      const all = client.hosts.values() as { address: string; isUp(): boolean; datacenter: string }[];
      const state = client.getState();
      const connected = new Map(state.getConnectedHosts().map((h) => [h.address, h]));
      const hosts: HostStats[] = all.map((h) => {
        const c = connected.get(h.address);
        return {
          host: h.address,
          up: h.isUp(),
          openConnections: c ? state.getOpenConnections(c) : 0,
          inFlight: c ? state.getInFlightQueries(c) : 0,
        };
      });
      // Connections are multiplexed: a connection counts as active while it carries at least one request.
      const active = hosts.reduce((n, h) => n + Math.min(h.openConnections, h.inFlight), 0);
      const open = hosts.reduce((n, h) => n + h.openConnections, 0);
      const max = all.reduce((n, h) => n + (h.datacenter === opts.localDc ? LOCAL_CONNECTIONS : 1), 0);
      // The driver never queues a request for a connection (a busy pool fails over to the next host).
      return { active, idle: open - active, waiting: 0, max, hosts };
    },

    async close() {
      if (closed) return;
      closed = true;
      availability.close();
      await client.shutdown();
    },
  };
}
