/**
 * The PostgreSQL database layer under the users adapter: one postgres.js pool with an acquire deadline, request
 * deadlines that cancel work on the server, transactions with retries, server-side cursors, and pool figures.
 *
 * Every statement goes through `query`, `transaction` or `cursor`, so each one holds a gate permit while it owns
 * a connection, is bounded in time, and has its error mapped onto the catalogue exactly once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import postgres, { type PendingQuery, type ReservedSql, type Row, type Sql, type TransactionSql } from 'postgres';
import { errors } from '../../platform/errors.ts';
import { Gate } from '../../platform/lib/gate.ts';
import { parseTimestamptz } from '../../platform/lib/pg-timestamp.ts';
import { withDeadline } from '../../platform/lib/deadline.ts';
import type { ErrorKind } from '../../platform/errors.ts';
import type { PoolStats, QueryObserver } from '../../platform/probes.ts';
import { tracer, type DbSpan } from '../../platform/tracing/context.ts';
import type { CallOptions } from '../users-store.ts';
import { RETRYABLE_SQLSTATES, errorCode, toAppError } from './errors.ts';

export interface DbOptions {
  url: string;
  max: number;
  acquireTimeoutMs: number;
  statementTimeoutMs: number;
  /** Connections kept open and warm (see `keepWarm`); default 0. */
  min?: number;
  /** Seconds after which an idle connection above `min` closes; default 60. */
  idleTimeoutS?: number;
  /** Called once per statement, transaction or cursor with its duration and, when it failed, the error kind. */
  onQuery?: QueryObserver;
  /** `application_name` of its connections, to tell pools apart in pg_stat_activity. Default `spate`. */
  applicationName?: string;
  /**
   * Commits return before the WAL is flushed (`synchronous_commit = off`): atomic still, but a server crash may
   * lose the last fraction of a second of them. Only for writes whose loss the caller tolerates (docs/jobs.md).
   */
  asyncCommit?: boolean;
}

export interface TransactionOptions extends CallOptions {
  /** Attempts after the first on serialization failure or deadlock (SQLSTATE 40001, 40P01). Default 3. */
  retries?: number;
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
}

export interface CursorOptions extends CallOptions {
  fetchSize: number;
}

export interface Db {
  /** The raw pool, for migrations only: it bypasses the gate and deadlines. */
  readonly sql: Sql;
  /** How long a caller waits for a free connection before `unavailable` (POOL_ACQUIRE_TIMEOUT_MS). */
  readonly acquireTimeoutMs: number;
  query<T extends readonly Row[]>(build: (sql: Sql) => PendingQuery<T>, opts?: CallOptions): Promise<T>;
  transaction<T>(fn: (sql: TransactionSql) => Promise<T>, opts?: TransactionOptions): Promise<T>;
  cursor<T extends readonly Row[]>(build: (sql: Sql) => PendingQuery<T>, opts: CursorOptions): AsyncGenerator<T>;
  stats(): PoolStats;
  close(): Promise<void>;
}

const kindOf = (err: unknown): ErrorKind => toAppError(err).kind;

/** A statement's text with its placeholders, for its span: postgres.js keeps the template's strings apart. */
const textOf = (q: object): string | undefined => {
  const strings = (q as { strings?: readonly string[] }).strings;
  return strings ? strings.reduce((text, s, i) => `${text}$${i}${s}`) : undefined;
};

/** The type OID of timestamptz. */
const TIMESTAMPTZ = 1184;

/**
 * Asks the server to cancel a running statement. The cancel request travels on a connection of its own, which the
 * server may close with a reset. postgres.js's `query.cancel()` drops the promise of that request, so a reset
 * becomes an unhandled rejection, which ends a Node process; the driver's canceller is therefore called here
 * directly (as `cancel()` does) and its failure, of no interest, is caught.
 */
function cancel(q: object): void {
  const query = q as { canceller?: ((q: object) => Promise<unknown>) | null };
  const canceller = query.canceller;
  if (!canceller) return;
  query.canceller = null;
  void Promise.resolve(canceller(q)).catch(() => {});
}

/** Reconnect quickly after the database returns: 50 ms, doubling, capped at 500 ms (seconds, as postgres.js wants). */
const backoff = (attempt: number) => Math.min(0.05 * 2 ** attempt, 0.5);

/** How long past the server-side statement timeout we wait before giving up on a server that stopped answering. */
const HUNG_SERVER_GRACE_MS = 1000;

/**
 * How often, as a share of the idle timeout, `min` connections are used. Above one half on purpose: the driver
 * hands out the longest idle connection first, so with more than `min` idle a round touches others than the
 * last, and each one waits two rounds, longer than the idle timeout: the extras close and exactly `min` stay.
 */
const WARM_EVERY = 0.7;

/**
 * Keeps `min` connections of the pool open, so a burst after start or after a quiet spell pays no connection
 * set-up (TCP, SCRAM authentication, session settings). postgres.js opens connections on demand and closes each
 * after `idle_timeout` idle, with no minimum; but it hands a statement to an idle connection first and opens a new
 * one while none is idle, so `min` statements at once touch `min` connections: the longest idle ones, opening
 * what is missing. That runs at start and every `WARM_EVERY` of the idle timeout, so a warm connection is never
 * idle long enough to close, and one the driver retired (its `max_lifetime`) is back within that interval. A
 * pool busier than `min` needs no pings to stay open; they only matter in quiet spells. The
 * pings bypass the gate: they hold a connection for one round trip, and a statement that meets them waits
 * for it no longer than that. Failures (the database is down) are left to the next round.
 */
function keepWarm(sql: Sql, min: number, idleTimeoutS: number): { stop(): void } {
  if (min <= 0) return { stop() {} };
  const ping = () => void Promise.all(Array.from({ length: min }, () => sql`SELECT 1`.execute())).catch(() => {});
  ping();
  const timer = setInterval(ping, Math.max(200, idleTimeoutS * 1000 * WARM_EVERY));
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

export function createDb(opts: DbOptions): Db {
  const sql = postgres(opts.url, {
    max: opts.max,
    connect_timeout: Math.max(1, Math.ceil(opts.acquireTimeoutMs / 1000)),
    idle_timeout: opts.idleTimeoutS ?? 60,
    backoff,
    onnotice: () => {},
    // UTC sessions, so that timestamps arrive in the one form parseTimestamptz reads quickly.
    connection: { application_name: opts.applicationName ?? 'spate', statement_timeout: opts.statementTimeoutMs, TimeZone: 'UTC', ...(opts.asyncCommit ? { synchronous_commit: 'off' } : {}) },
    types: {
      timestamptz: {
        to: TIMESTAMPTZ,
        from: [TIMESTAMPTZ],
        serialize: (x: Date | string) => (x instanceof Date ? x : new Date(x)).toISOString(),
        parse: parseTimestamptz,
      },
    },
  });
  const gate = new Gate(opts.max);
  const warm = keepWarm(sql, Math.min(opts.min ?? 0, opts.max), opts.idleTimeoutS ?? 60);
  const defaultTimeoutMs = opts.statementTimeoutMs + HUNG_SERVER_GRACE_MS;
  const observe = opts.onQuery ?? (() => {});
  let closed = false;

  /**
   * Takes a permit within the acquire deadline, or the request deadline if that is sooner (then it is a 504).
   * A caller whose signal aborts (its client went away) stops waiting at once: that is its deadline arriving.
   */
  async function acquire(deadline: number | undefined, signal: AbortSignal | undefined): Promise<void> {
    if (closed) throw errors.unavailable('database pool closed');
    const left = deadline === undefined ? Infinity : deadline - performance.now();
    if (left <= 0 || signal?.aborted) throw errors.timeout();
    const byDeadline = left < opts.acquireTimeoutMs;
    const wait = gate.acquire(byDeadline ? left : opts.acquireTimeoutMs, signal);
    if (wait === undefined) return;
    try {
      await wait;
    } catch (err) {
      throw byDeadline || signal?.aborted ? errors.timeout(err) : err;
    }
  }

  const timeLeft = (deadline: number | undefined) =>
    deadline === undefined ? defaultTimeoutMs : deadline - performance.now();

  /**
   * Settles with `work`, or rejects with `timeout` once `ms` pass, or `signal` aborts, after calling `onExpire`
   * (which cancels the work on the server). The permit is released only when the work itself settles: until
   * then its connection is still busy, whatever the caller was told.
   */
  function bounded<T>(
    work: Promise<T>, ms: number, onExpire: () => void, started: number, signal: AbortSignal | undefined,
    span: DbSpan | undefined,
  ): Promise<T> {
    work.then(
      () => { gate.release(); observe((performance.now() - started) / 1000, undefined); span?.end(); },
      (err) => { const kind = kindOf(err); gate.release(); observe((performance.now() - started) / 1000, kind); span?.end(kind); },
    );
    return withDeadline(work, ms, { onExpire, mapError: toAppError, signal });
  }

  /** Builds a query while holding a permit; a builder that throws must not leak the permit. */
  function built<T extends readonly Row[]>(build: (sql: Sql) => PendingQuery<T>): PendingQuery<T> {
    try {
      return build(sql);
    } catch (err) {
      gate.release();
      throw toAppError(err);
    }
  }

  async function query<T extends readonly Row[]>(build: (sql: Sql) => PendingQuery<T>, o?: CallOptions): Promise<T> {
    await acquire(o?.deadline, o?.clientGone);
    const started = performance.now();
    const q = built(build);
    const span = tracer()?.dbCall('postgresql', 'query', textOf(q));
    return bounded<T>(q, timeLeft(o?.deadline), () => cancel(q), started, o?.clientGone, span);
  }

  async function transaction<T>(fn: (tx: TransactionSql) => Promise<T>, o: TransactionOptions = {}): Promise<T> {
    const retries = o.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      await acquire(o.deadline, o.clientGone);
      const started = performance.now();
      const span = tracer()?.dbCall('postgresql', 'transaction', undefined);
      const ms = timeLeft(o.deadline);
      // The server enforces the deadline inside the transaction (SET LOCAL statement_timeout); the race in
      // `bounded` covers a server that no longer answers at all.
      const work = sql.begin(o.isolation ? `isolation level ${o.isolation}` : '', async (tx) => {
        await tx`SELECT set_config('statement_timeout', ${String(Math.max(1, Math.floor(ms)))}, true)`;
        return fn(tx);
      }) as Promise<T>;
      try {
        return await bounded(work, ms, () => {}, started, undefined, span);
      } catch (err) {
        const cause = (err as Error).cause ?? err;
        if (attempt >= retries || !RETRYABLE_SQLSTATES.has(errorCode(cause) ?? '')) throw err;
        await sleep(10 * 2 ** attempt * (0.5 + Math.random()));
      }
    }
  }

  async function* cursor<T extends readonly Row[]>(
    build: (sql: Sql) => PendingQuery<T>,
    o: CursorOptions,
  ): AsyncGenerator<T> {
    await acquire(o.deadline, o.clientGone);
    const started = performance.now();
    const span = tracer()?.dbCall('postgresql', 'cursor', undefined);
    let conn: ReservedSql | undefined;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    let failure: ErrorKind | undefined;
    let committed = false;
    try {
      // A stream lives as long as its client reads, which may be far longer than STATEMENT_TIMEOUT_MS: the
      // server counts a portal's time while it waits for our next fetch. So the cursor runs in a read-only
      // transaction of its own, with the request deadline (or none) as its statement timeout.
      conn = await sql.reserve();
      await conn`BEGIN READ ONLY`;
      const ms = o.deadline === undefined ? 0 : Math.max(1, Math.floor(o.deadline - performance.now()));
      await conn`SELECT set_config('statement_timeout', ${String(ms)}, true)`;
      const q = build(conn);
      // No cancel request at the deadline: the server's statement timeout above already ends a fetch that runs
      // past it, and a cancel is asynchronous, so one that arrives late can hit whatever this connection runs
      // next (our ROLLBACK, or another request's statement once it is back in the pool).
      if (o.deadline !== undefined) {
        timer = setTimeout(() => { timedOut = true; }, Math.max(0, o.deadline - performance.now()));
      }
      // Breaking out of this loop (the client went away) calls the cursor's return(), which closes the portal.
      for await (const rows of q.cursor(o.fetchSize) as AsyncIterable<T>) {
        // The server's timer runs from the first fetch, so it ends the stream at about the deadline either way;
        // this check keeps a page that arrives just after the deadline from going out.
        if (timedOut) throw errors.timeout();
        yield rows;
      }
      await conn`COMMIT`;
      committed = true;
    } catch (err) {
      failure = timedOut ? 'timeout' : kindOf(err);
      throw timedOut ? errors.timeout(err) : toAppError(err);
    } finally {
      clearTimeout(timer);
      // Early exit (client gone, error): end the transaction before the connection goes back to the pool. A
      // second ROLLBACK covers a first one that failed: a connection must never return inside a transaction.
      if (conn && !committed) {
        const reserved = conn;
        await reserved`ROLLBACK`.catch(() => reserved`ROLLBACK`).catch(() => {});
      }
      conn?.release();
      gate.release();
      observe((performance.now() - started) / 1000, failure);
      span?.end(failure);
    }
  }

  return {
    sql,
    acquireTimeoutMs: opts.acquireTimeoutMs,
    query,
    transaction,
    cursor,
    stats: () => ({ active: gate.active, idle: opts.max - gate.active, waiting: gate.waiting, max: opts.max }),
    async close() {
      closed = true;
      warm.stop();
      gate.drain(errors.unavailable('database pool closed'));
      await sql.end({ timeout: 5 });
    },
  };
}
