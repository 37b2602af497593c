/**
 * Slow clients all at once, against `npm start` on a real PostgreSQL: connections that send their headers a line
 * at a time (slowloris), uploads that trickle their body a byte at a time, and stream readers that stop reading.
 * Each is cut by its own bound (HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS, STREAM_STALL_TIMEOUT_MS), with a `408` in
 * the contract's shape where an answer can still be given, and none of them takes a connection or a database
 * connection from anyone else: reads and writes of other clients meanwhile all succeed, quickly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { pool, quantile, seedUsers, stalledReader, timed, waitReady } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';
import { slowHeaders, slowUpload } from './support/slow-clients.ts';

const HEADERS_MS = 1000;
// Well above HEADERS_MS, so a slowloris cut by the request timeout instead of the headers timeout fails the test.
const REQUEST_MS = 4000;
const STALL_MS = 1500;
/** Node checks the two HTTP timeouts every 250 ms here (src/app.ts); a loaded machine adds more. */
const SLACK_MS = 1500;
const LORIS = Number(process.env.CHAOS_SLOW_CLIENTS ?? 150);
const UPLOADS = Math.ceil(LORIS / 3);

describe('slow clients', () => {
  let db: TestDatabase;
  let s: ServerProcess;
  let id: string;
  before(async () => {
    db = await createTestDatabase();
    s = await startServer({
      DATABASE_URL: db.url, POOL_MAX: '4', HEADERS_TIMEOUT_MS: String(HEADERS_MS), REQUEST_TIMEOUT_MS: String(REQUEST_MS),
      STREAM_STALL_TIMEOUT_MS: String(STALL_MS), STREAM_POOL_SHARE: '0.5',
    });
    await waitReady(s.baseUrl);
    // Far more JSON than the loopback socket buffers hold, so a reader that does not read stalls the stream.
    await seedUsers(db.url, 60_000);
    id = (JSON.parse((await timed(`${s.baseUrl}/users?limit=1`)).body) as { id: string }[])[0]!.id;
  });
  after(async () => {
    await s?.stop();
    await db?.destroy();
  });

  test(`${LORIS} slowloris, ${UPLOADS} trickled uploads and 4 stalled readers: each cut by its bound, others served, pool free`, async () => {
    const loris = Array.from({ length: LORIS }, () => slowHeaders(s.port, 200));
    const uploads = Array.from({ length: UPLOADS }, () => slowUpload(s.port, '/users', 400, 200));
    const readers = Array.from({ length: 4 }, () => stalledReader(s.port, '/users/stream?limit=1000000&fetch_size=500'));
    // Other clients, meanwhile: a read by id and a create, back to back, for longer than the longest bound.
    const others: { status: number; ms: number }[] = [];
    let maxActive = 0;
    const until = performance.now() + REQUEST_MS + 1000;
    let n = 0;
    while (performance.now() < until) {
      others.push(await timed(`${s.baseUrl}/users/${id}`, {}, 2000));
      others.push(await timed(`${s.baseUrl}/users`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Other', email: `other${n++}.${Date.now()}@example.com`, age: 30 }),
      }, 2000));
      maxActive = Math.max(maxActive, (await pool(s.baseUrl)).active);
      await sleep(20);
    }
    const lorisClosed = await Promise.all(loris.map((c) => c.closed));
    const uploadsClosed = await Promise.all(uploads.map((c) => c.closed));
    for (const r of readers) r.socket.resume();
    const readersClosed = await Promise.race([
      Promise.all(readers.map((r) => r.closed)),
      sleep(STALL_MS + 5000).then(() => { throw new Error('a stalled reader was never cut'); }),
    ]);
    const okOthers = others.filter((r) => r.status === 200 || r.status === 201);
    const p99 = quantile(others.map((r) => r.ms), 0.99);
    const maxOf = (xs: { ms: number }[]) => Math.round(Math.max(...xs.map((x) => x.ms)));
    const summary = `slowloris cut at ${Math.round(Math.min(...lorisClosed.map((c) => c.ms)))}..${maxOf(lorisClosed)} ms, `
      + `uploads at ${Math.round(Math.min(...uploadsClosed.map((c) => c.ms)))}..${maxOf(uploadsClosed)} ms, stalled readers at `
      + `${readersClosed.map(Math.round).join(', ')} ms; others ${okOthers.length}/${others.length} ok, p99 ${Math.round(p99)} ms, `
      + `max ${maxOf(others)} ms; max pool active ${maxActive}/4`;
    console.log(`# slow clients: ${summary}`);

    assert.equal(okOthers.length, others.length, `every other client's read and write succeeded (${summary})`);
    assert.ok(p99 < 500, `others' p99 under 500 ms (${summary})`);
    assert.ok(maxActive <= 2 + 1, `only the streams' share of the pool was held (${summary})`);
    assert.ok(maxOf(lorisClosed) <= HEADERS_MS + SLACK_MS, `every slowloris cut within ${HEADERS_MS} ms + slack (${summary})`);
    assert.ok(maxOf(uploadsClosed) <= REQUEST_MS + SLACK_MS, `every trickled upload cut within ${REQUEST_MS} ms + slack (${summary})`);
    for (const c of [...lorisClosed, ...uploadsClosed]) {
      assert.match(c.answer, /^HTTP\/1\.1 408 /, 'the cut connection is told 408');
      assert.ok(c.answer.includes('{"detail":"'), `in the contract's shape: ${c.answer.slice(0, 200)}`);
    }
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const stored = await sql`SELECT count(*)::int AS n FROM users WHERE email = 'slow.upload@example.com'`;
      assert.equal(stored[0]!.n, 0, 'no trickled upload was stored');
    } finally {
      await sql.end();
    }
    assert.equal((await pool(s.baseUrl)).active, 0, 'the pool is free afterwards');
  });
});
