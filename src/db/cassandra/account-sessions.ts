/**
 * Sessions (refresh-token families) and their refresh tokens on Cassandra: the part of the accounts adapter
 * (accounts.ts) that rotation, replay detection, revocation and pruning go through.
 *
 * Tables (schema.ts): `auth_sessions` by id and `auth_sessions_by_account`; `refresh_tokens` by hash,
 * `refresh_tokens_by_session`, and `refresh_tokens_by_expiry` partitioned by the hour a token expires in, with
 * `refresh_token_expiry_hours` listing the hours that still hold tokens, so pruning reads only what expired.
 * Expiry is a column, not a TTL: an expired token must stay until pruning deletes it, so that pruning can tell
 * which sessions it leaves empty, and a replay of a used token is recognised until then.
 *
 * First use of a token is a lightweight transaction, `IF used_by = null AND session_id = ?`: of two concurrent
 * refreshes with one token exactly one applies. The insert never writes `used_by`, so no plain write (stamped by
 * another coordinator's clock) can ever shadow the conditional one, and the condition on `session_id` fails on a
 * token that was deleted, so the update never recreates it. `used_by` is a fresh id per call: a retry of our own
 * update that had applied finds its own id there and still reports the first use.
 */
import { randomUUID } from 'node:crypto';
import type { types } from 'cassandra-driver';
import type { ConsumedToken, Session as AuthSession } from '../accounts-store.ts';
import type { CallOptions } from '../users-store.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import { SHARD_KEY, bigintKey as hourKey, fanOut, textKey, uuidKey, type Exec } from './statements.ts';
import type { ExecOptions } from './session.ts';

const HOUR_MS = 3_600_000;
const hourOf = (d: Date) => Math.floor(d.getTime() / HOUR_MS);

export interface TokenStore {
  createSession(input: { accountId: string; tokenHash: string; expiresAt: Date }, opts?: CallOptions): Promise<AuthSession>;
  getSession(id: string, opts?: CallOptions): Promise<AuthSession | null>;
  consume(tokenHash: string, opts?: CallOptions): Promise<ConsumedToken | null>;
  add(input: { sessionId: string; tokenHash: string; expiresAt: Date }, opts?: CallOptions): Promise<void>;
  revokeSession(id: string, opts?: CallOptions): Promise<void>;
  revokeSessionsOf(accountId: string, opts?: CallOptions): Promise<string[]>;
  /** Deletes every session of an account with its tokens (an account deletion). */
  deleteSessionsOf(accountId: string, opts?: CallOptions): Promise<void>;
  prune(before: Date, batch: number, opts?: CallOptions): Promise<{ tokens: number; sessions: number }>;
}

interface Expired {
  hour: number;
  expiresAt: Date;
  tokenHash: string;
  sessionId: string | null;
}

export function createTokenStore(exec: Exec): TokenStore {
  const t = exec.table;
  const cql = {
    insertSession: `INSERT INTO ${t('auth_sessions')} (id, account_id, created_at) VALUES (?, ?, ?)`,
    insertSessionOf: `INSERT INTO ${t('auth_sessions_by_account')} (account_id, session_id) VALUES (?, ?)`,
    insertToken: `INSERT INTO ${t('refresh_tokens')} (token_hash, session_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
    insertTokenOf: `INSERT INTO ${t('refresh_tokens_by_session')} (session_id, token_hash) VALUES (?, ?)`,
    insertExpiry: `INSERT INTO ${t('refresh_tokens_by_expiry')} (hour, expires_at, token_hash, session_id) VALUES (?, ?, ?, ?)`,
    markHour: `INSERT INTO ${t('refresh_token_expiry_hours')} (shard, hour) VALUES (0, ?)`,
    session: `SELECT id, account_id, revoked_at FROM ${t('auth_sessions')} WHERE id = ?`,
    token: `SELECT session_id, expires_at, used_by FROM ${t('refresh_tokens')} WHERE token_hash = ?`,
    useToken: `UPDATE ${t('refresh_tokens')} SET used_at = ?, used_by = ? WHERE token_hash = ? IF used_by = null AND session_id = ?`,
    revoke: `UPDATE ${t('auth_sessions')} SET revoked_at = ? WHERE id = ? IF revoked_at = null AND account_id = ?`,
    sessionsOf: `SELECT session_id FROM ${t('auth_sessions_by_account')} WHERE account_id = ?`,
    tokensOf: `SELECT token_hash FROM ${t('refresh_tokens_by_session')} WHERE session_id = ?`,
    anyTokenOf: `SELECT token_hash FROM ${t('refresh_tokens_by_session')} WHERE session_id = ? LIMIT 1`,
    deleteToken: `DELETE FROM ${t('refresh_tokens')} WHERE token_hash = ?`,
    deleteTokenOf: `DELETE FROM ${t('refresh_tokens_by_session')} WHERE session_id = ? AND token_hash = ?`,
    deleteTokensOf: `DELETE FROM ${t('refresh_tokens_by_session')} WHERE session_id = ?`,
    deleteSession: `DELETE FROM ${t('auth_sessions')} WHERE id = ?`,
    deleteSessionOf: `DELETE FROM ${t('auth_sessions_by_account')} WHERE account_id = ? AND session_id = ?`,
    deleteSessionsOf: `DELETE FROM ${t('auth_sessions_by_account')} WHERE account_id = ?`,
    hours: `SELECT hour FROM ${t('refresh_token_expiry_hours')} WHERE shard = 0 AND hour <= ?`,
    expiredIn: `SELECT expires_at, token_hash, session_id FROM ${t('refresh_tokens_by_expiry')} `
      + 'WHERE hour = ? AND expires_at >= ? AND expires_at < ? LIMIT ?',
    deleteExpiry: `DELETE FROM ${t('refresh_tokens_by_expiry')} WHERE hour = ? AND expires_at = ? AND token_hash = ?`,
    dropHour: `DELETE FROM ${t('refresh_tokens_by_expiry')} WHERE hour = ?`,
    unmarkHour: `DELETE FROM ${t('refresh_token_expiry_hours')} WHERE shard = 0 AND hour = ?`,
  };
  /**
   * Per hour, where the last batch this process pruned there ended. Each deleted entry leaves a tombstone in its
   * hour's partition until the hour is drained and dropped; reading on from here instead of from the start of the
   * hour keeps a busy hour's later batches from reading over all of them (2.1 gives up on a read past 100,000).
   * Only a token created already expired could land behind it; the hour's partition tombstone takes such an
   * entry along, and its token then stays until its account goes.
   */
  const resumeAt = new Map<number, Date>();
  const read = (keys: Buffer[], opts?: CallOptions): ExecOptions => ({ kind: 'read', keys, idempotent: true, deadline: opts?.deadline });
  const write = (keys: Buffer[], opts?: CallOptions): ExecOptions => ({ kind: 'write', keys, idempotent: true, deadline: opts?.deadline });

  /** The statements that add a token to a session, for one logged batch. */
  const tokenInserts = (sessionId: string, tokenHash: string, expiresAt: Date, now: Date) => {
    const hour = hourOf(expiresAt);
    return {
      queries: [
        { query: cql.insertToken, params: [tokenHash, sessionId, now, expiresAt] },
        { query: cql.insertTokenOf, params: [sessionId, tokenHash] },
        { query: cql.insertExpiry, params: [hour, expiresAt, tokenHash, sessionId] },
        { query: cql.markHour, params: [hour] },
      ],
      keys: [textKey(tokenHash), uuidKey(sessionId), hourKey(hour), SHARD_KEY],
    };
  };

  async function readSession(id: string, opts?: CallOptions): Promise<AuthSession | null> {
    const row = (await exec(cql.session, [id], read([uuidKey(id)], opts))).first();
    const accountId = row?.get('account_id');
    if (!row || accountId == null) return null;
    return { id, accountId: String(accountId), revoked: row.get('revoked_at') != null };
  }

  /**
   * Revokes `s` unless it was revoked when read, or is gone; true when it is revoked now. Not applied with the
   * session still there means revoked meanwhile, perhaps by a retry of this very update: callers invalidate
   * what they cached of the sessions this returns, so it must not miss one.
   */
  async function revoke(s: AuthSession, opts?: CallOptions): Promise<boolean> {
    if (s.revoked) return false;
    const rs = await exec(cql.revoke, [new Date(), s.id, s.accountId], { kind: 'cas', keys: [uuidKey(s.id)], idempotent: true, deadline: opts?.deadline });
    const row = rs.first();
    return row?.get('[applied]') === true || row?.get('account_id') != null;
  }

  async function sessionIdsOf(accountId: string, opts?: CallOptions): Promise<string[]> {
    const rs = await exec(cql.sessionsOf, [accountId], read([uuidKey(accountId)], opts));
    return rs.rows.map((r) => String(r.get('session_id')));
  }

  /** Deletes a session that has no tokens left; true when this call deleted it. */
  async function dropIfEmpty(sessionId: string, opts?: CallOptions): Promise<boolean> {
    if ((await exec(cql.anyTokenOf, [sessionId], read([uuidKey(sessionId)], opts))).rows.length > 0) return false;
    const s = await readSession(sessionId, opts);
    if (!s) return false;
    await exec(cql.deleteSession, [sessionId], write([uuidKey(sessionId)], opts));
    await exec(cql.deleteSessionOf, [s.accountId, sessionId], write([uuidKey(s.accountId)], opts));
    return true;
  }

  /** Expired tokens in the oldest hours first, at most `batch`, with the hours found drained. */
  async function expired(before: Date, batch: number, opts?: CallOptions): Promise<{ found: Expired[]; drained: number[] }> {
    const last = hourOf(before);
    const hours = (await exec(cql.hours, [last], read([SHARD_KEY], opts))).rows.map((r) => Number(r.get('hour') as types.Long));
    const found: Expired[] = [];
    const drained: number[] = [];
    for (const hour of hours) {
      const want = batch - found.length;
      if (want <= 0) break;
      const from = resumeAt.get(hour) ?? new Date(hour * HOUR_MS);
      const rs = await exec(cql.expiredIn, [hour, from, before, want], read([hourKey(hour)], opts));
      for (const r of rs.rows) {
        const sessionId = r.get('session_id');
        found.push({ hour, expiresAt: r.get('expires_at'), tokenHash: r.get('token_hash'), sessionId: sessionId == null ? null : String(sessionId) });
      }
      // Every token of an hour before `before`'s has expired: fewer than asked for means this batch empties it.
      if (hour < last && rs.rows.length < want) drained.push(hour);
    }
    return { found, drained };
  }

  return {
    async createSession({ accountId, tokenHash, expiresAt }, opts) {
      const now = new Date();
      const id = uuidv7(now.getTime());
      const token = tokenInserts(id, tokenHash, expiresAt, now);
      // One logged batch: a session never exists without its first token (pruning relies on it). Never sent
      // twice: a copy applied late could bring back a session deleted meanwhile.
      await exec.batch([
        { query: cql.insertSession, params: [id, accountId, now] },
        { query: cql.insertSessionOf, params: [accountId, id] },
        ...token.queries,
      ], { kind: 'write', keys: [uuidKey(id), uuidKey(accountId), ...token.keys], idempotent: false, deadline: opts?.deadline });
      return { id, accountId, revoked: false };
    },

    getSession: (id, opts) => readSession(id, opts),

    async consume(tokenHash, opts) {
      const row = (await exec(cql.token, [tokenHash], read([textKey(tokenHash)], opts))).first();
      const sessionId = row?.get('session_id');
      const expiresAt = row?.get('expires_at') as Date | null | undefined;
      if (!row || sessionId == null || expiresAt == null) return null;
      let firstUse = false;
      // A use already visible is final (`used_by` is never cleared): a replay costs no Paxos round.
      if (row.get('used_by') == null) {
        const nonce = randomUUID();
        const rs = await exec(cql.useToken, [new Date(), nonce, tokenHash, sessionId], {
          kind: 'cas', keys: [textKey(tokenHash)], idempotent: true, deadline: opts?.deadline,
        });
        const result = rs.first();
        if (result?.get('[applied]') !== true && result?.get('session_id') == null) return null;
        firstUse = result?.get('[applied]') === true || String(result?.get('used_by')) === nonce;
      }
      // Read after the use: a revocation that came before it is seen.
      const session = await readSession(String(sessionId), opts);
      if (!session) return null;
      return { sessionId: session.id, accountId: session.accountId, expiresAt, firstUse, sessionRevoked: session.revoked };
    },

    async add({ sessionId, tokenHash, expiresAt }, opts) {
      const token = tokenInserts(sessionId, tokenHash, expiresAt, new Date());
      await exec.batch(token.queries, { kind: 'write', keys: token.keys, idempotent: false, deadline: opts?.deadline });
    },

    async revokeSession(id, opts) {
      const s = await readSession(id, opts);
      if (s) await revoke(s, opts);
    },

    async revokeSessionsOf(accountId, opts) {
      const sessions = await fanOut(await sessionIdsOf(accountId, opts), (id) => readSession(id, opts));
      const revoked = await fanOut(sessions, async (s) => (s && (await revoke(s, opts)) ? s.id : null));
      return revoked.filter((id): id is string => id !== null).sort();
    },

    async deleteSessionsOf(accountId, opts) {
      await fanOut(await sessionIdsOf(accountId, opts), async (sessionId) => {
        const hashes = (await exec(cql.tokensOf, [sessionId], read([uuidKey(sessionId)], opts))).rows.map((r) => r.get('token_hash') as string);
        await fanOut(hashes, async (h) => {
          const expiresAt = (await exec(cql.token, [h], read([textKey(h)], opts))).first()?.get('expires_at') as Date | undefined;
          await exec(cql.deleteToken, [h], write([textKey(h)], opts));
          // Its entry by expiry too, so pruning never spends a batch on it (one left by a cascade that stopped
          // half-way is found without its token, and only removed).
          if (expiresAt) {
            const hour = hourOf(expiresAt);
            await exec(cql.deleteExpiry, [hour, expiresAt, h], write([hourKey(hour)], opts));
          }
        });
        await exec(cql.deleteTokensOf, [sessionId], write([uuidKey(sessionId)], opts));
        await exec(cql.deleteSession, [sessionId], write([uuidKey(sessionId)], opts));
      });
      await exec(cql.deleteSessionsOf, [accountId], write([uuidKey(accountId)], opts));
    },

    async prune(before, batch, opts) {
      const { found, drained } = await expired(before, batch, opts);
      // Tokens, then the sessions they leave empty, then the entries by expiry: a run that stops half-way leaves
      // the entries, and the next run finishes the work.
      const deleted = await fanOut(found, async (e) => {
        const token = (await exec(cql.token, [e.tokenHash], read([textKey(e.tokenHash)], opts))).first();
        if (!token) return false;
        await exec(cql.deleteToken, [e.tokenHash], write([textKey(e.tokenHash)], opts));
        if (e.sessionId) await exec(cql.deleteTokenOf, [e.sessionId, e.tokenHash], write([uuidKey(e.sessionId)], opts));
        return true;
      });
      const sessionIds = [...new Set(found.map((e) => e.sessionId).filter((id): id is string => id !== null))];
      const dropped = await fanOut(sessionIds, (id) => dropIfEmpty(id, opts));
      await fanOut(found, (e) =>
        exec(cql.deleteExpiry, [e.hour, e.expiresAt, e.tokenHash], write([hourKey(e.hour)], opts)));
      for (const e of found) if (e.expiresAt > (resumeAt.get(e.hour) ?? 0)) resumeAt.set(e.hour, e.expiresAt);
      for (const hour of drained) {
        // One partition tombstone instead of a row tombstone per token left to read over.
        await exec(cql.dropHour, [hour], write([hourKey(hour)], opts));
        await exec(cql.unmarkHour, [hour], write([SHARD_KEY], opts));
        resumeAt.delete(hour);
      }
      return { tokens: deleted.filter(Boolean).length, sessions: dropped.filter(Boolean).length };
    },
  };
}
