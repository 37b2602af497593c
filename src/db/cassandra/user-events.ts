/**
 * How a users write on Cassandra records its event (docs/webhooks.md, "Cassandra").
 *
 * Users writes are lightweight transactions, and a conditional batch must stay in one partition, so the event
 * cannot go to an outbox table in the same batch. It goes in the user's own row instead: an entry of the `events`
 * map, keyed by the event id (a timeuuid), set by the very conditional statement that makes the change, so it is
 * applied with the change or not at all.
 *
 * The relay cannot scan every row for events, so BEFORE that write a pointer (user id, event id) goes to
 * `outbox_pending`, partitioned by shard (of the user id) and day (of the event id). An acknowledged write
 * therefore always has its pointer. A pointer whose write then did not apply points at no event; the relay drops
 * it after a grace period (src/db/cassandra/outbox-take.ts).
 */
import { types } from 'cassandra-driver';
import { currentTraceparent } from '../../platform/tracing/context.ts';
import type { EventType, OutboxEvent } from '../events-store.ts';
import type { User } from '../users-store.ts';
import type { Session } from './session.ts';

/** Shards of `outbox_pending`: relays share the work by shard (one lease each). */
export const OUTBOX_SHARDS = 16;
const DAY_MS = 86_400_000;

/** The shard of a user's pointers: from the id's random tail, so shards fill evenly. */
export const shardOf = (userId: string): number => parseInt(userId.slice(-2), 16) % OUTBOX_SHARDS;
/** Days since the epoch: the day partition a pointer of this time is in. */
export const dayOf = (ms: number): number => Math.floor(ms / DAY_MS);

/** An event about to be written: its id (a timeuuid of the change's time) and the text stored in the row. */
export interface NewEvent {
  id: types.TimeUuid;
  text: string;
}

/** The API's shape of a user, as the event carries it. */
const present = (u: User) => ({
  id: u.id, name: u.name, email: u.email, age: u.age, created_at: u.created_at.toISOString(), updated_at: u.updated_at.toISOString(),
});

/** The event of a write of `user` (`user.deleted`: only its id) at `at`. */
export function newEvent(type: EventType, user: User | { id: string }, at: Date): NewEvent {
  const data = type === 'user.deleted' ? { id: user.id } : present(user as User);
  const event: Omit<OutboxEvent, 'id'> = { type, occurredAt: at.toISOString(), data, traceparent: currentTraceparent() };
  return { id: types.TimeUuid.fromDate(at), text: JSON.stringify(event) };
}

/** An event stored in a row, back in the relay's shape. */
export function storedEvent(id: types.TimeUuid, text: string): OutboxEvent {
  return { id: id.toString(), ...(JSON.parse(text) as Omit<OutboxEvent, 'id'>) };
}

/** The key of the pointer of event `eventId` of user `userId`, in the columns' order. */
export function pointerKey(userId: string, eventId: types.TimeUuid): [number, number, types.TimeUuid, string] {
  return [shardOf(userId), dayOf(eventId.getDate().getTime()), eventId, userId];
}

/** The serialized `int` n: the partition key of `outbox_shards`. */
export const intKey = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};

/** The serialized partition key (shard, day) of a pointer, for routing. */
export function pointerPartition(shard: number, day: number): Buffer {
  // A composite partition key: each component as <length><bytes><0>.
  const part = (b: Buffer) => Buffer.concat([Buffer.from([0, b.length]), b, Buffer.from([0])]);
  return Buffer.concat([part(intKey(shard)), part(intKey(day))]);
}

/** Tells this process's relay that events were written (and, with Redis, every instance's: events-signal.ts). */
export interface EventsSignal {
  notify(): void;
  listen(fn: () => void): () => void;
}

export function eventsSignal(): EventsSignal {
  const listeners = new Set<() => void>();
  return {
    notify() { for (const fn of listeners) fn(); },
    listen(fn) {
      listeners.add(fn);
      return () => { listeners.delete(fn); };
    },
  };
}

/** Writes events' pointers: the step before the write that records the events. */
export function pointerWriter(session: Session) {
  const INSERT = `INSERT INTO "${session.keyspace}".outbox_pending (shard, day, event_id, user_id) VALUES (?, ?, ?, ?)`;
  return {
    /** The statement and parameters of a pointer, for a logged batch. */
    statement: (userId: string, e: NewEvent) => ({ query: INSERT, params: pointerKey(userId, e.id) }),
    /** Writes one pointer; a plain write, safe to send again (the same cells). */
    async write(userId: string, e: NewEvent, deadline: number | undefined): Promise<void> {
      const key = pointerKey(userId, e.id);
      await session.execute(INSERT, key, { kind: 'write', keys: [pointerPartition(key[0], key[1])], idempotent: true, deadline });
    },
  };
}
