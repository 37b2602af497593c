/**
 * The Cassandra adapter of `AccountsStore`, on the session the users adapter uses (tables in schema.ts).
 *
 * Query first: every lookup the interface needs has a table keyed for it, so each read touches one partition:
 * accounts by id, the lower-cased email (the uniqueness claim), the ordered list of account ids, sessions by id
 * and by account, refresh tokens by hash, by session and by the hour they expire in, API keys by id, by hash and
 * by account. Sessions and refresh tokens live in account-sessions.ts, API keys in api-keys.ts. A lookup table
 * only points at the main row, and a read through it treats a pointer to nothing as absent: an account, its email
 * claim and its listed id are written one after another (no transaction spans partitions), ordered so that a
 * step that stops half-way leaves nothing a reader would take for real.
 *
 * Lightweight transactions (Paxos) wherever a check and a write must be one step: the email claim
 * (`INSERT ... IF NOT EXISTS`), the first use of a refresh token, and every change of an existing row, which is
 * conditional on a column it read so that it never recreates a deleted row (2.1 has no `UPDATE ... IF EXISTS`;
 * a plain UPDATE of an absent row inserts it). Rows that are written once and only deleted use plain writes.
 */
import { randomUUID } from 'node:crypto';
import type { types } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import { ROLES } from '../accounts-store.ts';
import type { Account, AccountPatch, AccountsStore, NewAccount } from '../accounts-store.ts';
import type { CallOptions } from '../users-store.ts';
import { awaitSchema, type Schema } from './schema.ts';
import type { ExecOptions, Session } from './session.ts';
import { createTokenStore } from './account-sessions.ts';
import { createApiKeyStore } from './api-keys.ts';
import { SHARD_KEY, fanOut, isText, textKey, uuidKey, type Exec } from './statements.ts';

/** Conditional-update rounds lost to concurrent updates of one account before answering 503. */
const CAS_ATTEMPTS = 5;
/**
 * An email claim whose account never appeared (its creator died between the claim and the account row) is taken
 * over after this long; a younger one may belong to a creation still under way.
 */
export const STALE_CLAIM_MS = 60_000;

/**
 * The accounts repository on `session`. `close()` leaves the session open: it belongs to whoever opened it
 * (openCassandra), which closes it once for both repositories.
 */
export function createCassandraAccountsStore(session: Session, schema: Schema): AccountsStore {
  const t = (name: string) => `"${session.keyspace}".${name}`;
  const ACCOUNT_COLUMNS = 'id, email, role, disabled, created_at, updated_at';
  const cql = {
    claimEmail: `INSERT INTO ${t('accounts_by_email')} (email_lower, account_id, claimed_at) VALUES (?, ?, ?) IF NOT EXISTS`,
    takeOverEmail: `UPDATE ${t('accounts_by_email')} SET account_id = ?, claimed_at = ? WHERE email_lower = ? IF account_id = ?`,
    releaseEmail: `DELETE FROM ${t('accounts_by_email')} WHERE email_lower = ? IF account_id = ?`,
    emailOwner: `SELECT account_id FROM ${t('accounts_by_email')} WHERE email_lower = ?`,
    insertAccount: `INSERT INTO ${t('accounts')} (${ACCOUNT_COLUMNS}, password_hash, write_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`,
    account: `SELECT ${ACCOUNT_COLUMNS}, password_hash, write_id FROM ${t('accounts')} WHERE id = ?`,
    deleteAccount: `DELETE FROM ${t('accounts')} WHERE id = ? IF EXISTS`,
    admins: `SELECT disabled FROM ${t('accounts')} WHERE role = 'admin'`,
    listIds: `SELECT id FROM ${t('account_ids')} WHERE shard = 0 LIMIT ?`,
    listIdsAfter: `SELECT id FROM ${t('account_ids')} WHERE shard = 0 AND id > ? LIMIT ?`,
    addId: `INSERT INTO ${t('account_ids')} (shard, id) VALUES (0, ?)`,
    removeId: `DELETE FROM ${t('account_ids')} WHERE shard = 0 AND id = ?`,
  };
  /** Only the patched columns are written (binding a null would delete one); the driver prepares each text once. */
  const updateCql = (columns: readonly string[]) =>
    `UPDATE ${t('accounts')} SET ${[...columns, 'updated_at', 'write_id'].map((c) => `${c} = ?`).join(', ')} `
    + 'WHERE id = ? IF updated_at = ? AND write_id = ?';

  const exec: Exec = Object.assign(
    async (text: string, params: unknown[], o: ExecOptions) => {
      await awaitSchema(schema);
      return session.execute(text, params, o);
    },
    {
      async batch(queries: { query: string; params: unknown[] }[], o: ExecOptions) {
        await awaitSchema(schema);
        await session.batch(queries, o);
      },
      serial: session.options.serialConsistency,
      table: t,
    },
  );
  const tokens = createTokenStore(exec);
  const keys = createApiKeyStore(exec);

  const readOpts = (keys: Buffer[], opts?: CallOptions, consistency?: ExecOptions['consistency']): ExecOptions =>
    ({ kind: 'read', keys, idempotent: true, deadline: opts?.deadline, consistency });

  async function readAccount(id: string, opts?: CallOptions, consistency?: ExecOptions['consistency']) {
    const rs = await exec(cql.account, [id], readOpts([uuidKey(id)], opts, consistency));
    return toAccount(rs.first());
  }

  /** Claims `emailLower` for `id`; false when another account holds it. */
  async function claimEmail(emailLower: string, id: string, opts?: CallOptions): Promise<boolean> {
    const key = [textKey(emailLower)];
    // Safe to send twice: a second copy finds our own claim, recognised by the id.
    const claim = (await exec(cql.claimEmail, [emailLower, id, new Date()], { kind: 'cas', keys: key, idempotent: true, deadline: opts?.deadline })).first();
    if (claim?.get('[applied]') === true) return true;
    const holder = String(claim?.get('account_id'));
    if (holder === id) return true;
    const claimedAt = claim?.get('claimed_at') as Date | null;
    if ((claimedAt?.getTime() ?? 0) > Date.now() - STALE_CLAIM_MS) return false;
    if ((await readAccount(holder, opts, exec.serial)) !== null) return false;
    // The holder never became an account: take its claim over, unless someone else just did.
    const rs = await exec(cql.takeOverEmail, [id, new Date(), emailLower, holder], { kind: 'cas', keys: key, idempotent: true, deadline: opts?.deadline });
    const row = rs.first();
    return row?.get('[applied]') === true || String(row?.get('account_id')) === id;
  }

  /** Every id in `account_ids` after `after`, `limit` of them that are still accounts, in id order. */
  async function listPage(limit: number, after: string | undefined, opts?: CallOptions): Promise<Account[]> {
    const out: Account[] = [];
    let cursor = after?.toLowerCase();
    // An id whose account is gone (a deletion that stopped half-way) is skipped; read on to fill the page.
    while (out.length < limit) {
      const want = limit - out.length;
      const rs = cursor === undefined
        ? await exec(cql.listIds, [want], readOpts([SHARD_KEY], opts))
        : await exec(cql.listIdsAfter, [cursor, want], readOpts([SHARD_KEY], opts));
      const ids = rs.rows.map((r) => r.get('id') as string);
      const accounts = await fanOut(ids, (id) => readAccount(id, opts));
      for (const a of accounts) if (a) out.push(publicAccount(a));
      if (ids.length < want) break;
      cursor = ids.at(-1);
    }
    return out;
  }

  return {
    async createAccount(input, opts) {
      checkAccount(input);
      const now = new Date();
      const id = uuidv7(now.getTime());
      const emailLower = input.email.toLowerCase();
      if (!(await claimEmail(emailLower, id, opts))) throw errors.emailTaken();
      // The id is listed before the row exists: a crash in between leaves an id that listings skip, never an
      // account that listings miss.
      await exec(cql.addId, [id], { kind: 'write', keys: [SHARD_KEY], idempotent: true, deadline: opts?.deadline });
      // Conditional like every write of this row (see users.ts): a copy applied late finds the row and does nothing.
      await exec(cql.insertAccount, [id, input.email, input.role, false, now, now, input.passwordHash, randomUUID()], {
        kind: 'cas', keys: [uuidKey(id)], idempotent: true, deadline: opts?.deadline,
      });
      return { id, email: input.email, role: input.role, disabled: false, created_at: now, updated_at: now };
    },

    async getAccount(id, opts) {
      const a = await readAccount(id, opts);
      return a && publicAccount(a);
    },

    async findAccountByEmail(email, opts) {
      const emailLower = email.toLowerCase();
      const owner = (await exec(cql.emailOwner, [emailLower], readOpts([textKey(emailLower)], opts))).first();
      if (!owner) return null;
      const a = await readAccount(String(owner.get('account_id')), opts);
      // A claim taken over from a creation that died points elsewhere now; never answer with another email.
      return a && a.email.toLowerCase() === emailLower ? { ...publicAccount(a), passwordHash: a.passwordHash } : null;
    },

    listAccounts: ({ limit, after }, opts) => listPage(limit, after, opts),

    async updateAccount(id, patch: AccountPatch, opts) {
      if (patch.role !== undefined && !ROLES.includes(patch.role)) throw errors.badInput();
      if (patch.passwordHash !== undefined && !isText(patch.passwordHash)) throw errors.badInput();
      const fields = (['role', 'disabled', 'passwordHash'] as const).filter((f) => patch[f] !== undefined);
      const columns = fields.map((f) => (f === 'passwordHash' ? 'password_hash' : f));
      let current = await readAccount(id, opts);
      for (let attempt = 1; current !== null; attempt++) {
        const updatedAt = new Date(Math.max(Date.now(), current.updated_at.getTime() + 1));
        const writeId = randomUUID();
        const rs = await exec(updateCql(columns), [...fields.map((f) => patch[f]), updatedAt, writeId, id, current.updated_at, current.writeId], {
          kind: 'cas', keys: [uuidKey(id)], idempotent: true, deadline: opts?.deadline,
        });
        const row = rs.first();
        // Our own write id there: a retry of this update whose first copy applied.
        if (row?.get('[applied]') === true || String(row?.get('write_id')) === writeId) {
          return publicAccount({ ...current, role: patch.role ?? current.role, disabled: patch.disabled ?? current.disabled, updated_at: updatedAt });
        }
        // Gone (no current value came back), or another update won: read it again through Paxos.
        if (row?.get('updated_at') == null) return null;
        if (attempt >= CAS_ATTEMPTS) throw errors.unavailable('too many concurrent updates of this account');
        current = await readAccount(id, opts, exec.serial);
      }
      return null;
    },

    async deleteAccount(id, opts) {
      const a = await readAccount(id, opts);
      if (!a) return false;
      // Dependents first, the account row last: a deletion that stops half-way leaves an account with fewer
      // sessions or keys, which deleting it again finishes, never sessions or keys of an account that is gone.
      await tokens.deleteSessionsOf(id, opts);
      await keys.deleteKeysOf(id, opts);
      const rs = await exec(cql.deleteAccount, [id], { kind: 'cas', keys: [uuidKey(id)], idempotent: false, deadline: opts?.deadline });
      const deleted = rs.first()?.get('[applied]') === true;
      await exec(cql.removeId, [id], { kind: 'write', keys: [SHARD_KEY], idempotent: true, deadline: opts?.deadline });
      const emailLower = a.email.toLowerCase();
      await exec(cql.releaseEmail, [emailLower, id], { kind: 'cas', keys: [textKey(emailLower)], idempotent: true, deadline: opts?.deadline });
      return deleted;
    },

    async countActiveAdmins(opts) {
      // Through the secondary index on role: admins are few, and the index query visits every node once.
      let n = 0;
      let pageState: Buffer | undefined;
      do {
        const rs = await exec(cql.admins, [], { kind: 'read', idempotent: true, fetchSize: 1000, pageState, deadline: opts?.deadline });
        n += rs.rows.filter((r) => r.get('disabled') === false).length;
        pageState = rs.pageState ? Buffer.from(rs.pageState, 'hex') : undefined;
      } while (pageState);
      return n;
    },

    createSession: (input, opts) => tokens.createSession(input, opts),
    getSession: (id, opts) => tokens.getSession(id, opts),
    consumeRefreshToken: (hash, opts) => tokens.consume(hash, opts),
    addRefreshToken: (input, opts) => tokens.add(input, opts),
    revokeSession: (id, opts) => tokens.revokeSession(id, opts),
    revokeAccountSessions: (accountId, opts) => tokens.revokeSessionsOf(accountId, opts),
    pruneExpired: (before, batch, opts) => tokens.prune(before, batch, opts),

    createApiKey: (input, opts) => keys.create(input, opts),
    findApiKeyByHash: (hash, opts) => keys.findByHash(hash, opts),
    listApiKeys: (accountId, opts) => keys.list(accountId, opts),
    getApiKey: (id, opts) => keys.get(id, opts),
    revokeApiKey: (id, opts) => keys.revoke(id, opts),

    // The session is shared with the users repository and closed by whoever opened it.
    close: async () => {},
  };
}

/** A row as read: with the password hash, and the id of the write that made its current version. */
type StoredAccount = Account & { passwordHash: string; writeId: string };

const publicAccount = (a: Account): Account => ({
  id: a.id, email: a.email, role: a.role, disabled: a.disabled, created_at: a.created_at, updated_at: a.updated_at,
});

/** A row as an account; null when absent or incomplete (the remains of a write that raced a delete). */
function toAccount(row: types.Row | null | undefined): StoredAccount | null {
  if (!row) return null;
  const [id, email, role, disabled, createdAt, updatedAt, hash, writeId] = ['id', 'email', 'role', 'disabled', 'created_at', 'updated_at', 'password_hash', 'write_id'].map((c) => row.get(c));
  if ([id, email, role, disabled, createdAt, updatedAt, hash, writeId].some((v) => v == null)) return null;
  return { id: String(id), email, role, disabled, created_at: createdAt, updated_at: updatedAt, passwordHash: hash, writeId: String(writeId) };
}

/** The CHECK constraints of `accounts` (email length, role), and no NUL anywhere. */
function checkAccount(input: NewAccount): void {
  if (!isText(input.email, 3, 254) || !ROLES.includes(input.role) || !isText(input.passwordHash)) throw errors.badInput();
}
