/**
 * The PostgreSQL adapter of `AccountsStore` (tables from migration 0002_auth.sql).
 *
 * Runs on a `Db` of its own (src/modules/auth/plugin.ts opens a small pool), so logins and key lookups never queue
 * behind long user queries or streams, and the users pool is never spent on authentication.
 */
import type { PendingQuery, Row, Sql } from 'postgres';
import { errors } from '../../platform/errors.ts';
import { singleFlight } from '../../platform/lib/coalesce.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import type { Db } from './db.ts';
import type { CallOptions } from '../users-store.ts';
import type {
  Account, AccountWithPassword, AccountsStore, ApiKey, ConsumedToken, Session,
} from '../accounts-store.ts';

/** An `accounts` row: the account's own fields, and the hash where a query selects it. */
type AccountRow = Account & { password_hash?: string };

/** An `api_keys` row: the key's fields, its account in a column of its own name. */
type ApiKeyRow = Omit<ApiKey, 'accountId'> & { account_id: string };

/** The columns of `api_keys` an `ApiKey` is read from, written once. */
const API_KEY_COLUMNS = ['id', 'account_id', 'name', 'prefix', 'scopes', 'created_at', 'expires_at', 'revoked_at'];

const account = (r: AccountRow): Account => ({
  id: r.id, email: r.email, role: r.role, disabled: r.disabled, created_at: r.created_at, updated_at: r.updated_at,
});

const apiKey = (r: ApiKeyRow): ApiKey => ({
  id: r.id, accountId: r.account_id, name: r.name, prefix: r.prefix, scopes: r.scopes,
  created_at: r.created_at, expires_at: r.expires_at, revoked_at: r.revoked_at,
});

/**
 * A lookup by key whose concurrent calls share one statement (src/platform/lib/coalesce.ts, `singleFlight`). The
 * requests of a client that arrive together ask for the same account, session or key, and when the
 * authenticator's caches cannot answer (Redis's invalidation bus down, so every check reads the database; a TTL
 * just ended) one statement serves them all instead of one each: with Redis down, every request of the bench's
 * hot load cost two extra statements, and the process served a sixth of its rate without Redis. A call joins only
 * a read not yet sent, so each still sees the row as it was after it asked (a revocation committed before the
 * request is never missed), and a call with its own deadline reads alone, so that its deadline cancels only its own.
 */
function sharedLookup<R extends Row, V>(
  db: Db, query: (sql: Sql, key: string) => PendingQuery<R[]>, map: (row: R) => V,
): (key: string, opts?: CallOptions) => Promise<V | null> {
  const first = (rows: readonly R[]) => (rows[0] ? map(rows[0]) : null);
  const shared = singleFlight<string, V | null>(
    async (key, sent) => first(await db.query((sql) => {
      sent();
      return query(sql, key);
    })),
    () => db.stats().active === 0,
  );
  return async (key, opts) =>
    opts?.deadline === undefined && !opts?.alone ? shared(key, key) : first(await db.query((sql) => query(sql, key), opts));
}

type SessionRow = { id: string; account_id: string; revoked: boolean };

export function createPostgresAccountsStore(db: Db): AccountsStore {
  const getAccount = sharedLookup<AccountRow, Account>(db, (sql, id) =>
    sql`SELECT id, email, role, disabled, created_at, updated_at FROM accounts WHERE id = ${id}`, account);
  const getSession = sharedLookup<SessionRow, Session>(db, (sql, id) =>
    sql`SELECT id, account_id, revoked_at IS NOT NULL AS revoked FROM auth_sessions WHERE id = ${id}`,
  (r) => ({ id: r.id, accountId: r.account_id, revoked: r.revoked }));
  const findApiKeyByHash = sharedLookup<ApiKeyRow, ApiKey>(db, (sql, hash) =>
    sql`SELECT ${sql(API_KEY_COLUMNS)} FROM api_keys WHERE key_hash = ${hash}`, apiKey);

  return {
    getAccount,
    getSession,
    findApiKeyByHash,

    async createAccount(input, opts) {
      const now = new Date();
      const rows = await db.query(
        (sql) => sql<AccountRow[]>`INSERT INTO accounts (id, email, password_hash, role, disabled, created_at, updated_at)
          VALUES (${uuidv7(now.getTime())}, ${input.email}, ${input.passwordHash}, ${input.role}, false, ${now}, ${now})
          ON CONFLICT ((lower(email))) DO NOTHING
          RETURNING id, email, role, disabled, created_at, updated_at`,
        opts,
      );
      if (!rows[0]) throw errors.emailTaken();
      return account(rows[0]);
    },

    async findAccountByEmail(email, opts) {
      const rows = await db.query(
        (sql) => sql<AccountRow[]>`SELECT id, email, role, disabled, created_at, updated_at, password_hash
          FROM accounts WHERE lower(email) = lower(${email})`,
        opts,
      );
      const row = rows[0];
      return row ? { ...account(row), passwordHash: row.password_hash! } satisfies AccountWithPassword : null;
    },

    async listAccounts({ limit, after }, opts) {
      const rows = await db.query(
        (sql) => after === undefined
          ? sql<AccountRow[]>`SELECT id, email, role, disabled, created_at, updated_at FROM accounts ORDER BY id LIMIT ${limit}`
          : sql<AccountRow[]>`SELECT id, email, role, disabled, created_at, updated_at FROM accounts
              WHERE id > ${after} ORDER BY id LIMIT ${limit}`,
        opts,
      );
      return rows.map(account);
    },

    async updateAccount(id, patch, opts) {
      const rows = await db.query(
        (sql) => sql<AccountRow[]>`UPDATE accounts SET
            role = COALESCE(${patch.role ?? null}::text, role),
            disabled = COALESCE(${patch.disabled ?? null}::boolean, disabled),
            password_hash = COALESCE(${patch.passwordHash ?? null}::text, password_hash),
            updated_at = GREATEST(${new Date()}::timestamptz, updated_at + interval '1 millisecond')
          WHERE id = ${id}
          RETURNING id, email, role, disabled, created_at, updated_at`,
        opts,
      );
      return rows[0] ? account(rows[0]) : null;
    },

    async deleteAccount(id, opts) {
      const rows = await db.query((sql) => sql`DELETE FROM accounts WHERE id = ${id} RETURNING id`, opts);
      return rows.length > 0;
    },

    async countActiveAdmins(opts) {
      const rows = await db.query(
        (sql) => sql<{ n: number }[]>`SELECT count(*)::int AS n FROM accounts WHERE role = 'admin' AND NOT disabled`,
        opts,
      );
      return rows[0]?.n ?? 0;
    },

    async createSession({ accountId, tokenHash, expiresAt }, opts) {
      const now = new Date();
      const id = uuidv7(now.getTime());
      await db.transaction(async (tx) => {
        await tx`INSERT INTO auth_sessions (id, account_id, created_at) VALUES (${id}, ${accountId}, ${now})`;
        await tx`INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
          VALUES (${tokenHash}, ${id}, ${now}, ${expiresAt})`;
      }, opts);
      return { id, accountId, revoked: false };
    },

    async consumeRefreshToken(tokenHash, opts) {
      // One statement: the row lock taken by the UPDATE serialises two concurrent refreshes with one token, and
      // the old used_at (read from the pre-update snapshot of the same row) tells the loser it came second.
      const rows = await db.query(
        (sql) => sql<{ session_id: string; account_id: string; expires_at: Date; first_use: boolean; revoked: boolean }[]>`
          WITH old AS (SELECT token_hash, used_at FROM refresh_tokens WHERE token_hash = ${tokenHash} FOR UPDATE)
          UPDATE refresh_tokens t SET used_at = COALESCE(t.used_at, now())
          FROM old, auth_sessions s
          WHERE t.token_hash = old.token_hash AND s.id = t.session_id
          RETURNING t.session_id, s.account_id, t.expires_at, old.used_at IS NULL AS first_use,
                    s.revoked_at IS NOT NULL AS revoked`,
        opts,
      );
      const row = rows[0];
      return row
        ? {
            sessionId: row.session_id, accountId: row.account_id, expiresAt: row.expires_at,
            firstUse: row.first_use, sessionRevoked: row.revoked,
          } satisfies ConsumedToken
        : null;
    },

    async addRefreshToken({ sessionId, tokenHash, expiresAt }, opts) {
      await db.query(
        (sql) => sql`INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
          VALUES (${tokenHash}, ${sessionId}, ${new Date()}, ${expiresAt})`,
        opts,
      );
    },

    async revokeSession(id, opts) {
      await db.query(
        (sql) => sql`UPDATE auth_sessions SET revoked_at = COALESCE(revoked_at, now()) WHERE id = ${id}`,
        opts,
      );
    },

    async pruneExpired(before, batch, opts) {
      // Batches keep each statement short on a large table; what is left goes in the next run. A session is
      // created together with its first token (one transaction), so one without tokens is one whose tokens
      // all expired.
      const tokens = await db.query(
        (sql) => sql`DELETE FROM refresh_tokens WHERE token_hash IN (
          SELECT token_hash FROM refresh_tokens WHERE expires_at < ${before} LIMIT ${batch}) RETURNING 1`,
        opts,
      );
      const sessions = await db.query(
        (sql) => sql`DELETE FROM auth_sessions WHERE id IN (
          SELECT s.id FROM auth_sessions s
          WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id) LIMIT ${batch}) RETURNING 1`,
        opts,
      );
      return { tokens: tokens.length, sessions: sessions.length };
    },

    async revokeAccountSessions(accountId, opts) {
      const rows = await db.query(
        (sql) => sql<{ id: string }[]>`UPDATE auth_sessions SET revoked_at = now()
          WHERE account_id = ${accountId} AND revoked_at IS NULL RETURNING id`,
        opts,
      );
      return rows.map((r) => r.id);
    },

    async createApiKey(input, opts) {
      const now = new Date();
      const rows = await db.query(
        (sql) => sql<ApiKeyRow[]>`INSERT INTO api_keys (id, account_id, name, prefix, key_hash, scopes, created_at, expires_at)
          VALUES (${uuidv7(now.getTime())}, ${input.accountId}, ${input.name}, ${input.prefix}, ${input.hash},
                  ${sql.array(input.scopes)}::text[], ${now}, ${input.expiresAt})
          RETURNING ${sql(API_KEY_COLUMNS)}`,
        opts,
      );
      return apiKey(rows[0]!);
    },

    async listApiKeys(accountId, opts) {
      const rows = await db.query(
        (sql) => sql<ApiKeyRow[]>`SELECT ${sql(API_KEY_COLUMNS)}
          FROM api_keys WHERE account_id = ${accountId} ORDER BY id`,
        opts,
      );
      return rows.map(apiKey);
    },

    async getApiKey(id, opts) {
      const rows = await db.query(
        (sql) => sql<ApiKeyRow[]>`SELECT ${sql(API_KEY_COLUMNS)}
          FROM api_keys WHERE id = ${id}`,
        opts,
      );
      return rows[0] ? apiKey(rows[0]) : null;
    },

    async revokeApiKey(id, opts) {
      const rows = await db.query(
        (sql) => sql`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = ${id} RETURNING id`,
        opts,
      );
      return rows.length > 0;
    },

    close: () => db.close(),
  };
}
