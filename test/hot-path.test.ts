/**
 * The cheap hot path keeps its guarantees (docs/benchmarks.md, "Round three"): `request.clientGone` is made only
 * when something asks for it, and still tells the truth whenever it is asked (before the client leaves, after it
 * left, or never leaving), over real HTTP against the real app on a real PostgreSQL; a read served from the users
 * cache makes no AbortController at all; a user's ETag, derived without hashing the body, still changes with
 * anything the body is a function of (the row's version and the representation's format).
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import { hasLeft } from '../src/platform/http/client-gone.ts';
import { userEtagOf } from '../src/platform/http/validators.ts';
import { UserPublic } from '../src/modules/users/user-schemas.ts';
import { Type } from 'typebox';
import { testConfig } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

interface Seen {
  aborted: boolean;
  left: boolean;
  /** ms from the client's leaving until the signal aborted (asked before it left). */
  abortedAfterMs?: number;
}

/** Sends GET `path` and destroys the connection after `ms`, without reading an answer. */
function leaveAfter(base: string, path: string, ms: number): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(`${base}${path}`);
    req.on('error', () => {});
    req.end();
    setTimeout(() => {
      req.destroy();
      resolve(performance.now());
    }, ms);
  });
}

/** The status of GET `url`, its body read and dropped. */
const status = (url: string) => new Promise<number>((resolve, reject) => {
  httpRequest(url, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode ?? 0));
  }).on('error', reject).end();
});

describe('clientGone, made on demand', () => {
  let db: TestDatabase;
  let app: FastifyInstance;
  let base: string;
  const seen = new Map<string, (s: Seen) => void>();
  const next = (name: string) => new Promise<Seen>((resolve) => seen.set(name, resolve));

  before(async () => {
    db = await createTestDatabase();
    app = await buildApp(testConfig(db.url, { CACHE_MODE: 'memory', AUTH_MODE: 'off' }), { logger: false });
    // Routes of the test's own (loopback callers may use unlisted routes with AUTH_MODE=off): each reads
    // `clientGone` at a different moment of the request's life.
    app.get('/test/asks-late', async (request, reply) => {
      await new Promise((resolve) => reply.raw.once('close', resolve));
      seen.get('late')!({ aborted: request.clientGone.aborted, left: hasLeft(reply.raw) });
      return {};
    });
    app.get('/test/asks-early', async (request, reply) => {
      const signal = request.clientGone;
      const at = await new Promise<number>((resolve) => signal.addEventListener('abort', () => resolve(performance.now())));
      seen.get('early')!({ aborted: signal.aborted, left: hasLeft(reply.raw), abortedAfterMs: at });
      return {};
    });
    app.get('/test/stays', async (request, reply) => {
      const signal = request.clientGone;
      reply.raw.once('close', () => setImmediate(() => seen.get('stays')!({ aborted: signal.aborted, left: hasLeft(reply.raw) })));
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await app?.close();
    await db?.destroy();
  });

  test('asked for only after the client left: already aborted', async () => {
    const result = next('late');
    await leaveAfter(base, '/test/asks-late', 100);
    const s = await result;
    assert.equal(s.left, true, 'the response knows its client left');
    assert.equal(s.aborted, true, 'a signal made after the client left is aborted at once');
  });

  test('asked for while the client is there: aborts when it leaves', async () => {
    const result = next('early');
    const leftAt = await leaveAfter(base, '/test/asks-early', 100);
    const s = await result;
    assert.equal(s.aborted, true);
    assert.equal(s.left, true);
    assert.ok(s.abortedAfterMs! - leftAt < 1000, `aborted ${Math.round(s.abortedAfterMs! - leftAt)} ms after the client left`);
  });

  test('a request answered in full: the signal never aborts, and its client did not leave', async () => {
    const result = next('stays');
    const res = await fetch(`${base}/test/stays`);
    assert.deepEqual(await res.json(), { ok: true });
    const s = await result;
    assert.equal(s.aborted, false);
    assert.equal(s.left, false);
  });

  test('GET /users/{id} served from the users cache makes no AbortController', async () => {
    const created = await fetch(`${base}/users`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Hot Path', email: `hot.${Date.now()}@example.com`, age: 30 }),
    });
    assert.equal(created.status, 201);
    const { id } = await created.json() as { id: string };
    assert.equal((await fetch(`${base}/users/${id}`)).status, 200, 'loaded into the cache');
    const Original = globalThis.AbortController;
    let made = 0;
    globalThis.AbortController = class extends Original {
      constructor() {
        super();
        made++;
      }
    };
    try {
      // node:http, not fetch: fetch makes an AbortController of its own per request, in this same process.
      for (let i = 0; i < 50; i++) assert.equal(await status(`${base}/users/${id}`), 200);
    } finally {
      globalThis.AbortController = Original;
    }
    assert.equal(made, 0, `AbortControllers made by 50 cached reads: ${made}`);
  });
});

describe("a user's ETag without hashing its body", () => {
  const user = { id: '0193e3a0-0000-7000-8000-000000000001', updated_at: new Date('2026-12-02T06:00:00.000Z') };

  test('the same row in the same format: the same tag, in every instance', () => {
    assert.equal(userEtagOf(UserPublic)(user), userEtagOf(UserPublic)({ ...user, updated_at: new Date(user.updated_at) }));
    assert.match(userEtagOf(UserPublic)(user), /^"[^"]+"$/, 'strong: no W/ prefix');
  });

  test('a new version of the row: a new tag', () => {
    const etag = userEtagOf(UserPublic);
    assert.notEqual(etag(user), etag({ ...user, updated_at: new Date(user.updated_at.getTime() + 1) }));
    assert.notEqual(etag(user), etag({ ...user, id: '0193e3a0-0000-7000-8000-000000000002' }));
  });

  test('another representation format (a changed response schema): a new tag for the same row', () => {
    const changed = Type.Object({ ...UserPublic.properties, nickname: Type.String() });
    assert.notEqual(userEtagOf(UserPublic)(user), userEtagOf(changed)(user));
  });
});
