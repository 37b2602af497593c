/**
 * The per-upload lock across instances (docs/uploads.md, "Locking"): the Redis locker on its own, and two app
 * instances sharing one uploads directory and one Redis, as a deployment behind a load balancer would.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { createRedisLocker } from '../src/modules/uploads/redis-locker.ts';
import { isAppError } from '../src/platform/errors.ts';
import { waitFor } from './jobs-support.ts';
import { startApp } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';

const skip = redisUnavailable();
if (skip) console.log(`# skipping the upload lock tests: ${skip}`);

describe('the Redis upload locker', { skip }, () => {
  let redis: TestRedis;
  const clients: Redis[] = [];
  const client = () => {
    const c = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    clients.push(c);
    return c;
  };
  before(async () => { redis = await startRedis(); });
  after(async () => {
    for (const c of clients) c.disconnect();
    await redis?.stop();
  });

  test('a second instance waits for the lock, asks the holder to let go, and gets it once released', async () => {
    const a = createRedisLocker(client(), undefined, { checkMs: 20 });
    const b = createRedisLocker(client(), undefined, { checkMs: 20 });
    const held = a.newLock('u1');
    let asked = false;
    await held.lock(new AbortController().signal, () => { asked = true; });
    let acquired = false;
    const waiting = b.newLock('u1').lock(new AbortController().signal, () => {}).then(() => { acquired = true; });
    await waitFor(async () => asked, 5000);
    await sleep(100);
    assert.equal(acquired, false, 'not while the holder still holds it');
    await held.unlock();
    await waiting;
    assert.equal(acquired, true);
  });

  test('a holder that dies (stops renewing) loses the lock after its TTL', async () => {
    const dying = client();
    const a = createRedisLocker(dying, undefined, { checkMs: 20, ttlMs: 300 });
    await a.newLock('u2').lock(new AbortController().signal, () => {});
    dying.disconnect();
    const b = createRedisLocker(client(), undefined, { checkMs: 20 });
    const started = Date.now();
    await b.newLock('u2').lock(new AbortController().signal, () => {});
    assert.ok(Date.now() - started < 5000);
  });

  test('a waiter whose request goes away stops waiting; one that waits too long is refused as unavailable', async () => {
    const a = createRedisLocker(client(), undefined, { checkMs: 20 });
    await a.newLock('u3').lock(new AbortController().signal, () => {});
    const gone = new AbortController();
    const waiting = createRedisLocker(client(), undefined, { checkMs: 20 }).newLock('u3').lock(gone.signal, () => {});
    gone.abort();
    await assert.rejects(waiting, { name: 'AbortError' });
    const impatient = createRedisLocker(client(), undefined, { checkMs: 20, acquireTimeoutMs: 200 });
    await assert.rejects(impatient.newLock('u3').lock(new AbortController().signal, () => {}),
      (err) => isAppError(err) && err.kind === 'unavailable');
  });
});

describe('two instances sharing UPLOADS_DIR and REDIS_URL', { skip }, () => {
  let redis: TestRedis;
  let db: TestDatabase;
  let one: FastifyInstance;
  let two: FastifyInstance;
  let oneUrl: string;
  const dir = mkdtempSync(join(tmpdir(), 'spate-uploads-shared-'));

  before(async () => {
    redis = await startRedis();
    db = await createTestDatabase();
    const env = { UPLOADS_DIR: dir, REDIS_URL: redis.url, AUTH_MODE: 'off' };
    one = await startApp(db.url, env);
    two = await startApp(db.url, env);
    await waitFor(() => one.backend.probes.schemaReady(), 20_000);
    oneUrl = await one.listen({ port: 0, host: '127.0.0.1' });
  });
  after(async () => {
    await one?.close();
    await two?.close();
    await db?.destroy();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a PATCH on one instance waits until the PATCH holding the upload on the other has let go', async (t) => {
    const size = 2 * 1024 * 1024;
    const created = await one.inject({ method: 'POST', url: '/uploads', headers: { 'tus-resumable': '1.0.0', 'upload-length': String(size) } });
    assert.equal(created.statusCode, 201);
    const path = created.headers.location as string;
    const half = Buffer.alloc(size / 2, 0x61);

    // Instance one: a PATCH whose client sends half its body and then stalls (a vanished client, say).
    let firstEnded = false;
    const first = httpRequest(`${oneUrl}${path}`, {
      method: 'PATCH',
      headers: { 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': 'application/offset+octet-stream', 'content-length': String(size) },
    });
    t.after(() => first.destroy());
    first.on('response', (res) => { res.resume(); res.on('close', () => { firstEnded = true; }); });
    first.on('error', () => { firstEnded = true; });
    first.on('close', () => { firstEnded = true; });
    first.write(half);
    await waitFor(async () => readFileSync(join(dir, path.split('/').pop()!)).length === half.length, 10_000);

    // Instance two: the client resuming. It must not write while instance one holds the upload.
    const headAt = await two.inject({ method: 'HEAD', url: path, headers: { 'tus-resumable': '1.0.0' } });
    assert.equal(headAt.statusCode, 200, JSON.stringify(headAt.headers) + headAt.body);
    assert.equal(firstEnded, true, 'the HEAD got the lock only after the stalled PATCH was ended');
    const offset = Number(headAt.headers['upload-offset']);
    assert.equal(offset, half.length);
    const rest = await two.inject({
      method: 'PATCH', url: path, payload: Buffer.alloc(size - offset, 0x62),
      headers: { 'tus-resumable': '1.0.0', 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
    });
    assert.equal(rest.statusCode, 204, rest.body);
    const bytes = readFileSync(join(dir, path.split('/').pop()!));
    assert.equal(bytes.length, size);
    assert.ok(bytes.subarray(0, offset).every((b) => b === 0x61) && bytes.subarray(offset).every((b) => b === 0x62));
  });
});
