/**
 * The real server process (`npm start`): first start on a fresh data directory with the embedded database,
 * restart on the same data, graceful shutdown by SIGTERM and by POST /shutdown with requests and streams in
 * flight, SHUTDOWN_TIMEOUT forcing exit code 1, and the drain as a client sees it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import postgres from 'postgres';
import { startApp, userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer } from './support/server.ts';

const json = (body: unknown) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

describe('embedded default (no DATABASE_URL)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'spate-data-'));
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  test('starts on a fresh data directory, serves CRUD over HTTP, stops on SIGTERM, keeps rows across restarts', async () => {
    const first = await startServer({ DATA_DIR: dataDir });
    let created: { id: string };
    try {
      const res = await fetch(`${first.baseUrl}/users`, json(userBody({ name: 'Persisted' })));
      assert.equal(res.status, 201);
      created = (await res.json()) as { id: string };
      const health = (await (await fetch(`${first.baseUrl}/health`)).json()) as Record<string, unknown>;
      assert.equal(health.status, 'healthy');
      assert.equal(health.backend, 'postgres');
    } finally {
      assert.equal(await first.stop('SIGTERM'), 0, first.output());
    }
    assert.match(first.output(), /"msg":"stopped"/);

    const second = await startServer({ DATA_DIR: dataDir });
    try {
      const res = await fetch(`${second.baseUrl}/users/${created.id}`);
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { name: string }).name, 'Persisted');
    } finally {
      assert.equal(await second.stop('SIGINT'), 0, second.output());
    }
  });
});

describe('graceful shutdown', () => {
  let db: TestDatabase;
  let sql: postgres.Sql;
  before(async () => {
    db = await createTestDatabase();
    sql = postgres(db.url, { max: 2, onnotice: () => {} });
  });
  after(async () => {
    await sql?.end();
    await db?.destroy();
  });

  /**
   * Holds a row lock so that updates of that row wait inside the database: real in-flight work that the test
   * releases when it chooses.
   */
  async function lockRow(id: string): Promise<() => Promise<void>> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const tx = sql.begin(async (tx) => {
      await tx`SELECT id FROM users WHERE id = ${id} FOR UPDATE`;
      locked();
      await held;
    });
    await isLocked;
    return async () => {
      release();
      await tx;
    };
  }

  test('SIGTERM with 20 requests in flight: all complete with 200, then exit code 0', async () => {
    // A connection for each of the 20, and the signal only once all 20 wait on the lock: every one is then in
    // flight at SIGTERM (with 10 connections, CI saw 5 that had not reached the server yet get 503).
    const server = await startServer({ DATABASE_URL: db.url, SHUTDOWN_TIMEOUT: '20', POOL_MAX: '20' });
    const user = (await (await fetch(`${server.baseUrl}/users`, json(userBody()))).json()) as { id: string };
    const unlock = await lockRow(user.id);
    const inflight = Array.from({ length: 20 }, (_, i) =>
      fetch(`${server.baseUrl}/users/${user.id}`, { ...json({ age: i }), method: 'PATCH' }).then((r) => r.status));
    await waitFor(async () => Number((await sql`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = 'spate' AND wait_event_type = 'Lock'`)[0]!.n) >= 20);
    const exit = server.stop('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    await unlock();
    assert.deepEqual(await Promise.all(inflight), Array(20).fill(200));
    assert.equal(await exit, 0, server.output());
  });

  test('SHUTDOWN_TIMEOUT=1 with a request that cannot finish: forced out after about 1 s with exit code 1', async () => {
    const server = await startServer({ DATABASE_URL: db.url, SHUTDOWN_TIMEOUT: '1' });
    const user = (await (await fetch(`${server.baseUrl}/users`, json(userBody()))).json()) as { id: string };
    const unlock = await lockRow(user.id);
    try {
      const stuck = fetch(`${server.baseUrl}/users/${user.id}`, { ...json({ age: 5 }), method: 'PATCH' }).then((r) => r.status, () => 'no answer');
      await waitFor(async () => Number((await sql`SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE application_name = 'spate' AND wait_event_type = 'Lock'`)[0]!.n) >= 1);
      const t0 = performance.now();
      const code = await server.stop('SIGTERM');
      const ms = performance.now() - t0;
      assert.equal(code, 1, server.output());
      assert.ok(ms >= 900 && ms < 3000, `exited ${ms.toFixed(0)} ms after SIGTERM`);
      assert.match(server.output(), /shutdown did not finish within SHUTDOWN_TIMEOUT; forcing exit/);
      assert.doesNotMatch(server.output(), /"msg":"stopped"/);
      assert.equal(await stuck, 'no answer', 'the request was cut off, not answered');
    } finally {
      await unlock();
    }
  });

  test('SIGTERM while a stream is being read: the stream completes, new requests get 503 meanwhile, then exit 0', async () => {
    const server = await startServer({ DATABASE_URL: db.url, SHUTDOWN_TIMEOUT: '30' }); // it creates the table
    await sql`INSERT INTO users SELECT gen_random_uuid(), 'Drain ' || i, 'drain' || i || '@example.com', i % 151, now(), now()
      FROM generate_series(1, 30000) AS i`;
    const total = Number((await sql`SELECT count(*)::int AS n FROM users`)[0]!.n);
    let exited = false;
    server.child.once('exit', () => (exited = true));
    const res = await fetch(`${server.baseUrl}/users/stream?format=ndjson&limit=${total}&fetch_size=100`);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = decoder.decode((await reader.read()).value, { stream: true });
    // The client stops reading; the server fills the socket and waits on it: the stream is in flight.
    await new Promise((r) => setTimeout(r, 300));
    const exit = server.stop('SIGTERM');
    await waitFor(async () => /"msg":"shutting down"/.test(server.output()));
    const late = await fetch(`${server.baseUrl}/users?limit=1`);
    assert.equal(late.status, 503, 'a new request during the drain');
    assert.equal(exited, false, 'the process waits for the stream');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    text += decoder.decode();
    const lines = text.split('\n').filter(Boolean);
    assert.equal(lines.length, total, 'every row arrived');
    assert.ok(lines.every((l) => typeof (JSON.parse(l) as { id?: unknown }).id === 'string'));
    assert.equal(new Set(lines.map((l) => (JSON.parse(l) as { id: string }).id)).size, total);
    assert.equal(await exit, 0, server.output());
    assert.match(server.output(), /"msg":"stopped"/);
  });

  test('POST /shutdown from loopback answers 200, drains and exits 0', async () => {
    const server = await startServer({ DATABASE_URL: db.url });
    const res = await fetch(`${server.baseUrl}/shutdown`, { method: 'POST' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { message: 'Shutdown initiated' });
    assert.equal(await server.stop('SIGCONT'), 0, server.output()); // SIGCONT: a no-op; only wait for the exit
  });

  test('during the drain new requests get 503 with Connection: close; in-flight ones finish', async () => {
    const app = await startApp(db.url);
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const user = (await app.inject({ method: 'POST', url: '/users', payload: userBody() })).json();
    const unlock = await lockRow(user.id);
    const inflight = fetch(`${base}/users/${user.id}`, { ...json({ age: 77 }), method: 'PATCH' });
    await waitFor(async () => app.backend.probes.pools().users.active >= 1);
    let drained = false;
    const draining = app.drain().then(() => (drained = true));
    for (const path of ['/users', '/health/ready']) {
      const late = await fetch(`${base}${path}`);
      assert.equal(late.status, 503, path);
      assert.equal(late.headers.get('connection'), 'close');
      assert.ok(late.headers.get('retry-after'));
      assert.match(((await late.json()) as { detail: string }).detail, /^Service temporarily unavailable/);
    }
    assert.equal(drained, false, 'the drain waits for the request in flight');
    await unlock();
    assert.equal((await inflight).status, 200);
    await draining;
    await app.close();
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
