/**
 * What one request may cost, beyond load shedding, against `npm start` on a real PostgreSQL: many clients asking
 * at once for 10,000-row pages (each its own page, gzip accepted, so nothing is shared and every answer is
 * compressed) with shedding off. The page-row budget (PAGE_ROWS_IN_FLIGHT) admits as many as fit and answers the
 * rest `503` with `Retry-After` at once, so memory stays bounded, `/health/live` and reads by id stay quick, and
 * the process is back to normal as soon as the flood ends.
 */
import assert from 'node:assert/strict';
import { get as httpGet } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { flood, pool, quantile, seedUsers, timed, waitReady, within } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';

const CLIENTS = Number(process.env.CHAOS_PAGE_CLIENTS ?? 40);
const LOAD_MS = Number(process.env.CHAOS_LOAD_MS ?? 6000);
/** Two 10,000-row pages at once; `CHAOS_PAGE_BUDGET=0` runs the same flood without the budget, for comparison. */
const BUDGET = process.env.CHAOS_PAGE_BUDGET ?? '20000';
const RSS_GROWTH_MB = 100;

/** One client of a page that reads the first chunk of a 200 answer and leaves; other answers are read whole. */
function abandonAfterFirstChunk(url: string): Promise<string> {
  return new Promise((resolve) => {
    const req = httpGet(url, { agent: false, headers: { 'accept-encoding': 'gzip' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume().on('end', () => resolve(String(res.statusCode)));
        return;
      }
      res.once('data', () => {
        req.destroy();
        resolve('left');
      });
    });
    req.on('error', () => resolve('left'));
  });
}

describe('concurrent 10,000-row pages', () => {
  let db: TestDatabase;
  let s: ServerProcess;
  let id: string;
  before(async () => {
    db = await createTestDatabase();
    s = await startServer({
      DATABASE_URL: db.url, POOL_MAX: '4', OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0', PAGE_ROWS_IN_FLIGHT: BUDGET,
    });
    await waitReady(s.baseUrl);
    await seedUsers(db.url, 12_000);
    id = (JSON.parse((await timed(`${s.baseUrl}/users?limit=1`)).body) as { id: string }[])[0]!.id;
  });
  after(async () => {
    await s?.stop();
    await db?.destroy();
  });

  test(`${CLIENTS} clients of 10,000-row pages for ${LOAD_MS} ms, no shedding: RSS within ${RSS_GROWTH_MB} MB, liveness and reads by id quick, 503s at once`, async () => {
    const live: number[] = [];
    const reads: number[] = [];
    const failures: string[] = [];
    let flooding = true;
    const probe = async (path: string, into: number[]) => {
      while (flooding) {
        const r = await timed(`${s.baseUrl}${path}`, {}, 2000);
        if (r.status === 200) into.push(r.ms);
        else failures.push(`${path}: ${r.status} after ${Math.round(r.ms)} ms`);
        await new Promise((res) => setTimeout(res, 200));
      }
    };
    const rssBefore = s.rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, s.rss())), 100);
    const probing = Promise.all([probe('/health/live', live), probe(`/users/${id}`, reads)]);
    // Each client its own page size, so no two share a read or a serialized answer.
    const { statuses, bad503 } = await flood((i) => `${s.baseUrl}/users?limit=${10_000 - i}`, CLIENTS, LOAD_MS, 5000,
      { 'accept-encoding': 'gzip' });
    flooding = false;
    clearInterval(sampler);
    const stoppedAt = performance.now();
    await probing;
    const recovered = await within(5000, async () => (await timed(`${s.baseUrl}/users/${id}`, {}, 1000)).status === 200);
    const recoveryMs = recovered === undefined ? undefined : performance.now() - stoppedAt;
    const growthMb = (rssPeak - rssBefore) / 2 ** 20;
    const summary = `budget ${BUDGET}: pages ${JSON.stringify(statuses)}; liveness p99 ${Math.round(quantile(live, 0.99))} ms `
      + `(${live.length} ok), reads by id p99 ${Math.round(quantile(reads, 0.99))} ms (${reads.length} ok), ${failures.length} `
      + `probes failed; RSS ${Math.round(rssBefore / 2 ** 20)} -> ${Math.round(rssPeak / 2 ** 20)} MB; back ${Math.round(recoveryMs ?? -1)} ms after`;
    console.log(`# large pages: ${summary}`);

    assert.ok((statuses['200'] ?? 0) > 0, `pages were served (${summary})`);
    assert.ok((statuses['503'] ?? 0) > 0, `pages over the budget were refused (${summary})`);
    assert.deepEqual(bad503, [], 'every 503 has Retry-After: 1 and the contract body');
    assert.equal(statuses['0'] ?? 0, 0, `no client waited 5 s for an answer (${summary})`);
    assert.deepEqual(failures, [], `every liveness probe and read by id answered 200 within 2 s (${summary})`);
    assert.ok(growthMb < RSS_GROWTH_MB, `RSS grew less than ${RSS_GROWTH_MB} MB (${summary})`);
    assert.ok(recoveryMs !== undefined && recoveryMs < 1000, `reads back within 1 s (${summary})`);
  });

  test('clients that abandon their pages mid-answer give their rows back: two 10,000-row pages fit again at once', async () => {
    // Impatient clients: each leaves as soon as the first bytes of its page arrive, while the answer is still
    // being written (not after a fixed time, which a fast machine outruns: the whole page arrives first).
    const statuses: Record<string, number> = {};
    const until = performance.now() + 1500;
    await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      while (performance.now() < until) {
        const outcome = await abandonAfterFirstChunk(`${s.baseUrl}/users?limit=${10_000 - i}`);
        statuses[outcome] = (statuses[outcome] ?? 0) + 1;
      }
    }));
    assert.ok((statuses.left ?? 0) > 0, `clients left mid-answer (${JSON.stringify(statuses)})`);
    // Once the work left behind is done (the pool idle for a second; on a loaded machine that takes a while),
    // the budget must be whole: two pages of the largest size are admitted at once.
    const settled = await within(90_000, async () => {
      if ((await pool(s.baseUrl)).active !== 0) return false;
      await new Promise((r) => setTimeout(r, 1000));
      return (await pool(s.baseUrl)).active === 0;
    });
    assert.ok(settled !== undefined, 'the work of the abandoned pages ended');
    const pages = await Promise.all([9_999, 9_998].map((n) => timed(`${s.baseUrl}/users?limit=${n}`, {}, 30_000)));
    console.log(`# abandoned pages: ${JSON.stringify(statuses)}; settled after ${Math.round(settled!)} ms; then two pages at once: `
      + pages.map((p) => `${p.status} in ${Math.round(p.ms)} ms`).join(', '));
    assert.deepEqual(pages.map((p) => p.status), [200, 200], 'the budget is whole again once the abandoned answers are closed');
  });
});
