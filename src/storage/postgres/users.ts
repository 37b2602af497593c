/**
 * The PostgreSQL adapter of `UsersRepository`.
 *
 * Every statement is a tagged template (values can never be spliced into SQL text) with a fixed text, so
 * postgres.js prepares it once per connection. Rows are listed in primary-key order; ids are UUIDv7, so that is
 * creation order, and the cursor is the last id seen (keyset pagination: no OFFSET scans, no skipped or repeated
 * rows while others insert).
 */
import { errors } from '../../errors.ts';
import { uuidv7 } from '../../lib/uuid.ts';
import { CURSOR_TAG, decodeCursor, encodeCursor } from '../cursor.ts';
import type { CallOptions, NewUser, User, UserPatch, UsersRepository } from '../repository.ts';
import type { Db } from './db.ts';
import type { Health } from './health.ts';

const idToBytes = (id: string) => Buffer.from(id.replace(/-/g, ''), 'hex');
const bytesToId = (b: Buffer) => {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

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

  async function get(id: string, opts?: CallOptions): Promise<User | null> {
    const rows = await db.query(
      (sql) => sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users WHERE id = ${id}`,
      opts,
    );
    return rows[0] ?? null;
  }

  return {
    backend: 'postgres',
    get,

    async create(input, opts) {
      const user = stamp(input, new Date());
      await db.query(
        (sql) => sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
          VALUES (${user.id}, ${user.name}, ${user.email}, ${user.age}, ${user.created_at}, ${user.updated_at})`,
        opts,
      );
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
      // One row more than asked tells whether a next page exists without a second query.
      const rows = await db.query(
        (sql) => after === undefined
          ? sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users
              ORDER BY id LIMIT ${limit + 1}`
          : sql<User[]>`SELECT id, name, email, age, created_at, updated_at FROM users
              WHERE id > ${after} ORDER BY id LIMIT ${limit + 1}`,
        opts,
      );
      const items = rows.length > limit ? rows.slice(0, limit) : [...rows];
      const last = items.at(-1);
      return {
        items,
        nextCursor: rows.length > limit && last ? encodeCursor(CURSOR_TAG.postgres, idToBytes(last.id)) : null,
      };
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
