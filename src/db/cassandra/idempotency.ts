/**
 * Idempotency keys of creates on Cassandra. A logged batch cannot hold a lightweight transaction on another
 * partition, so the key is claimed first (INSERT ... IF NOT EXISTS, with the users the request is about to write),
 * then the users are written, then the claim is marked done. A retry that finds the claim:
 * - done: returns the users it recorded, writing nothing;
 * - another fingerprint: `idempotencyMismatch`;
 * - not done and recent: the first request is still writing (`idempotencyInFlight`);
 * - not done and older than two request timeouts: the first request died; the retry finishes its writes with the
 *   same ids through INSERT ... IF NOT EXISTS, which can neither duplicate a row nor undo a later update.
 */
import { randomUUID } from 'node:crypto';
import type { types } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';
import type { CallOptions, IdempotencyKey, User } from '../users-store.ts';
import type { ExecOptions } from './session.ts';

type Exec = (cql: string, params: unknown[], o: ExecOptions) => Promise<types.ResultSet>;

export type Claim =
  /** This request holds the key: write the users, then `done`. */
  | { state: 'claimed'; users: User[] }
  /** A request with this key finished: answer with its users. */
  | { state: 'replay'; users: User[] }
  /** A request with this key died before it finished: write its users (idempotently), then `done`. */
  | { state: 'finish'; users: User[] };

type StoredUser = Omit<User, 'created_at' | 'updated_at'> & { created_at: string; updated_at: string };
const revive = (u: StoredUser): User => ({ ...u, created_at: new Date(u.created_at), updated_at: new Date(u.updated_at) });

export interface IdempotencyStore {
  claim(idem: IdempotencyKey, users: User[], opts?: CallOptions): Promise<Claim>;
  done(idem: IdempotencyKey, opts?: CallOptions): Promise<void>;
}

export function createIdempotencyStore(keyspace: string, exec: Exec, ttlS: number, requestTimeoutMs: number): IdempotencyStore {
  const table = `"${keyspace}".idempotency_keys`;
  const CLAIM = `INSERT INTO ${table} (scope, key, claim_id, fingerprint, response, done, created_at) `
    + `VALUES (?, ?, ?, ?, ?, false, ?) IF NOT EXISTS USING TTL ${ttlS}`;
  // The TTL is set again, or the column written by this update would outlive the claim. A lightweight
  // transaction like the claim: a claim that loses the race still runs a Paxos round, which re-commits the
  // winner's insert (done = false) under its own, later ballot; a plain UPDATE stamped before that ballot
  // would be overwritten and the key stay in flight forever. Through Paxos the mark is ordered after it.
  const DONE = `UPDATE ${table} USING TTL ${ttlS} SET done = true WHERE scope = ? AND key = ? IF fingerprint = ?`;

  return {
    async claim(idem, users, opts) {
      const claimId = randomUUID();
      const rs = await exec(CLAIM, [idem.scope, idem.key, claimId, idem.fingerprint, JSON.stringify(users), new Date()], {
        kind: 'cas', idempotent: true, deadline: opts?.deadline,
      });
      const row = rs.first();
      // Applied, or not applied because the driver sent this very claim twice and the first copy won.
      if (row.get('[applied]') === true || String(row.get('claim_id')) === claimId) return { state: 'claimed', users };
      if (row.get('fingerprint') !== idem.fingerprint) throw errors.idempotencyMismatch();
      const recorded = (JSON.parse(String(row.get('response'))) as StoredUser[]).map(revive);
      if (row.get('done') === true) return { state: 'replay', users: recorded };
      const age = Date.now() - (row.get('created_at') as Date).getTime();
      if (age < 2 * requestTimeoutMs) throw errors.idempotencyInFlight();
      return { state: 'finish', users: recorded };
    },

    async done(idem, opts) {
      await exec(DONE, [idem.scope, idem.key, idem.fingerprint], { kind: 'cas', idempotent: true, deadline: opts?.deadline });
    },
  };
}
