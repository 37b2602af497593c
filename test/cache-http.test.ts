/**
 * HTTP validators on the users routes (src/platform/http/validators.ts), through the real app with the cache on:
 * strong ETags, If-None-Match -> 304, If-Match -> 412 with nothing changed (RFC 9110, `*` and weak tags
 * included; checked atomically with the write, so concurrent writers holding one ETag cannot both succeed),
 * Cache-Control and Vary; and the cache's operations routes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { startBackend, type TestBackend } from './support/backends.ts';

describe('users cache over HTTP (PostgreSQL, CACHE_MODE=memory)', () => {
  let tb: TestBackend;
  let app: FastifyInstance;
  let seq = 0;
  const create = async () => {
    const res = await app.inject({ method: 'POST', url: '/users', payload: { name: `H ${++seq}`, email: `h${seq}@example.com`, age: 30 } });
    assert.equal(res.statusCode, 201);
    return res.json<{ id: string }>();
  };

  before(async () => {
    tb = await startBackend('postgres');
    app = await tb.startApp({ CACHE_MODE: 'memory' });
  });
  after(async () => {
    await app?.close();
    await tb?.destroy();
  });

  test('GET /users/{id}: a strong ETag, private Cache-Control and Vary; If-None-Match gives 304 until it changes', async () => {
    const u = await create();
    const first = await app.inject({ url: `/users/${u.id}` });
    const etag = first.headers.etag as string;
    assert.match(etag, /^"[^"]+"$/, 'strong: no W/ prefix');
    assert.equal(first.headers['cache-control'], 'private, no-cache');
    assert.match(String(first.headers.vary), /authorization/i);
    const again = await app.inject({ url: `/users/${u.id}`, headers: { 'if-none-match': etag } });
    assert.equal(again.statusCode, 304);
    assert.equal(again.body, '');
    assert.equal((await app.inject({ url: `/users/${u.id}`, headers: { 'if-none-match': `"x", W/${etag}` } })).statusCode, 304,
      'If-None-Match compares weakly, in a list');
    await app.inject({ method: 'PATCH', url: `/users/${u.id}`, payload: { age: 31 } });
    const changed = await app.inject({ url: `/users/${u.id}`, headers: { 'if-none-match': etag } });
    assert.equal(changed.statusCode, 200);
    assert.notEqual(changed.headers.etag, etag);
  });

  test('a hit sends the body and ETag kept beside the cached user: the serializer\'s bytes, renewed with the entry', async (t) => {
    // The same database without the cache serializes every answer afresh: the reference bytes.
    const uncached = await tb.startApp({ CACHE_MODE: 'off' });
    t.after(() => uncached.close());
    const u = await create();
    const answer = async (from: FastifyInstance) => {
      const res = await from.inject({ url: `/users/${u.id}` });
      return { body: res.body, etag: res.headers.etag, type: res.headers['content-type'], length: res.headers['content-length'] };
    };
    const fresh = () => answer(uncached);
    const cached = () => answer(app);
    const before = await fresh();
    assert.equal(before.type, 'application/json; charset=utf-8');
    assert.deepEqual(await cached(), before, 'the first read');
    assert.deepEqual(await cached(), before, 'a hit');
    await app.inject({ method: 'PATCH', url: `/users/${u.id}`, payload: { name: 'Renamed' } });
    const after = await fresh();
    assert.notEqual(after.body, before.body);
    assert.deepEqual(await cached(), after, 'after a write: the new entry\'s body and tag');
    assert.deepEqual(await cached(), after, 'and its hits');
    await app.inject({ method: 'POST', url: '/cache/clear' });
    assert.deepEqual(await cached(), after, 'after a clear');
  });

  test('list pages: an ETag of the page; 304 while it holds, 200 once a user is added', async () => {
    await create();
    const page = await app.inject({ url: '/users?limit=10000' });
    const etag = page.headers.etag as string;
    assert.match(etag, /^"[^"]+"$/);
    assert.equal((await app.inject({ url: '/users?limit=10000', headers: { 'if-none-match': etag } })).statusCode, 304);
    await create();
    assert.equal((await app.inject({ url: '/users?limit=10000', headers: { 'if-none-match': etag } })).statusCode, 200);
  });

  test('If-Match on PUT, PATCH and DELETE: 412 and nothing changed unless it names the current version', async () => {
    const u = await create();
    const etag = (await app.inject({ url: `/users/${u.id}` })).headers.etag as string;
    const ok = await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': etag }, payload: { age: 40 } });
    assert.equal(ok.statusCode, 200);
    const newer = ok.headers.etag as string;
    assert.ok(newer && newer !== etag, 'the response carries the new ETag');
    for (const method of ['PUT', 'PATCH'] as const) {
      const stale = await app.inject({ method, url: `/users/${u.id}`, headers: { 'if-match': etag }, payload: { age: 99 } });
      assert.equal(stale.statusCode, 412);
      assert.deepEqual(stale.json(), { detail: 'Precondition Failed' });
    }
    const weak = await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': `W/${newer}` }, payload: { age: 99 } });
    assert.equal(weak.statusCode, 412, 'If-Match compares strongly: a weak tag never matches');
    const del = await app.inject({ method: 'DELETE', url: `/users/${u.id}`, headers: { 'if-match': etag } });
    assert.equal(del.statusCode, 412);
    const rows = await tb.direct('SELECT age FROM users WHERE id = $1', [u.id]);
    assert.equal(rows[0]?.age, 40, 'nothing changed');
    assert.equal((await app.inject({ method: 'PUT', url: `/users/${u.id}`, headers: { 'if-match': '*' }, payload: { age: 41 } })).statusCode, 200);
    assert.equal((await app.inject({ method: 'DELETE', url: `/users/${u.id}`, headers: { 'if-match': `"a", ${(await app.inject({ url: `/users/${u.id}` })).headers.etag}` } })).statusCode, 204);
    assert.equal((await app.inject({ method: 'DELETE', url: `/users/${u.id}`, headers: { 'if-match': '*' } })).statusCode, 412, '* and no such user');
    assert.equal((await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': '*' }, payload: { age: 1 } })).statusCode, 412);
    assert.equal((await app.inject({ method: 'DELETE', url: `/users/${u.id}` })).statusCode, 204, 'without If-Match, still idempotent');
  });

  test('If-Match is part of the write: 12 concurrent PATCHes with one ETag give exactly one 200, the rest 412', async () => {
    const u = await create();
    const etag = (await app.inject({ url: `/users/${u.id}` })).headers.etag as string;
    const n = 12;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => app.inject({
      method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': etag }, payload: { age: 50 + i },
    })));
    const statuses = answers.map((r) => r.statusCode).sort();
    assert.deepEqual(statuses, [200, ...Array<number>(n - 1).fill(412)]);
    const winner = answers.find((r) => r.statusCode === 200)!;
    const rows = await tb.direct('SELECT age FROM users WHERE id = $1', [u.id]);
    assert.equal(rows[0]?.age, winner.json<{ age: number }>().age, 'the one write that answered 200 is the one stored');
    for (const r of answers.filter((x) => x.statusCode === 412)) assert.deepEqual(r.json(), { detail: 'Precondition Failed' });
    // And deletes: one 204, the rest 412.
    const current = winner.headers.etag as string;
    const dels = await Promise.all(Array.from({ length: 4 }, () => app.inject({ method: 'DELETE', url: `/users/${u.id}`, headers: { 'if-match': current } })));
    assert.deepEqual(dels.map((r) => r.statusCode).sort(), [204, 412, 412, 412]);
  });

  test('If-Match with a body that changes nothing: 412 for a stale tag, else 400 "No fields to update"', async () => {
    const u = await create();
    const etag = (await app.inject({ url: `/users/${u.id}` })).headers.etag as string;
    await app.inject({ method: 'PATCH', url: `/users/${u.id}`, payload: { age: 61 } });
    assert.equal((await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': etag }, payload: {} })).statusCode, 412);
    const now = (await app.inject({ url: `/users/${u.id}` })).headers.etag as string;
    assert.deepEqual((await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': now }, payload: {} })).json(), { detail: 'No fields to update' });
    assert.equal((await app.inject({ method: 'PATCH', url: '/users/nope', headers: { 'if-match': now }, payload: { age: 1 } })).statusCode, 400);
    assert.equal((await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': '"other.1"' }, payload: { age: 1 } })).statusCode, 412);
  });

  test('If-Match is checked against the database, not a cached copy: a change made elsewhere is seen', async () => {
    const u = await create();
    const etag = (await app.inject({ url: `/users/${u.id}` })).headers.etag as string; // now cached
    await tb.direct(`UPDATE users SET age = 77, updated_at = updated_at + interval '1 second' WHERE id = $1`, [u.id]);
    const res = await app.inject({ method: 'PATCH', url: `/users/${u.id}`, headers: { 'if-match': etag }, payload: { age: 5 } });
    assert.equal(res.statusCode, 412);
    assert.equal((await tb.direct('SELECT age FROM users WHERE id = $1', [u.id]))[0]?.age, 77);
  });
});

describe('cache operations over HTTP (PostgreSQL, CACHE_MODE=memory, AUTH_MODE=off)', () => {
  let tb: TestBackend;
  let app: FastifyInstance;

  before(async () => {
    tb = await startBackend('postgres');
    app = await tb.startApp({ CACHE_MODE: 'memory' });
  });
  after(async () => {
    await app?.close();
    await tb?.destroy();
  });

  test('GET /cache/status, POST /cache/clear, Prometheus series and the /metrics JSON figures', async () => {
    const u = (await app.inject({ method: 'POST', url: '/users', payload: { name: 'Ops', email: 'ops@example.com', age: 3 } })).json<{ id: string }>();
    await app.inject({ url: `/users/${u.id}` });
    await app.inject({ url: `/users/${u.id}` });
    const status = (await app.inject({ url: '/cache/status' })).json<{ mode: string; layers: { name: string; entries: number; hits: number; misses: number; hit_ratio: number }[]; bus: { kind: string; connected: boolean } }>();
    assert.equal(status.mode, 'memory');
    const mem = status.layers.find((l) => l.name === 'memory')!;
    assert.deepEqual([mem.entries, mem.hits, mem.misses, mem.hit_ratio], [1, 1, 1, 0.5]);
    assert.deepEqual(status.bus, { kind: 'local', connected: true });
    const prom = (await app.inject({ url: '/metrics/prometheus' })).body;
    assert.match(prom, /cache_hits_total\{layer="memory"\} 1/);
    assert.match(prom, /cache_entries 1/);
    assert.match(prom, /cache_invalidation_delay_seconds_bucket/);
    const json = (await app.inject({ url: '/metrics' })).json<{ cache: { mode: string } }>();
    assert.equal(json.cache.mode, 'memory');
    // Loopback with AUTH_MODE=off is the admin case; another address is refused.
    assert.equal((await app.inject({ method: 'POST', url: '/cache/clear', remoteAddress: '203.0.113.9' })).statusCode, 403);
    const cleared = await app.inject({ method: 'POST', url: '/cache/clear' });
    assert.deepEqual(cleared.json(), { cleared: true });
    const after = (await app.inject({ url: '/cache/status' })).json<{ layers: { name: string; entries: number }[] }>();
    assert.equal(after.layers.find((l) => l.name === 'memory')?.entries, 0);
  });
});
