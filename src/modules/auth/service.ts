/**
 * The auth service: logins and sessions, registration, API keys and account administration, over the accounts
 * interface. Framework-free, as the users service is; routes are thin over it.
 *
 * Sessions: a login starts a family with a refresh token. Each refresh consumes the presented token and issues
 * the next; presenting a token that was already consumed means it leaked (or the client raced itself), and the
 * whole family is revoked, which also kills the access tokens issued to it (they carry the family id).
 */
import { errors } from '../../platform/errors.ts';
import type { Account, AccountPatch, AccountsStore, ApiKey } from '../../db/accounts-store.ts';
import type { Authenticator } from './authenticator.ts';
import { hashPassword, verifyOrBurn } from './passwords.ts';
import { ROLE_SCOPES, grantedScopes, type Principal, type Role, type Scope } from './scopes.ts';
import { API_KEY_PREFIX, digest, isOpaque, newApiKey, newRefreshToken, REFRESH_PREFIX, type TokenSigner } from './tokens.ts';

export interface TokenPair {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  refresh_token: string;
  scope: string;
}

export interface CreatedApiKey extends ApiKey {
  /** The key itself: shown in this response only, never stored. */
  key: string;
}

type AccountPrincipal = Extract<Principal, { accountId: string }>;

export interface AuthService {
  login(email: string, password: string): Promise<TokenPair>;
  refresh(refreshToken: string): Promise<TokenPair>;
  /** Revokes the session of `refreshToken`, or else of the calling session. */
  logout(refreshToken: string | undefined, caller: Principal | undefined): Promise<void>;
  register(email: string, password: string): Promise<Account>;
  account(caller: AccountPrincipal): Promise<Account>;
  createApiKey(caller: AccountPrincipal, input: { name: string; scopes?: string[]; expiresInS?: number }): Promise<CreatedApiKey>;
  listApiKeys(caller: AccountPrincipal): Promise<ApiKey[]>;
  revokeApiKey(caller: AccountPrincipal, id: string): Promise<void>;
  listAccounts(query: { limit: number; after?: string }): Promise<Account[]>;
  createAccount(input: { email: string; password: string; role: Role }): Promise<Account>;
  /** `caller` is undefined for a loopback caller with AUTH_MODE=off (no account acting). */
  updateAccount(caller: AccountPrincipal | undefined, id: string, patch: { role?: Role; disabled?: boolean; password?: string }): Promise<Account>;
  deleteAccount(caller: AccountPrincipal | undefined, id: string): Promise<void>;
  /** Creates an admin with this email unless an account with it exists. */
  ensureAdmin(email: string, password: string): Promise<'created' | 'exists'>;
}

export interface AuthServiceOptions {
  accounts: AccountsStore;
  signer: TokenSigner;
  authn: Authenticator;
  refreshTtlS: number;
}

const scopeText = (role: Role) => ROLE_SCOPES[role].join(' ');

export function createAuthService({ accounts, signer, authn, refreshTtlS }: AuthServiceOptions): AuthService {
  const refreshExpiry = () => new Date(Date.now() + refreshTtlS * 1000);

  async function pair(account: Account, sessionId: string, refreshToken: string): Promise<TokenPair> {
    return {
      access_token: await signer.sign({ sub: account.id, sid: sessionId }),
      token_type: 'bearer',
      expires_in: signer.ttlS,
      refresh_token: refreshToken,
      scope: scopeText(account.role),
    };
  }

  async function revokeSession(id: string): Promise<void> {
    await accounts.revokeSession(id);
    await authn.invalidate({ kind: 'session', id });
  }

  /** Applies a change that narrows what an account may do, and makes every instance see it at once. */
  async function changed(id: string): Promise<void> {
    await authn.invalidate({ kind: 'account', id });
  }

  return {
    async login(email, password) {
      const found = await accounts.findAccountByEmail(email);
      // Always one argon2 verification, for known and unknown emails alike, and one answer for every failure.
      const ok = await verifyOrBurn(found?.passwordHash, password);
      if (!found || !ok || found.disabled) throw errors.unauthorized();
      const refreshToken = newRefreshToken();
      const session = await accounts.createSession({ accountId: found.id, tokenHash: digest(refreshToken), expiresAt: refreshExpiry() });
      return pair(found, session.id, refreshToken);
    },

    async refresh(refreshToken) {
      if (!isOpaque(refreshToken, REFRESH_PREFIX)) throw errors.unauthorized();
      const consumed = await accounts.consumeRefreshToken(digest(refreshToken));
      if (!consumed || consumed.sessionRevoked) throw errors.unauthorized();
      if (!consumed.firstUse) {
        await revokeSession(consumed.sessionId);
        throw errors.unauthorized();
      }
      if (consumed.expiresAt.getTime() <= Date.now()) throw errors.unauthorized();
      const account = await authn.liveAccount(consumed.accountId);
      if (!account) throw errors.unauthorized();
      const next = newRefreshToken();
      await accounts.addRefreshToken({ sessionId: consumed.sessionId, tokenHash: digest(next), expiresAt: refreshExpiry() });
      return pair(account, consumed.sessionId, next);
    },

    async logout(refreshToken, caller) {
      if (refreshToken !== undefined) {
        if (!isOpaque(refreshToken, REFRESH_PREFIX)) throw errors.unauthorized();
        // Consuming marks the token used, so it can never refresh again, and tells us its family.
        const consumed = await accounts.consumeRefreshToken(digest(refreshToken));
        if (!consumed) throw errors.unauthorized();
        await revokeSession(consumed.sessionId);
        return;
      }
      if (caller?.kind !== 'session') throw errors.unauthorized();
      await revokeSession(caller.sessionId);
    },

    async register(email, password) {
      return accounts.createAccount({ email, passwordHash: await hashPassword(password), role: 'viewer' });
    },

    async account(caller) {
      const account = await accounts.getAccount(caller.accountId);
      if (!account) throw errors.unauthorized();
      return account;
    },

    async createApiKey(caller, { name, scopes, expiresInS }) {
      const wanted = scopes ?? [...ROLE_SCOPES[caller.role]];
      const granted = grantedScopes(caller.role, wanted);
      if (granted.size !== new Set(wanted).size) throw errors.forbidden('Cannot grant scopes the account does not have');
      const key = newApiKey();
      const created = await accounts.createApiKey({
        accountId: caller.accountId,
        name,
        prefix: key.slice(0, API_KEY_PREFIX.length + 6),
        hash: digest(key),
        scopes: [...granted],
        expiresAt: expiresInS === undefined ? null : new Date(Date.now() + expiresInS * 1000),
      });
      return { ...created, key };
    },

    listApiKeys: (caller) => accounts.listApiKeys(caller.accountId),

    async revokeApiKey(caller, id) {
      const key = await accounts.getApiKey(id);
      // Another account's key is "not found": its existence is none of the caller's business (admins excepted).
      if (!key || (key.accountId !== caller.accountId && !caller.scopes.has('admin' satisfies Scope))) {
        throw errors.apiKeyNotFound();
      }
      await accounts.revokeApiKey(id);
      await authn.invalidate({ kind: 'api_key', id });
    },

    listAccounts: (query) => accounts.listAccounts(query),

    async createAccount({ email, password, role }) {
      return accounts.createAccount({ email, passwordHash: await hashPassword(password), role });
    },

    async updateAccount(caller, id, { role, disabled, password }) {
      if (id === caller?.accountId && (role !== undefined || disabled !== undefined)) {
        throw errors.conflict('Cannot change the role or status of your own account');
      }
      const patch: AccountPatch = {};
      if (role !== undefined) patch.role = role;
      if (disabled !== undefined) patch.disabled = disabled;
      if (password !== undefined) patch.passwordHash = await hashPassword(password);
      const account = await accounts.updateAccount(id, patch);
      if (!account) throw errors.accountNotFound();
      // A new password or a disable ends every login; a role change takes effect through the cache eviction.
      if (password !== undefined || disabled === true) {
        for (const sid of await accounts.revokeAccountSessions(id)) await authn.invalidate({ kind: 'session', id: sid });
      }
      await changed(id);
      return account;
    },

    async deleteAccount(caller, id) {
      if (id === caller?.accountId) throw errors.conflict('Cannot delete your own account');
      if (!(await accounts.deleteAccount(id))) throw errors.accountNotFound();
      await changed(id);
    },

    ensureAdmin: (email, password) => ensureAccount(accounts, { email, password, role: 'admin' }),
  };
}

/**
 * Creates an account unless one with this email (any case) exists; an existing account is left exactly as it
 * is (its password is not reset). Used for the first admin at start and by `npm run create-admin`.
 */
export async function ensureAccount(
  accounts: AccountsStore,
  { email, password, role }: { email: string; password: string; role: Role },
): Promise<'created' | 'exists'> {
  if (await accounts.findAccountByEmail(email)) return 'exists';
  try {
    await accounts.createAccount({ email, passwordHash: await hashPassword(password), role });
    return 'created';
  } catch (err) {
    // Two instances starting at once: the other one created it.
    if ((err as { code?: string }).code === 'EMAIL_TAKEN') return 'exists';
    throw err;
  }
}
