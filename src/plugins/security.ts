/**
 * HTTP hardening: security headers (helmet, set by src/plugins/security-headers.ts), compression, rate limits
 * (@fastify/rate-limit over the failover store) and, as a separate plugin, CORS.
 *
 * Rate limits are exposed as hooks (`app.limits`) rather than attached to every route here: src/plugins/auth.ts
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
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import { failoverStore, type LimiterParams } from '../auth/rate-limit-store.ts';
import { closeRedis, createRedis } from '../auth/redis.ts';
import type { Config } from '../config.ts';
import { errors } from '../errors.ts';
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
  }
}

/** Bodies under this size are sent as they are: compressing them costs more than it saves. */
const COMPRESS_THRESHOLD = 1024;

export interface SecurityOptions {
  config: Config;
}

/** The rate-limit key of a caller: its account once identified (src/plugins/auth.ts), else its IP (IPv6 by /64). */
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
    const redis = config.redisUrl ? createRedis(config.redisUrl, app.log, 'commands') : undefined;
    app.decorate('redis', redis);
    if (redis) app.addHook('onClose', () => closeRedis(redis));

    securityHeaders(app);

    // A streamed body (a Readable: /users/stream) must reach the client as it is produced; a compressor would
    // hold it back until its buffers fill. @fastify/compress skips requests marked with x-no-compression, and
    // this instance-level hook runs before its route-level one.
    app.addHook('onSend', async (request, _reply, payload) => {
      if (payload !== null && typeof payload === 'object' && typeof (payload as { pipe?: unknown }).pipe === 'function') {
        request.headers['x-no-compression'] = 'stream';
      }
      return payload;
    });
    // gzip at level 1: most of the saving on JSON for a fraction of the CPU of higher levels or brotli, which
    // matters on a 2-core box serving large lists.
    await app.register(compress, {
      threshold: COMPRESS_THRESHOLD, encodings: ['gzip', 'deflate'], zlibOptions: { level: 1 }, globalDecompression: false,
    });

    await app.register(rateLimit, {
      global: false,
      store: failoverStore(redis, app.log) as never,
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
