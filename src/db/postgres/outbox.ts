/**
 * The outbox on PostgreSQL (docs/webhooks.md): how a users write records its event, and the `OutboxStore` the
 * relay reads.
 *
 * A write and its event are ONE statement: the write runs in a data-modifying CTE that returns the rows it
 * touched, and the outbox INSERT reads them. So the event commits with the change or not at all, whether the
 * statement runs alone or inside a transaction (a batch, an idempotent create), and costs no extra round trip.
 * A write that touched no row (an update or delete of a missing user) records nothing. The event keeps the row as
 * written in typed columns; the relay gives it the API's shape. Building JSON in the write cost the database more
 * than the outbox row itself (migration 0008).
 *
 * Relays on every instance are woken by a NOTIFY on `spate_outbox`, sent by the writing process after its write
 * committed, on its own and coalesced (`wakeRelays`): a NOTIFY inside the write would serialize the commits of
 * every writer on PostgreSQL's notification queue lock. A wake-up lost to a crash between the commit and the NOTIFY
 * costs only latency: the relays also look every OUTBOX_POLL_MS.
 */
import type postgres from 'postgres';
import type { PendingQuery, Row } from 'postgres';
import type { EventType, OutboxEvent, OutboxStore } from '../events-store.ts';
import type { Db } from './db.ts';
import { oneInFlight } from '../../platform/lib/coalesce.ts';
import { currentTraceparent } from '../../platform/tracing/context.ts';

const CHANNEL = 'spate_outbox';

/** Adds `RETURNING <columns>` to a users write and, when events are on, records the write's event with it. */
export type EventRecorder = <T extends readonly Row[]>(
  sql: postgres.ISql, type: EventType, write: PendingQuery<Row[]>, columns: readonly string[],
) => PendingQuery<T>;

/** The outbox columns an event is recorded in, and what fills them from the written row `u`. */
function eventColumns(sql: postgres.ISql, type: EventType) {
  if (type === 'user.deleted') return sql`(type, occurred_at, user_id, traceparent) SELECT ${type}, now(), u.id`;
  return sql`(type, occurred_at, user_id, name, email, age, created_at, updated_at, traceparent)
    SELECT ${type}, ${sql(type === 'user.created' ? 'created_at' : 'updated_at')}, u.id, u.name, u.email, u.age, u.created_at, u.updated_at`;
}

/** `userColumns`: what the event is built from (every column of `users`), whatever the write itself returns. */
export function eventRecorder(enabled: boolean, userColumns: readonly string[]): EventRecorder {
  if (!enabled) return (sql, _type, write, columns) => sql`${write} RETURNING ${sql(columns as string[])}`;
  return (sql, type, write, columns) => sql`
    WITH u AS (${write} RETURNING ${sql(userColumns as string[])}),
      o AS (INSERT INTO outbox ${eventColumns(sql, type)}, ${currentTraceparent()} FROM u)
    SELECT ${sql(columns as string[])} FROM u`;
}

/**
 * Tells the relays that events committed: one NOTIFY at a time from this process, and one more after it when
 * writes committed meanwhile, so a stream of writes costs a NOTIFY per round trip rather than one per write.
 */
export function wakeRelays(db: Db): () => void {
  // The relays' poll covers a wake-up that could not be sent.
  return oneInFlight(() => db.query((sql) => sql`SELECT pg_notify(${CHANNEL}, '')`).catch(() => {}));
}

interface OutboxRow extends Row {
  seq: string;
  id: string;
  type: EventType;
  occurred_at: Date;
  /** Rows written before migration 0008 carry their data as built; later ones are null here. */
  data: unknown;
  user_id: string | null;
  name: string | null;
  email: string | null;
  age: number | null;
  created_at: Date | null;
  updated_at: Date | null;
  traceparent: string | null;
}

/** The event's data in the API's shape: the user as written, or `{id}` for a delete. */
function dataOf(r: OutboxRow): unknown {
  if (r.data !== null) return r.data;
  if (r.type === 'user.deleted') return { id: r.user_id };
  return {
    id: r.user_id, name: r.name, email: r.email, age: r.age,
    created_at: r.created_at!.toISOString(), updated_at: r.updated_at!.toISOString(),
  };
}

/** The advisory lock a relay holds while it takes: one relay takes at a time, the others skip. */
const TAKE_LOCK = 0x5370_6174_656f; // "Spateo"
/** How often a relay that keeps taking full batches looks back for rows it passed (`take` below). */
const LOOK_BACK_MS = 1000;

export function createPostgresOutbox(db: Db): OutboxStore {
  // Where the next take starts: past the rows this relay already took, whose dead index entries a scan from the
  // start would walk again on every take until vacuum (at 40,000 events a second, most of the relay's cost). A row
  // committed late, below that point (its transaction began before a take passed it), is found by a take from the
  // start, made after a take that came back short (the relay caught up) and at least every LOOK_BACK_MS.
  let from = 0n;
  let lookedBack = Date.now();
  return {
    // The rows are deleted by a transaction that stays open while the relay enqueues their jobs, and commits only
    // once it has: a relay that fails or dies rolls the delete back, and the rows are there for the next one. One
    // relay takes at a time (an advisory lock, tried, not waited for); a row inserted by a transaction still open
    // is invisible to the DELETE, so it stays for a later take. One write per event, no claim to record.
    async take(max, relay) {
      if (Date.now() - lookedBack >= LOOK_BACK_MS) {
        from = 0n;
        lookedBack = Date.now();
      }
      const taken = await db.transaction(async (tx) => {
        const [lock] = await tx<{ ok: boolean }[]>`SELECT pg_try_advisory_xact_lock(${TAKE_LOCK}::bigint) AS ok`;
        if (!lock?.ok) return [];
        // A range up to the max-th row's seq: index scans only (an `IN (subquery)` is planned as a hash join
        // over the whole table, whose cost grows with the backlog).
        const rows = await tx<OutboxRow[]>`
          DELETE FROM outbox WHERE seq > ${from.toString()} AND seq <= (
            SELECT max(seq) FROM (SELECT seq FROM outbox WHERE seq > ${from.toString()} ORDER BY seq LIMIT ${max}) s)
          RETURNING seq, id, type, occurred_at, data, user_id, name, email, age, created_at, updated_at, traceparent`;
        if (rows.length === 0) return rows;
        rows.sort((a, b) => Number(a.seq) - Number(b.seq));
        await relay(rows.map((r): OutboxEvent => ({
          id: r.id, type: r.type, occurredAt: r.occurred_at.toISOString(), data: dataOf(r), traceparent: r.traceparent,
        })));
        return rows;
      }, { retries: 0 });
      if (taken.length < max) {
        from = 0n;
        lookedBack = Date.now();
      } else {
        from = BigInt(taken[taken.length - 1]!.seq);
      }
      return taken.length;
    },

    async listen(onRecorded) {
      const sub = await db.sql.listen(CHANNEL, () => onRecorded());
      return async () => { await sub.unlisten().catch(() => {}); };
    },
  };
}
