/**
 * The Cassandra backend's probes: ping, schema state, pool figures, and the slow operation of the contract's
 * `/performance` endpoints, apart from the users store so that decorators of the store never see them.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BackendProbes } from '../backend.ts';
import type { Schema } from './schema.ts';
import type { Session } from './session.ts';
import { idKey } from './users-rows.ts';

/** `sleep`: the pause between the cheap real reads it is made of (Cassandra has no server-side sleep). */
const SLEEP_STEP_MS = 20;
/** A readiness probe answers within this, whatever deadline the caller has. */
const READY_PROBE_MS = 900;

export function createCassandraProbes(session: Session, schema: Schema): BackendProbes {
  const table = `"${session.keyspace}".users`;
  const PROBE = `SELECT id FROM ${table} WHERE id = ?`;
  const READY_PROBE = `SELECT id FROM ${table} LIMIT 1`;

  return {
    ping: (opts) => session.ping(opts),

    async schemaReady(opts) {
      if (!schema.ready) return false;
      const deadline = Math.min(opts?.deadline ?? Infinity, performance.now() + READY_PROBE_MS);
      await session.execute(READY_PROBE, [], { kind: 'probe', idempotent: true, deadline });
      return true;
    },

    pools: () => ({ users: session.stats() }),

    async sleep(seconds, opts) {
      // Cassandra has no sleep function: the operation is a run of real single-partition reads at the read
      // consistency, one after another, until `seconds` have passed. It fails like any read when replicas are
      // lost, and stops at the deadline (504) without sending another. Before the schema exists there is no
      // table to read: the store's own reads wait for it the same way.
      if (!schema.ready) await schema.ensure();
      const end = performance.now() + seconds * 1000;
      while (performance.now() < end) {
        const id = randomUUID();
        await session.execute(PROBE, [id], { kind: 'read', keys: [idKey(id)], idempotent: true, deadline: opts?.deadline });
        const pause = Math.min(SLEEP_STEP_MS, end - performance.now(), (opts?.deadline ?? Infinity) - performance.now());
        if (pause > 0) await sleep(pause);
      }
    },
  };
}
