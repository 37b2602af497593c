/**
 * The PostgreSQL adapter of `UsersStore`.
 *
 * Every statement is a tagged template (values can never be spliced into SQL text) with a fixed text, so
 * postgres.js prepares it once per connection. Rows are listed in primary-key order; ids are UUIDv7, so that is
 * creation order, and the cursor is the last id seen (keyset pagination: no OFFSET scans, no skipped or repeated
 * rows while others insert).
 */
import type postgres from 'postgres';
import type { PendingQuery, Row, Sql } from 'postgres';
import { errors, isAppError } from '../../platform/errors.ts';
import { coalesce, singleFlight } from '../../platform/lib/coalesce.ts';
import { noConnectionFree } from '../../platform/lib/gate.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import { CURSOR_TAG, decodeCursor, encodeCursor } from '../cursor.ts';
import type { CallOptions, Expected, IdempotencyKey, NewUser, Page, User, UserPatch, UsersStore } from '../users-store.ts';
import { copyUsersOut } from './copy-out.ts';
import type { Db } from './db.ts';
import { eventRecorder, type EventRecorder } from './outbox.ts';

/** Most ids read, or rows inserted, by one batched statement. */
const GET_BATCH_MAX = 256;
const INSERT_BATCH_MAX = 256;
/** The columns of `users`, in the order of `User` (and of the binary COPY's fields, copy-binary.ts); written once, as identifiers (`sql(COLUMNS)`). */
export const COLUMNS: string[] = ['id', 'name', 'email', 'age', 'created_at', 'updated_at'];

const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const idToBytes = (id: string) => Buffer.from(id.replace(/-/g, ''), 'hex');
const bytesToId = (b: Buffer) => {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/**
 * INSERT of `users` with their `user.created` events (src/db/postgres/outbox.ts): a plain VALUES list for one, else
 * one unnest of typed arrays whatever their number, so either text is prepared once per connection.
 */
function insertRows(sql: postgres.ISql, users: User[], record: EventRecorder): PendingQuery<Row[]> {
  return record(sql, 'user.created', insertText(sql, users), ['id']);
}

function insertText(sql: postgres.ISql, users: User[]): PendingQuery<Row[]> {
  if (users.length === 1) {
    const u = users[0]!;
    return sql`INSERT INTO users (${sql(COLUMNS)})
      VALUES (${u.id}, ${u.name}, ${u.email}, ${u.age}, ${u.created_at}, ${u.updated_at})`;
  }
  return sql`INSERT INTO users (${sql(COLUMNS)})
    SELECT * FROM unnest(
      ${sql.array(users.map((u) => u.id))}::uuid[], ${sql.array(users.map((u) => u.name))}::text[],
      ${sql.array(users.map((u) => u.email))}::text[], ${sql.array(users.map((u) => u.age))}::int[],
      ${sql.array(users.map((u) => u.created_at.toISOString()))}::timestamptz[],
      ${sql.array(users.map((u) => u.updated_at.toISOString()))}::timestamptz[])`;
}

/** A page in primary-key order, after the id `after` when given; one row more than asked tells whether more exist. */
function pageQuery(sql: Sql, limit: number, after: string | undefined): PendingQuery<User[]> {
  return after === undefined
    ? sql<User[]>`SELECT ${sql(COLUMNS)} FROM users ORDER BY id LIMIT ${limit + 1}`
    : sql<User[]>`SELECT ${sql(COLUMNS)} FROM users
        WHERE id > ${after} ORDER BY id LIMIT ${limit + 1}`;
}

function toPage(rows: User[], limit: number): Page {
  const items = rows.length > limit ? rows.slice(0, limit) : rows;
  const last = items.at(-1);
  return {
    items,
    nextCursor: rows.length > limit && last ? encodeCursor(CURSOR_TAG.postgres, idToBytes(last.id)) : null,
  };
}

/**
 * The condition of a conditional update or delete, in the statement's own WHERE, so the check and the write are
 * one atomic step. Compared to the millisecond: `User` (and so the ETag) carries no finer precision.
 */
function expected(sql: Sql, expect: Expected | undefined): PendingQuery<Row[]> {
  if (expect === undefined || expect === 'exists') return sql``;
  return sql`AND date_trunc('milliseconds', updated_at) = ANY(${sql.array(expect.versions.map((v) => v.toISOString()))}::timestamptz[])`;
}

/** A user as stored in an idempotency key's response (JSON: timestamps as ISO strings). */
type StoredUser = Omit<User, 'created_at' | 'updated_at'> & { created_at: string; updated_at: string };
const revive = (u: StoredUser): User => ({ ...u, created_at: new Date(u.created_at), updated_at: new Date(u.updated_at) });

export interface PostgresUsersOptions {
  /** Seconds an idempotency key is remembered; older ones count as unused. */
  idempotencyTtlS: number;
  /** Record every write's event in the outbox, atomically with it (docs/webhooks.md). Default on. */
  events?: boolean;
  /** Called after a write that recorded events committed: wakes the relays (outbox.ts, `wakeRelays`). */
  onEventsCommitted?: () => void;
  /** The database's URL: `stream` with the `bulk` hint opens a connection of its own there (copy-out.ts). */
  copyUrl?: string;
}

export function createPostgresUsersStore(db: Db, { idempotencyTtlS, events = true, onEventsCommitted, copyUrl }: PostgresUsersOptions): UsersStore {
  const record = eventRecorder(events, COLUMNS);
  const committed = events && onEventsCommitted ? onEventsCommitted : () => {};
  function stamp(input: NewUser, now: Date): User {
    return {
      id: uuidv7(now.getTime()),
      name: input.name,
      email: input.email,
      age: input.age,
      created_at: now,
      updated_at: now,
    };
  }

  /** Nothing in flight: a lone lookup need not wait for company (src/platform/lib/coalesce.ts). */
  const idle = () => db.stats().active === 0;

  async function getOne(id: string, opts?: CallOptions): Promise<User | null> {
    const rows = await db.query(
      (sql) => sql<User[]>`SELECT ${sql(COLUMNS)} FROM users WHERE id = ${id}`,
      opts,
    );
    return rows[0] ?? null;
  }

  // Reads by id that arrive together share one statement (src/platform/lib/coalesce.ts): the profile of GET /users/{id}
  // under load is dominated by per-statement costs (a socket write and a round trip per query, the driver's
  // per-query objects, the server's per-statement work). The ids are canonical, so rows map back by id.
  // Each read waits for a connection as long as any caller does (POOL_ACQUIRE_TIMEOUT_MS), counted from its own
  // arrival, not its batch's; a batch abandoned by all its readers stops waiting.
  const ownWait = {
    maxWaitMs: db.acquireTimeoutMs,
    expired: () => noConnectionFree(db.acquireTimeoutMs),
  };
  const getBatched = coalesce<string, User>(
    (take, signal) => db.query((sql) => {
      const ids = take();
      // A batch of one (an unloaded server) keeps the plain statement: `= ANY($1)` costs ~25 µs more per trip.
      return ids.length === 1
        ? sql<User[]>`SELECT ${sql(COLUMNS)} FROM users WHERE id = ${ids[0]!}`
        : sql<User[]>`SELECT ${sql(COLUMNS)} FROM users WHERE id = ANY(${sql.array(ids)}::uuid[])`;
    }, { clientGone: signal }).then((rows) => new Map(rows.map((row) => [row.id, row]))),
    GET_BATCH_MAX,
    idle,
    ownWait,
  );

  /**
   * A request with its own deadline reads alone: its deadline cancels its own statement and nobody else's; so does
   * one that asks to (`alone`), and an id not in canonical form, which the batch could not map back.
   */
  const get = async (id: string, opts?: CallOptions): Promise<User | null> =>
    opts?.deadline === undefined && !opts?.alone && CANONICAL_UUID.test(id)
      ? (await getBatched(id)) ?? null
      : getOne(id, opts);

  async function insertOne(user: User, opts?: CallOptions): Promise<void> {
    await db.query((sql) => insertRows(sql, [user], record), opts);
    committed();
  }

  /**
   * Writes `users` under an idempotency key, in one transaction with the key and the answer it gave, so a retry
   * (after a 504, a lost connection, a crash) finds them and returns the same users instead of writing again.
   * A transaction still holding the key (the same request, in flight) is refused at once rather than waited for.
   */
  function createIdempotent(users: User[], idem: IdempotencyKey, opts?: CallOptions): Promise<User[]> {
    return db.transaction(async (tx) => {
      const [lock] = await tx<{ ok: boolean }[]>`
        SELECT pg_try_advisory_xact_lock(hashtextextended(${`${idem.scope} ${idem.key}`}, 0)) AS ok`;
      if (!lock?.ok) throw errors.idempotencyInFlight();
      const [found] = await tx<{ fingerprint: string; response: StoredUser[] }[]>`
        SELECT fingerprint, response FROM idempotency_keys
        WHERE scope = ${idem.scope} AND key = ${idem.key} AND created_at > now() - make_interval(secs => ${idempotencyTtlS})`;
      if (found) {
        if (found.fingerprint !== idem.fingerprint) throw errors.idempotencyMismatch();
        return found.response.map(revive);
      }
      await insertRows(tx, users, record);
      // An expired key (not yet pruned) is taken over.
      await tx`INSERT INTO idempotency_keys (scope, key, fingerprint, response)
        VALUES (${idem.scope}, ${idem.key}, ${idem.fingerprint}, ${tx.json(users as never)})
        ON CONFLICT (scope, key) DO UPDATE
          SET fingerprint = EXCLUDED.fingerprint, response = EXCLUDED.response, created_at = now()`;
      return users;
    }, opts).then((users) => {
      committed();
      return users;
    });
  }

  // Inserts that arrive together are written by one statement and one commit (a WAL flush for the batch rather
  // than one per row), for the same reasons as the reads. Each is still acknowledged only once that commit is
  // done. If the database refuses the batch for its input (a value it will not store), each row is retried on
  // its own, so only the request that sent it fails.
  const insertBatched = coalesce<User, true | Error>(async (take, signal) => {
    let users: User[] = [];
    try {
      await db.query((sql) => insertRows(sql, (users = take()), record), { clientGone: signal });
      committed();
      return new Map(users.map((u) => [u, true]));
    } catch (err) {
      if (users.length <= 1 || !isAppError(err) || err.kind !== 'bad_input') throw err;
      const each = await Promise.allSettled(users.map((u) => insertOne(u)));
      return new Map(users.map((u, i) => {
        const r = each[i]!;
        return [u, r.status === 'fulfilled' ? true : (r.reason as Error)];
      }));
    }
  }, INSERT_BATCH_MAX, idle, ownWait);

  // Identical pages asked for together (the first page of a busy list, above all) are read once and the page
  // is shared; a page asked for after that read left is read again (src/platform/lib/coalesce.ts, singleFlight).
  const listShared = singleFlight<{ limit: number; after: string | undefined }, Page>(
    async ({ limit, after }, sent) => toPage(await db.query((sql) => {
      sent();
      return pageQuery(sql, limit, after);
    }), limit),
    idle,
  );

  return {
    get,

    async create(input, opts) {
      const user = stamp(input, new Date());
      if (opts?.idempotency) return (await createIdempotent([user], opts.idempotency, opts))[0]!;
      // As with reads, a request with its own deadline writes alone.
      if (opts?.deadline !== undefined) {
        await insertOne(user, opts);
        return user;
      }
      const outcome = await insertBatched(user);
      if (outcome !== true) throw outcome;
      return user;
    },

    async createMany(inputs, opts) {
      const now = new Date();
      const users = inputs.map((input) => stamp(input, now));
      if (opts?.idempotency) return createIdempotent(users, opts.idempotency, opts);
      // One statement whatever the batch size (unnest of typed arrays), so it is prepared once and the batch is
      // atomic; the transaction gives it the deadline and the retry on serialization failure.
      await db.transaction((tx) => insertRows(tx, users, record).then(() => undefined), opts);
      committed();
      return users;
    },

    async update(id, patch: UserPatch, opts) {
      // updated_at moves strictly forward, by at least 1 ms, even for two updates in the same millisecond.
      const rows = await db.query(
        (sql) => record<User[]>(sql, 'user.updated', sql`UPDATE users SET
            name = COALESCE(${patch.name ?? null}::text, name),
            email = COALESCE(${patch.email ?? null}::text, email),
            age = COALESCE(${patch.age ?? null}::int, age),
            updated_at = GREATEST(${new Date()}::timestamptz, updated_at + interval '1 millisecond',
                                  created_at + interval '1 millisecond')
          WHERE id = ${id} ${expected(sql, opts?.expect)}`, COLUMNS),
        opts,
      );
      if (rows.length === 0) {
        if (opts?.expect) throw errors.preconditionFailed();
        return null;
      }
      committed();
      return rows[0]!;
    },

    async delete(id, opts) {
      const gone = await db.query(
        (sql) => record(sql, 'user.deleted', sql`DELETE FROM users WHERE id = ${id} ${expected(sql, opts?.expect)}`, ['id']), opts);
      if (gone.length === 0 && opts?.expect) throw errors.preconditionFailed();
      if (gone.length > 0) committed();
    },

    async list({ limit, cursor }, opts) {
      const after = cursor === undefined ? undefined : bytesToId(checkedPosition(cursor));
      // As with get: a request with its own deadline, or that asks to, reads alone.
      if (opts?.deadline === undefined && !opts?.alone) return listShared(`${limit}/${after ?? ''}`, { limit, after });
      return toPage(await db.query((sql) => pageQuery(sql, limit, after), opts), limit);
    },

    async *stream(o) {
      const { limit, fetchSize, deadline, signal } = o;
      if (limit === 0) return;
      if (o.bulk && copyUrl !== undefined) {
        yield* copyUsersOut(copyUrl, COLUMNS, o);
        return;
      }
      const pages = db.cursor(
        (sql) => sql<User[]>`SELECT ${sql(COLUMNS)} FROM users
          ORDER BY id LIMIT ${limit}`,
        { fetchSize, deadline },
      );
      for await (const rows of pages) {
        if (signal?.aborted) return;
        yield rows as unknown as User[];
      }
    },
  };
}

/** The 16 id bytes of a cursor, or `invalidCursor`. */
function checkedPosition(cursor: string): Buffer {
  const pos = decodeCursor(CURSOR_TAG.postgres, cursor);
  if (pos.length !== 16) throw errors.invalidCursor();
  return pos;
}
