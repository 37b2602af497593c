/**
 * The Cassandra adapter of `BulkStore`: prepared INSERTs, a bounded number in flight, as the rows come.
 *
 * Not atomic (a logged batch of a million partitions is not a thing Cassandra does): the caller checks every row
 * before the first write when it wants all or nothing. A retried job writes the same rows again, and that is
 * harmless because each write is pinned: the id comes from the job and the line (src/db/bulk-store.ts), and
 * `USING TIMESTAMP` is the job's creation time. A second write of a row is therefore the same cell at the same
 * timestamp (no duplicate, nothing changes), and an update or delete a client made since, stamped later, still
 * wins over it. That is also why the driver may send these writes again (idempotent): a late copy cannot undo
 * anything, unlike a plain INSERT stamped by the coordinator (src/db/cassandra/users.ts).
 */
import { types } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';
import { importIdPrefix, type BulkStore } from '../bulk-store.ts';
import { idKey } from './users-rows.ts';
import { USERS_COLUMNS, type Schema } from './schema.ts';
import type { Session } from './session.ts';

/** Writes in flight at once: enough to keep a few nodes busy, few enough not to overrun one. */
const IN_FLIGHT = 64;

export function createCassandraBulkStore(session: Session, schema: Schema): BulkStore {
  const INSERT = `INSERT INTO "${session.keyspace}".users (${Object.keys(USERS_COLUMNS).join(', ')}) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`;

  return {
    atomic: false,

    async importUsers(key, rows, signal) {
      if (!schema.ready) await schema.ensure().catch((err: unknown) => { throw errors.unavailable('database not ready', err); });
      const prefix = importIdPrefix(key);
      // Microseconds, as Cassandra's own timestamps are.
      const writeTime = types.Long.fromNumber(key.createdAt.getTime()).multiply(1000);
      const stamp = key.createdAt;
      const pending = new Set<Promise<void>>();
      let failure: unknown;
      let written = 0;
      for await (const batch of rows) {
        for (const r of batch) {
          if (failure !== undefined) throw failure;
          if (signal?.aborted) throw errors.unavailable('import stopped');
          const id = prefix + r.line.toString(16).padStart(10, '0');
          const p: Promise<void> = session.execute(INSERT, [id, r.name, r.email, r.age, stamp, stamp, writeTime], {
            kind: 'write', keys: [idKey(id)], idempotent: true,
          }).then(() => { written += 1; }, (err: unknown) => { failure ??= err; }).finally(() => pending.delete(p));
          pending.add(p);
          if (pending.size >= IN_FLIGHT) await Promise.race(pending);
        }
      }
      await Promise.all(pending);
      if (failure !== undefined) throw failure;
      return { written, alreadyDone: false };
    },
  };
}
