/**
 * THE authorization policy: one table from method and route pattern to what a caller needs.
 *
 * src/modules/auth/plugin.ts looks up every route in this table as it is registered and attaches the check, so a
 * route written anywhere is covered without touching its file. The first matching rule wins; a route that no
 * rule matches needs `admin` (closed by default), and test/auth-matrix.test.ts fails until it is classified.
 *
 * Access levels:
 * - `public`: anyone.
 * - a scope (`users:read`, `users:write`, `admin`): with AUTH_MODE=on, a credential carrying that scope; with
 *   AUTH_MODE=off, anyone for the users scopes, and for `admin` a loopback caller or an admin credential.
 * - `account`: any valid credential of an account, in either mode (`/auth/me`).
 * - `session`: an access token of an account, not an API key (managing keys with a key would let a leaked key
 *   mint more).
 * - `metrics`: public unless METRICS_TOKEN is set; then that token as a bearer, or an admin credential. In
 *   production without METRICS_TOKEN, loopback callers only (src/modules/auth/plugin.ts).
 *
 * `limit` picks the rate limit: `general` (per client, every route by default), `login` (strict, per IP and per
 * IP+email, fails closed when the shared store is down), or `none` (orchestrator probes).
 */
import type { Scope } from './scopes.ts';

export type Access = 'public' | 'account' | 'session' | 'metrics' | Scope;
export type LimitClass = 'general' | 'login' | 'none';

export interface Rule {
  methods: readonly string[] | '*';
  /** A route pattern as registered (`/users/:id`); a trailing `*` matches any suffix. */
  pattern: string;
  access: Access;
  limit?: LimitClass;
}

const READ = ['GET', 'HEAD'] as const;
const WRITE = ['POST', 'PUT', 'PATCH', 'DELETE'] as const;

export const POLICY: readonly Rule[] = [
  // CORS preflights carry no credentials by design.
  { methods: ['OPTIONS'], pattern: '*', access: 'public' },
  { methods: READ, pattern: '/', access: 'public' },
  { methods: READ, pattern: '/health/live', access: 'public', limit: 'none' },
  { methods: READ, pattern: '/health/ready', access: 'public', limit: 'none' },
  { methods: READ, pattern: '/health', access: 'public' },
  { methods: READ, pattern: '/docs*', access: 'public' },
  { methods: READ, pattern: '/openapi.json', access: 'public' },
  { methods: READ, pattern: '/metrics*', access: 'metrics' },
  { methods: READ, pattern: '/dashboard*', access: 'metrics' },

  { methods: ['POST'], pattern: '/auth/token', access: 'public', limit: 'login' },
  { methods: ['POST'], pattern: '/auth/register', access: 'public', limit: 'login' },
  { methods: ['POST'], pattern: '/auth/refresh', access: 'public' },
  // The refresh token in the body is the credential; without one, the caller's own session is ended.
  { methods: ['POST'], pattern: '/auth/logout', access: 'public' },
  { methods: READ, pattern: '/auth/me', access: 'account' },
  { methods: '*', pattern: '/auth/api-keys*', access: 'session' },
  { methods: '*', pattern: '/auth/accounts*', access: 'admin' },

  { methods: READ, pattern: '/users*', access: 'users:read' },
  { methods: WRITE, pattern: '/users*', access: 'users:write' },
  // Benchmark endpoints that only read users.
  { methods: READ, pattern: '/performance/*', access: 'users:read' },
  { methods: READ, pattern: '/slow_query', access: 'users:read' },
  { methods: READ, pattern: '/long_running_query', access: 'users:read' },

  // Jobs: which ones a caller sees (its own; an admin all) is decided by the job routes.
  { methods: READ, pattern: '/jobs*', access: 'users:read' },
  { methods: ['DELETE'], pattern: '/jobs/*', access: 'users:write' },
  // Export downloads: the URL's signature is the credential (docs/bulk.md).
  { methods: READ, pattern: '/exports/*', access: 'public' },

  // Webhooks (docs/webhooks.md): endpoints and their secrets, admin only.
  { methods: '*', pattern: '/webhooks*', access: 'admin' },

  // Resumable uploads feed bulk import: writing users. Whose upload it is, is decided by the upload routes.
  { methods: '*', pattern: '/uploads*', access: 'users:write' },

  { methods: ['POST'], pattern: '/shutdown', access: 'admin' },
  // The users cache (docs/caching.md): its figures as the metrics are; clearing it, admin only.
  { methods: READ, pattern: '/cache/status', access: 'metrics' },
  { methods: ['POST'], pattern: '/cache/clear', access: 'admin' },
];

/** What a route matching no rule gets: closed. */
export const DEFAULT_RULE: Omit<Rule, 'methods' | 'pattern'> = { access: 'admin', limit: 'general' };

const matches = (pattern: string, url: string) =>
  pattern.endsWith('*') ? url.startsWith(pattern.slice(0, -1)) : url === pattern;

/** The rule for one method of a route, and whether the table names it explicitly. */
export function ruleFor(method: string, url: string): { access: Access; limit: LimitClass; explicit: boolean } {
  const m = method.toUpperCase();
  for (const rule of POLICY) {
    if ((rule.methods === '*' || rule.methods.includes(m)) && matches(rule.pattern, url)) {
      return { access: rule.access, limit: rule.limit ?? 'general', explicit: true };
    }
  }
  return { access: DEFAULT_RULE.access, limit: DEFAULT_RULE.limit ?? 'general', explicit: false };
}

export type Decision = 'allow' | 'unauthenticated' | 'forbidden';

export interface Caller {
  /** Scopes of the verified credential; undefined for an anonymous caller. */
  scopes: ReadonlySet<string> | undefined;
  kind: 'session' | 'api_key' | 'metrics' | undefined;
  /** The request came from this machine and not through a proxy. */
  loopback: boolean;
}

/** The decision for a caller on a route with `access`, under `mode`; `metricsTokenSet` says METRICS_TOKEN is set. */
export function decide(access: Access, caller: Caller, mode: 'on' | 'off', metricsTokenSet: boolean): Decision {
  const anonymous = caller.scopes === undefined;
  const has = (scope: string) => caller.scopes?.has(scope) === true;
  switch (access) {
    case 'public':
      return 'allow';
    case 'metrics':
      if (!metricsTokenSet || caller.kind === 'metrics' || has('admin')) return 'allow';
      return anonymous ? 'unauthenticated' : 'forbidden';
    case 'account':
      return anonymous || caller.kind === 'metrics' ? 'unauthenticated' : 'allow';
    case 'session':
      if (caller.kind === 'session') return 'allow';
      return anonymous ? 'unauthenticated' : 'forbidden';
    case 'admin':
      if (has('admin')) return 'allow';
      if (mode === 'off') return caller.loopback ? 'allow' : 'forbidden';
      return anonymous ? 'unauthenticated' : 'forbidden';
    default:
      if (mode === 'off' || has(access)) return 'allow';
      return anonymous ? 'unauthenticated' : 'forbidden';
  }
}
