/**
 * The accounts storage interface: login identities, refresh-token families (sessions) and API keys.
 *
 * Accounts are a concern of their own, separate from the users resource: an account's email is unique without
 * regard to case. Services see only this interface; each backend provides an adapter (`postgres/accounts.ts`;
 * a Cassandra one can follow) and every adapter passes the shared contract suite in
 * test/auth-accounts.contract.ts. Secrets never reach an adapter: it stores password hashes and SHA-256
 * digests of tokens and keys, handed to it as opaque strings.
 *
 * Adapters throw catalogue errors: `emailTaken` on a duplicate email, kinds `unavailable`/`timeout` when the
 * database fails.
 */
import type { CallOptions } from './users-store.ts';

/** The roles an account may have; what each may do is the auth module's (src/modules/auth/scopes.ts). */
export const ROLES = ['viewer', 'editor', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface Account {
  id: string;
  /** As registered (case kept); unique case-insensitively. */
  email: string;
  role: Role;
  disabled: boolean;
  created_at: Date;
  updated_at: Date;
}

export interface AccountWithPassword extends Account {
  passwordHash: string;
}

export interface NewAccount {
  email: string;
  passwordHash: string;
  role: Role;
}

export interface AccountPatch {
  role?: Role;
  disabled?: boolean;
  passwordHash?: string;
}

/** A refresh-token family: one login, followed through every rotation of its refresh token. */
export interface Session {
  id: string;
  accountId: string;
  revoked: boolean;
}

/** What `consumeRefreshToken` found. */
export interface ConsumedToken {
  sessionId: string;
  accountId: string;
  expiresAt: Date;
  /** True when this call marked the token used; false when it had been used (rotated) before: a reuse. */
  firstUse: boolean;
  sessionRevoked: boolean;
}

export interface ApiKey {
  id: string;
  accountId: string;
  name: string;
  /** The first characters of the key, to recognise it in a list; never enough to use it. */
  prefix: string;
  scopes: string[];
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
}

export interface NewApiKey {
  accountId: string;
  name: string;
  prefix: string;
  /** SHA-256 of the key (hex). */
  hash: string;
  scopes: string[];
  expiresAt: Date | null;
}

export interface AccountsStore {
  /** Throws `emailTaken` when an account with this email (any case) exists. */
  createAccount(input: NewAccount, opts?: CallOptions): Promise<Account>;
  getAccount(id: string, opts?: CallOptions): Promise<Account | null>;
  /** Case-insensitive. */
  findAccountByEmail(email: string, opts?: CallOptions): Promise<AccountWithPassword | null>;
  /** Oldest first; `after` is the last id of the previous page. */
  listAccounts(query: { limit: number; after?: string }, opts?: CallOptions): Promise<Account[]>;
  updateAccount(id: string, patch: AccountPatch, opts?: CallOptions): Promise<Account | null>;
  /** Removes the account with its sessions and keys. Returns false when it did not exist. */
  deleteAccount(id: string, opts?: CallOptions): Promise<boolean>;
  countActiveAdmins(opts?: CallOptions): Promise<number>;

  /** Starts a session (token family) with its first refresh token. */
  createSession(input: { accountId: string; tokenHash: string; expiresAt: Date }, opts?: CallOptions): Promise<Session>;
  getSession(id: string, opts?: CallOptions): Promise<Session | null>;
  /**
   * Atomically marks the refresh token with this hash used, and says whether it had been used before (so two
   * concurrent refreshes with one token cannot both succeed). Null when no such token exists.
   */
  consumeRefreshToken(tokenHash: string, opts?: CallOptions): Promise<ConsumedToken | null>;
  /** Adds the next refresh token of a session (after a rotation). */
  addRefreshToken(input: { sessionId: string; tokenHash: string; expiresAt: Date }, opts?: CallOptions): Promise<void>;
  revokeSession(id: string, opts?: CallOptions): Promise<void>;
  /** Revokes every session of an account; returns their ids. */
  revokeAccountSessions(accountId: string, opts?: CallOptions): Promise<string[]>;
  /**
   * Deletes refresh tokens that expired before `before`, then sessions left without any token, at most `batch`
   * of each per call; returns how many went. Used tokens that have not expired stay: they are how a replayed
   * token is recognised and its family revoked.
   */
  pruneExpired(before: Date, batch: number, opts?: CallOptions): Promise<{ tokens: number; sessions: number }>;

  createApiKey(input: NewApiKey, opts?: CallOptions): Promise<ApiKey>;
  findApiKeyByHash(hash: string, opts?: CallOptions): Promise<ApiKey | null>;
  listApiKeys(accountId: string, opts?: CallOptions): Promise<ApiKey[]>;
  getApiKey(id: string, opts?: CallOptions): Promise<ApiKey | null>;
  /** Idempotent; returns false when no such key exists. */
  revokeApiKey(id: string, opts?: CallOptions): Promise<boolean>;

  close(): Promise<void>;
}
