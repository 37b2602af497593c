/**
 * The Cassandra adapter of `UsersStore`.
 *
 * Data model: one table, `users`, partitioned by `id` (a UUIDv7), one row per partition. Every read and write
 * of one user touches one partition, so it goes to that user's replicas only and scales with the cluster. The
 * price is the order of a listing: a scan visits partitions in token order (the hash of the id), not creation
 * order, and the cursor is the driver's paging state (wrapped in our tagged cursor with a checksum).
 *
 * Updates: Cassandra 2.1 has no `UPDATE ... IF EXISTS`, and a plain UPDATE would create the row when it is
 * absent. So an update reads the row, then writes with a lightweight transaction conditional on the
 * `updated_at` it read (`IF updated_at = ?`): it applies only to the row as read, never to a deleted one, and two
 * concurrent updates of one user are serialised by Paxos. A lost race is retried on a fresh serial read.
 *
 * Events (docs/webhooks.md): with EVENTS on, each create, update and delete writes its event into the row by the
 * same conditional statement, after a pointer to it (src/db/cassandra/user-events.ts); a delete then marks the row
 * deleted (`deleted_at`, read as absent everywhere: users-rows.ts) and the relay removes it once the event is out.
 *
 * Cassandra has no CHECK constraints: the adapter enforces the same domain as the PostgreSQL schema (lengths,
 * the age range, no NUL characters) and refuses anything else as `badInput`, so data stays portable between the
 * two backends and both answer the same input the same way.
 */
import { types } from 'cassandra-driver';
import { AppError, errors } from '../../platform/errors.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import { invalidFields } from '../user-fields.ts';
import { meets, type ChangeOptions, type IdempotencyKey, type NewUser, type User, type UserPatch, type UsersStore } from '../users-store.ts';
import type { CallOptions } from '../users-store.ts';
import { createIdempotencyStore } from './idempotency.ts';
import { isPagingStateRejection } from './errors.ts';
import { USERS_COLUMNS, type Schema } from './schema.ts';
import type { ExecOptions, Session } from './session.ts';
import { newEvent, pointerWriter, type EventsSignal, type NewEvent } from './user-events.ts';
import { cursors, idKey, pageStateOf, READ_COLUMNS, rowOf, toUser, usersOf } from './users-rows.ts';

/** Conditional-update rounds lost to concurrent updates of the same user before answering 503. */
const CAS_ATTEMPTS = 5;
/** Fields a patch may change, in the order their columns appear in an UPDATE. */
const PATCH_FIELDS = ['name', 'email', 'age'] as const;

export interface CassandraUsersOptions {
  /** Seconds an idempotency key is remembered (the claim's TTL). */
  idempotencyTtlS: number;
  /** Record each write's event (docs/webhooks.md); told after each write that recorded one. Unset: no events. */
  events?: EventsSignal;
}

export function createCassandraUsersStore(session: Session, schema: Schema, { idempotencyTtlS, events }: CassandraUsersOptions): UsersStore {
  const table = `"${session.keyspace}".users`;
  const COLUMNS = Object.keys(USERS_COLUMNS).join(', ');
  const INSERT = events
    ? `INSERT INTO ${table} (${COLUMNS}, events) VALUES (?, ?, ?, ?, ?, ?, ?)`
    : `INSERT INTO ${table} (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`;
  const INSERT_IF_ABSENT = `${INSERT} IF NOT EXISTS`;
  const SELECT_ONE = `SELECT ${READ_COLUMNS} FROM ${table} WHERE id = ?`;
  const SCAN = `SELECT ${READ_COLUMNS} FROM ${table}`;
  // A delete with events marks the row, conditional on the version read, and the relay removes it later.
  const MARK_DELETED = `UPDATE ${table} SET deleted_at = ?, events[?] = ? WHERE id = ? IF updated_at = ? AND deleted_at = null`;
  const pointers = pointerWriter(session);
  /** The INSERT's values: the row, and with events its `events` map holding the create's event. */
  const insertValues = (u: User, e: NewEvent | undefined) => (e ? [...rowOf(u), { [e.id.toString()]: e.text }] : rowOf(u));
  const createdEvent = (u: User) => (events ? newEvent('user.created', u, u.created_at) : undefined);
  // IF EXISTS: creates and updates of one user are lightweight transactions, and a Paxos round that repairs an
  // unfinished proposal re-commits it under a later ballot, which would outdate a plain (client-stamped) delete.
  const DELETE = `DELETE FROM ${table} WHERE id = ? IF EXISTS`;
  const DELETE_IF_VERSION = `DELETE FROM ${table} WHERE id = ? IF updated_at = ?`;
  /** One conditional UPDATE text per set of patched fields (7 at most), prepared once each by the driver. */
  const updates = new Map<string, string>();
  const updateCql = (fields: readonly string[]) => {
    const k = fields.join(',');
    let cql = updates.get(k);
    if (cql === undefined) {
      const sets = [...fields, 'updated_at'].map((f) => `${f} = ?`);
      if (events) sets.push('events[?] = ?');
      cql = `UPDATE ${table} SET ${sets.join(', ')} WHERE id = ? IF updated_at = ? AND deleted_at = null`;
      updates.set(k, cql);
    }
    return cql;
  };

  /** Schema first: before it exists every statement would fail as "unconfigured table" (a 400, wrongly). */
  async function ready(): Promise<void> {
    if (schema.ready) return;
    try {
      await schema.ensure();
    } catch (err) {
      throw errors.unavailable('database not ready', err);
    }
  }

  async function exec(cql: string, params: unknown[], o: ExecOptions): Promise<types.ResultSet> {
    await ready();
    return session.execute(cql, params, o);
  }

  const keys = createIdempotencyStore(session.keyspace, exec, idempotencyTtlS, session.options.requestTimeoutMs);

  async function read(id: string, opts: CallOptions | undefined, consistency?: ExecOptions['consistency']) {
    const rs = await exec(SELECT_ONE, [id], { kind: 'read', keys: [idKey(id)], idempotent: true, deadline: opts?.deadline, consistency });
    return toUser(rs.first());
  }

  const pagingCursor = cursors(session.keyspace);

  async function scanPage(fetchSize: number, pageState: Buffer | undefined, opts?: CallOptions) {
    try {
      return await exec(SCAN, [], { kind: 'read', idempotent: true, fetchSize, pageState, deadline: opts?.deadline });
    } catch (err) {
      // A state that passed the checksum but not the server: forged with knowledge of the checksum, or made by
      // a server version that reads it differently (an upgrade between two requests of a walk).
      if (pageState !== undefined && err instanceof AppError && isPagingStateRejection(err.cause)) throw errors.invalidCursor();
      throw err;
    }
  }

  /**
   * Up to `limit` users from `state` on, and the paging state after them (undefined at the end). Deleted rows
   * (their event not relayed yet) are skipped, and as many more read, so a page is as full as without them.
   */
  async function fill(limit: number, state: Buffer | undefined, opts?: CallOptions) {
    const users: User[] = [];
    let next = state;
    do {
      const rs = await scanPage(limit - users.length, next, opts);
      users.push(...usersOf(rs.rows));
      next = rs.rows.length === 0 ? undefined : pageStateOf(rs);
    } while (users.length < limit && next !== undefined);
    return { users, next };
  }

  async function insertOne(user: User, opts?: CallOptions): Promise<void> {
    // A lightweight transaction, like updates. Write timestamps come from the Cassandra nodes, so a plain INSERT
    // that a frozen coordinator applies late (after the driver retried it elsewhere and we acknowledged it) would
    // be stamped newer than a later update and undo it. Through Paxos a late copy finds the row and does nothing.
    // Not applied therefore means this very insert was applied by an earlier attempt: ids are fresh UUIDv7s.
    const e = createdEvent(user);
    if (e) await pointers.write(user.id, e, opts?.deadline);
    await exec(INSERT_IF_ABSENT, insertValues(user, e), { kind: 'cas', keys: [idKey(user.id)], idempotent: true, deadline: opts?.deadline });
    events?.notify();
  }

  async function insertBatch(users: User[], opts?: CallOptions): Promise<void> {
    await ready();
    // One logged batch: the coordinator writes it to the batch log first, so either every row is applied
    // (replayed if the coordinator dies) or none is. Never sent twice: a copy applied late by a frozen coordinator
    // gets a newer (server-side) timestamp and would undo updates made since; a batch of several partitions
    // cannot be a lightweight transaction, so a coordinator that does not answer in time gives 504 instead.
    // With events, each row carries its event and the batch its pointers: the same batch, so all or nothing too.
    const queries = users.flatMap((u) => {
      const e = createdEvent(u);
      const insert = { query: INSERT, params: insertValues(u, e) };
      return e ? [pointers.statement(u.id, e), insert] : [insert];
    });
    await session.batch(queries, { kind: 'write', keys: users.map((u) => idKey(u.id)), idempotent: false, deadline: opts?.deadline });
    events?.notify();
  }

  /**
   * One conditional change of a user, round by round: `write` is tried against the row as read (its `updated_at`)
   * and a lost race re-reads through Paxos, up to CAS_ATTEMPTS. Returns the row the applied write was made on;
   * null when the user is absent (with `expect`: `preconditionFailed` instead, and when the version differs).
   */
  async function change(id: string, opts: ChangeOptions | undefined, write: (current: User) => Promise<types.Row>): Promise<User | null> {
    let current = await read(id, opts);
    const expect = opts?.expect;
    // A weak read may lag: a version the client names is looked for through Paxos before it is refused.
    if (expect && !meets(expect, current)) current = await read(id, opts, session.options.serialConsistency);
    for (let attempt = 1; current !== null; attempt++) {
      // Checked against the row this round's conditional write is conditional on: the check and the write are
      // one Paxos round, and a lost round re-reads and checks again.
      if (expect && !meets(expect, current)) throw errors.preconditionFailed();
      const row = await write(current);
      if (row?.get('[applied]') === true) return current;
      // Not applied: the row is gone or deleted (no current value came back, or a `deleted_at`) or another
      // update won; read it again through Paxos, so the next round sees that update even at a weak read consistency.
      if (row?.get('updated_at') == null || row.get('deleted_at') != null) break;
      if (attempt >= CAS_ATTEMPTS) throw errors.unavailable('too many concurrent updates of this user');
      current = await read(id, opts, session.options.serialConsistency);
    }
    if (expect) throw errors.preconditionFailed();
    return null;
  }

  /** The write's event id, its pointer written on first use: once per change, however many rounds it takes. */
  function eventOnce(id: string, opts: CallOptions | undefined) {
    let pointed: Promise<types.TimeUuid> | undefined;
    return () => (pointed ??= (async () => {
      const eventId = types.TimeUuid.now();
      await pointers.write(id, { id: eventId, text: '' }, opts?.deadline);
      return eventId;
    })());
  }

  /** Creates under an idempotency key: claim, write, mark done (src/db/cassandra/idempotency.ts). */
  async function writeIdempotent(users: User[], idem: IdempotencyKey, opts?: CallOptions): Promise<User[]> {
    const claim = await keys.claim(idem, users, opts);
    if (claim.state === 'replay') return claim.users;
    if (claim.state === 'claimed') {
      if (users.length === 1) await insertOne(users[0]!, opts);
      else await insertBatch(users, opts);
    } else {
      // The first request died: its rows, if any were written, stay as they are (IF NOT EXISTS), so a later
      // update of them is never undone; the missing ones are written now.
      for (const u of claim.users) await insertOne(u, opts);
    }
    await keys.done(idem, opts);
    return claim.users;
  }

  return {
    async create(input, opts) {
      checkInput(input);
      const now = new Date();
      const user: User = { id: uuidv7(now.getTime()), ...pick(input), created_at: now, updated_at: now };
      if (opts?.idempotency) return (await writeIdempotent([user], opts.idempotency, opts))[0]!;
      await insertOne(user, opts);
      return user;
    },

    async createMany(inputs, opts) {
      inputs.forEach(checkInput);
      const now = new Date();
      const users = inputs.map((input): User => ({ id: uuidv7(now.getTime()), ...pick(input), created_at: now, updated_at: now }));
      if (opts?.idempotency) return writeIdempotent(users, opts.idempotency, opts);
      await insertBatch(users, opts);
      return users;
    },

    get: (id, opts) => read(id, opts),


    async update(id, patch: UserPatch, opts) {
      checkInput(patch);
      const fields = PATCH_FIELDS.filter((f) => patch[f] !== undefined);
      const eventId = eventOnce(id, opts);
      let updated: User | undefined;
      const done = await change(id, opts, async (current) => {
        // Strictly later than both, by at least 1 ms, even for two updates in the same millisecond.
        const updatedAt = new Date(Math.max(Date.now(), current.updated_at.getTime() + 1, current.created_at.getTime() + 1));
        updated = { ...current, ...Object.fromEntries(fields.map((f) => [f, patch[f]])), updated_at: updatedAt };
        const params: unknown[] = [...fields.map((f) => patch[f]), updatedAt];
        if (events) params.push(await eventId(), newEvent('user.updated', updated, updatedAt).text);
        const rs = await exec(updateCql(fields), [...params, id, current.updated_at], {
          kind: 'cas', keys: [idKey(id)], deadline: opts?.deadline,
          // Sent again after a lost connection, it either applies (same result) or finds `updated_at` moved
          // (by its own first attempt or another update) and goes round the loop: safe to retry. (With `expect`,
          // a retry whose first attempt applied then answers 412, though the change was made: rare, never wrong data.)
          idempotent: true,
        });
        return rs.first();
      });
      if (done === null) return null;
      events?.notify();
      return updated!;
    },

    async delete(id, opts) {
      if (events) {
        const eventId = eventOnce(id, opts);
        const done = await change(id, opts, async (current) => {
          const at = new Date();
          const rs = await exec(MARK_DELETED, [at, await eventId(), newEvent('user.deleted', { id }, at).text, id, current.updated_at], {
            kind: 'cas', keys: [idKey(id)], idempotent: true, deadline: opts?.deadline,
          });
          return rs.first();
        });
        if (done) events.notify();
        return;
      }
      const o: ExecOptions = { kind: 'cas', keys: [idKey(id)], idempotent: true, deadline: opts?.deadline };
      const expect = opts?.expect;
      if (expect === undefined) {
        await exec(DELETE, [id], o);
        return;
      }
      // Each try is one conditional delete; one that applies found the row at a version the client named.
      // (Sent again after a lost connection, a delete its first attempt applied finds no row: 412, though it was
      // deleted as asked. Rare, and nothing is changed wrongly.)
      const tries = expect === 'exists' ? [{ cql: DELETE, params: [id] }]
        : expect.versions.map((v) => ({ cql: DELETE_IF_VERSION, params: [id, v] }));
      for (const t of tries) if ((await exec(t.cql, t.params, o)).first()?.get('[applied]') === true) return;
      throw errors.preconditionFailed();
    },

    async list({ limit, cursor }, opts) {
      const state = cursor === undefined ? undefined : pagingCursor.state(cursor);
      const { users: items, next: more } = await fill(limit, state, opts);
      let next = more;
      // Cassandra returns a paging state whenever a page is full, even when nothing follows. One cheap read of a
      // single row tells, so a cursor is handed out only when more rows exist.
      if (next !== undefined && (await fill(1, next, opts)).users.length === 0) next = undefined;
      return { items, nextCursor: next === undefined ? null : pagingCursor.of(next) };
    },

    async *stream({ limit, fetchSize, deadline, signal }) {
      let remaining = limit;
      let state: Buffer | undefined;
      // One fetch per page, only when the consumer asks for the next one: a slow consumer slows the reads, and a
      // consumer that stops (return(), or the signal) leaves no request behind.
      while (remaining > 0 && !signal?.aborted) {
        const page = await fill(Math.min(fetchSize, remaining), state, { deadline });
        if (page.users.length > 0) {
          remaining -= page.users.length;
          yield page.users;
        }
        state = page.next;
        if (state === undefined) return;
      }
    },
  };
}

const pick = (u: NewUser): NewUser => ({ name: u.name, email: u.email, age: u.age });

/** The PostgreSQL schema's CHECK constraints, and its refusal of NUL in text, enforced here (src/db/user-fields.ts). */
function checkInput(input: Partial<NewUser>): void {
  if (invalidFields(input).length > 0) throw errors.badInput();
}
