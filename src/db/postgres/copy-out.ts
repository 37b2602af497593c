/**
 * Every user, in primary-key order, through one binary `COPY (SELECT ...) TO STDOUT`: the PostgreSQL side of
 * `UsersStore.stream`'s `bulk` hint (an export reads the whole table once). A cursor pays a round trip and a
 * text parse of every uuid and timestamp per page; a COPY streams at the socket's pace and the tuples are decoded
 * here (copy-binary.ts). The users come out as `User`s, so an export still goes through the one encoder of
 * `GET /users/stream` and its bytes are that endpoint's (test/bulk-postgres.test.ts "export").
 *
 * On a connection of its own, closed afterwards whatever happened: a COPY abandoned half-way (a cancelled export,
 * the limit reached) cannot be stopped with a statement on its connection, so it must not go back to a pool.
 * COPY takes no parameters, so `limit` is honoured by stopping the read, not in the SQL.
 */
import postgres from 'postgres';
import { errors, isAppError } from '../../platform/errors.ts';
import type { StreamOptions, User } from '../users-store.ts';
import { UserDecoder } from './copy-binary.ts';
import { toAppError } from './errors.ts';

export async function* copyUsersOut(url: string, columns: string[], o: StreamOptions): AsyncGenerator<User[]> {
  if (o.limit === 0) return;
  const sql = postgres(url, {
    max: 1, onnotice: () => {},
    connection: { application_name: 'spate-bulk-read', statement_timeout: 0, default_transaction_read_only: true },
  });
  try {
    const readable = await sql`COPY (SELECT ${sql(columns)} FROM users ORDER BY id) TO STDOUT (FORMAT binary)`.readable();
    const decoder = new UserDecoder();
    let page: User[] = [];
    let left = o.limit;
    for await (const chunk of readable as AsyncIterable<Buffer>) {
      if (o.signal?.aborted) return;
      for (const user of decoder.push(chunk)) {
        page.push(user);
        if (--left === 0) { yield page; return; }
        if (page.length >= o.fetchSize) { yield page; page = []; }
      }
    }
    if (!decoder.ended) throw errors.unavailable('the COPY of users ended before its trailer');
    if (page.length > 0) yield page;
  } catch (err) {
    throw isAppError(err) ? err : toAppError(err);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}
