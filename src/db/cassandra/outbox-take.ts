/**
 * The outbox on Cassandra (docs/webhooks.md, "Cassandra"): the `OutboxStore` the relay reads, over the events that
 * users writes keep in their rows and the pointers to them in `outbox_pending` (src/db/cassandra/user-events.ts).
 *
 * A take:
 * 1. holds the shards it can: a lease per shard in `outbox_shards`, a lightweight transaction with a TTL, renewed
 *    while held, so one relay reads a shard at a time and a dead relay's shards are taken over once it expires;
 * 2. reads the pointers of its shards, from the oldest day that may hold some (`low_day`) to today;
 * 3. reads the rows they point at, and hands every event found in them to `relay`;
 * 4. once `relay` resolved: removes those events from their rows (a deleted row: the row itself), by key and
 *    conditionally, as every write of a users row is, then their pointers.
 * A relay that throws or dies before step 4 leaves everything as it was: at-least-once, the event id stable.
 *
 * A pointer whose row holds no such event is the trace of a write that did not apply (or not yet). Once it is
 * older than the grace period (two request timeouts: no write of it can still be under way) the row is read
 * again through Paxos, which finishes any accepted proposal of it, and a pointer still without its event dropped.
 */
import { types } from 'cassandra-driver';
import type { OutboxEvent, OutboxStore } from '../events-store.ts';
import { awaitSchema, type Schema } from './schema.ts';
import type { ExecOptions, Session } from './session.ts';
import { fanOut } from './statements.ts';
import {
  dayOf, intKey, OUTBOX_SHARDS, pointerKey, pointerPartition, storedEvent, type EventsSignal,
} from './user-events.ts';
import { idKey } from './users-rows.ts';

/** A lease's lifetime; renewed when a third of it has passed, so a live relay never loses it. */
const LEASE_MS = 10_000;
/** How often a relay tries the shards it does not hold (those of a live relay elsewhere stay taken). */
const ACQUIRE_EVERY_MS = LEASE_MS / 2;
/** Days read back on a shard whose oldest day was never recorded. */
const FIRST_DAYS = 7;

export interface CassandraOutboxOptions {
  /** The bound on one write: a pointer younger than two of them may still get its event. */
  requestTimeoutMs: number;
  /** This process's writes (src/db/cassandra/user-events.ts); other instances' are found at the poll. */
  signal: EventsSignal;
}

interface Pointer {
  shard: number;
  day: number;
  eventId: types.TimeUuid;
  userId: string;
}

export function createCassandraOutbox(session: Session, schema: Schema, o: CassandraOutboxOptions): OutboxStore {
  const ks = `"${session.keyspace}"`;
  const owner = types.Uuid.random();
  const GRACE_MS = 2 * o.requestTimeoutMs;
  const CREATE_SHARD = `INSERT INTO ${ks}.outbox_shards (shard) VALUES (?) IF NOT EXISTS`;
  const ACQUIRE = `UPDATE ${ks}.outbox_shards USING TTL ${LEASE_MS / 1000} SET owner = ? WHERE shard = ? IF owner = null`;
  const RENEW = `UPDATE ${ks}.outbox_shards USING TTL ${LEASE_MS / 1000} SET owner = ? WHERE shard = ? IF owner = ?`;
  const RELEASE = `UPDATE ${ks}.outbox_shards SET owner = null WHERE shard = ? IF owner = ?`;
  const LOW_DAY = `SELECT low_day FROM ${ks}.outbox_shards WHERE shard = ?`;
  const SET_LOW_DAY = `UPDATE ${ks}.outbox_shards SET low_day = ? WHERE shard = ? IF owner = ?`;
  const POINTERS = `SELECT event_id, user_id FROM ${ks}.outbox_pending WHERE shard = ? AND day = ? AND event_id >= ? LIMIT ?`;
  const DROP_POINTER = `DELETE FROM ${ks}.outbox_pending WHERE shard = ? AND day = ? AND event_id = ? AND user_id = ?`;
  const ROW = `SELECT created_at, deleted_at, events FROM ${ks}.users WHERE id = ?`;
  const REMOVE_ROW = `DELETE FROM ${ks}.users WHERE id = ? IF deleted_at = ?`;
  const removeEvents = (n: number) => `DELETE ${Array(n).fill('events[?]').join(', ')} FROM ${ks}.users WHERE id = ? IF created_at = ?`;

  const exec = async (cql: string, params: unknown[], x: Omit<ExecOptions, 'idempotent'> & { idempotent?: boolean }) =>
    session.execute(cql, params, { idempotent: true, ...x });
  const shardOpts = (shard: number) => ({ kind: 'cas' as const, keys: [intKey(shard)] });

  /** Shards held, with when their lease was last taken or renewed; their oldest day with pointers. */
  const held = new Map<number, number>();
  const lowDay = new Map<number, number>();
  /**
   * Per shard and day, the event id below which this relay has settled every pointer: where its next read of that
   * day starts, so it does not walk the tombstones of the pointers it removed on every take (2.1 abandons a read
   * that meets 100,000). Sound because a pointer is written before its change, within one request timeout of its
   * event id's time: one that is not visible after the grace period (two timeouts, clock skew within one) belongs to
   * a write that failed. Kept in memory: a new relay reads each day from its start once.
   */
  const floors = new Map<string, types.TimeUuid>();
  /** A timeuuid below every one of the millisecond `ms` and later, whatever their other bits. */
  const below = (ms: number) => types.TimeUuid.fromDate(new Date(ms - 1));
  const EARLIEST = below(1);
  let lastAcquire = -Infinity;
  let shardsMade = false;

  async function leases(): Promise<number[]> {
    if (!shardsMade) {
      await fanOut([...Array(OUTBOX_SHARDS).keys()], (s) => exec(CREATE_SHARD, [s], shardOpts(s)));
      shardsMade = true;
    }
    const now = Date.now();
    await fanOut([...held.keys()], async (s) => {
      if (now - held.get(s)! < LEASE_MS / 3) return;
      const ok = await exec(RENEW, [owner, s, owner], shardOpts(s)).then((rs) => rs.first()?.get('[applied]') === true, () => false);
      if (ok) held.set(s, now);
      else held.delete(s);
    });
    if (now - lastAcquire >= ACQUIRE_EVERY_MS) {
      lastAcquire = now;
      const free = [...Array(OUTBOX_SHARDS).keys()].filter((s) => !held.has(s));
      await fanOut(free, async (s) => {
        const row = (await exec(ACQUIRE, [owner, s], shardOpts(s))).first();
        // Not applied, but ours: the driver sent it twice and the first copy won.
        if (row?.get('[applied]') !== true && !(row?.get('owner') as types.Uuid | null)?.equals(owner)) return;
        held.set(s, now);
        const low = (await exec(LOW_DAY, [s], { kind: 'read', keys: [intKey(s)] })).first()?.get('low_day') as number | null;
        lowDay.set(s, low ?? dayOf(now) - FIRST_DAYS);
      });
    }
    return [...held.keys()];
  }

  /**
   * Up to `max` pointers of `shard`, oldest day first, each day from its floor; moves the shard's oldest day past
   * empty ones (yesterday stays). `read` collects, per day read, what the floor may become once the take settles.
   */
  async function pointersOf(shard: number, max: number, read: Map<string, number>): Promise<Pointer[]> {
    const now = Date.now();
    const today = dayOf(now);
    const out: Pointer[] = [];
    for (let day = lowDay.get(shard)!; day <= today && out.length < max; day++) {
      const limit = max - out.length;
      const from = floors.get(`${shard}:${day}`) ?? EARLIEST;
      const rs = await exec(POINTERS, [shard, day, from, limit], { kind: 'read', keys: [pointerPartition(shard, day)] });
      const ps = rs.rows.map((r): Pointer => ({ shard, day, eventId: r.get('event_id') as types.TimeUuid, userId: String(r.get('user_id')) }));
      out.push(...ps);
      // Pointers from here on may still come; and a read cut short by its limit did not see past its last one.
      let floor = now - GRACE_MS;
      if (ps.length === limit) floor = Math.min(floor, ps[ps.length - 1]!.eventId.getDate().getTime());
      read.set(`${shard}:${day}`, floor);
      // A day before yesterday with no pointer from its floor on gets none any more (writers' clocks are not a
      // day apart), and every one below the floor is settled.
      if (rs.rows.length === 0 && day === lowDay.get(shard) && day < today - 1) {
        lowDay.set(shard, day + 1);
        await exec(SET_LOW_DAY, [day + 1, shard, owner], shardOpts(shard));
      }
    }
    return out;
  }

  /** The row's events, deleted_at and created_at; `serial` reads through Paxos (finishing an unfinished write). */
  async function readRow(userId: string, serial: boolean) {
    const rs = await exec(ROW, [userId], {
      kind: 'read', keys: [idKey(userId)], ...(serial ? { consistency: session.options.serialConsistency } : {}),
    });
    const row = rs.first();
    const events = (row?.get('events') ?? {}) as Record<string, string>;
    return { createdAt: row?.get('created_at') as Date | null, deletedAt: row?.get('deleted_at') as Date | null, events };
  }

  interface Found {
    userId: string;
    row: Awaited<ReturnType<typeof readRow>>;
    /** Pointers that will never have an event: dropped with the others. */
    stale: Pointer[];
  }

  /** A user's row, and which of its pointers are stale. Events in the row are relayed whichever pointer led here. */
  async function inspect(userId: string, ps: Pointer[]): Promise<Found> {
    let row = await readRow(userId, false);
    const old = (p: Pointer) => Date.now() - p.eventId.getDate().getTime() > GRACE_MS;
    let missing = ps.filter((p) => !(p.eventId.toString() in row.events) && old(p));
    if (missing.length > 0) {
      row = await readRow(userId, true);
      missing = missing.filter((p) => !(p.eventId.toString() in row.events));
    }
    return { userId, row, stale: missing };
  }

  /** Removes relayed events from their row (a deleted row: the row) and their pointers, and the stale pointers. */
  async function settle(f: Found): Promise<void> {
    const ids = Object.keys(f.row.events);
    if (f.row.deletedAt) {
      await exec(REMOVE_ROW, [f.userId, f.row.deletedAt], { kind: 'cas', keys: [idKey(f.userId)] });
    } else if (ids.length > 0 && f.row.createdAt) {
      // Conditional, as every write of a users row (docs/cassandra.md): a plain write could be outdated by a Paxos
      // round finishing an earlier proposal. `created_at` never changes: the condition holds while the row exists.
      await exec(removeEvents(ids.length), [...ids, f.userId, f.row.createdAt], { kind: 'cas', keys: [idKey(f.userId)] });
    }
    const drop = [...ids.map((id) => pointerKey(f.userId, types.TimeUuid.fromString(id))), ...f.stale.map((p) => [p.shard, p.day, p.eventId, p.userId])];
    await Promise.all(drop.map((k) => exec(DROP_POINTER, k, { kind: 'write', keys: [pointerPartition(k[0] as number, k[1] as number)] })));
  }

  return {
    // A take renews the leases once a third of their life has passed: one at least every quarter keeps them, so a
    // relay polling less often than that (OUTBOX_POLL_MS) does not let its shards lapse between takes.
    maxIdleMs: LEASE_MS / 4,

    async take(max, relay) {
      await awaitSchema(schema);
      const shards = await leases();
      if (shards.length === 0) return 0;
      const per = Math.max(1, Math.ceil(max / shards.length));
      const read = new Map<string, number>();
      const pointers = (await Promise.all(shards.map((s) => pointersOf(s, per, read)))).flat();
      if (pointers.length === 0) {
        for (const [k, ms] of read) floors.set(k, below(ms));
        return 0;
      }
      const byUser = new Map<string, Pointer[]>();
      for (const p of pointers) (byUser.get(p.userId) ?? byUser.set(p.userId, []).get(p.userId)!).push(p);
      const found = await fanOut([...byUser], ([userId, ps]) => inspect(userId, ps));
      const events: OutboxEvent[] = found.flatMap((f) =>
        Object.entries(f.row.events).map(([id, text]) => storedEvent(types.TimeUuid.fromString(id), text)));
      if (events.length > 0) {
        events.sort((a, b) => a.occurredAt.localeCompare(b.occurredAt));
        await relay(events);
      }
      await fanOut(found, settle);
      // A pointer left unsettled (its write may still be under way) keeps the floor of its day at or below it.
      for (const f of found) {
        for (const p of byUser.get(f.userId)!) {
          const k = `${p.shard}:${p.day}`;
          const settled = p.eventId.toString() in f.row.events || f.stale.includes(p);
          if (!settled && read.has(k)) read.set(k, Math.min(read.get(k)!, p.eventId.getDate().getTime()));
        }
      }
      for (const [k, ms] of read) floors.set(k, below(ms));
      // Pointers still waiting for their write (young, no event yet) are not counted: a take of only those is short.
      return events.length + found.reduce((n, f) => n + f.stale.length, 0);
    },

    async listen(onRecorded) {
      const stop = o.signal.listen(onRecorded);
      return async () => {
        stop();
        // Handed back at once, so a relay starting elsewhere (a restart) need not wait for the leases to expire.
        await Promise.all([...held.keys()].map((s) => exec(RELEASE, [s, owner], shardOpts(s)).catch(() => {})));
        held.clear();
      };
    },
  };
}
