/**
 * The users resource over HTTP (app.inject), on every storage backend (PostgreSQL, and Cassandra on a real node
 * started for this file): every endpoint's success path and each of its error paths, as the contract words them.
 * What the suite checks in the database directly goes through a small backend-neutral helper
 * (test/support/backends.ts). Without Java the Cassandra half is skipped with the reason, except under CI=true.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Response as InjectResponse } from 'light-my-request';
import { userBody } from './support/app.ts';
import { BACKENDS, exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';

const ISO_MS_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

exitWhenDone();

for (const backendName of BACKENDS) {
  describe(`users API on ${backendName}`, { skip: skipReason(backendName) }, () => {
    let backend: TestBackend;
    let app: FastifyInstance;

    before(async () => {
      backend = await startBackend(backendName);
      app = await backend.startApp({ BATCH_MAX: '50' });
    });
    after(async () => {
      await app?.close();
      await backend?.destroy();
    });

    async function create(body: Record<string, unknown> = userBody()) {
      const res = await app.inject({ method: 'POST', url: '/users', payload: body });
      assert.equal(res.statusCode, 201, res.body);
      return res.json();
    }

    const countRows = () => backend.countUsers();

    describe('GET /', () => {
      test('describes the service', async () => {
        const res = await app.inject('/');
        assert.equal(res.statusCode, 200);
        const body = res.json();
        assert.equal(body.docs, '/docs');
        assert.equal(typeof body.message, 'string');
        assert.match(body.version, /^\d+\.\d+\.\d+/);
      });
    });

    describe('POST /users', () => {
      test('creates a user: 201, Location, UUID, ms-precision UTC timestamps, trimmed name', async () => {
        const res = await app.inject({ method: 'POST', url: '/users', payload: { name: '  Ada  ', email: 'ada@example.com', age: 36 } });
        assert.equal(res.statusCode, 201);
        const user = res.json();
        assert.match(user.id, UUID);
        assert.equal(res.headers.location, `/users/${user.id}`);
        assert.equal(user.name, 'Ada');
        assert.equal(user.email, 'ada@example.com');
        assert.equal(user.age, 36);
        assert.match(user.created_at, ISO_MS_Z);
        assert.equal(user.updated_at, user.created_at);
        const read = await app.inject(`/users/${user.id}`);
        assert.deepEqual(read.json(), user, 'a later read returns identical fields and timestamps');
      });

      test('ignores unknown and privileged fields and never stores them', async () => {
        const forgedId = '00000000-0000-4000-8000-000000000000';
        const user = await create(userBody({ id: forgedId, created_at: '2000-01-01T00:00:00.000Z', role: 'admin', extra: 1 }));
        assert.notEqual(user.id, forgedId);
        assert.notEqual(user.created_at, '2000-01-01T00:00:00.000Z');
        assert.equal('role' in user, false);
        assert.equal('extra' in user, false);
        assert.equal(await backend.userExists(forgedId), false);
      });

      test('allows duplicate emails (not unique in this resource)', async () => {
        await create(userBody({ email: 'same@example.com' }));
        await create(userBody({ email: 'same@example.com' }));
      });

      test('accepts a body without Content-Type as JSON', async () => {
        const res = await app.inject({ method: 'POST', url: '/users', body: JSON.stringify(userBody()), headers: { 'content-type': undefined } });
        assert.equal(res.statusCode, 201, res.body);
      });

      const invalid: [string, unknown, (string | number)[], string][] = [
        ['missing name', { email: 'a@b.co', age: 1 }, ['body', 'name'], 'missing'],
        ['empty name', userBody({ name: '' }), ['body', 'name'], 'string_too_short'],
        ['blank name', userBody({ name: '   ' }), ['body', 'name'], 'string_too_long_or_blank'],
        ['name over 100 after trim', userBody({ name: 'x'.repeat(101) }), ['body', 'name'], 'string_too_long_or_blank'],
        ['bad email', userBody({ email: 'not-an-email' }), ['body', 'email'], 'value_error'],
        ['email over 254', userBody({ email: `${'a'.repeat(250)}@example.com` }), ['body', 'email'], 'string_too_long'],
        ['age as string', userBody({ age: '30' }), ['body', 'age'], 'int_type'],
        ['age fractional', userBody({ age: 30.5 }), ['body', 'age'], 'int_type'],
        ['age negative', userBody({ age: -1 }), ['body', 'age'], 'greater_than_equal'],
        ['age over 150', userBody({ age: 151 }), ['body', 'age'], 'less_than_equal'],
        ['name wrong type', userBody({ name: 42 }), ['body', 'name'], 'string_type'],
        ['array body', [userBody()], ['body'], 'dict_type'],
      ];
      for (const [label, payload, loc, type] of invalid) {
        test(`422 for ${label}, and nothing is written`, async () => {
          const before = await countRows();
          const res = await app.inject({ method: 'POST', url: '/users', payload: payload as object });
          assert.equal(res.statusCode, 422, res.body);
          const [issue] = res.json().detail;
          assert.deepEqual(issue.loc, loc);
          assert.equal(issue.type, type);
          assert.equal(typeof issue.msg, 'string');
          assert.equal(await countRows(), before);
        });
      }

      test('accepts a name of exactly 100 characters after trimming', async () => {
        const user = await create(userBody({ name: `  ${'n'.repeat(100)}  ` }));
        assert.equal(user.name.length, 100);
      });

      test('422 for malformed JSON', async () => {
        const res = await app.inject({ method: 'POST', url: '/users', body: '{"name": ', headers: { 'content-type': 'application/json' } });
        assert.equal(res.statusCode, 422);
        assert.equal(res.json().detail[0].type, 'json_invalid');
      });

      test('422 for an empty JSON body', async () => {
        const res = await app.inject({ method: 'POST', url: '/users', body: '', headers: { 'content-type': 'application/json' } });
        assert.equal(res.statusCode, 422);
      });

      test('422 for a form-encoded body, as the original service', async () => {
        const res = await app.inject({ method: 'POST', url: '/users', body: 'name=a', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
        assert.equal(res.statusCode, 422);
      });

      test('413 for a body over the limit, in the contract shape', async () => {
        const res = await app.inject({ method: 'POST', url: '/users', payload: userBody({ name: 'x'.repeat(2 * 1024 * 1024) }) });
        assert.equal(res.statusCode, 413);
        assert.equal(typeof res.json().detail, 'string');
      });

      test('400 for input the database refuses (NUL byte), nothing written', async () => {
        const before = await countRows();
        const res = await app.inject({ method: 'POST', url: '/users', payload: userBody({ name: 'a\u0000b' }) });
        assert.equal(res.statusCode, 400, res.body);
        assert.doesNotMatch(res.body, /postgres|sql|invalid byte|stack/i);
        assert.equal(await countRows(), before);
      });
    });

    describe('GET /users/{id}', () => {
      test('200 for an existing user, case-insensitive id', async () => {
        const user = await create();
        const res = await app.inject(`/users/${user.id.toUpperCase()}`);
        assert.equal(res.statusCode, 200);
        assert.deepEqual(res.json(), user);
      });

      test('404 for a missing user', async () => {
        const res = await app.inject('/users/0190a3c4-0000-7000-8000-000000000000');
        assert.equal(res.statusCode, 404);
        assert.deepEqual(res.json(), { detail: 'User not found' });
      });

      for (const bad of ['not-a-uuid', '123', '0190a3c4-0000-7000-8000-00000000000', '0190a3c4-0000-7000-8000-00000000000g']) {
        test(`400 Invalid UUID for ${bad}`, async () => {
          const res = await app.inject(`/users/${bad}`);
          assert.equal(res.statusCode, 400);
          assert.deepEqual(res.json(), { detail: 'Invalid UUID' });
        });
      }
    });

    describe('PUT and PATCH /users/{id}', () => {
      for (const method of ['PUT', 'PATCH'] as const) {
        test(`${method} changes only present, non-null fields; updated_at moves forward`, async () => {
          const user = await create(userBody({ age: 20 }));
          const res = await app.inject({ method, url: `/users/${user.id}`, payload: { age: 21, name: null, unknown: 'x' } });
          assert.equal(res.statusCode, 200, res.body);
          const updated = res.json();
          assert.equal(updated.age, 21);
          assert.equal(updated.name, user.name);
          assert.equal(updated.email, user.email);
          assert.equal(updated.created_at, user.created_at);
          assert.match(updated.updated_at, ISO_MS_Z);
          assert.ok(Date.parse(updated.updated_at) > Date.parse(user.updated_at));
          assert.deepEqual((await app.inject(`/users/${user.id}`)).json(), updated);
        });
      }

      test('updated_at is strictly increasing across rapid updates (>= 1 ms apart)', async () => {
        const user = await create();
        let last = Date.parse(user.updated_at);
        for (let i = 0; i < 5; i++) {
          const res = await app.inject({ method: 'PATCH', url: `/users/${user.id}`, payload: { age: 40 + i } });
          const t = Date.parse(res.json().updated_at);
          assert.ok(t >= last + 1, `update ${i}: ${t} after ${last}`);
          last = t;
        }
      });

      test('order of checks: body 422 before id 400 before 404 before "No fields to update"', async () => {
        const missing = '0190a3c4-0000-7000-8000-000000000001';
        const bad = await app.inject({ method: 'PUT', url: '/users/nope', payload: { age: 'old' } });
        assert.equal(bad.statusCode, 422);
        const badId = await app.inject({ method: 'PUT', url: '/users/nope', payload: { age: 3 } });
        assert.deepEqual([badId.statusCode, badId.json()], [400, { detail: 'Invalid UUID' }]);
        const absent = await app.inject({ method: 'PUT', url: `/users/${missing}`, payload: {} });
        assert.deepEqual([absent.statusCode, absent.json()], [404, { detail: 'User not found' }]);
        const user = await create();
        const empty = await app.inject({ method: 'PATCH', url: `/users/${user.id}`, payload: { name: null } });
        assert.deepEqual([empty.statusCode, empty.json()], [400, { detail: 'No fields to update' }]);
      });

      test('422 for invalid values, nothing changes', async () => {
        const user = await create();
        for (const payload of [{ age: 200 }, { email: 'nope' }, { name: ' ' }]) {
          const res = await app.inject({ method: 'PATCH', url: `/users/${user.id}`, payload });
          assert.equal(res.statusCode, 422);
        }
        assert.deepEqual((await app.inject(`/users/${user.id}`)).json(), user);
      });
    });

    describe('DELETE /users/{id}', () => {
      test('204 with an empty body, then 404 on read, and 204 again (idempotent)', async () => {
        const user = await create();
        const res = await app.inject({ method: 'DELETE', url: `/users/${user.id}` });
        assert.equal(res.statusCode, 204);
        assert.equal(res.body, '');
        assert.equal((await app.inject(`/users/${user.id}`)).statusCode, 404);
        assert.equal((await app.inject({ method: 'DELETE', url: `/users/${user.id}` })).statusCode, 204);
      });

      test('400 for a bad id', async () => {
        const res = await app.inject({ method: 'DELETE', url: '/users/xyz' });
        assert.deepEqual([res.statusCode, res.json()], [400, { detail: 'Invalid UUID' }]);
      });
    });

    describe('GET /users', () => {
      test('default limit is 10, and limit bounds are 1..10000', async () => {
        for (let i = 0; i < 12; i++) await create();
        const res = await app.inject('/users');
        assert.equal(res.statusCode, 200);
        assert.equal(res.json().length, 10);
        for (const bad of ['0', '10001', 'abc', '-5', '1.5']) {
          const r = await app.inject(`/users?limit=${bad}`);
          assert.equal(r.statusCode, 422, `limit=${bad}`);
          assert.deepEqual(r.json().detail[0].loc, ['query', 'limit']);
        }
      });

      test('follows Link and X-Next-Cursor across every row exactly once, in a stable order', async () => {
        const seen: string[] = [];
        let url: string | undefined = '/users?limit=7';
        while (url) {
          const res: InjectResponse = await app.inject(url);
          assert.equal(res.statusCode, 200);
          seen.push(...res.json().map((u: { id: string }) => u.id));
          const link = res.headers.link as string | undefined;
          const next = res.headers['x-next-cursor'] as string | undefined;
          if (link) {
            assert.match(link, /^<\/users\?limit=7&cursor=[\w-]+>; rel="next"$/);
            assert.ok(link.includes(next!));
          }
          url = link ? /^<([^>]+)>/.exec(link)![1] : undefined;
        }
        assert.equal(new Set(seen).size, seen.length, 'no row twice');
        assert.equal(seen.length, await countRows(), 'every row');
        // PostgreSQL: oldest first (UUIDv7 order). Cassandra: token order (test/storage.contract.ts, CANNOT).
        assert.deepEqual(await backend.listingOrder(seen), seen, 'the backend\'s listing order');
      });

      test('no Link header on the last page', async () => {
        const res = await app.inject('/users?limit=10000');
        assert.equal(res.headers.link, undefined);
        assert.equal(res.headers['x-next-cursor'], undefined);
      });

      for (const bad of ['garbage!', 'AAAA', 'AQ', Buffer.from([2, ...Array(16).fill(0)]).toString('base64url')]) {
        test(`400 Invalid cursor for ${bad}`, async () => {
          const res = await app.inject(`/users?cursor=${encodeURIComponent(bad)}`);
          assert.deepEqual([res.statusCode, res.json()], [400, { detail: 'Invalid cursor' }]);
        });
      }
    });

    describe('POST /users/batch', () => {
      test('creates all users from {"users": [...]} and from a bare array', async () => {
        for (const payload of [{ users: [userBody(), userBody()] }, [userBody(), userBody(), userBody()]]) {
          const res = await app.inject({ method: 'POST', url: '/users/batch', payload });
          assert.equal(res.statusCode, 201, res.body);
          const { created } = res.json();
          assert.equal(created.length, Array.isArray(payload) ? 3 : 2);
          for (const u of created) assert.deepEqual((await app.inject(`/users/${u.id}`)).json(), u);
        }
      });

      test('one bad item: 422 naming its index, and nothing is written', async () => {
        const before = await countRows();
        const res = await app.inject({
          method: 'POST', url: '/users/batch',
          payload: { users: [userBody(), userBody(), userBody({ email: 'bad' }), userBody()] },
        });
        assert.equal(res.statusCode, 422);
        assert.deepEqual(res.json().detail[0].loc, ['body', 'users', 2, 'email']);
        assert.equal(await countRows(), before);
      });

      test('a database-refused item rolls the whole batch back', async () => {
        const before = await countRows();
        const res = await app.inject({ method: 'POST', url: '/users/batch', payload: [userBody(), userBody({ name: 'bad\u0000' })] });
        assert.equal(res.statusCode, 400, res.body);
        assert.equal(await countRows(), before);
      });

      test('bounds: empty is 422, over BATCH_MAX is 422', async () => {
        assert.equal((await app.inject({ method: 'POST', url: '/users/batch', payload: { users: [] } })).statusCode, 422);
        const tooMany = Array.from({ length: 51 }, () => userBody());
        const res = await app.inject({ method: 'POST', url: '/users/batch', payload: tooMany });
        assert.equal(res.statusCode, 422);
        assert.equal(res.json().detail[0].type, 'too_long');
      });
    });

    describe('errors and conventions', () => {
      test('404 and 405 in the contract shape', async () => {
        const nf = await app.inject('/nope');
        assert.deepEqual([nf.statusCode, nf.json()], [404, { detail: 'Not Found' }]);
        const na = await app.inject({ method: 'DELETE', url: '/users' });
        assert.deepEqual([na.statusCode, na.json()], [405, { detail: 'Method Not Allowed' }]);
        assert.match(String(na.headers.allow), /GET/);
      });

      test('X-Request-Id is generated, or echoed when sane', async () => {
        const gen = await app.inject('/');
        assert.match(String(gen.headers['x-request-id']), UUID);
        const echoed = await app.inject({ url: '/', headers: { 'x-request-id': 'abc-123' } });
        assert.equal(echoed.headers['x-request-id'], 'abc-123');
        const insane = await app.inject({ url: '/', headers: { 'x-request-id': 'bad id\twith spaces' } });
        assert.match(String(insane.headers['x-request-id']), UUID);
      });

      test('a malformed X-Request-Timeout is 400', async () => {
        for (const v of ['abc', '-1', '0', '']) {
          const res = await app.inject({ url: '/users', headers: { 'x-request-timeout': v } });
          assert.equal(res.statusCode, 400, `value ${JSON.stringify(v)}`);
        }
      });

      test('OpenAPI document lists every route with its error responses; /docs serves the UI', async () => {
        const doc = (await app.inject('/openapi.json')).json();
        assert.equal(doc.openapi.startsWith('3.'), true);
        for (const [path, method] of [['/users', 'post'], ['/users', 'get'], ['/users/{id}', 'get'], ['/users/{id}', 'put'],
          ['/users/{id}', 'patch'], ['/users/{id}', 'delete'], ['/users/batch', 'post'], ['/health', 'get'], ['/', 'get']]) {
          const op = doc.paths[path!]?.[method!];
          assert.ok(op, `${method} ${path}`);
          assert.ok(op.responses, `${method} ${path} responses`);
        }
        assert.ok(doc.paths['/users/{id}'].get.responses['404']);
        assert.ok(doc.paths['/users'].post.responses['422']);
        const ui = await app.inject('/docs');
        assert.ok([200, 302].includes(ui.statusCode));
      });
    });

    describe('concurrency', () => {
      test('50 concurrent create-then-read pairs are all consistent', async () => {
        const results = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
          const body = userBody({ age: i });
          const created = await app.inject({ method: 'POST', url: '/users', payload: body });
          assert.equal(created.statusCode, 201);
          const read = await app.inject(`/users/${created.json().id}`);
          assert.deepEqual(read.json(), created.json());
          assert.equal(read.json().email, body.email);
          return created.json().id as string;
        }));
        assert.equal(new Set(results).size, 50);
      });

      test('pagination visits every pre-existing row exactly once while rows are inserted concurrently', async () => {
        const existing = new Set(await backend.allIds());
        let inserting = true;
        const writer = (async () => {
          while (inserting) await app.inject({ method: 'POST', url: '/users', payload: userBody() });
        })();
        const seen: string[] = [];
        let cursor: string | undefined;
        do {
          const res = await app.inject(`/users?limit=5${cursor ? `&cursor=${cursor}` : ''}`);
          seen.push(...res.json().map((u: { id: string }) => u.id));
          cursor = res.headers['x-next-cursor'] as string | undefined;
        } while (cursor);
        inserting = false;
        await writer;
        assert.equal(new Set(seen).size, seen.length, 'no row twice');
        for (const id of existing) assert.ok(seen.includes(id), `row ${id} visited`);
      });
    });
  });
}
