/**
 * Accounts, tokens and API keys over HTTP with AUTH_MODE=on, on every backend (a real PostgreSQL database, and a
 * real Cassandra node): logins (form and JSON), refresh rotation and reuse, logout, every JWT attack (one
 * identical 401), API keys (shown once, hashed, scoped, expiring, revoked at once), disabled and deleted accounts,
 * mass assignment, registration, the first admin and the create-admin command.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { SignJWT, base64url } from 'jose';
import { digest } from '../src/modules/auth/tokens.ts';
import { userBody } from './support/app.ts';
import { ADMIN, JWT_SECRET, PASSWORD, authEnv, bearer, createAccount, createKey, login, uniqueEmail, type Tokens } from './support/auth.ts';
import { BACKENDS, exitWhenDone, skipReason, startBackend, type BackendName, type TestBackend } from './support/backends.ts';

exitWhenDone();

/** The statements each backend's tests run directly: to check what is stored, or to expire a row. */
const DIRECT: Record<BackendName, { expireRefresh: string; expireKey: string; keyHash: string; allKeys: string }> = {
  postgres: {
    expireRefresh: "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
    expireKey: "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
    keyHash: 'SELECT key_hash FROM api_keys WHERE id = $1',
    allKeys: 'SELECT * FROM api_keys',
  },
  cassandra: {
    expireRefresh: 'UPDATE {ks}.refresh_tokens SET expires_at = dateOf(now()) WHERE token_hash = ?',
    expireKey: 'UPDATE {ks}.api_keys SET expires_at = dateOf(now()) WHERE id = ?',
    keyHash: 'SELECT key_hash FROM {ks}.api_keys WHERE id = ?',
    allKeys: 'SELECT * FROM {ks}.api_keys',
  },
};

for (const backendName of BACKENDS) {
  describe(`auth over HTTP: ${backendName}`, { skip: skipReason(backendName) }, () => {
    let b: TestBackend;
    let app: FastifyInstance;
    let admin: Tokens;
    const direct = DIRECT[backendName];

    before(async () => {
      b = await startBackend(backendName);
      app = await b.startApp(authEnv());
      admin = await login(app, ADMIN.email, ADMIN.password);
    });
    after(async () => {
      await app?.close();
      await b?.destroy();
    });

    const UNAUTHORIZED = { detail: 'Not authenticated' };

    function assertUnauthorized(res: { statusCode: number; body: string; headers: Record<string, unknown> }, label = '') {
      assert.equal(res.statusCode, 401, `${label}: ${res.body}`);
      assert.deepEqual(JSON.parse(res.body), UNAUTHORIZED, label);
      assert.equal(res.headers['www-authenticate'], 'Bearer', label);
    }

    const me = (headers: Record<string, string>) => app.inject({ url: '/auth/me', headers });

    describe('POST /auth/token', () => {
      test('OAuth2 password grant as a form: bearer access token, refresh token, scopes, no-store', async () => {
        const res = await app.inject({
          method: 'POST', url: '/auth/token',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({ grant_type: 'password', username: ADMIN.email, password: ADMIN.password }).toString(),
        });
        assert.equal(res.statusCode, 200, res.body);
        const body = res.json();
        assert.equal(body.token_type, 'bearer');
        assert.equal(body.expires_in, 900);
        assert.equal(body.scope, 'users:read users:write admin');
        assert.match(body.refresh_token, /^spr_[\w-]{43}$/);
        assert.equal(res.headers['cache-control'], 'no-store');
        const who = await me(bearer(body.access_token));
        assert.equal(who.statusCode, 200);
        assert.equal(who.json().account.email, ADMIN.email);
        assert.deepEqual(who.json().scopes, ['users:read', 'users:write', 'admin']);
      });

      test('JSON body, email in any case', async () => {
        await login(app, ADMIN.email.toUpperCase(), ADMIN.password);
      });

      test('wrong password, unknown email, disabled account: the same 401', async () => {
        const { account } = await createAccount(app, admin.access_token, 'viewer');
        await app.inject({ method: 'PATCH', url: `/auth/accounts/${account.id}`, headers: bearer(admin.access_token), payload: { disabled: true } });
        for (const [label, email, password] of [
          ['wrong password', ADMIN.email, 'not the password'],
          ['unknown email', 'nobody@example.com', ADMIN.password],
          ['disabled account', account.email, PASSWORD],
        ]) {
          const res = await app.inject({ method: 'POST', url: '/auth/token', payload: { email, password } });
          assertUnauthorized(res, label!);
        }
      });

      test('an unknown email costs the same work as a wrong password (no enumeration by timing)', async () => {
        // The work is the process's CPU time (argon2id runs on libuv's threads, which it includes): wall time on a
        // shared machine measures the neighbours too (CI saw a ratio outside the bounds at load average 9).
        const time = async (email: string) => {
          const t0 = process.cpuUsage();
          const res = await app.inject({ method: 'POST', url: '/auth/token', payload: { email, password: 'wrong password' } });
          assert.equal(res.statusCode, 401);
          const { user, system } = process.cpuUsage(t0);
          return (user + system) / 1000;
        };
        await time('warmup@example.com');
        const known: number[] = [];
        const unknown: number[] = [];
        for (let i = 0; i < 9; i++) {
          known.push(await time(ADMIN.email));
          unknown.push(await time(`ghost${i}@example.com`));
        }
        const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
        const ratio = median(unknown) / median(known);
        assert.ok(ratio > 0.5 && ratio < 2, `unknown/known login CPU time ratio ${ratio.toFixed(2)} (both run argon2id)`);
      });

      test('a stale token sent with a login is ignored (public route)', async () => {
        const res = await app.inject({ method: 'POST', url: '/auth/token', headers: bearer('expired.or.bad'), payload: { email: ADMIN.email, password: ADMIN.password } });
        assert.equal(res.statusCode, 200);
      });
    });

    describe('refresh tokens', () => {
      test('rotation: each refresh returns a new pair and the old refresh token stops working', async () => {
        const first = await login(app, ADMIN.email, ADMIN.password);
        const res = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } });
        assert.equal(res.statusCode, 200, res.body);
        const second = res.json();
        assert.notEqual(second.refresh_token, first.refresh_token);
        assert.equal((await me(bearer(second.access_token))).statusCode, 200);
        // Form body, as OAuth2 clients send it.
        const third = await app.inject({
          method: 'POST', url: '/auth/refresh', headers: { 'content-type': 'application/x-www-form-urlencoded' },
          payload: `grant_type=refresh_token&refresh_token=${second.refresh_token}`,
        });
        assert.equal(third.statusCode, 200, third.body);
      });

      test('reusing a rotated refresh token revokes the whole family, access tokens included', async () => {
        const first = await login(app, ADMIN.email, ADMIN.password);
        const second = (await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } })).json();
        assert.equal((await me(bearer(second.access_token))).statusCode, 200);
        // The stolen first token is replayed:
        assertUnauthorized(await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } }), 'replay');
        // ...and the legitimate holder's newer tokens are dead too.
        assertUnauthorized(await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: second.refresh_token } }), 'newest refresh');
        assertUnauthorized(await me(bearer(second.access_token)), 'access token of the family');
        assertUnauthorized(await me(bearer(first.access_token)), 'first access token');
        // Other logins of the same account are untouched.
        const other = await login(app, ADMIN.email, ADMIN.password);
        assert.equal((await me(bearer(other.access_token))).statusCode, 200);
      });

      test('two concurrent refreshes with one token: exactly one succeeds', async () => {
        const t = await login(app, ADMIN.email, ADMIN.password);
        const results = await Promise.all([1, 2].map(() => app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: t.refresh_token } })));
        assert.deepEqual(results.map((r) => r.statusCode).sort(), [200, 401]);
      });

      test('unknown, malformed and expired refresh tokens are the same 401', async () => {
        const t = await login(app, ADMIN.email, ADMIN.password);
        await b.direct(direct.expireRefresh, [digest(t.refresh_token)]);
        for (const token of [`spr_${'A'.repeat(43)}`, 'garbage', t.refresh_token]) {
          assertUnauthorized(await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: token } }), token.slice(0, 8));
        }
      });

      test('logout with the refresh token ends the session; logout with the access token too', async () => {
        const a = await login(app, ADMIN.email, ADMIN.password);
        const out = await app.inject({ method: 'POST', url: '/auth/logout', payload: { refresh_token: a.refresh_token } });
        assert.equal(out.statusCode, 204, out.body);
        assertUnauthorized(await me(bearer(a.access_token)), 'access after logout');
        assertUnauthorized(await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: a.refresh_token } }), 'refresh after logout');

        const b = await login(app, ADMIN.email, ADMIN.password);
        assert.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(b.access_token), payload: {} })).statusCode, 204);
        assertUnauthorized(await me(bearer(b.access_token)), 'access after bearer logout');
        assertUnauthorized(await app.inject({ method: 'POST', url: '/auth/logout', payload: {} }), 'anonymous logout');
      });
    });

    describe('JWT attacks: every one is the same 401', () => {
      const key = new TextEncoder().encode(JWT_SECRET);
      let sub: string;
      let sid: string;

      before(async () => {
        const t = await login(app, ADMIN.email, ADMIN.password);
        const claims = JSON.parse(Buffer.from(t.access_token.split('.')[1]!, 'base64url').toString());
        sub = claims.sub;
        sid = claims.sid;
        // The genuine token works, so a 401 below is the attack failing, not a broken setup.
        assert.equal((await me(bearer(t.access_token))).statusCode, 200);
      });

      const now = () => Math.floor(Date.now() / 1000);
      function forge(overrides: { header?: Record<string, unknown>; claims?: Record<string, unknown>; secret?: Uint8Array } = {}) {
        const t = now();
        const claims = { sub, sid, iss: 'spate', aud: 'spate-api', iat: t, nbf: t, exp: t + 300, ...overrides.claims };
        return new SignJWT(claims)
          .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', ...overrides.header } as { alg: string })
          .sign(overrides.secret ?? key);
      }
      const unsigned = (header: object, payload: object) =>
        `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(payload))}.`;

      test('a correctly forged token is accepted (control)', async () => {
        assert.equal((await me(bearer(await forge()))).statusCode, 200);
      });

      const attacks: [string, () => Promise<string>][] = [
        ['alg none', async () => unsigned({ alg: 'none', typ: 'at+jwt' }, { sub, sid, iss: 'spate', aud: 'spate-api', iat: now(), nbf: now(), exp: now() + 300 })],
        ['alg None, signature kept', async () => {
          const [, payload, sig] = (await forge()).split('.');
          return `${base64url.encode(JSON.stringify({ alg: 'None', typ: 'at+jwt' }))}.${payload}.${sig}`;
        }],
        ['RS256 signed with an attacker key', async () => {
          const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
          return new SignJWT({ sid }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt' }).setSubject(sub).setIssuer('spate')
            .setAudience('spate-api').setIssuedAt().setNotBefore(now()).setExpirationTime(now() + 300).sign(privateKey);
        }],
        ['HS256 keyed with a public key (RS/HS confusion)', async () => {
          const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
          return forge({ secret: new TextEncoder().encode(publicKey.export({ type: 'spki', format: 'pem' }) as string) });
        }],
        ['HS512 with the right secret (algorithm not allowed)', () => forge({ header: { alg: 'HS512' } })],
        ['tampered payload (another subject)', async () => {
          const [h, , s] = (await forge()).split('.');
          return `${h}.${base64url.encode(JSON.stringify({ sub: randomUUID(), sid, iss: 'spate', aud: 'spate-api', iat: now(), nbf: now(), exp: now() + 300 }))}.${s}`;
        }],
        ['tampered payload (longer expiry)', async () => {
          const [h, p, s] = (await forge()).split('.');
          const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
          return `${h}.${base64url.encode(JSON.stringify({ ...claims, exp: claims.exp + 86_400 }))}.${s}`;
        }],
        ['tampered signature', async () => {
          const t = await forge();
          return t.slice(0, -2) + (t.endsWith('AA') ? 'BB' : 'AA');
        }],
        ['wrong secret', () => forge({ secret: new TextEncoder().encode('another-secret-that-is-32-bytes-long!!') })],
        ['expired', () => forge({ claims: { exp: now() - 60 } })],
        ['not yet valid (nbf in the future)', () => forge({ claims: { nbf: now() + 3600 } })],
        ['wrong issuer', () => forge({ claims: { iss: 'evil' } })],
        ['wrong audience', () => forge({ claims: { aud: 'other-api' } })],
        ['wrong typ (an ID token, say)', () => forge({ header: { typ: 'JWT' } })],
        ['no session id', () => forge({ claims: { sid: undefined } })],
        ['unknown session id', () => forge({ claims: { sid: randomUUID() } })],
        ['unknown account', async () => {
          const t = now();
          return new SignJWT({ sid }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setSubject(randomUUID()).setIssuer('spate')
            .setAudience('spate-api').setIssuedAt(t).setNotBefore(t).setExpirationTime(t + 300).sign(key);
        }],
        ['not a JWT', async () => 'not-a-token'],
        ['an API-key-shaped bearer that does not exist', async () => `spk_${'x'.repeat(43)}`],
      ];
      for (const [label, make] of attacks) {
        test(label, async () => {
          const token = await make();
          assertUnauthorized(await me(bearer(token)), label);
          assertUnauthorized(await app.inject({ url: '/users', headers: bearer(token) }), `${label} on /users`);
        });
      }

      test('tokens of a deleted or disabled account stop working at once', async () => {
        for (const action of ['disable', 'delete'] as const) {
          const { account, tokens } = await createAccount(app, admin.access_token, 'editor');
          const key = await createKey(app, tokens.access_token);
          // Warm the caches: the change must evict them.
          assert.equal((await me(bearer(tokens.access_token))).statusCode, 200);
          assert.equal((await me({ 'x-api-key': key.key })).statusCode, 200);
          const res = action === 'disable'
            ? await app.inject({ method: 'PATCH', url: `/auth/accounts/${account.id}`, headers: bearer(admin.access_token), payload: { disabled: true } })
            : await app.inject({ method: 'DELETE', url: `/auth/accounts/${account.id}`, headers: bearer(admin.access_token) });
          assert.ok(res.statusCode === 200 || res.statusCode === 204, res.body);
          assertUnauthorized(await me(bearer(tokens.access_token)), `${action}: token`);
          assertUnauthorized(await me({ 'x-api-key': key.key }), `${action}: key`);
          assertUnauthorized(await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: tokens.refresh_token } }), `${action}: refresh`);
        }
      });
    });

    describe('API keys', () => {
      let editor: Tokens;
      before(async () => {
        editor = (await createAccount(app, admin.access_token, 'editor')).tokens;
      });

      test('created once (the key is shown only then), stored as a digest, usable as X-API-Key or Bearer', async () => {
        const created = await createKey(app, editor.access_token, { name: 'ci', scopes: ['users:read'] });
        assert.match(created.key, /^spk_[\w-]{43}$/);
        assert.deepEqual(created.scopes, ['users:read']);
        const list = await app.inject({ url: '/auth/api-keys', headers: bearer(editor.access_token) });
        assert.equal(list.statusCode, 200);
        const listed = list.json().find((k: { id: string }) => k.id === created.id);
        assert.ok(listed);
        assert.equal('key' in listed, false);
        assert.ok(created.key.startsWith(listed.prefix));
        const [row] = await b.direct(direct.keyHash, [created.id]);
        assert.match(String(row!.key_hash), /^[0-9a-f]{64}$/);
        assert.equal(JSON.stringify(await b.direct(direct.allKeys)).includes(created.key), false, 'the key itself is never stored');

        assert.equal((await app.inject({ url: '/users', headers: { 'x-api-key': created.key } })).statusCode, 200);
        assert.equal((await app.inject({ url: '/users', headers: bearer(created.key) })).statusCode, 200);
        // Scoped: read only.
        const write = await app.inject({ method: 'POST', url: '/users', headers: { 'x-api-key': created.key }, payload: userBody() });
        assert.equal(write.statusCode, 403);
        assert.deepEqual(write.json(), { detail: 'Forbidden' });
      });

      test('revocation takes effect at once, even for a key just served from the cache', async () => {
        const created = await createKey(app, editor.access_token);
        assert.equal((await app.inject({ url: '/users', headers: { 'x-api-key': created.key } })).statusCode, 200);
        const del = await app.inject({ method: 'DELETE', url: `/auth/api-keys/${created.id}`, headers: bearer(editor.access_token) });
        assert.equal(del.statusCode, 204);
        assertUnauthorized(await app.inject({ url: '/users', headers: { 'x-api-key': created.key } }), 'revoked key');
      });

      test('an expired key is rejected', async () => {
        const created = await createKey(app, editor.access_token, { name: 'short', expires_in: 60 });
        await b.direct(direct.expireKey, [created.id]);
        assertUnauthorized(await app.inject({ url: '/users', headers: { 'x-api-key': created.key } }), 'expired key');
      });

      test('cannot grant scopes beyond the account role; a key cannot mint keys', async () => {
        const viewer = (await createAccount(app, admin.access_token, 'viewer')).tokens;
        const res = await app.inject({ method: 'POST', url: '/auth/api-keys', headers: bearer(viewer.access_token), payload: { name: 'x', scopes: ['users:write'] } });
        assert.equal(res.statusCode, 403);
        const key = await createKey(app, viewer.access_token);
        assert.deepEqual(key.scopes, ['users:read']);
        const mint = await app.inject({ method: 'POST', url: '/auth/api-keys', headers: { 'x-api-key': key.key }, payload: { name: 'x' } });
        assert.equal(mint.statusCode, 403);
      });

      test("demoting an account narrows its keys at once; another account's key is not found", async () => {
        const { account, tokens } = await createAccount(app, admin.access_token, 'editor');
        const key = await createKey(app, tokens.access_token);
        assert.equal((await app.inject({ method: 'POST', url: '/users', headers: { 'x-api-key': key.key }, payload: userBody() })).statusCode, 201);
        const patch = await app.inject({ method: 'PATCH', url: `/auth/accounts/${account.id}`, headers: bearer(admin.access_token), payload: { role: 'viewer' } });
        assert.equal(patch.statusCode, 200);
        assert.equal((await app.inject({ method: 'POST', url: '/users', headers: { 'x-api-key': key.key }, payload: userBody() })).statusCode, 403);
        const other = await app.inject({ method: 'DELETE', url: `/auth/api-keys/${key.id}`, headers: bearer(editor.access_token) });
        assert.equal(other.statusCode, 404);
      });
    });

    describe('registration and mass assignment', () => {
      test('register makes a viewer; role, id, timestamps and disabled in the body change nothing', async () => {
        const forgedId = randomUUID();
        const email = uniqueEmail('reg');
        const res = await app.inject({
          method: 'POST', url: '/auth/register',
          payload: { email, password: PASSWORD, role: 'admin', id: forgedId, disabled: true, created_at: '2000-01-01T00:00:00.000Z', scopes: ['admin'] },
        });
        assert.equal(res.statusCode, 201, res.body);
        const account = res.json();
        assert.equal(account.role, 'viewer');
        assert.notEqual(account.id, forgedId);
        assert.equal(account.disabled, false);
        assert.notEqual(account.created_at, '2000-01-01T00:00:00.000Z');
        const tokens = await login(app, email, PASSWORD);
        assert.deepEqual((await me(bearer(tokens.access_token))).json().scopes, ['users:read']);
      });

      test('email is unique without regard to case: 409', async () => {
        const email = uniqueEmail('dup');
        assert.equal((await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password: PASSWORD } })).statusCode, 201);
        const again = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: email.toUpperCase(), password: PASSWORD } });
        assert.equal(again.statusCode, 409);
        assert.deepEqual(again.json(), { detail: 'Email already registered' });
      });

      test('weak or invalid input is 422', async () => {
        const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: 'not-an-email', password: 'short' } });
        assert.equal(res.statusCode, 422);
      });

      test('account updates ignore email, id and timestamps; admins cannot demote themselves', async () => {
        const { account } = await createAccount(app, admin.access_token, 'viewer');
        const res = await app.inject({
          method: 'PATCH', url: `/auth/accounts/${account.id}`, headers: bearer(admin.access_token),
          payload: { email: 'changed@example.com', id: randomUUID(), created_at: '2000-01-01T00:00:00.000Z', role: 'editor' },
        });
        assert.equal(res.statusCode, 200, res.body);
        assert.equal(res.json().email, account.email);
        assert.equal(res.json().id, account.id);
        assert.equal(res.json().role, 'editor');
        const self = (await me(bearer(admin.access_token))).json().account.id;
        const demote = await app.inject({ method: 'PATCH', url: `/auth/accounts/${self}`, headers: bearer(admin.access_token), payload: { role: 'viewer' } });
        assert.equal(demote.statusCode, 409);
      });

      test('user updates with privileged fields change nothing but the fields allowed', async () => {
        const editor = (await createAccount(app, admin.access_token, 'editor')).tokens;
        const created = await app.inject({ method: 'POST', url: '/users', headers: bearer(editor.access_token), payload: userBody() });
        const user = created.json();
        const res = await app.inject({
          method: 'PATCH', url: `/users/${user.id}`, headers: bearer(editor.access_token),
          payload: { id: randomUUID(), created_at: '2000-01-01T00:00:00.000Z', role: 'admin', age: 41 },
        });
        assert.equal(res.statusCode, 200, res.body);
        assert.equal(res.json().id, user.id);
        assert.equal(res.json().created_at, user.created_at);
        assert.equal(res.json().age, 41);
      });

      test('registration can be turned off (404)', async () => {
        const closed = await b.startApp(authEnv({ AUTH_REGISTRATION: 'false' }));
        try {
          const res = await closed.inject({ method: 'POST', url: '/auth/register', payload: { email: uniqueEmail(), password: PASSWORD } });
          assert.equal(res.statusCode, 404);
        } finally {
          await closed.close();
        }
      });
    });

    describe('the first admin and the accounts store', () => {
      test('ADMIN_EMAIL/ADMIN_PASSWORD create it once; a later start with another password changes nothing', async () => {
        const again = await b.startApp(authEnv({ ADMIN_PASSWORD: 'a different password' }));
        try {
          const me = await again.inject({ url: '/auth/me', headers: bearer((await login(again, ADMIN.email, ADMIN.password)).access_token) });
          assert.equal(me.json().account.role, 'admin', 'still the admin, with the first password');
          const res = await again.inject({ method: 'POST', url: '/auth/token', payload: { email: ADMIN.email, password: 'a different password' } });
          assert.equal(res.statusCode, 401);
        } finally {
          await again.close();
        }
      });

      test('npm run create-admin creates an admin from the environment, idempotently', () => {
        const email = uniqueEmail('cli');
        const run = () => spawnSync('npm', ['run', '--silent', 'create-admin'], {
          cwd: new URL('..', import.meta.url).pathname,
          env: { PATH: process.env.PATH!, HOME: process.env.HOME!, ...b.env, ADMIN_EMAIL: email, ADMIN_PASSWORD: PASSWORD, LOG_LEVEL: 'silent' },
          encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000,
        });
        const first = run();
        assert.equal(first.status, 0, first.stderr + first.stdout);
        assert.match(first.stdout, /created/);
        const second = run();
        assert.equal(second.status, 0, second.stderr);
        assert.match(second.stdout, /exists/);
        assert.equal(second.stdout.includes(PASSWORD), false);
      });

      test('a JWT_SECRET is generated per process outside production (tokens still verify)', async () => {
        const { JWT_SECRET: _unset, ...env } = authEnv();
        const dev = await b.startApp(env);
        try {
          const t = await login(dev, ADMIN.email, ADMIN.password);
          assert.equal((await dev.inject({ url: '/auth/me', headers: bearer(t.access_token) })).statusCode, 200);
          // ...and a token from another process (the main app's secret) is not accepted here.
          const other = await login(app, ADMIN.email, ADMIN.password);
          assert.equal((await dev.inject({ url: '/auth/me', headers: bearer(other.access_token) })).statusCode, 401);
        } finally {
          await dev.close();
        }
      });
    });
  });
}
