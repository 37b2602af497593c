/**
 * The PostgreSQL adapter of `BulkStore`: an import is one binary `COPY users FROM STDIN` in one transaction, on
 * a connection of its own (rows encoded straight into Buffers: src/db/postgres/copy-binary.ts).
 *
 * - All or nothing: the rows stream into the COPY as they are read and checked; the transaction commits only
 *   when the iterable ended without an error, so a refused file, a cancelled job or a crash writes nothing.
 * - At-least-once safe: the transaction first takes an advisory lock on the job and looks for the import's id
 *   range (src/db/bulk-store.ts). An earlier attempt that committed left its rows there, so this attempt writes
 *   nothing; two attempts at once queue on the lock. COPY cannot skip conflicts, so this check is what keeps a
 *   retry from failing on (or duplicating) its own rows.
 * - porsager/postgres#1173: when the server refuses a COPY after the client sent CopyDone, the driver never
 *   settles the writable's end, and a COMMIT sent next is answered `ROLLBACK` without an error. So we never wait
 *   for the writable to finish: after `end()`, a `SELECT 1` on the same connection proves the transaction is
 *   intact (in an aborted one it fails), and the COMMIT's own command tag is checked. The connection belongs
 *   to this import alone and is closed afterwards whatever happened, so it can never go back to a pool idle in
 *   an aborted transaction.
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import postgres from 'postgres';
import { errors, isAppError } from '../../platform/errors.ts';
import { importIdPrefix, importIdRange, type BulkStore } from '../bulk-store.ts';
import { COPY_HEADER, COPY_TRAILER, ImportRowEncoder } from './copy-binary.ts';
import { toAppError } from './errors.ts';
import { COLUMNS } from './users.ts';

export interface PostgresBulkOptions {
  url: string;
  /** Seconds to wait for a connection. */
  connectTimeoutS: number;
}

/** Bytes gathered before one write to the socket. */
const CHUNK = 256 * 1024;

/**
 * Ends the COPY and resolves once the driver has sent CopyDone, which is when its writable's `final` runs (the
 * driver accepts the next statement on the connection only after that). Not `finish`: that is the event
 * porsager/postgres#1173 never emits after a refused COPY.
 */
function ended(copy: Writable): Promise<void> {
  const w = copy as Writable & { _final(cb: (err?: Error | null) => void): void };
  const final = w._final;
  return new Promise((resolve) => {
    w._final = (cb) => {
      final.call(w, cb);
      resolve();
    };
    w.end();
  });
}

export function createPostgresBulkStore(opts: PostgresBulkOptions): BulkStore {
  return {
    atomic: true,

    async importUsers(key, rows, signal) {
      const prefix = importIdPrefix(key);
      const [lo, hi] = importIdRange(prefix);
      // Statement timeout off: an import lasts as long as its file. A transaction left idle (this process froze)
      // is ended by the server after a minute.
      const sql = postgres(opts.url, {
        max: 1, onnotice: () => {}, connect_timeout: opts.connectTimeoutS,
        connection: { application_name: 'spate-bulk', statement_timeout: 0, idle_in_transaction_session_timeout: 60_000, TimeZone: 'UTC' },
      });
      let copy: Writable | undefined;
      try {
        const conn = await sql.reserve();
        await conn`BEGIN`;
        await conn`SELECT pg_advisory_xact_lock(hashtextextended(${`bulk.import ${key.jobId}`}, 0))`;
        const [found] = await conn<{ n: number }[]>`SELECT count(*)::int AS n FROM users WHERE id BETWEEN ${lo} AND ${hi}`;
        if (found!.n > 0) {
          await conn`ROLLBACK`;
          return { written: found!.n, alreadyDone: true };
        }
        copy = await conn`COPY users (${conn(COLUMNS)}) FROM STDIN (FORMAT binary)`.writable();
        const failed = once(copy, 'error').then(([err]) => { throw err; });
        failed.catch(() => {});
        let written = 0;
        const out = new ImportRowEncoder(prefix, key.createdAt, CHUNK);
        const flush = async (tail?: Buffer) => {
          const ok = copy!.write(tail ? Buffer.concat([out.take(), tail]) : out.take());
          if (!ok) await Promise.race([once(copy!, 'drain'), failed]);
        };
        copy.write(COPY_HEADER);
        for await (const batch of rows) {
          if (signal?.aborted) throw errors.unavailable('import stopped');
          for (const r of batch) {
            if (!out.fits(r.name, r.email)) await flush();
            out.row(r.line, r.name, r.email, r.age);
          }
          written += batch.length;
        }
        await flush(COPY_TRAILER);
        await Promise.race([ended(copy), failed]);
        // Proves the COPY went through (see the header): in an aborted transaction this fails.
        await Promise.race([conn`SELECT 1`, failed]);
        const done = await conn`COMMIT`;
        if (done.command !== 'COMMIT') throw errors.internal(new Error(`import transaction ended with ${done.command}`));
        return { written, alreadyDone: false };
      } catch (err) {
        if (copy && !copy.destroyed) copy.destroy(err as Error);
        throw isAppError(err) ? err : toAppError(err);
      } finally {
        // Closing the connection ends any transaction still open on the server (rolled back).
        await sql.end({ timeout: 1 }).catch(() => {});
      }
    },
  };
}
