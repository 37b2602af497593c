/**
 * `Idempotency-Key` on POST /users and POST /users/batch over HTTP, on a real PostgreSQL: a retry of a create gets
 * the first answer and writes nothing, including the retry of a write that answered 504; another body with the same
 * key is 422; a key is its account's own; malformed keys are 400 and change nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { appOnNewDatabase, startApp, userBody } from './support/app.ts';
import { ADMIN, authEnv, bearer, createAccount, login } from './support/auth.ts';

const ctx = appOnNewDatabase();

let seq = 0;
const newKey = () => `key-${process.pid}-${Date.now()}-${++seq}`;
const rowsWithEmail = async (email: string) => Number((await ctx.sql`SELECT count(*)::int AS n FROM users WHERE email = ${email}`)[0]!.n);
const post = (body: unknown, headers: Record<string, string>, url = '/users') =>
  ctx.app.inject({ method: 'POST', url, headers, payload: body as Record<string, unknown> });

describe('Idempotency-Key on creates', () => {
  test('a retry gets the first answer (status, body, Location) and writes nothing', async () => {
    const body = userBody();
    const key = newKey();
    const first = await post(body, { 'idempotency-key': key });
    const again = await post(body, { 'idempotency-key': key });
    assert.equal(first.statusCode, 201, first.body);
    assert.deepEqual([again.statusCode, again.json(), again.headers.location], [201, first.json(), first.headers.location]);
    assert.equal(await rowsWithEmail(body.email as string), 1);
  });

  test('the quoted form of the IETF draft names the same key', async () => {
    const body = userBody();
    const key = newKey();
    const first = await post(body, { 'idempotency-key': key });
    const quoted = await post(body, { 'idempotency-key': `"${key}"` });
    assert.equal(quoted.json().id, first.json().id);
  });

  test('the same key with another body is 422 naming the header, and writes nothing', async () => {
    const key = newKey();
    await post(userBody(), { 'idempotency-key': key });
    const other = userBody();
    const res = await post(other, { 'idempotency-key': key });
    assert.equal(res.statusCode, 422);
    assert.deepEqual(res.json().detail[0].loc, ['header', 'idempotency-key']);
    assert.equal(await rowsWithEmail(other.email as string), 0);
  });

  test('malformed keys are 400 and write nothing', async () => {
    for (const key of ['', 'has space', 'x'.repeat(256), 'é']) {
      const body = userBody();
      const res = await post(body, { 'idempotency-key': key });
      assert.equal(res.statusCode, 400, `${JSON.stringify(key)}: ${res.body}`);
      assert.match(res.json().detail, /Idempotency-Key/);
      assert.equal(await rowsWithEmail(body.email as string), 0);
    }
  });

  test('batches: a retry returns the same users; the bare-array form is the same request', async () => {
    const users = [userBody(), userBody()];
    const key = newKey();
    const first = await post({ users }, { 'idempotency-key': key }, '/users/batch');
    const again = await post(users, { 'idempotency-key': key }, '/users/batch');
    assert.equal(first.statusCode, 201, first.body);
    assert.deepEqual(again.json(), first.json());
    for (const u of users) assert.equal(await rowsWithEmail(u.email as string), 1);
  });

  test('a create that answered 504 is retried safely: exactly one row, and every later retry names it', async () => {
    const body = userBody();
    const key = newKey();
    const locked = postgres(ctx.db.url, { max: 1, onnotice: () => {} });
    try {
      await locked.begin(async (tx) => {
        await tx`LOCK TABLE users IN ACCESS EXCLUSIVE MODE`;
        const timedOut = await post(body, { 'idempotency-key': key, 'x-request-timeout': '0.3' });
        assert.equal(timedOut.statusCode, 504, timedOut.body);
        assert.equal(timedOut.headers['retry-after'], '1');
      });
    } finally {
      await locked.end();
    }
    // The timed-out create may still hold its key for a moment after the lock goes (finishing, or being
    // cancelled): a retry then meets 409 with Retry-After, and a client waits and retries, as this one does.
    const retry = async () => {
      for (let attempt = 0; ; attempt++) {
        const res = await post(body, { 'idempotency-key': key });
        if (res.statusCode !== 409 || attempt === 20) return res;
        assert.equal(res.headers['retry-after'], '1', res.body);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const retries = [];
    for (let i = 0; i < 3; i++) retries.push(await retry());
    const ids = new Set(retries.map((r) => r.json().id));
    assert.deepEqual(retries.map((r) => r.statusCode), [201, 201, 201]);
    assert.equal(ids.size, 1);
    assert.equal(await rowsWithEmail(body.email as string), 1);
  });
});

describe('Idempotency-Key with authentication: a key belongs to its account', () => {
  let auth: FastifyInstance;
  before(async () => {
    auth = await startApp(ctx.db.url, authEnv());
  });
  after(async () => {
    await auth?.close();
  });

  test('two accounts sending the same key and body create two users', async () => {
    const admin = await login(auth, ADMIN.email, ADMIN.password);
    const a = (await createAccount(auth, admin.access_token, 'editor')).tokens;
    const b = (await createAccount(auth, admin.access_token, 'editor')).tokens;
    const key = newKey();
    const body = userBody();
    const byA = await auth.inject({ method: 'POST', url: '/users', headers: { ...bearer(a.access_token), 'idempotency-key': key }, payload: body });
    const byB = await auth.inject({ method: 'POST', url: '/users', headers: { ...bearer(b.access_token), 'idempotency-key': key }, payload: body });
    assert.deepEqual([byA.statusCode, byB.statusCode], [201, 201]);
    assert.notEqual(byA.json().id, byB.json().id);
  });
});
