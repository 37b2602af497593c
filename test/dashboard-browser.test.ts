/**
 * The dashboard in a real browser: Debian's `chromium` driven by `playwright-core`, against the real `npm start`
 * with WORKERS=2, CACHE_MODE=memory and METRICS_TOKEN set. The page is refused without the token, and with it
 * (sent by the browser on every request, as a proxy in front would) the figures move when the test sends load:
 * requests, the cache hit ratio (the group's and each worker's), jobs finished, and a failed import among the
 * recent failures; real 5xx (slow queries cancelled at their deadline) move the error rate, and the pool's active
 * figure moves while they run; both workers are shown, and the page raises no error (CSP included). With
 * SPATE_DASHBOARD_SCREENSHOT=<path> it saves a screenshot there (docs/operations.md: refreshing docs/dashboard.png).
 *
 * Skipped without /usr/bin/chromium (apt-get install chromium), except under CI=true where it fails.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { sendAlone as send, startServer, type ServerProcess } from './support/server.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = !existsSync(CHROMIUM) && !process.env.CI && 'chromium not installed (apt-get install chromium)';
const TOKEN = 'metrics-token-0c9b8a7d6e5f4a31';
/**
 * Where to save a screenshot of the page under load, when asked (`SPATE_DASHBOARD_SCREENSHOT=docs/dashboard.png`
 * refreshes the one in the docs); by default nothing is written, so suites running at once leave the tree alone.
 */
const SCREENSHOT = process.env.SPATE_DASHBOARD_SCREENSHOT;

/** The little of the DOM the page functions use (the tests compile without the DOM library). */
interface Doc {
  getElementById(id: string): { textContent: string | null } | null;
  querySelectorAll(selector: string): { length: number };
}


describe('the dashboard in Chromium, WORKERS=2', { skip }, () => {
  let db: TestDatabase;
  let server: ServerProcess;
  let browser: Browser;

  before(async () => {
    db = await createTestDatabase();
    server = await startServer({ DATABASE_URL: db.url, WORKERS: '2', METRICS_TOKEN: TOKEN, CACHE_MODE: 'memory', JOB_POLL_MS: '100' });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  });
  after(async () => {
    await browser?.close();
    await server?.stop('SIGKILL');
    await db?.destroy();
  });

  test('without the metrics token the page is refused', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const res = await page.goto(`${server.baseUrl}/dashboard`);
    assert.equal(res?.status(), 401);
    assert.ok(JSON.parse(await res!.text()).detail);
    await context.close();
  });

  test('the figures move with load (requests, cache, jobs), both workers are shown, and nothing fails on the page', async () => {
    const context = await browser.newContext({
      viewport: { width: 1280, height: 1000 },
      extraHTTPHeaders: { authorization: `Bearer ${TOKEN}` },
    });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });

    const res = await page.goto(`${server.baseUrl}/dashboard`);
    assert.equal(res?.status(), 200);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });
    // Both workers answer the primary once both listen.
    await page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#workers tbody tr').length === 2, undefined, { timeout: 30_000 });
    const number = (id: string) => page.$eval(`#${id}`, (el) => Number(el.textContent));
    const before = await number('total');

    const text = (id: string) => page.$eval(`#${id}`, (el) => el.textContent ?? '');
    const finished = async () => Object.fromEntries((await text('jobs-finished')).split(' · ').map((e: string) => {
      const [outcome, n] = e.split(' ');
      return [outcome!, Number(n)];
    }));
    assert.match(await text('jobs'), /^\d+ queued · \d+ running$/);
    const jobsBefore = await finished();
    assert.equal(await page.$eval('#failures tbody', (el) => el.textContent ?? ''), 'none', 'no job failed yet');

    const created = await send(server.baseUrl, 'POST', '/users', userBody());
    assert.equal(created.status, 201, created.body);
    const id = (JSON.parse(created.body) as { id: string }).id;
    // Two imports as jobs: one that succeeds, one refused (an invalid row: nothing written, failed for good).
    const importCsv = async (csv: string) => {
      const res = await fetch(`${server.baseUrl}/users/import?format=csv`, { method: 'POST', headers: { 'content-type': 'text/csv' }, body: csv });
      assert.equal(res.status, 202, await res.clone().text());
      return ((await res.json()) as { job: { id: string } }).job.id;
    };
    await importCsv('name,email,age\nImported One,imported.one@example.com,40\n');
    const refused = await importCsv('name,email,age\nBad Row,not-an-email,forty\n');
    // Load until the page has shown it: reads of one user (cache hits after the first), with a share of refused
    // ones (4xx).
    let loading = true;
    let sent = 0;
    const load = Promise.all(Array.from({ length: 4 }, async () => {
      while (loading) {
        await send(server.baseUrl, 'GET', sent % 10 === 9 ? '/users/not-a-uuid' : `/users/${id}`);
        sent++;
      }
    }));
    try {
      // No named functions inside: tsx's helper for their names does not exist in the page.
      await page.waitForFunction((floor) => {
        const doc = (globalThis as unknown as { document: Doc }).document;
        const [total, rate, p99] = ['total', 'rate', 'p99'].map((id) => Number(doc.getElementById(id)!.textContent));
        const cache = Number.parseFloat(doc.getElementById('cache')!.textContent ?? '');
        return total! >= floor && rate! > 0 && p99! > 0 && cache > 50;
      }, before + 200, { timeout: 60_000, polling: 200 });
      await page.waitForFunction((job) => {
        const doc = (globalThis as unknown as { document: Doc }).document;
        return (doc.getElementById('failures')!.textContent ?? '').includes(job);
      }, refused, { timeout: 30_000, polling: 200 });
      // A few more frames under load, so the charts show it.
      await page.waitForTimeout(3000);
      assert.match(await text('client-errors'), /^[1-9][\d.]* %$/, 'the refused reads show as 4xx');
      assert.match(await text('cache'), /^\d+\.\d %$/);
      assert.match(await text('cache-layers'), /^\d+ lookups since the last frame; memory \d+\.\d %$/);
      assert.match(await text('jobs'), /^\d+ queued · \d+ running$/);
      const jobsAfter = await finished();
      assert.ok(jobsAfter.succeeded! > jobsBefore.succeeded!, `the good import succeeded: ${JSON.stringify(jobsAfter)}`);
      assert.ok(jobsAfter.failed! > jobsBefore.failed!, `the refused one failed: ${JSON.stringify(jobsAfter)}`);
      const failures = await page.$$eval('#failures tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent ?? '')));
      const failure = failures.find((r) => r[2] === refused);
      assert.ok(failure, JSON.stringify(failures));
      assert.equal(failure[1], 'bulk.import');
      assert.match(failure[3]!, /^Import refused, nothing was written/);
      assert.match(failure[0]!, /^\d{4}-\d\d-\d\dT/);
      assert.equal(await text('workers-summary'), '2 of 2 workers reporting');
      const rows = await page.$$eval('#workers tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
      assert.deepEqual(rows.map((r) => r[0]), ['worker 1', 'worker 2']);
      for (const r of rows) {
        assert.ok(Number(r[3]) > 50, `each worker served part of the load: ${r.join(' ')}`);
        assert.match(r[8]!, /^\d+\.\d %$/, `each worker's own cache hit ratio: ${r.join(' ')}`);
      }
      assert.ok(await page.$$eval('canvas', (c) => c.length) >= 6, 'six uPlot charts');

      // Real 5xx and a busy pool: four 5 s statements given 2.5 s each, cancelled at their deadline (504).
      assert.equal(await text('errors'), '0.0 %', 'no 5xx yet');
      const slow = Promise.all(Array.from({ length: 4 }, () =>
        fetch(`${server.baseUrl}/slow_query`, { headers: { 'x-request-timeout': '2.5' } }).then((r) => r.status)));
      await page.waitForFunction(() => {
        const doc = (globalThis as unknown as { document: Doc }).document;
        return Number(doc.getElementById('pool-active')!.textContent) >= 4;
      }, undefined, { timeout: 10_000, polling: 100 });
      assert.deepEqual(await slow, [504, 504, 504, 504]);
      await page.waitForFunction(() => {
        const doc = (globalThis as unknown as { document: Doc }).document;
        return Number.parseFloat(doc.getElementById('errors')!.textContent ?? '') > 0;
      }, undefined, { timeout: 10_000, polling: 100 });
      if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true });
    } finally {
      loading = false;
      await load;
    }
    assert.ok(sent >= 200);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
