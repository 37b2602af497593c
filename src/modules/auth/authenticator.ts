/**
 * The hot path: turning a presented credential into a `Principal`, or null.
 *
 * An access token is verified (signature, claims), then its account and session are checked to be alive and
 * its scopes taken from the account's current role. An API key is checked for shape, digested, looked up, and
 * checked for revocation, expiry and its account's state. Accounts, sessions and keys are cached per
 * `cache.ts`; `invalidate` evicts here and tells the other instances.
 */
import type { CallOptions } from '../../db/users-store.ts';
import type { Account, AccountsStore, ApiKey, Session } from '../../db/accounts-store.ts';
import type { InvalidationBus } from '../../platform/bus.ts';
import { TtlCache, type Invalidation } from './cache.ts';
import { grantedScopes, type Principal } from './scopes.ts';
import { API_KEY_PREFIX, digest, isOpaque, type TokenSigner } from './tokens.ts';

export interface Authenticator {
  /** `Authorization: Bearer <value>`: an API key when it has the key prefix, else an access token. */
  fromBearer(value: string, opts?: CallOptions): Promise<Principal | null>;
  fromApiKey(key: string, opts?: CallOptions): Promise<Principal | null>;
  /** Evicts locally at once, then tells every other instance. */
  invalidate(msg: Invalidation): Promise<void>;
  /** The live account, or null when it is deleted or disabled (cached). */
  liveAccount(id: string, opts?: CallOptions): Promise<Account | null>;
}

export interface AuthenticatorOptions {
  accounts: AccountsStore;
  signer: TokenSigner;
  bus: InvalidationBus<Invalidation>;
  cacheTtlMs: number;
}

const NOBODY: Promise<null> = Promise.resolve(null);

export function createAuthenticator({ accounts, signer, bus, cacheTtlMs }: AuthenticatorOptions): Authenticator {
  const accountCache = new TtlCache<string, Account | null>(cacheTtlMs);
  const sessionCache = new TtlCache<string, Session | null>(cacheTtlMs);
  const keyCache = new TtlCache<string, ApiKey | null>(cacheTtlMs);

  function evict(msg: Invalidation): void {
    switch (msg.kind) {
      case 'account': accountCache.delete(msg.id); break;
      case 'session': sessionCache.delete(msg.id); break;
      case 'api_key': keyCache.deleteWhere((k) => k?.id === msg.id); break;
      default: accountCache.clear(); sessionCache.clear(); keyCache.clear();
    }
  }
  bus.subscribe(evict);

  /** Reads through `cache` only while the bus guarantees we hear about changes. */
  async function cached<K, V>(cache: TtlCache<K, V>, key: K, load: () => Promise<V>, keep: (v: V) => boolean = () => true): Promise<V> {
    const useCache = bus.usable;
    if (useCache) {
      const hit = cache.get(key);
      if (hit !== undefined) return hit;
    }
    const value = await load();
    if (useCache && keep(value)) cache.set(key, value);
    return value;
  }

  async function liveAccount(id: string, opts?: CallOptions): Promise<Account | null> {
    const account = await cached(accountCache, id, () => accounts.getAccount(id, opts));
    return account && !account.disabled ? account : null;
  }

  /** The principal of a verified token's account and session, or null when either is gone, disabled or revoked. */
  function sessionPrincipal(account: Account | null, session: Session | null): Principal | null {
    if (!account || account.disabled || !session || session.revoked || session.accountId !== account.id) return null;
    return { kind: 'session', accountId: account.id, role: account.role, sessionId: session.id, scopes: grantedScopes(account.role) };
  }

  function fromAccessToken(token: string, opts?: CallOptions): Promise<Principal | null> {
    const claims = signer.verify(token);
    if (!claims) return NOBODY;
    // Both cached (the usual case: a client's every request but its first within the TTL) is answered without
    // the two loads' promises and Promise.all's, per request. Same checks, same cache rules as below.
    if (bus.usable) {
      const account = accountCache.get(claims.sub);
      const session = account === undefined ? undefined : sessionCache.get(claims.sid);
      if (account !== undefined && session !== undefined) return Promise.resolve(sessionPrincipal(account, session));
    }
    return Promise.all([
      cached(accountCache, claims.sub, () => accounts.getAccount(claims.sub, opts)),
      cached(sessionCache, claims.sid, () => accounts.getSession(claims.sid, opts)),
    ]).then(([account, session]) => sessionPrincipal(account, session));
  }

  async function fromApiKey(key: string, opts?: CallOptions): Promise<Principal | null> {
    if (!isOpaque(key, API_KEY_PREFIX)) return null;
    // Unknown digests are not cached: a flood of made-up keys must not evict real ones.
    const hash = digest(key);
    const record = await cached(keyCache, hash, () => accounts.findApiKeyByHash(hash, opts), (k) => k !== null);
    if (!record || record.revoked_at !== null) return null;
    if (record.expires_at !== null && record.expires_at.getTime() <= Date.now()) return null;
    const account = await liveAccount(record.accountId, opts);
    if (!account) return null;
    return { kind: 'api_key', accountId: account.id, role: account.role, keyId: record.id, scopes: grantedScopes(account.role, record.scopes) };
  }

  return {
    fromApiKey,
    liveAccount,
    fromBearer: (value, opts) => (value.startsWith(API_KEY_PREFIX) ? fromApiKey(value, opts) : fromAccessToken(value, opts)),
    async invalidate(msg) {
      evict(msg);
      await bus.publish(msg);
    },
  };
}
