/**
 * HTTP hardening against a real PostgreSQL: security headers, CORS, compression (never of a stream), rate
 * limits (general, login brute force, unknown paths, per account, behind a proxy), body limits, the metrics
 * token, slow clients cut off by the server timeouts over real sockets, secrets refused by configuration, and
 * secrets kept out of the logs.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import helmet from 'helmet';
import pino from 'pino';
import { buildApp } from '../src/app.ts';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { loggerOptions } from '../src/platform/logger.ts';
import { HELMET_OPTIONS, helmetHeaders } from '../src/platform/http/security-headers.ts';
import { startApp, testConfig, userBody } from './support/app.ts';
import { ADMIN, PASSWORD, authEnv, bearer, createAccount, createKey, login, uniqueEmail } from './support/auth.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.destroy();
});

/** An app for one test, closed after it. */
async function withApp(env: Record<string, string>, run: (app: FastifyInstance) => Promise<void>, opts = {}) {
  const app = await startApp(db.url, env, opts);
  try {
    await run(app);
  } finally {
    await app.close();
  }
}

describe('security headers', () => {
  test('helmet headers on API responses and on /docs, with a CSP Swagger UI can live with', async () => {
    await withApp({}, async (app) => {
      for (const url of ['/', '/docs/', '/users']) {
        const res = await app.inject(url);
        assert.equal(res.headers['x-content-type-options'], 'nosniff', url);
        assert.equal(res.headers['x-frame-options'], 'SAMEORIGIN', url);
        assert.equal(res.headers['referrer-policy'], 'no-referrer', url);
        assert.match(String(res.headers['strict-transport-security']), /max-age=\d+/, url);
        const csp = String(res.headers['content-security-policy']);
        assert.match(csp, /script-src 'self'(;|$)/, url);
        assert.match(csp, /frame-ancestors 'none'/, url);
        assert.doesNotMatch(csp, /upgrade-insecure-requests/, url);
      }
      // Swagger UI loads only same-origin scripts and styles, which the CSP allows.
      const html = (await app.inject('/docs/static/index.html')).body || (await app.inject('/docs/')).body;
      for (const src of html.matchAll(/(?:src|href)="([^"]+)"/g)) assert.doesNotMatch(src[1]!, /^(https?:)?\/\//, 'no third-party asset');
    });
  });
});

describe('security headers computed once', () => {
  test('the same headers as helmet sets on a real response, on every kind of reply', async () => {
    // helmet's own middleware on a real node:http response, for the reference bytes.
    const server = http.createServer((req, res) => helmet(HELMET_OPTIONS)(req, res, () => res.end()));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const reference = await fetch(`http://127.0.0.1:${port}/`);
    server.close();
    const expected = Object.entries(helmetHeaders(HELMET_OPTIONS)).sort();
    assert.ok(expected.length >= 10, `helmet set ${expected.length} headers`);
    for (const [name, value] of expected) assert.equal(reference.headers.get(name), value, name);
    await withApp({}, async (app) => {
      const replies = [
        await app.inject('/users'),
        await app.inject('/no-such-path'),
        await app.inject({ method: 'POST', url: '/users', payload: { name: '' } }),
        await app.inject({ method: 'DELETE', url: '/health' }),
      ];
      for (const res of replies) {
        for (const [name, value] of expected) assert.equal(res.headers[name], value, `${name} on a ${res.statusCode}`);
      }
      assert.deepEqual(replies.map((r) => r.statusCode), [200, 404, 422, 405]);
    });
  });
});

describe('CORS', () => {
  test('configured origins get CORS headers and preflights; others do not; unknown paths stay 404', async () => {
    await withApp({ CORS_ORIGINS: 'https://app.example.com' }, async (app) => {
      const pre = await app.inject({
        method: 'OPTIONS', url: '/users',
        headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
      });
      assert.equal(pre.statusCode, 204);
      assert.equal(pre.headers['access-control-allow-origin'], 'https://app.example.com');
      assert.match(String(pre.headers['access-control-allow-headers']), /Authorization/);
      assert.equal(pre.headers['access-control-allow-credentials'], undefined);
      const simple = await app.inject({ url: '/', headers: { origin: 'https://app.example.com' } });
      assert.equal(simple.headers['access-control-allow-origin'], 'https://app.example.com');
      assert.match(String(simple.headers['access-control-expose-headers']), /X-Request-Id/);
      const other = await app.inject({ url: '/', headers: { origin: 'https://evil.example.com' } });
      assert.equal(other.headers['access-control-allow-origin'], undefined);
      const missing = await app.inject('/no/such/path');
      assert.equal(missing.statusCode, 404);
      assert.deepEqual(missing.json(), { detail: 'Not Found' });
    });
  });

  test('* with credentials is refused', () => {
    assert.throws(() => loadConfig({ CORS_ORIGINS: '*', CORS_CREDENTIALS: 'true' }), ConfigError);
    assert.throws(() => loadConfig({ CORS_ORIGINS: 'app.example.com' }), /CORS_ORIGINS/);
  });
});

describe('compression', () => {
  test('large JSON is compressed, small is not, and a stream is never compressed', async () => {
    await withApp({}, async (app) => {
      await app.inject({ method: 'POST', url: '/users/batch', payload: { users: Array.from({ length: 50 }, () => userBody()) } });
      const big = await app.inject({ url: '/users?limit=50', headers: { 'accept-encoding': 'gzip' } });
      assert.equal(big.headers['content-encoding'], 'gzip');
      assert.equal(JSON.parse(gunzipSync(big.rawPayload).toString()).length, 50);
      const small = await app.inject({ url: '/', headers: { 'accept-encoding': 'gzip' } });
      assert.equal(small.headers['content-encoding'], undefined);
      for (const format of ['json', 'ndjson', 'csv']) {
        const stream = await app.inject({ url: `/users/stream?limit=50&format=${format}`, headers: { 'accept-encoding': 'gzip, br' } });
        assert.equal(stream.statusCode, 200);
        assert.equal(stream.headers['content-encoding'], undefined, `${format} stream left uncompressed`);
        assert.equal(stream.headers['transfer-encoding'], 'chunked');
      }
    });
  });
});

const RATE_HEADERS = ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset'];

describe('rate limits', () => {
  test('general limit per client: RateLimit-* headers, then 429 in the contract shape with Retry-After', async () => {
    await withApp({ RATE_LIMIT_MAX: '5' }, async (app) => {
      for (let i = 1; i <= 5; i++) {
        const res = await app.inject('/');
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['ratelimit-limit'], '5');
        assert.equal(res.headers['ratelimit-remaining'], String(5 - i));
      }
      const res = await app.inject('/');
      assert.equal(res.statusCode, 429);
      assert.match(res.json().detail, /^Rate limit exceeded, retry in \d+ seconds$/);
      assert.ok(Number(res.headers['retry-after']) >= 1);
      for (const h of RATE_HEADERS) assert.ok(res.headers[h] !== undefined, h);
      // Orchestrator probes are not limited; unknown paths are.
      assert.equal((await app.inject('/health/live')).statusCode, 200);
      assert.equal((await app.inject('/health/ready')).statusCode, 200);
      assert.equal((await app.inject('/nope')).statusCode, 429);
      // Another client is unaffected.
      assert.equal((await app.inject({ url: '/', remoteAddress: '198.51.100.9' })).statusCode, 200);
    });
  });

  test('unknown paths are rate limited', async () => {
    await withApp({ RATE_LIMIT_MAX: '3' }, async (app) => {
      const statuses = [];
      for (let i = 0; i < 5; i++) statuses.push((await app.inject(`/probe/${i}`)).statusCode);
      assert.deepEqual(statuses, [404, 404, 404, 429, 429]);
    });
  });

  test('authenticated clients are limited per account, wherever they connect from', async () => {
    await withApp(authEnv({ RATE_LIMIT_MAX: '4' }), async (app) => {
      const admin = await login(app, ADMIN.email, ADMIN.password);
      const key = await createKey(app, admin.access_token);
      const statuses = [];
      for (const remoteAddress of ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4', '198.51.100.5']) {
        statuses.push((await app.inject({ url: '/users', headers: { 'x-api-key': key.key }, remoteAddress })).statusCode);
      }
      // The key creation above counted once against the account too.
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    });
  });

  test('login brute force reaches 429, even with the right password; other emails have their own budget until the IP one runs out', async () => {
    await withApp(authEnv({ RATE_LIMIT_LOGIN_MAX: '5', RATE_LIMIT_LOGIN_IP_MAX: '8' }), async (app) => {
      const attempt = (email: string, password: string) => app.inject({ method: 'POST', url: '/auth/token', payload: { email, password } });
      const statuses = [];
      for (let i = 0; i < 5; i++) statuses.push((await attempt(ADMIN.email, `guess ${i}`)).statusCode);
      assert.deepEqual(statuses, [401, 401, 401, 401, 401]);
      const blocked = await attempt(ADMIN.email, ADMIN.password);
      assert.equal(blocked.statusCode, 429);
      assert.match(blocked.json().detail, /Rate limit exceeded/);
      assert.ok(Number(blocked.headers['retry-after']) >= 1);
      assert.equal((await attempt(ADMIN.email.toUpperCase(), ADMIN.password)).statusCode, 429, 'the email is matched without case');
      // A different email from the same IP: its own per-email budget, within the per-IP one (8 in all).
      assert.equal((await attempt('someone@example.com', 'x')).statusCode, 401);
      assert.equal((await attempt('someone@example.com', 'x')).statusCode, 429, 'IP budget spent');
      // Registration shares the strict limits.
      const reg = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: uniqueEmail(), password: PASSWORD } });
      assert.equal(reg.statusCode, 429);
      // Another IP may still log in.
      const other = await app.inject({ method: 'POST', url: '/auth/token', payload: { email: ADMIN.email, password: ADMIN.password }, remoteAddress: '198.51.100.20' });
      assert.equal(other.statusCode, 200);
    });
  });

  test('behind a trusted proxy the client address comes from X-Forwarded-For; otherwise it is ignored', async () => {
    await withApp({ RATE_LIMIT_MAX: '2', TRUST_PROXY: '127.0.0.1' }, async (app) => {
      const via = (ip: string) => app.inject({ url: '/', headers: { 'x-forwarded-for': ip } });
      assert.deepEqual([(await via('192.0.2.1')).statusCode, (await via('192.0.2.1')).statusCode, (await via('192.0.2.1')).statusCode], [200, 200, 429]);
      assert.equal((await via('192.0.2.2')).statusCode, 200);
    });
    await withApp({ RATE_LIMIT_MAX: '2' }, async (app) => {
      const via = (ip: string) => app.inject({ url: '/', headers: { 'x-forwarded-for': ip } });
      assert.deepEqual([(await via('192.0.2.1')).statusCode, (await via('192.0.2.2')).statusCode, (await via('192.0.2.3')).statusCode], [200, 200, 429]);
    });
  });
});

describe('body limits', () => {
  test('1 MiB by default (413), 16 KiB on the auth routes', async () => {
    await withApp({}, async (app) => {
      const big = await app.inject({ method: 'POST', url: '/users', payload: { ...userBody(), pad: 'x'.repeat(1_100_000) } });
      assert.equal(big.statusCode, 413);
      const auth = await app.inject({ method: 'POST', url: '/auth/token', payload: { email: 'a@b.co', password: 'x'.repeat(20_000) } });
      assert.equal(auth.statusCode, 413);
      assert.equal(typeof auth.json().detail, 'string');
    });
  });
});

describe('metrics token', () => {
  test('with METRICS_TOKEN, /metrics answers that token or an admin, and the token opens nothing else', async () => {
    const token = 'metrics-token-7f3a9c2e1b8d4f60';
    await withApp(authEnv({ METRICS_TOKEN: token }), async (app) => {
      const admin = await login(app, ADMIN.email, ADMIN.password);
      const viewer = await createAccount(app, admin.access_token, 'viewer');
      const cases: [Record<string, string>, number][] = [
        [{}, 401], [bearer('wrong-token-000000000000'), 401], [bearer(token), 200],
        [bearer(admin.access_token), 200], [bearer(viewer.tokens.access_token), 403],
      ];
      for (const url of ['/metrics', '/metrics/prometheus']) {
        for (const [headers, status] of cases) assert.equal((await app.inject({ url, headers })).statusCode, status, `${url} ${JSON.stringify(headers)}`);
      }
      assert.equal((await app.inject({ url: '/users', headers: bearer(token) })).statusCode, 401);
    });
  });
});

/** Opens a raw connection and writes `chunks` one by one, `gapMs` apart; resolves when the server closes it. */
function dribble(port: number, chunks: string[], gapMs: number): Promise<{ closedAfterMs: number; received: string; sentAll: boolean }> {
  return new Promise((resolve) => {
    const started = Date.now();
    let received = '';
    let i = 0;
    let timer: NodeJS.Timeout | undefined;
    const socket: Socket = connect({ port, host: '127.0.0.1' });
    const next = () => {
      if (i < chunks.length && !socket.destroyed) {
        socket.write(chunks[i++]!);
        timer = setTimeout(next, gapMs);
      }
    };
    socket.on('connect', next);
    socket.on('data', (d) => (received += d));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ closedAfterMs: Date.now() - started, received, sentAll: i >= chunks.length });
    });
  });
}

describe('slow clients', () => {
  test('headers sent slowly are cut off by HEADERS_TIMEOUT_MS; a slow body by REQUEST_TIMEOUT_MS', async () => {
    const config = testConfig(db.url, { HEADERS_TIMEOUT_MS: '1000', REQUEST_TIMEOUT_MS: '2000' });
    const app = await buildApp(config, { logger: false });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = app.server.address() as { port: number };
      // One header line every 300 ms, 40 of them: 12 s if the server let it.
      const headers = ['GET / HTTP/1.1\r\nHost: x\r\n', ...Array.from({ length: 40 }, (_, i) => `X-Slow-${i}: y\r\n`), '\r\n'];
      const slowHeaders = await dribble(port, headers, 300);
      assert.equal(slowHeaders.sentAll, false);
      assert.ok(slowHeaders.closedAfterMs < 4000, `closed after ${slowHeaders.closedAfterMs} ms`);
      assert.match(slowHeaders.received, /^HTTP\/1\.1 408/);

      const body = JSON.stringify(userBody());
      const slowBody = await dribble(port, [
        `POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
        ...body.split(''),
      ], 200);
      assert.equal(slowBody.sentAll, false);
      assert.ok(slowBody.closedAfterMs < 5000, `closed after ${slowBody.closedAfterMs} ms`);

      // A normal client on the same server is served.
      const ok = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(ok.status, 200);
    } finally {
      await app.close();
    }
  });
});

describe('secrets', () => {
  test('refused at start when missing, short or placeholders in production', () => {
    const prod = { NODE_ENV: 'production', DATABASE_URL: 'postgres://x@127.0.0.1/db' };
    assert.throws(() => loadConfig(prod), /JWT_SECRET is required/);
    assert.throws(() => loadConfig({ ...prod, JWT_SECRET: 'short' }), /at least 32 bytes/);
    for (const placeholder of ['changeme-changeme-changeme-changeme', 'secretsecretsecretsecretsecretsecret', 'your-secret-here-please-replace-it-now!!']) {
      assert.throws(() => loadConfig({ ...prod, JWT_SECRET: placeholder }), /placeholder/, placeholder);
    }
    const good = 'Yq3u8x0S2c6K1n4Z7b9D5f0H2j4L6p8R';
    assert.equal(loadConfig({ ...prod, JWT_SECRET: good }).auth.mode, 'on', 'production defaults to AUTH_MODE=on');
    assert.equal(loadConfig({ ...prod, JWT_SECRET: good }).auth.registration, false);
    assert.throws(() => loadConfig({ ...prod, JWT_SECRET: good, ADMIN_EMAIL: 'a@b.co', ADMIN_PASSWORD: 'changeme123456' }), /ADMIN_PASSWORD/);
    assert.throws(() => loadConfig({ ADMIN_EMAIL: 'a@b.co' }), /ADMIN_EMAIL and ADMIN_PASSWORD/);
    assert.throws(() => loadConfig({ METRICS_TOKEN: 'short' }), /METRICS_TOKEN/);
    assert.throws(() => loadConfig({ HEADERS_TIMEOUT_MS: '5000', REQUEST_TIMEOUT_MS: '1000' }), /HEADERS_TIMEOUT_MS/);
    assert.equal(loadConfig({}).auth.mode, 'off', 'development defaults to AUTH_MODE=off');
    assert.equal(loadConfig({}).rateLimit.max, 0, 'no general limit by default in development');
    assert.equal(loadConfig({ ...prod, JWT_SECRET: good }).rateLimit.max, 1000);
  });

  test('the logger censors secrets a careless log call passes, and leaves the caller\'s objects alone', () => {
    let out = '';
    const stream = new Writable({ write(chunk, _enc, done) { out += chunk; done(); } });
    const log = pino({ ...(loggerOptions(testConfig(db.url, { LOG_LEVEL: 'info' })) as pino.LoggerOptions), transport: undefined }, stream);
    const body = { email: 'kept@example.com', password: 'pw-in-body' };
    const err = Object.assign(new Error('boom'), { code: 'E_TEST' });
    log.info({
      body, token: 'top-token', err,
      headers: { authorization: 'Bearer hdr-secret', 'X-API-Key': 'hdr-key', accept: 'application/json' },
      upstream: { headers: { cookie: 'sid=cookie-secret' } },
      req: { url: '/users?api_key=in-query', headers: { 'x-api-key': 'req-key' } },
      config: { jwtSecret: 'cfg-secret', port: 8000 },
    }, 'careless');
    const line = JSON.parse(out) as {
      body: Record<string, string>; headers: Record<string, string>; upstream: { headers: Record<string, string> };
      config: Record<string, unknown>; err: { message: string; stack: string }; req: unknown;
    };
    for (const secret of ['pw-in-body', 'top-token', 'hdr-secret', 'hdr-key', 'cookie-secret', 'cfg-secret', 'in-query', 'req-key']) {
      assert.equal(out.includes(secret), false, `${secret} reached the log`);
    }
    assert.equal(line.body.password, '[redacted]');
    assert.equal(line.body.email, 'kept@example.com');
    assert.equal(line.headers.accept, 'application/json');
    assert.equal(line.config.port, 8000);
    assert.equal(line.upstream.headers.cookie, '[redacted]');
    assert.deepEqual(line.req, { path: '/users' }, 'a request-like object is logged by path only');
    assert.equal(line.err.message, 'boom', 'errors still go through their serializer');
    assert.match(line.err.stack, /boom/);
    assert.equal(body.password, 'pw-in-body', 'the caller\'s object is unchanged');
  });

  test('no password, token or key ever reaches the logs', async () => {
    let logs = '';
    const stream = new Writable({ write(chunk, _enc, done) { logs += chunk; done(); } });
    const config = testConfig(db.url, { ...authEnv(), LOG_LEVEL: 'trace' });
    const logger = { ...(loggerOptions(config) as object), stream } as unknown as { level: string };
    const app = await buildApp(config, { logger });
    await app.ready();
    try {
      const t = await login(app, ADMIN.email, ADMIN.password);
      const key = await createKey(app, t.access_token);
      await app.inject({ url: '/users?api_key=leak-in-query', headers: { 'x-api-key': key.key } });
      await app.inject({ url: '/users', headers: bearer(`${t.access_token}x`) });
      await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: t.refresh_token } });
      await app.inject({ method: 'POST', url: '/auth/token', payload: { email: ADMIN.email, password: 'wrong-password-in-log?' } });
      assert.ok(logs.length > 0, 'the app logged something');
      for (const secret of [ADMIN.password, t.access_token, t.refresh_token, key.key, 'leak-in-query', 'wrong-password-in-log?']) {
        assert.equal(logs.includes(secret), false, `${secret.slice(0, 12)}... appears in the logs`);
      }
    } finally {
      await app.close();
    }
  });
});
