/**
 * Authentication and authorization for every route, from one place.
 *
 * As each route is registered (`onRoute`), its rule is looked up in the policy table (src/modules/auth/policy.ts) and
 * three hooks are put in front of its own: identify the caller (never fails: a bad credential is only noted),
 * count it against its rate limit (per account once identified, else per IP), then authorize (401 or 403 from
 * the catalogue). Routes written by anyone are covered without editing them, and their OpenAPI entries get the
 * matching security requirement and 401/403/429 responses.
 *
 * The accounts store is the backend's (src/db/backend.ts), on either database.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import adminRoutes from './admin-routes.ts';
import { createAuthenticator, type Authenticator } from './authenticator.ts';
import type { Invalidation } from './cache.ts';
import { createRedisBus, localBus, type InvalidationBus } from '../../platform/bus.ts';
import { securityFor } from './openapi.ts';
import { decide, ruleFor, type Access, type LimitClass } from './policy.ts';
import { PRUNE_SCHEDULE, pruneJob, startPruning, type Pruner } from './prune.ts';
import authRoutes from './routes.ts';
import type { Principal } from './scopes.ts';
import { createAuthService, type AuthService } from './service.ts';
import { createTokenSigner } from './tokens.ts';
import type { Config } from '../../platform/config.ts';
import { errors } from '../../platform/errors.ts';
import { ErrorBody } from '../../platform/http/error-schemas.ts';
import { hookList } from '../../platform/http/route-hooks.ts';
import type { LimitHook } from '../../platform/http/security.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified caller, or undefined when anonymous. */
    principal: Principal | undefined;
  }
  interface FastifyInstance {
    auth: AuthRuntime;
  }
}

export interface RouteAccess {
  method: string;
  url: string;
  access: Access;
  limit: LimitClass;
  /** False when no rule names the route and it fell to the closed default. */
  explicit: boolean;
}

export interface AuthRuntime {
  readonly mode: 'on' | 'off';
  /** The auth service; 503 until the accounts store is open, or when the backend has none. */
  service(): AuthService;
  /** Every route as registered, with the rule applied to it (for the authorization matrix test and audits). */
  readonly routes: readonly RouteAccess[];
}

export interface AuthOptions {
  config: Config;
}

/** Expired refresh tokens and dead sessions are deleted hourly, 1,000 rows per statement (src/modules/auth/prune.ts). */
const PRUNE_EVERY_MS = 3_600_000;
const PRUNE_BATCH = 1000;

/** The Redis channel of auth invalidations (revocations). */
export const AUTH_CHANNEL = 'spate:auth:invalidate';

const PROXY_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'] as const;
const BEARER = /^Bearer +(\S+) *$/i;
const failed = Symbol('spate.authFailed');

/** A direct connection from this machine: the socket peer is loopback and no proxy forwarded the request. */
function isLoopback(request: FastifyRequest): boolean {
  const peer = request.raw.socket.remoteAddress ?? '';
  if (!(peer.startsWith('127.') || peer === '::1' || peer.startsWith('::ffff:127.'))) return false;
  return PROXY_HEADERS.every((h) => request.headers[h] === undefined);
}

const digestOf = (s: string) => createHash('sha256').update(s).digest();

export default fp<AuthOptions>(
  async (app, { config }) => {
    const { auth } = config;

    let secret = auth.jwtSecret;
    if (secret === undefined) {
      secret = randomBytes(48).toString('base64url');
      app.log.warn('JWT_SECRET is unset: using a random secret for this process only (tokens end with it and are not '
        + 'accepted by other instances); set JWT_SECRET to keep them');
    }
    const signer = createTokenSigner({ secret, issuer: auth.issuer, audience: auth.audience, ttlS: auth.accessTtlS });
    const bus: InvalidationBus<Invalidation> = config.redisUrl && app.redis
      ? createRedisBus(config.redisUrl, app.redis, app.log, {
        channel: AUTH_CHANNEL, everything: { kind: 'all' }, heartbeatMs: config.resilience.busHeartbeatMs, breaker: app.redisBreaker,
      })
      : localBus;
    app.addHook('onClose', () => bus.close());
    const metricsDigest = config.metricsToken === undefined ? undefined : digestOf(config.metricsToken);
    const metricsLocalOnly = config.env === 'production';

    let authn: Authenticator | undefined;
    let service: AuthService | undefined;
    let closed = false;
    let retry: NodeJS.Timeout | undefined;
    let pruner: Pruner | undefined;
    app.addHook('onClose', async () => {
      closed = true;
      clearTimeout(retry);
      pruner?.stop();
    });
    const routes: RouteAccess[] = [];
    app.decorateRequest('principal', undefined);
    app.decorate('auth', {
      mode: auth.mode,
      service: () => service ?? (() => { throw errors.unavailable('accounts store not available'); })(),
      routes,
    } satisfies AuthRuntime);

    /** Sets `request.principal`, or marks the request when it presented a credential that is not valid. */
    async function identify(request: FastifyRequest, access: Access): Promise<void> {
      const apiKey = request.headers['x-api-key'];
      const bearer = BEARER.exec(request.headers.authorization ?? '')?.[1];
      if (apiKey === undefined && bearer === undefined) return; // other schemes (Basic) are not ours: anonymous
      let principal: Principal | null = null;
      if (metricsDigest && access === 'metrics' && bearer !== undefined && timingSafeEqual(digestOf(bearer), metricsDigest)) {
        principal = { kind: 'metrics', scopes: new Set() };
      } else if (authn) {
        const opts = { deadline: request.deadline };
        if (typeof apiKey === 'string') principal = await authn.fromApiKey(apiKey, opts);
        else if (apiKey === undefined && bearer !== undefined) principal = await authn.fromBearer(bearer, opts);
      }
      if (principal) request.principal = principal;
      else (request as unknown as Record<symbol, boolean>)[failed] = true;
    }

    function authorize(request: FastifyRequest, access: Access): void {
      // On a public route a stale or bad credential is ignored (a client logging in again may still send its
      // expired token); anywhere else it is a 401, never a silent downgrade to anonymous.
      if ((request as unknown as Record<symbol, boolean>)[failed] && access !== 'public') throw errors.unauthorized();
      const p = request.principal;
      const loopback = access === 'admin' && auth.mode === 'off' && isLoopback(request);
      // In production /metrics* never answer a remote anonymous caller: without METRICS_TOKEN, loopback only.
      const metricsClosed = metricsDigest !== undefined || (metricsLocalOnly && access === 'metrics' && !isLoopback(request));
      const decision = decide(access, { scopes: p?.scopes, kind: p?.kind, loopback }, auth.mode, metricsClosed);
      if (decision === 'unauthenticated') throw errors.unauthorized();
      if (decision === 'forbidden') throw errors.forbidden();
    }

    function hooksFor(access: Access, limit: LimitClass) {
      const { limits } = app;
      const rateLimit: LimitHook | undefined =
        limit === 'login' ? limits.loginByIp : limit === 'general' ? limits.general : undefined;
      return {
        onRequest: async function spateAuth(request: FastifyRequest, reply: FastifyReply) {
          await identify(request, access);
          if (rateLimit) await rateLimit(request, reply);
          authorize(request, access);
        },
        preHandler: limit === 'login' ? limits.loginByEmail : undefined,
      };
    }

    app.addHook('onRoute', (route: RouteOptions) => {
      const methods = [route.method].flat().map(String);
      const rules = methods.map((m) => ruleFor(m, route.url));
      const { access, limit, explicit } = rules[0]!;
      if (rules.some((r) => r.access !== access || r.limit !== limit)) {
        throw new Error(`${methods.join(',')} ${route.url}: its methods fall under different policy rules; register them separately`);
      }
      const own = hookList(route.onRequest);
      // A HEAD route copied from its GET may arrive with our hook already in place.
      if (own.some((h) => (h as { name?: string }).name === 'spateAuth')) return;
      for (const method of methods) routes.push({ method, url: route.url, access, limit, explicit });
      if (!explicit) app.log.warn({ route: `${methods.join(',')} ${route.url}` }, 'route not in the policy table: admin only');

      const hooks = hooksFor(access, limit);
      route.onRequest = [hooks.onRequest, ...own] as RouteOptions['onRequest'];
      if (hooks.preHandler) route.preHandler = [hooks.preHandler, ...hookList(route.preHandler)] as RouteOptions['preHandler'];
      documentRoute(route, access, limit);
    });

    const authDeps = { service: () => app.auth.service(), registration: auth.registration };
    await app.register(authRoutes, authDeps);
    await app.register(adminRoutes, authDeps);

    // A cron job where the backend has a job queue (one instance per run), else an interval in every instance.
    const pruneOnQueue = app.backend.jobs !== undefined;
    if (pruneOnQueue) {
      app.jobs.define(pruneJob(() => app.backend.accounts, PRUNE_BATCH));
      app.jobs.schedule(PRUNE_SCHEDULE);
    }

    app.addHook('onReady', async () => {
      const store = app.backend.accounts;
      authn = createAuthenticator({ accounts: store, signer, bus, cacheTtlMs: auth.cacheTtlMs });
      service = createAuthService({ accounts: store, signer, authn, refreshTtlS: auth.refreshTtlS });
      if (!pruneOnQueue) pruner = startPruning({ accounts: store, log: app.log, everyMs: PRUNE_EVERY_MS, batch: PRUNE_BATCH });
      if (auth.admin) await bootstrapAdmin(service, auth.admin);
    });

    /** Creates the first admin (idempotent). If the database is not there yet, keeps trying in the background. */
    async function bootstrapAdmin(svc: AuthService, admin: { email: string; password: string }): Promise<void> {
      const attempt = async (): Promise<void> => {
        try {
          const outcome = await svc.ensureAdmin(admin.email, admin.password);
          app.log.info({ outcome }, outcome === 'created' ? 'created the admin account from ADMIN_EMAIL' : 'admin account from ADMIN_EMAIL exists');
        } catch (err) {
          app.log.warn({ reason: (err as Error).message }, 'could not create the admin account yet; retrying');
          if (!closed) retry = setTimeout(() => void attempt(), 1000);
        }
      };
      await attempt();
    }
  },
  { name: 'auth', dependencies: ['security', 'backend', 'jobs'] },
);

/** Adds the route's security requirement and its 401/403/429 answers to its OpenAPI entry. */
function documentRoute(route: RouteOptions, access: Access, limit: LimitClass): void {
  const schema = route.schema as { hide?: boolean; security?: unknown; response?: Record<string, unknown> } | undefined;
  if (!schema || schema.hide) return;
  const security = securityFor(access);
  const extra: Record<string, unknown> = {};
  if (security) {
    extra[401] = { ...ErrorBody, description: 'Not authenticated (one body for every authentication failure)' };
    extra[403] = { ...ErrorBody, description: 'Forbidden: the credential lacks the scope this route needs' };
  }
  if (limit !== 'none') extra[429] = { ...ErrorBody, description: 'Too many requests; see Retry-After and RateLimit-*' };
  route.schema = {
    ...schema,
    ...(security ? { security } : {}),
    ...(schema.response ? { response: { ...extra, ...schema.response } } : {}),
  } as RouteOptions['schema'];
}
