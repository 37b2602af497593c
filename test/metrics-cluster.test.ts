/**
 * Metrics across workers: the real `npm start` with WORKERS=2. Whichever worker answers, `/metrics` (JSON) and
 * `/metrics/prometheus` describe the whole process group, and the aggregated text passes `promtool check metrics`
 * (Debian's `prometheus` package; skipped without it, except under CI=true where it fails).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { mergeParts, type MetricsPart } from '../src/platform/metrics-group.ts';
import { userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { promtool } from './support/promtool.ts';
import { sendAlone as send, startServer, type ServerProcess } from './support/server.ts';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;


interface WorkerFigures { worker: number | null; pid: number; total_requests: number; in_flight: number }
interface MetricsBody {
  total_requests: number;
  requests_by_status: Record<string, number>;
  query_performance: { window_size: number; p99_response_time_ms: number };
  database_connections: { max: number };
  workers: WorkerFigures[];
  workers_expected: number;
}

/** The value of one sample line of the exposition, by its exact name and labels. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const READS = 24;
const READ_SERIES = 'http_request_duration_seconds_count{method="GET",route="/users/:id",status="200"}';

describe('WORKERS=2: metrics of the whole group', () => {
  let db: TestDatabase;
  let server: ServerProcess;
  let userId: string;

  before(async () => {
    db = await createTestDatabase();
    server = await startServer({ DATABASE_URL: db.url, WORKERS: '2', POOL_MAX: '3' });
    // Both workers listen once two different pids answer a metrics request.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const res = await send(server.baseUrl, 'GET', '/metrics');
      if (res.status === 200 && (JSON.parse(res.body) as MetricsBody).workers.length === 2) break;
      if (Date.now() > deadline) throw new Error(`two workers never answered:\n${server.output()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const created = await send(server.baseUrl, 'POST', '/users', userBody());
    assert.equal(created.status, 201, created.body);
    userId = (JSON.parse(created.body) as { id: string }).id;
    const reads = await Promise.all(Array.from({ length: READS }, () => send(server.baseUrl, 'GET', `/users/${userId}`)));
    assert.deepEqual(reads.map((r) => r.status), Array(READS).fill(200));
  });
  after(async () => {
    await server?.stop('SIGKILL');
    await db?.destroy();
  });

  test('the Prometheus text counts every worker\'s requests, whichever worker answers the scrape', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await send(server.baseUrl, 'GET', '/metrics/prometheus');
      assert.equal(res.status, 200);
      assert.equal(sample(res.body, READ_SERIES), READS, `scrape ${i}: the reads of both workers`);
      // Two workers' pools of 3 each: the gauges are summed too.
      assert.equal(sample(res.body, 'db_pool_max_connections{pool="users"}'), 6);
    }
  });

  test('the JSON lists both workers and its totals are their sums', async () => {
    const pids = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const res = await send(server.baseUrl, 'GET', '/metrics');
      assert.equal(res.status, 200, res.body);
      const m = JSON.parse(res.body) as MetricsBody;
      assert.equal(m.workers_expected, 2);
      assert.deepEqual(m.workers.map((w) => w.worker), [1, 2]);
      assert.notEqual(m.workers[0]!.pid, m.workers[1]!.pid);
      assert.equal(m.total_requests, m.workers[0]!.total_requests + m.workers[1]!.total_requests);
      // The cluster spreads connections round-robin, but skips a worker that is busy taking one: no exact share.
      for (const w of m.workers) assert.ok(w.total_requests >= 2, `worker ${w.worker} served some: ${res.body}`);
      assert.ok(m.requests_by_status['2xx']! >= READS + 1, res.body);
      assert.ok(m.query_performance.window_size >= READS, `the percentiles cover both windows: ${res.body}`);
      assert.equal(m.database_connections.max, 6);
      // The one asking is in flight on its worker.
      assert.ok(m.workers.reduce((n, w) => n + w.in_flight, 0) >= 1, res.body);
      for (const w of m.workers) pids.add(w.pid);
    }
    assert.equal(pids.size, 2);
  });

  test('the aggregated text passes promtool check metrics', { skip: !hasPromtool && !process.env.CI && 'promtool not installed (apt-get install prometheus)' }, async () => {
    await send(server.baseUrl, 'GET', '/users/not-a-uuid');
    await send(server.baseUrl, 'GET', '/nowhere');
    const text = (await send(server.baseUrl, 'GET', '/metrics/prometheus')).body;
    const { out, code } = await promtool(text);
    assert.equal(out, '', out);
    assert.equal(code, 0);
  });
  test('a worker killed mid-scrape leaves the group short, not broken; its replacement joins', async () => {
    const m = JSON.parse((await send(server.baseUrl, 'GET', '/metrics')).body) as MetricsBody;
    const victim = m.workers[1]!.pid;
    process.kill(victim, 'SIGKILL');
    // Until the primary has noticed, node:cluster may still hand a new connection to the dead worker (which then
    // hangs): wait for it, as test/workers.test.ts does. Then, until the replacement listens, one worker reports.
    const noticed = `"msg":"worker exited unexpectedly; restarting it"`;
    while (!server.output().split('\n').some((l) => l.includes(noticed) && l.includes(`"workerPid":${victim}`))) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const answers = await Promise.all(Array.from({ length: 6 }, () => send(server.baseUrl, 'GET', '/metrics')));
    let short = 0;
    for (const a of answers) {
      assert.equal(a.status, 200, a.body);
      const body = JSON.parse(a.body) as MetricsBody;
      assert.equal(body.workers_expected, 2);
      assert.ok(body.workers.length >= 1 && body.workers.length <= 2);
      if (body.workers.length === 1) short++;
    }
    // The replacement needs longer than those scrapes take to load the app and listen.
    assert.ok(short >= 1, 'the group was reported short of its killed worker');
    const deadline = Date.now() + 30_000;
    for (;;) {
      const body = JSON.parse((await send(server.baseUrl, 'GET', '/metrics')).body) as MetricsBody;
      if (body.workers.length === 2 && !body.workers.some((w) => w.pid === victim)) break;
      assert.ok(Date.now() < deadline, `no replacement joined: ${JSON.stringify(body.workers)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});

describe('merging the parts of a group', () => {
  const part = (pid: number, windowMs: number[], hostUp: boolean): MetricsPart => ({
    pid,
    totalRequests: windowMs.length,
    inFlight: 1,
    byStatusClass: { '1xx': 0, '2xx': windowMs.length, '3xx': 0, '4xx': 0, '5xx': 0 },
    windowMs,
    db: { queries: 10, failed: 1, totalMs: 20, errors: { unavailable: 1, timeout: 0, bad_input: 0, other: 0 } },
    pools: { users: { active: 1, idle: 2, waiting: 0, max: 3, hosts: [{ host: 'h:9042', up: hostUp, openConnections: 2, inFlight: 1 }] } },
    uptimeSeconds: pid,
    prom: [],
  });

  test('percentiles over the union of the windows, not an average of each worker\'s; counts and pools summed', () => {
    const fast = Array.from({ length: 90 }, (_, i) => 1 + i / 100); // 1.00 .. 1.89 ms
    const slow = Array.from({ length: 10 }, (_, i) => 100 + i); // 100 .. 109 ms
    const m = mergeParts([part(1, fast, true), part(2, slow, false)]);
    assert.equal(m.window.samples, 100);
    assert.equal(m.window.p50Ms, fast[49]);
    assert.equal(m.window.p95Ms, slow[4]);
    assert.equal(m.window.p99Ms, slow[8]);
    assert.equal(m.window.maxMs, 109);
    assert.equal(m.totalRequests, 100);
    assert.equal(m.inFlight, 2);
    assert.equal(m.byStatusClass['2xx'], 100);
    assert.deepEqual(m.db, { queries: 20, failed: 2, avgMs: 2, errors: { unavailable: 2, timeout: 0, bad_input: 0, other: 0 } });
    assert.deepEqual(m.pools.users, {
      active: 2, idle: 4, waiting: 0, max: 6, hosts: [{ host: 'h:9042', up: false, openConnections: 4, inFlight: 2 }],
    });
    assert.equal(m.uptimeSeconds, 2, 'the longest-running worker');
  });
});
