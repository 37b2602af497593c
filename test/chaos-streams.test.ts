/**
 * Stalled stream readers and pool exhaustion, against `npm start` on a real PostgreSQL: readers that stop
 * reading hold at most their share of the pool and are cut after STREAM_STALL_TIMEOUT_MS, everything else keeps
 * answering meanwhile, and readiness says 503 while the pool is exhausted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pool, seedUsers, stalledReader, timed, waitReady, within } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';

const STALL_MS = 1500;

describe('stalled stream readers', () => {
  let db: TestDatabase;
  let s: ServerProcess;
  before(async () => {
    db = await createTestDatabase();
    s = await startServer({
      DATABASE_URL: db.url, POOL_MAX: '4', POOL_ACQUIRE_TIMEOUT_MS: '1000',
      STREAM_STALL_TIMEOUT_MS: String(STALL_MS), STREAM_POOL_SHARE: '0.5',
    });
    await waitReady(s.baseUrl);
    // About 8 MB of JSON: far more than the loopback socket buffers, so a reader that does not read stalls.
    await seedUsers(db.url, 60_000);
  });
  after(async () => {
    await s?.stop();
    await db?.destroy();
  });

  test('six stalled readers hold at most 2 of 4 connections, reads stay 200, pool free within the stall bound + 3 s', async () => {
    const readers = Array.from({ length: 6 }, () => stalledReader(s.port, '/users/stream?limit=1000000&fetch_size=500'));
    await new Promise((r) => setTimeout(r, 300));
    const reads = [];
    let maxActive = 0;
    const started = performance.now();
    while (performance.now() - started < STALL_MS - 300) {
      reads.push(await timed(`${s.baseUrl}/users?limit=5`, {}, 2000));
      maxActive = Math.max(maxActive, (await pool(s.baseUrl)).active);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ok = reads.filter((r) => r.status === 200).length;
    assert.equal(ok, reads.length, `every read answered 200 while readers stalled (${ok}/${reads.length})`);
    assert.ok(maxActive <= 2 + 1, `streams held at most their share (max active seen ${maxActive}, share 2 + this read)`);
    // The server's side: every connection handed back within the stall bound and 3 s (filling the socket buffers
    // before the stall begins takes a moment too, longer on a loaded machine).
    const freed = await within(STALL_MS + 3000, async () => (await pool(s.baseUrl)).active === 0);
    assert.ok(freed !== undefined, `the pool is free again within ${STALL_MS + 3000} ms`);
    // The client's side: a paused socket sees the server's close only once it reads what is buffered.
    let bytes = 0;
    for (const r of readers) {
      r.socket.on('data', (d: Buffer) => (bytes += d.length));
      r.socket.resume();
    }
    const closedMs = await Promise.race([
      Promise.all(readers.map((r) => r.closed)),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('a stalled connection stayed open')), 5000)),
    ]);
    const out = s.output();
    assert.ok(/STREAM_STALLED/.test(out), 'the stall was logged with its code');
    assert.ok(bytes < 6 * 60_000 * 100, `the stalled streams were cut short (${bytes} bytes in all)`);
    console.log(`# stalled readers: ${reads.length} reads all 200, max active ${maxActive}/4, pool free ${Math.round(freed!)} ms `
      + `into the check; connections closed at ${closedMs.map(Math.round).join(', ')} ms`);
  });

  test('readiness answers 503 while every connection is busy and callers queue, 200 once they drain', async () => {
    const sleepers = Array.from({ length: 6 }, () => timed(`${s.baseUrl}/slow_query`, { headers: { 'x-request-timeout': '2' } }, 5000));
    const exhausted = await within(1500, async () => (await timed(`${s.baseUrl}/health/ready`)).status === 503);
    assert.ok(exhausted !== undefined, 'readiness said 503 while the pool was exhausted');
    const ready = await timed(`${s.baseUrl}/health/ready`);
    if (ready.status === 503) assert.deepEqual(JSON.parse(ready.body), { detail: 'Service temporarily unavailable: database pool exhausted' });
    await Promise.all(sleepers);
    const back = await within(2000, async () => (await timed(`${s.baseUrl}/health/ready`)).status === 200);
    assert.ok(back !== undefined, 'ready again within 2 s of the pool draining');
  });
});
