/**
 * HTTP hardening: security headers (helmet, computed by src/platform/http/security-headers.ts), departed clients
 * (src/platform/http/client-gone.ts), compression, rate limits
 * (@fastify/rate-limit over the failover store) and, as a separate plugin, CORS.
 *
 * Rate limits are exposed as hooks (`app.limits`) rather than attached to every route here: src/modules/auth/plugin.ts
 * places them per the policy table, between identifying the caller (so an authenticated client is limited per
 * account, wherever it connects from) and authorizing it (so floods of bad credentials are limited too). The
 * not-found handler takes `app.limits.general` as its preHandler, so probing unknown paths is throttled alike.
 *
 * Server timeouts against slow clients (headers, request, keep-alive) are Fastify constructor options, set in
 * src/app.ts from the same configuration.
 */
import { createHash } from 'node:crypto';
import compress from '@fastify/compress';
import cors from '@fastify/cors';
import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import { failoverStore, type LimiterParams } from '../rate-limit-store.ts';
import { closeRedis, createRedis, createRedisBreaker, type RedisBreaker } from '../redis.ts';
import type { Config } from '../config.ts';
import { errors } from '../errors.ts';
import { declareClientGone, hasLeft, rememberResponse } from './client-gone.ts';
import { securityHeaders } from './security-headers.ts';

/** A hook that counts the request against a limit and throws 429 (or 503, failing closed) when it is over. */
export type LimitHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

export interface Limits {
  /** Per client (account when authenticated, else IP) on every route; undefined when RATE_LIMIT_MAX=0. */
  general: LimitHook | undefined;
  /** Login and registration, per IP (onRequest: before the body is read). */
  loginByIp: LimitHook;
  /** Login and registration, per IP and email (preHandler: needs the body). */
  loginByEmail: LimitHook;
}

declare module 'fastify' {
  interface FastifyInstance {
    limits: Limits;
    /** The shared Redis connection when REDIS_URL is set. */
    redis: Redis | undefined;
    /** The circuit breaker every command on `redis` goes through (src/platform/redis.ts). */
    redisBreaker: RedisBreaker | undefined;
  }
}

const isStream = (payload: unknown) =>
  payload !== null && typeof payload === 'object' && typeof (payload as { pipe?: unknown }).pipe === 'function';

/** Bodies under this size are sent as they are: compressing them costs more than it saves. */
const COMPRESS_THRESHOLD = 1024;

export interface SecurityOptions {
  config: Config;
}

/** The rate-limit key of a caller: its account once identified (src/modules/auth/plugin.ts), else its IP (IPv6 by /64). */
function clientKey(request: FastifyRequest): string {
  const principal = request.principal;
  if (principal !== undefined && 'accountId' in principal) return `a:${principal.accountId}`;
  return `ip:${normalizeIP(request.ip)}`;
}

/** The email a login or registration names (JSON `email` or form `username`), digested so no address reaches Redis. */
function loginKey(request: FastifyRequest): string {
  const body = (request.body ?? {}) as { email?: unknown; username?: unknown };
  const email = typeof body.email === 'string' ? body.email : typeof body.username === 'string' ? body.username : '';
  const id = createHash('sha256').update(email.trim().toLowerCase()).digest('base64url').slice(0, 22);
  return `ip:${normalizeIP(request.ip)}:e:${id}`;
}

function limitHook(app: FastifyInstance, opts: LimiterParams & { max: number; timeWindow: number; key: (r: FastifyRequest) => string }): LimitHook {
  const check = app.createRateLimit({ max: opts.max, timeWindow: opts.timeWindow, keyGenerator: opts.key, ...{ name: opts.name, failClosed: opts.failClosed } });
  return async (request, reply) => {
    const r = await check(request);
    if (r.isAllowed) return;
    // IETF draft RateLimit header fields: the limit, what is left of it, and seconds until the window resets.
    reply.header('ratelimit-limit', r.max).header('ratelimit-remaining', r.remaining).header('ratelimit-reset', r.ttlInSeconds);
    if (r.isExceeded) throw errors.tooManyRequests(Math.max(1, r.ttlInSeconds));
  };
}

export default fp<SecurityOptions>(
  async (app, { config }) => {
    const redis = config.redisUrl ? createRedis(config.redisUrl, app.log, 'commands', { autoPipelining: true }) : undefined;
    const breaker = redis ? createRedisBreaker(config.resilience.redisBreaker, app.log, 'commands') : undefined;
    app.decorate('redis', redis);
    app.decorate('redisBreaker', breaker);
    if (redis) app.addHook('onClose', () => closeRedis(redis));

    perRequestHooks(app);
    // gzip at level 1: most of the saving on JSON for a fraction of the CPU of higher levels or brotli, which
    // matters on a 2-core box serving large lists.
    await app.register(compress, {
      threshold: COMPRESS_THRESHOLD, encodings: ['gzip', 'deflate'], zlibOptions: { level: 1 }, globalDecompression: false,
    });

    await app.register(rateLimit, {
      global: false,
      store: failoverStore(redis, breaker, app.log) as never,
      skipOnError: false,
      max: config.rateLimit.max,
      timeWindow: config.rateLimit.windowMs,
    });
    const { rateLimit: rl } = config;
    app.decorate('limits', {
      general: rl.max > 0
        ? limitHook(app, { name: 'general', max: rl.max, timeWindow: rl.windowMs, key: clientKey })
        : undefined,
      loginByIp: limitHook(app, {
        name: 'login-ip', failClosed: true, max: rl.loginIpMax, timeWindow: rl.loginWindowMs,
        key: (r) => `ip:${normalizeIP(r.ip)}`,
      }),
      loginByEmail: limitHook(app, {
        name: 'login-email', failClosed: true, max: rl.loginMax, timeWindow: rl.loginWindowMs, key: loginKey,
      }),
    } satisfies Limits);
  },
  { name: 'security' },
);

/**
 * CORS from CORS_ORIGINS (absent: no CORS headers, browsers allow same-origin only). Registered after the auth
 * plugin so its preflight route is classified by the policy like any other.
 */
export const corsPolicy = fp<SecurityOptions>(
  async (app, { config }) => {
    const settings = config.http.cors;
    if (!settings) return;
    await app.register(cors, {
      origin: settings.origins.includes('*') ? '*' : settings.origins,
      credentials: settings.credentials,
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowedHeaders: ['Authorization', 'Content-Type', 'X-API-Key', 'X-Request-Id', 'X-Request-Timeout'],
      exposedHeaders: [
        'X-Request-Id', 'X-Next-Cursor', 'Link', 'Location', 'Retry-After',
        'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset',
      ],
      maxAge: 600,
    });
  },
  { name: 'cors-policy' },
);

/**
 * The hardening every request gets, in one hook per phase: each hook Fastify runs costs a call and a step of its
 * hook runner, and an async one a promise, on every request (docs/benchmarks.md, Analysis). Callback-style for
 * the same reason.
 *
 * - onRequest: the security headers (helmet's, computed once), and the response kept for `clientGone`.
 * - preHandler: a client that disconnects stops costing anything (src/platform/http/client-gone.ts): a request
 *   whose client left before its handler ran is not handled; its waits for a database connection and its
 *   statements are cancelled through `clientGone`.
 * - onSend: answers carry user data, accounts or tokens, so no shared cache may keep them unless a route says
 *   otherwise (a 504 says when to try again through its catalogue entry, as a 503 does); a streamed body (a
 *   Readable: /users/stream) must reach the client as it is produced, which a compressor would hold back until
 *   its buffers fill; an answer nobody will read is neither compressed nor written. @fastify/compress skips
 *   requests marked with x-no-compression, and these instance-level hooks run before its route-level one.
 */
function perRequestHooks(app: FastifyInstance): void {
  const headers = securityHeaders();
  declareClientGone(app);
  app.addHook('onRequest', (request, reply, done) => {
    reply.headers(headers);
    rememberResponse(request, reply);
    done();
  });
  app.addHook('preHandler', (_request, reply, done) => {
    done(hasLeft(reply.raw) ? errors.timeout() : undefined);
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'private, no-store');
    if (isStream(payload)) {
      // A stream is left as it is even for a client that left: piping it into the closed response destroys it,
      // which releases its cursor.
      request.headers['x-no-compression'] = 'stream';
      done(null, payload);
      return;
    }
    if (hasLeft(reply.raw)) {
      request.headers['x-no-compression'] = 'gone';
      done(null, '');
      return;
    }
    done(null, payload);
  });
}

/** How often the load figures are sampled. */
const SAMPLE_MS = 250;

/**
 * Routes that answer however loaded the process is: the liveness probe must not make an orchestrator kill a busy
 * pod, and the metrics are what an operator reads to see the overload (a cheap read of in-process figures).
 */
const NEVER_SHED = new Set(['/health/live', '/metrics', '/metrics/prometheus']);

/**
 * Load shedding (@fastify/under-pressure): while the event loop lags past its limit (or utilisation or heap,
 * when set), every request but the liveness probe is refused at once with 503 and `Retry-After`, in the
 * contract's shape, before any work is spent on it, instead of joining a queue that grows without bound.
 */
export const loadShedding = fp<SecurityOptions>(
  async (app, { config }) => {
    const o = config.resilience.overload;
    // The first samples cover building the app (schema compilation blocks the loop for a while): shedding
    // starts two samples after the app is ready, so a fresh instance does not refuse its first requests.
    let armed = false;
    app.addHook('onReady', async () => {
      setTimeout(() => (armed = true), 2 * SAMPLE_MS).unref();
    });
    await app.register(underPressure, {
      maxEventLoopDelay: o.maxEventLoopDelayMs,
      maxEventLoopUtilization: o.maxEventLoopUtilization,
      maxHeapUsedBytes: o.maxHeapUsedBytes,
      sampleInterval: SAMPLE_MS,
      pressureHandler: async (request) => {
        if (!armed || NEVER_SHED.has(request.routeOptions.url ?? '')) return undefined;
        throw errors.overloaded();
      },
    });
  },
  { name: 'load-shedding' },
);
