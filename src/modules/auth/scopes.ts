/**
 * Roles, scopes and the principal: who a request acts as and what it may do.
 *
 * A role is a fixed set of scopes. A session (access token) gets its account's scopes as they are *now*, and an API
 * key gets the scopes it was created with, cut down to its account's current ones, so demoting or disabling an
 * account narrows everything it issued at once.
 */

export const SCOPES = ['users:read', 'users:write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

import { ROLES, type Role } from '../../db/accounts-store.ts';

export { ROLES, type Role };

export const ROLE_SCOPES: Record<Role, readonly Scope[]> = {
  viewer: ['users:read'],
  editor: ['users:read', 'users:write'],
  admin: ['users:read', 'users:write', 'admin'],
};

/** An authenticated caller. */
export type Principal =
  | { kind: 'session'; accountId: string; role: Role; sessionId: string; scopes: ReadonlySet<Scope> }
  | { kind: 'api_key'; accountId: string; role: Role; keyId: string; scopes: ReadonlySet<Scope> }
  /** The bearer of METRICS_TOKEN: may read /metrics and nothing else. */
  | { kind: 'metrics'; scopes: ReadonlySet<Scope> };

/** Scopes of `role` that are also in `wanted` (all of the role's when `wanted` is undefined). */
export function grantedScopes(role: Role, wanted?: readonly string[]): Set<Scope> {
  const own = ROLE_SCOPES[role];
  return new Set(wanted === undefined ? own : own.filter((s) => wanted.includes(s)));
}

export const isScope = (s: string): s is Scope => (SCOPES as readonly string[]).includes(s);
