/**
 * The PostgreSQL adapter of `UsersRepository`.
 *
 * Every statement is a tagged template (values can never be spliced into SQL text) with a fixed text, so
 * postgres.js prepares it once per connection. Rows are listed in primary-key order; ids are UUIDv7, so that is
 * creation order, and the cursor is the last id seen (keyset pagination: no OFFSET scans, no skipped or repeated
 * rows while others insert).
 */
import type { PendingQuery, Row, Sql } from 'postgres';
import { errors, isAppError } from '../../errors.ts';
import { coalesce, singleFlight } from '../../lib/coalesce.ts';
import { uuidv7 } from '../../lib/uuid.ts';
import { CURSOR_TAG, decodeCursor, encodeCursor } from '../cursor.ts';
import type { CallOptions, NewUser, Page, User, UserPatch, UsersRepository } from '../repository.ts';
import type { Db } from './db.ts';
import type { Health } from './health.ts';

/** Most ids read, or rows inserted, by one batched statement. */
const GET_BATCH_MAX = 256;
const INSERT_BATCH_MAX = 256;
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const idToBytes = (id: string) => Buffer.from(id.replace(/-/g, ''), 'hex');
const bytesToId = (b: Buffer) => {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/**
 * INSERT of `users`: a plain VALUES list for one, else one unnest of typed arrays whatever their number, so
 * either text is prepared once per connection.
 */
function insertRows(sql: Sql, users: User[]): PendingQuery<Row[]> {
  if (users.length === 1) {
    const u = users[0]!;
    return sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
      VALUES (${u.id}, ${u.name}, ${u.email}, ${u.age}, ${u.created_at}, ${u.updated_at})`;
  }
  return sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
    SELECT * FROM unnest(
      ${sql.array(users.map((u) => u.id))}::uuid[], ${sql.array(users.map((u) => u.name))}::text[],
      ${sql.array(users.map((u) => u.email))}::text[], ${sql.array(users.map((u) => u.age))}::int[],
      ${sql.array(users.map((u) => u.created_at.toISOString()))}::timestamptz[],
      ${sql.array(users.map((u) => u.updated_at.toISOString()))}::timestamptz[])`;
}

/** A page in primary-key order, after the id `after` when given; one row more than asked tells whether more exist. */
function pageQuery(sql: Sql, limit: number, after: string | undefined): PendingQuery<User[]> {
  return after === undefined
    ? sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users ORDER BY id LIMIT ${limit + 1}`
    : sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users
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

export function createPostgresUsersRepository(db: Db, health: Health): UsersRepository {
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

  /** Nothing in flight: a lone lookup need not wait for company (src/lib/coalesce.ts). */
  const idle = () => db.stats().active === 0;

  async function getOne(id: string, opts?: CallOptions): Promise<User | null> {
    const rows = await db.query(
      (sql) => sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users WHERE id = ${id}`,
      opts,
    );
    return rows[0] ?? null;
  }

  // Reads by id that arrive together share one statement (src/lib/coalesce.ts): the profile of GET /users/{id}
  // under load is dominated by per-statement costs (a socket write and a round trip per query, the driver's
  // per-query objects, the server's per-statement work). The ids are canonical, so rows map back by id.
  const getBatched = coalesce<string, User>(
    (take) => db.query((sql) => {
      const ids = take();
      // A batch of one (an unloaded server) keeps the plain statement: `= ANY($1)` costs ~25 µs more per trip.
      return ids.length === 1
        ? sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users WHERE id = ${ids[0]!}`
        : sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users WHERE id = ANY(${sql.array(ids)}::uuid[])`;
    }).then((rows) => new Map(rows.map((row) => [row.id, row]))),
    GET_BATCH_MAX,
    idle,
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
    await db.query((sql) => insertRows(sql, [user]), opts);
  }

  // Inserts that arrive together are written by one statement and one commit (a WAL flush for the batch rather
  // than one per row), for the same reasons as the reads. Each is still acknowledged only once that commit is
  // done. If the database refuses the batch for its input (a value it will not store), each row is retried on
  // its own, so only the request that sent it fails.
  const insertBatched = coalesce<User, true | Error>(async (take) => {
    let users: User[] = [];
    try {
      await db.query((sql) => insertRows(sql, (users = take())));
      return new Map(users.map((u) => [u, true]));
    } catch (err) {
      if (users.length <= 1 || !isAppError(err) || err.statusCode !== 400) throw err;
      const each = await Promise.allSettled(users.map((u) => insertOne(u)));
      return new Map(users.map((u, i) => {
        const r = each[i]!;
        return [u, r.status === 'fulfilled' ? true : (r.reason as Error)];
      }));
    }
  }, INSERT_BATCH_MAX, idle);

  // Identical pages asked for together (the first page of a busy list, above all) are read once and the page
  // is shared; a page asked for after that read left is read again (src/lib/coalesce.ts, singleFlight).
  const listShared = singleFlight<{ limit: number; after: string | undefined }, Page>(
    async ({ limit, after }, sent) => toPage(await db.query((sql) => {
      sent();
      return pageQuery(sql, limit, after);
    }), limit),
    idle,
  );

  return {
    backend: 'postgres',
    get,

    async create(input, opts) {
      const user = stamp(input, new Date());
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
      // One statement whatever the batch size (unnest of typed arrays), so it is prepared once and the batch is
      // atomic; the transaction gives it the deadline and the retry on serialization failure.
      await db.transaction(
        (tx) => tx`INSERT INTO users (id, name, email, age, created_at, updated_at)
          SELECT * FROM unnest(
            ${tx.array(users.map((u) => u.id))}::uuid[], ${tx.array(users.map((u) => u.name))}::text[],
            ${tx.array(users.map((u) => u.email))}::text[], ${tx.array(users.map((u) => u.age))}::int[],
            ${tx.array(users.map(() => now.toISOString()))}::timestamptz[],
            ${tx.array(users.map(() => now.toISOString()))}::timestamptz[])`.then(() => undefined),
        opts,
      );
      return users;
    },

    async update(id, patch: UserPatch, opts) {
      // updated_at moves strictly forward, by at least 1 ms, even for two updates in the same millisecond.
      const rows = await db.query(
        (sql) => sql<User[]>`UPDATE users SET
            name = COALESCE(${patch.name ?? null}::text, name),
            email = COALESCE(${patch.email ?? null}::text, email),
            age = COALESCE(${patch.age ?? null}::int, age),
            updated_at = GREATEST(${new Date()}::timestamptz, updated_at + interval '1 millisecond',
                                  created_at + interval '1 millisecond')
          WHERE id = ${id}
          RETURNING id, name, email, age, created_at, updated_at`,
        opts,
      );
      return rows[0] ?? null;
    },

    async delete(id, opts) {
      await db.query((sql) => sql`DELETE FROM users WHERE id = ${id}`, opts);
    },

    async list({ limit, cursor }, opts) {
      const after = cursor === undefined ? undefined : bytesToId(checkedPosition(cursor));
      // As with get: a request with its own deadline, or that asks to, reads alone.
      if (opts?.deadline === undefined && !opts?.alone) return listShared(`${limit}/${after ?? ''}`, { limit, after });
      return toPage(await db.query((sql) => pageQuery(sql, limit, after), opts), limit);
    },

    async *stream({ limit, fetchSize, deadline, signal }) {
      if (limit === 0) return;
      const pages = db.cursor(
        (sql) => sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users
          ORDER BY id LIMIT ${limit}`,
        { fetchSize, deadline },
      );
      for await (const rows of pages) {
        if (signal?.aborted) return;
        yield rows as unknown as User[];
      }
    },

    async sleep(seconds, opts) {
      await db.query((sql) => sql`SELECT pg_sleep(${seconds})`, opts);
    },

    ping: (opts) => health.ping(opts),
    schemaReady: (opts) => health.schemaReady(opts),
    poolStats: () => db.stats(),

    async close() {
      await Promise.all([db.close(), health.close()]);
    },
  };
}

/** The 16 id bytes of a cursor, or `invalidCursor`. */
function checkedPosition(cursor: string): Buffer {
  const pos = decodeCursor(CURSOR_TAG.postgres, cursor);
  if (pos.length !== 16) throw errors.invalidCursor();
  return pos;
}
