/**
 * Rows of the Cassandra `users` table as `User`s, and the listing cursor (the driver's paging state with a
 * checksum): what every read path of src/db/cassandra/users.ts shares, so each treats a deleted row alike.
 */
import { createHash } from 'node:crypto';
import type { types } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';
import { CURSOR_TAG, decodeCursor, encodeCursor } from '../cursor.ts';
import type { User } from '../users-store.ts';
import { USERS_COLUMNS } from './schema.ts';

export const idKey = (id: string) => Buffer.from(id.replace(/-/g, ''), 'hex');

/** What a read selects: the user, and `deleted_at` (a delete whose event is not relayed yet: the row is absent). */
export const READ_COLUMNS = [...Object.keys(USERS_COLUMNS), 'deleted_at'].join(', ');

/**
 * A row as a `User`; null when absent, deleted or incomplete. A row lacking a column is never one this adapter
 * wrote whole (it would be the remains of a write that raced a delete across skewed clocks) and is treated as absent.
 */
export function toUser(row: types.Row | undefined | null): User | null {
  if (!row || row.get('deleted_at') != null) return null;
  const id = row.get('id') as types.Uuid | null;
  const name = row.get('name') as string | null;
  const email = row.get('email') as string | null;
  const age = row.get('age') as number | null;
  const createdAt = row.get('created_at') as Date | null;
  const updatedAt = row.get('updated_at') as Date | null;
  if (id == null || name == null || email == null || age == null || createdAt == null || updatedAt == null) return null;
  return { id: id.toString(), name, email, age, created_at: createdAt, updated_at: updatedAt };
}

/** The users of a page of rows, deleted ones left out. */
export function usersOf(rows: types.Row[]): User[] {
  const users: User[] = [];
  for (const row of rows) {
    const user = toUser(row);
    if (user) users.push(user);
  }
  return users;
}

/** Bound values of INSERT, in column order. */
export const rowOf = (u: User): unknown[] => [u.id, u.name, u.email, u.age, u.created_at, u.updated_at];

/** The paging state of a page (the driver hands it out as hex), or undefined after the last page. */
export const pageStateOf = (rs: types.ResultSet): Buffer | undefined => (rs.pageState ? Buffer.from(rs.pageState, 'hex') : undefined);

/** Cursors of one keyspace: a paging state with a checksum, so an altered one is refused before the server sees it. */
export function cursors(keyspace: string) {
  const checksum = (state: Buffer) => createHash('sha256').update(keyspace).update('\0').update(state).digest().subarray(0, 4);
  return {
    of: (state: Buffer): string => encodeCursor(CURSOR_TAG.cassandra, Buffer.concat([state, checksum(state)])),
    /** The paging state inside a cursor of ours, or `invalidCursor`. */
    state(cursor: string): Buffer {
      const pos = decodeCursor(CURSOR_TAG.cassandra, cursor);
      if (pos.length < 5) throw errors.invalidCursor();
      const state = pos.subarray(0, -4);
      if (!checksum(state).equals(pos.subarray(-4))) throw errors.invalidCursor();
      return state;
    },
  };
}
