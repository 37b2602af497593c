/**
 * API keys on Cassandra: the part of the accounts adapter (accounts.ts) that creates, finds, lists and revokes
 * keys. Tables (schema.ts): `api_keys` by id, holding the only mutable column (`revoked_at`), and two lookups that
 * only point at it, `api_keys_by_hash` and `api_keys_by_account`, so a revocation is one conditional write and a
 * lookup never sees a stale copy of a key.
 */
import type { types } from 'cassandra-driver';
import { errors } from '../../platform/errors.ts';
import { uuidv7 } from '../../platform/lib/uuid.ts';
import type { ApiKey, NewApiKey } from '../accounts-store.ts';
import type { CallOptions } from '../users-store.ts';
import type { ExecOptions } from './session.ts';
import { fanOut, isText, textKey, uuidKey, type Exec } from './statements.ts';

export interface ApiKeyStore {
  create(input: NewApiKey, opts?: CallOptions): Promise<ApiKey>;
  findByHash(hash: string, opts?: CallOptions): Promise<ApiKey | null>;
  list(accountId: string, opts?: CallOptions): Promise<ApiKey[]>;
  get(id: string, opts?: CallOptions): Promise<ApiKey | null>;
  revoke(id: string, opts?: CallOptions): Promise<boolean>;
  /** Deletes every key of an account (an account deletion). */
  deleteKeysOf(accountId: string, opts?: CallOptions): Promise<void>;
}

type StoredKey = ApiKey & { hash: string };

export function createApiKeyStore(exec: Exec): ApiKeyStore {
  const t = exec.table;
  const COLUMNS = 'id, account_id, name, prefix, key_hash, scopes, created_at, expires_at, revoked_at';
  const cql = {
    insert: `INSERT INTO ${t('api_keys')} (id, account_id, name, prefix, key_hash, scopes, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    insertByHash: `INSERT INTO ${t('api_keys_by_hash')} (key_hash, id) VALUES (?, ?)`,
    insertByAccount: `INSERT INTO ${t('api_keys_by_account')} (account_id, id) VALUES (?, ?)`,
    key: `SELECT ${COLUMNS} FROM ${t('api_keys')} WHERE id = ?`,
    byHash: `SELECT id FROM ${t('api_keys_by_hash')} WHERE key_hash = ?`,
    keysOf: `SELECT id FROM ${t('api_keys_by_account')} WHERE account_id = ?`,
    revoke: `UPDATE ${t('api_keys')} SET revoked_at = ? WHERE id = ? IF revoked_at = null AND key_hash = ?`,
    delete: `DELETE FROM ${t('api_keys')} WHERE id = ?`,
    deleteByHash: `DELETE FROM ${t('api_keys_by_hash')} WHERE key_hash = ?`,
    deleteKeysOf: `DELETE FROM ${t('api_keys_by_account')} WHERE account_id = ?`,
  };
  const read = (keys: Buffer[], opts?: CallOptions): ExecOptions => ({ kind: 'read', keys, idempotent: true, deadline: opts?.deadline });
  const write = (keys: Buffer[], opts?: CallOptions): ExecOptions => ({ kind: 'write', keys, idempotent: true, deadline: opts?.deadline });

  async function readKey(id: string, opts?: CallOptions): Promise<StoredKey | null> {
    return toApiKey((await exec(cql.key, [id], read([uuidKey(id)], opts))).first());
  }

  async function idsOf(accountId: string, opts?: CallOptions): Promise<string[]> {
    return (await exec(cql.keysOf, [accountId], read([uuidKey(accountId)], opts))).rows.map((r) => String(r.get('id')));
  }

  return {
    async create(input, opts) {
      checkKey(input);
      const now = new Date();
      const id = uuidv7(now.getTime());
      // One logged batch: the key and both of its lookups, or none. Never sent twice (see createMany in users.ts).
      await exec.batch([
        { query: cql.insert, params: [id, input.accountId, input.name, input.prefix, input.hash, input.scopes, now, input.expiresAt] },
        { query: cql.insertByHash, params: [input.hash, id] },
        { query: cql.insertByAccount, params: [input.accountId, id] },
      ], { kind: 'write', keys: [uuidKey(id), textKey(input.hash), uuidKey(input.accountId)], idempotent: false, deadline: opts?.deadline });
      return {
        id, accountId: input.accountId, name: input.name, prefix: input.prefix, scopes: [...input.scopes],
        created_at: now, expires_at: input.expiresAt, revoked_at: null,
      };
    },

    async findByHash(hash, opts) {
      const ref = (await exec(cql.byHash, [hash], read([textKey(hash)], opts))).first();
      if (!ref) return null;
      const k = await readKey(String(ref.get('id')), opts);
      return k && k.hash === hash ? publicKey(k) : null;
    },

    async list(accountId, opts) {
      const keys = await fanOut(await idsOf(accountId, opts), (id) => readKey(id, opts));
      return keys
        .filter((k): k is StoredKey => k !== null && k.accountId === accountId)
        .map(publicKey)
        .sort((a, b) => (a.id < b.id ? -1 : 1));
    },

    async get(id, opts) {
      const k = await readKey(id, opts);
      return k && publicKey(k);
    },

    async revoke(id, opts) {
      const k = await readKey(id, opts);
      if (!k) return false;
      if (k.revoked_at) return true;
      // Conditional on the key still being there (never recreate a deleted one) and not yet revoked (the first
      // revocation's time stays). Not applied with the key there: revoked meanwhile, perhaps by our own retry.
      const rs = await exec(cql.revoke, [new Date(), id, k.hash], { kind: 'cas', keys: [uuidKey(id)], idempotent: true, deadline: opts?.deadline });
      const row = rs.first();
      return row?.get('[applied]') === true || row?.get('key_hash') != null;
    },

    async deleteKeysOf(accountId, opts) {
      await fanOut(await idsOf(accountId, opts), async (id) => {
        const k = await readKey(id, opts);
        if (k) await exec(cql.deleteByHash, [k.hash], write([textKey(k.hash)], opts));
        await exec(cql.delete, [id], write([uuidKey(id)], opts));
      });
      await exec(cql.deleteKeysOf, [accountId], write([uuidKey(accountId)], opts));
    },
  };
}

const publicKey = (k: ApiKey): ApiKey => ({
  id: k.id, accountId: k.accountId, name: k.name, prefix: k.prefix, scopes: k.scopes,
  created_at: k.created_at, expires_at: k.expires_at, revoked_at: k.revoked_at,
});

/** A row as a key; null when absent or incomplete (the remains of a write that raced a delete). */
function toApiKey(row: types.Row | null | undefined): StoredKey | null {
  if (!row) return null;
  const hash = row.get('key_hash') as string | null;
  const accountId = row.get('account_id');
  const createdAt = row.get('created_at') as Date | null;
  if (hash == null || accountId == null || createdAt == null) return null;
  return {
    id: String(row.get('id')), accountId: String(accountId), name: row.get('name'), prefix: row.get('prefix'),
    // Cassandra stores an empty list as no list at all.
    scopes: (row.get('scopes') as string[] | null) ?? [],
    created_at: createdAt, expires_at: row.get('expires_at') ?? null, revoked_at: row.get('revoked_at') ?? null, hash,
  };
}

/** The CHECK constraint of `api_keys.name`, and no NUL anywhere. */
function checkKey(input: NewApiKey): void {
  const ok = isText(input.name, 1, 100) && isText(input.prefix) && isText(input.hash)
    && Array.isArray(input.scopes) && input.scopes.every((s) => isText(s));
  if (!ok) throw errors.badInput();
}
