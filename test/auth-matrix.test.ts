/**
 * The authorization matrix: every registered route (read from the app itself, so a new route cannot escape)
 * times every kind of caller, asserting the exact status, with AUTH_MODE=on and AUTH_MODE=off.
 *
 * The expectations below are written independently of src/modules/auth/policy.ts: each route is classified here by
 * hand, and a route this file does not classify fails the suite until someone decides who may call it.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';
import { startApp, userBody } from './support/app.ts';
import { ADMIN, JWT_SECRET, PASSWORD, authEnv, bearer, createAccount, createKey, login, uniqueEmail } from './support/auth.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

type Access = 'public' | 'read' | 'write' | 'admin' | 'account' | 'session' | 'metrics';

interface Spec {
  access: Access;
  /** Status of an allowed call. */
  ok: number;
  url?: string;
  payload?: () => unknown;
  headers?: Record<string, string>;
}

let userId = '';
const FAST_TIMEOUT = { 'x-request-timeout': '0.05' };

/** Every route, classified by hand. Keys are `METHOD url` exactly as registered. */
const SPECS: Record<string, Spec> = {
  'GET /': { access: 'public', ok: 200 },
  'GET /health': { access: 'public', ok: 200 },
  'GET /health/live': { access: 'public', ok: 200 },
  'GET /health/ready': { access: 'public', ok: 200 },
  'GET /docs': { access: 'public', ok: 200 },
  'HEAD /docs/': { access: 'public', ok: 200 },
  'GET /docs/static/index.html': { access: 'public', ok: 302 },
  'GET /docs/static/swagger-initializer.js': { access: 'public', ok: 200 },
  'GET /docs/static/*': { access: 'public', ok: 200, url: '/docs/static/swagger-ui.css' },
  'GET /docs/json': { access: 'public', ok: 200 },
  'GET /docs/yaml': { access: 'public', ok: 200 },
  'GET /openapi.json': { access: 'public', ok: 200 },
  'GET /metrics': { access: 'metrics', ok: 200 },
  'GET /metrics/prometheus': { access: 'metrics', ok: 200 },
  'GET /dashboard': { access: 'metrics', ok: 200 },
  'GET /dashboard/assets/:name': { access: 'metrics', ok: 200, url: '/dashboard/assets/dashboard.css' },
  'GET /dashboard/events': { access: 'metrics', ok: 200, url: '/dashboard/events?count=1' },

  'POST /auth/token': { access: 'public', ok: 200, payload: () => ({ email: ADMIN.email, password: ADMIN.password }) },
  'POST /auth/register': { access: 'public', ok: 201, payload: () => ({ email: uniqueEmail('m'), password: PASSWORD }) },
  // A well-formed but unknown refresh token: the route is reachable by all, and the handler says 401.
  'POST /auth/refresh': { access: 'public', ok: 401, payload: () => ({ refresh_token: `spr_${'A'.repeat(43)}` }) },
  'POST /auth/logout': { access: 'public', ok: 401, payload: () => ({ refresh_token: `spr_${'B'.repeat(43)}` }) },
  'GET /auth/me': { access: 'account', ok: 200 },
  'POST /auth/api-keys': { access: 'session', ok: 201, payload: () => ({ name: 'matrix' }) },
  'GET /auth/api-keys': { access: 'session', ok: 200 },
  'DELETE /auth/api-keys/:id': { access: 'session', ok: 404, url: `/auth/api-keys/${randomUUID()}` },
  'GET /auth/accounts': { access: 'admin', ok: 200 },
  'POST /auth/accounts': { access: 'admin', ok: 201, payload: () => ({ email: uniqueEmail('m'), password: PASSWORD, role: 'viewer' }) },
  'PATCH /auth/accounts/:id': { access: 'admin', ok: 404, url: `/auth/accounts/${randomUUID()}`, payload: () => ({ disabled: false }) },
  'DELETE /auth/accounts/:id': { access: 'admin', ok: 404, url: `/auth/accounts/${randomUUID()}` },

  'POST /shutdown': { access: 'admin', ok: 200 },
  'GET /cache/status': { access: 'metrics', ok: 200 },
  'POST /cache/clear': { access: 'admin', ok: 200 },

  'GET /users': { access: 'read', ok: 200 },
  'POST /users': { access: 'write', ok: 201, payload: () => userBody() },
  'POST /users/batch': { access: 'write', ok: 201, payload: () => ({ users: [userBody()] }) },
  'GET /users/:id': { access: 'read', ok: 200 },
  'PUT /users/:id': { access: 'write', ok: 200, payload: () => ({ age: 33 }) },
  'PATCH /users/:id': { access: 'write', ok: 200, payload: () => ({ age: 34 }) },
  // Idempotent delete of an id that does not exist, so the shared user survives.
  'DELETE /users/:id': { access: 'write', ok: 204, url: `/users/${randomUUID()}` },
  'GET /users/stream': { access: 'read', ok: 200, url: '/users/stream?limit=5' },
  'GET /users/stream/pages': { access: 'read', ok: 200, url: '/users/stream/pages?limit=5&max_pages=1' },
  'GET /performance/async': { access: 'read', ok: 200, url: '/performance/async?requests=1' },
  'GET /performance/sync': { access: 'read', ok: 200, url: '/performance/sync?requests=1' },
  // The real 5 s and 10 s operations, cut short by a deadline: reaching the 504 proves the caller got in.
  'GET /slow_query': { access: 'read', ok: 504, headers: FAST_TIMEOUT },
  'GET /long_running_query': { access: 'read', ok: 504, headers: FAST_TIMEOUT },

  // Jobs: ids that do not exist, so an allowed caller reaches the handler and gets its 404.
  'GET /jobs': { access: 'read', ok: 200 },
  'GET /jobs/:id': { access: 'read', ok: 404, url: `/jobs/${randomUUID()}` },
  'DELETE /jobs/:id': { access: 'write', ok: 404, url: `/jobs/${randomUUID()}` },
  'GET /jobs/:id/events': { access: 'read', ok: 404, url: `/jobs/${randomUUID()}/events` },

  // Bulk (docs/bulk.md): an upload that does not exist, so an allowed caller reaches the handler and gets its 404.
  'POST /users/import': { access: 'write', ok: 404, payload: () => ({ upload_id: 'none' }) },
  'POST /users/export': { access: 'write', ok: 202, payload: () => ({ format: 'csv' }) },
  // Public: the signature is the credential; without one every caller reaches the handler's 403.
  'GET /exports/:file': { access: 'public', ok: 403, url: '/exports/none.csv' },

  // Webhooks (docs/webhooks.md): admin only.
  'POST /webhooks': { access: 'admin', ok: 201, payload: () => ({ url: 'https://hooks.example.com/spate', events: ['user.created'] }) },
  'GET /webhooks': { access: 'admin', ok: 200 },
  'DELETE /webhooks/:id': { access: 'admin', ok: 204, url: `/webhooks/${randomUUID()}` },
  'GET /webhooks/:id/deliveries': { access: 'admin', ok: 404, url: `/webhooks/${randomUUID()}/deliveries` },

  // tus uploads (docs/uploads.md): an upload id that does not exist, so an allowed caller gets its 404.
  'OPTIONS /uploads': { access: 'public', ok: 204 },
  'OPTIONS /uploads/:id': { access: 'public', ok: 204, url: `/uploads/${randomUUID()}` },
  'POST /uploads': { access: 'write', ok: 201, headers: { 'tus-resumable': '1.0.0', 'upload-length': '1' } },
  'HEAD /uploads/:id': { access: 'write', ok: 404, url: `/uploads/${randomUUID()}`, headers: { 'tus-resumable': '1.0.0' } },
  'PATCH /uploads/:id': {
    access: 'write', ok: 404, url: `/uploads/${randomUUID()}`, payload: () => 'x',
    headers: { 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
  },
  'DELETE /uploads/:id': { access: 'write', ok: 404, url: `/uploads/${randomUUID()}`, headers: { 'tus-resumable': '1.0.0' } },
};

/** The spec of a route; a HEAD route follows its GET. */
function specOf(method: string, url: string): Spec | undefined {
  return SPECS[`${method} ${url}`] ?? (method === 'HEAD' ? SPECS[`GET ${url}`] : undefined);
}

type CallerName = 'anonymous' | 'viewer' | 'editor' | 'admin' | 'scoped key' | 'revoked key' | 'expired token';
const CALLERS: CallerName[] = ['anonymous', 'viewer', 'editor', 'admin', 'scoped key', 'revoked key', 'expired token'];

/** What a caller gets on a route of each access class: 'ok', or the status. */
function expected(access: Access, caller: CallerName, mode: 'on' | 'off', loopback: boolean): 'ok' | 401 | 403 {
  if (access === 'public') return 'ok';
  if (caller === 'revoked key' || caller === 'expired token') return 401;
  const scopes: Record<CallerName, string[]> = {
    anonymous: [], viewer: ['read'], editor: ['read', 'write'], admin: ['read', 'write', 'admin'],
    'scoped key': ['read'], 'revoked key': [], 'expired token': [],
  };
  const anonymous = caller === 'anonymous';
  const session = ['viewer', 'editor', 'admin'].includes(caller);
  switch (access) {
    case 'metrics': return 'ok'; // no METRICS_TOKEN in these apps; see test/security.test.ts
    case 'account': return anonymous ? 401 : 'ok';
    case 'session': return session ? 'ok' : anonymous ? 401 : 403;
    case 'admin':
      if (scopes[caller].includes('admin')) return 'ok';
      if (mode === 'off') return loopback ? 'ok' : 403;
      return anonymous ? 401 : 403;
    default:
      if (mode === 'off' || scopes[caller].includes(access)) return 'ok';
      return anonymous ? 401 : 403;
  }
}

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.destroy();
});

for (const mode of ['on', 'off'] as const) {
  describe(`AUTH_MODE=${mode}`, () => {
    let app: FastifyInstance;
    const headersOf: Partial<Record<CallerName, Record<string, string>>> = {};

    before(async () => {
      // POST /shutdown is called for real; here it only records that it was asked.
      app = await startApp(db.url, authEnv({ AUTH_MODE: mode }), { requestShutdown: () => {} });
      const admin = await login(app, ADMIN.email, ADMIN.password);
      const viewer = await createAccount(app, admin.access_token, 'viewer');
      const editor = await createAccount(app, admin.access_token, 'editor');
      const scoped = await createKey(app, editor.tokens.access_token, { name: 'scoped', scopes: ['users:read'] });
      const revoked = await createKey(app, editor.tokens.access_token, { name: 'revoked' });
      await app.inject({ method: 'DELETE', url: `/auth/api-keys/${revoked.id}`, headers: bearer(editor.tokens.access_token) });
      const claims = JSON.parse(Buffer.from(admin.access_token.split('.')[1]!, 'base64url').toString());
      const past = Math.floor(Date.now() / 1000) - 3600;
      const expiredToken = await new SignJWT({ ...claims, iat: past, nbf: past, exp: past + 900 })
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(new TextEncoder().encode(JWT_SECRET));
      Object.assign(headersOf, {
        anonymous: {}, viewer: bearer(viewer.tokens.access_token), editor: bearer(editor.tokens.access_token),
        admin: bearer(admin.access_token), 'scoped key': { 'x-api-key': scoped.key }, 'revoked key': { 'x-api-key': revoked.key },
        'expired token': bearer(expiredToken),
      });
      const created = await app.inject({ method: 'POST', url: '/users', headers: headersOf.admin, payload: userBody() });
      userId = created.json().id;
    });
    after(async () => {
      await app?.close();
    });

    test('every registered route is classified here and named by the policy table', () => {
      const missing = app.auth.routes.filter((r) => !specOf(r.method, r.url)).map((r) => `${r.method} ${r.url}`);
      assert.deepEqual(missing, [], 'classify these routes in SPECS (and in src/modules/auth/policy.ts)');
      const implicit = app.auth.routes.filter((r) => !r.explicit).map((r) => `${r.method} ${r.url}`);
      assert.deepEqual(implicit, [], 'routes that fell to the closed default of the policy table');
      assert.ok(app.auth.routes.length >= 60, `only ${app.auth.routes.length} routes seen`);
    });

    // Loopback matters only with AUTH_MODE=off; with it on, a local caller must get nothing more than a remote one.
    for (const loopback of [true, false]) {
      test(`exact statuses: every route x every caller, from ${loopback ? 'loopback' : 'another host'}`, async () => {
        const failures: string[] = [];
        for (const route of app.auth.routes) {
          const spec = specOf(route.method, route.url)!;
          for (const caller of CALLERS) {
            const want = expected(spec.access, caller, mode, loopback);
            const wantStatus = want === 'ok' ? spec.ok : want;
            const url = (spec.url ?? route.url).replace(':id', userId);
            const payload = spec.payload?.();
            const res = await app.inject({
              method: route.method as 'GET', url,
              headers: { ...spec.headers, ...headersOf[caller] },
              ...(payload === undefined ? {} : { payload: payload as object }),
              ...(loopback ? {} : { remoteAddress: '203.0.113.7' }),
            });
            if (res.statusCode !== wantStatus) failures.push(`${route.method} ${url} as ${caller}: ${res.statusCode}, expected ${wantStatus} (${res.body.slice(0, 80)})`);
            const bodyless = route.method === 'HEAD';
            if (res.statusCode === 401 && res.headers['www-authenticate'] !== 'Bearer') failures.push(`${route.method} ${url} as ${caller}: 401 without WWW-Authenticate`);
            if (!bodyless && res.statusCode === 401 && (res.body !== '{"detail":"Not authenticated"}' || res.headers['www-authenticate'] !== 'Bearer')) {
              failures.push(`${route.method} ${url} as ${caller}: 401 body or header differs: ${res.body}`);
            }
            // A 403 of the policy says Forbidden; a route whose own answer is 403 (a bad download signature) says why.
            if (!bodyless && res.statusCode === 403 && want === 403 && res.body !== '{"detail":"Forbidden"}') {
              failures.push(`${route.method} ${url} as ${caller}: 403 body ${res.body}`);
            }
          }
        }
        assert.deepEqual(failures, []);
      });
    }
  });
}

describe('AUTH_MODE=off keeps the contract open', () => {
  test('anonymous clients use /users unchanged, and a proxied "loopback" request is not trusted as local', async () => {
    const app = await startApp(db.url, { AUTH_MODE: 'off' }, { requestShutdown: () => {} });
    try {
      const created = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
      assert.equal(created.statusCode, 201);
      assert.equal((await app.inject(`/users/${created.json().id}`)).statusCode, 200);
      const viaProxy = await app.inject({ method: 'POST', url: '/shutdown', headers: { 'x-forwarded-for': '198.51.100.4' } });
      assert.equal(viaProxy.statusCode, 403);
    } finally {
      await app.close();
    }
  });
});
