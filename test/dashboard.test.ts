/**
 * `GET /dashboard`, its assets and its server-sent events, against a real PostgreSQL: what the routes serve,
 * the frames' figures moving with traffic, bad input refused in the contract's shape, the same protection as
 * `/metrics`, and a stream left open not holding up a drain. The cache panel with a real Redis shared by two
 * instances (the hit ratio of each frame, the layer order), the jobs panel with a real queue (a failed job in
 * the recent failures, the queue hung by a table lock without breaking the stream or a scrape). The page itself
 * in a real browser is in test/dashboard-browser.test.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { buildApp } from '../src/app.ts';
import { frames } from '../src/modules/ops/dashboard-feed.ts';
import type { MetricsPart } from '../src/platform/metrics-group.ts';
import { startApp, testConfig, userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';
import { waitFor } from './jobs-support.ts';

let db: TestDatabase;
before(async () => { db = await createTestDatabase(); });
after(async () => { await db?.destroy(); });

interface Frame {
  t: number;
  total_requests: number;
  rate_rps: number;
  error_ratio: number;
  client_error_ratio: number;
  p50_ms: number;
  p99_ms: number;
  pool: { active: number; idle: number; waiting: number; max: number };
  workers: { worker: number | null; pid: number; total_requests: number; cache: Cache | null }[];
  workers_expected: number;
  cache: Cache | null;
  jobs: Jobs | null;
}

interface Cache {
  lookups: number;
  hit_ratio: number | null;
  layers: { name: string; hits: number; misses: number; hit_ratio: number | null }[];
}

interface Jobs {
  unavailable: boolean;
  queued: number | null;
  running: number | null;
  finished: Record<string, number>;
  recent_failures: { id: string; kind: string; error: string; finished_at: string | null }[] | null;
}

/** The `frame` events of a finished event-stream body. */
function framesOf(body: string): Frame[] {
  return body.split('\n\n').flatMap((block) => {
    const lines = block.split('\n');
    if (!lines.includes('event: frame')) return [];
    return [JSON.parse(lines.find((l) => l.startsWith('data: '))!.slice(6)) as Frame];
  });
}

/** A dashboard stream over real HTTP, read frame by frame as they arrive. */
interface LiveFrames {
  next(timeoutMs?: number): Promise<Frame>;
  close(): void;
}

async function liveFrames(app: FastifyInstance, headers: Record<string, string> = {}): Promise<LiveFrames> {
  if (!app.server.listening) await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as { port: number };
  const ready: Frame[] = [];
  let wake: (() => void) | undefined;
  let buffer = '';
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    request(`http://127.0.0.1:${port}/dashboard/events`, { headers }, resolve).on('error', reject).end();
  });
  assert.equal(res.statusCode, 200);
  res.setEncoding('utf8');
  res.on('data', (d: string) => {
    buffer += d;
    const blocks = buffer.split('\n\n');
    buffer = blocks.pop()!;
    ready.push(...framesOf(blocks.map((b) => `${b}\n\n`).join('')));
    wake?.();
  });
  return {
    async next(timeoutMs = 5000) {
      const until = Date.now() + timeoutMs;
      while (ready.length === 0) {
        if (Date.now() > until) throw new Error(`no frame within ${timeoutMs} ms`);
        await new Promise<void>((r) => { wake = r; setTimeout(r, 50); });
      }
      return ready.shift()!;
    },
    close: () => res.destroy(),
  };
}

describe('dashboard routes', () => {
  let app: FastifyInstance;
  before(async () => { app = await startApp(db.url); });
  after(async () => { await app?.close(); });

  test('the page and its assets, same origin, with their types', async () => {
    const page = await app.inject('/dashboard');
    assert.equal(page.statusCode, 200);
    assert.match(page.headers['content-type'] as string, /^text\/html/);
    for (const src of ['/dashboard/assets/uPlot.min.js', '/dashboard/assets/dashboard.js', '/dashboard/assets/dashboard.css', '/dashboard/assets/uPlot.min.css']) {
      assert.ok(page.body.includes(`"${src}"`), `the page loads ${src}`);
      const asset = await app.inject(src);
      assert.equal(asset.statusCode, 200, src);
      assert.match(asset.headers['content-type'] as string, src.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
      assert.ok(asset.body.length > 100, src);
    }
    assert.match((await app.inject('/dashboard/assets/uPlot.min.js')).body, /uPlot/);
  });

  test('bad input gets the contract\'s error shape', async () => {
    for (const url of ['/dashboard/assets/..%2Fdashboard.ts', '/dashboard/assets/nope.js', '/dashboard/events?count=0', '/dashboard/events?count=x']) {
      const res = await app.inject(url);
      assert.equal(res.statusCode, 422, `${url}: ${res.body}`);
      assert.ok(res.json().detail, url);
    }
  });

  test('the events: frames a second apart whose figures move with traffic; no cache with CACHE_MODE=off', async () => {
    const started = Date.now();
    const first = framesOf((await app.inject('/dashboard/events?count=1')).body);
    assert.equal(first.length, 1);
    const created = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
    const id = created.json().id as string;
    // Load and the frames at once: the second frame's rate covers the reads made between the two.
    const [res] = await Promise.all([
      app.inject('/dashboard/events?count=2'),
      (async () => {
        for (let i = 0; i < 40; i++) await app.inject(`/users/${id}`);
        for (let i = 0; i < 10; i++) await app.inject('/users/not-a-uuid');
      })(),
    ]);
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /^text\/event-stream/);
    assert.equal(res.headers['content-encoding'], undefined, 'never compressed: frames must leave as they are made');
    assert.match(res.body, /^retry: \d+\n\n/);
    const frames = framesOf(res.body);
    assert.equal(frames.length, 2);
    const [a, b] = frames as [Frame, Frame];
    assert.ok(b.t - a.t >= 900, 'a second apart');
    assert.ok(Date.now() - started >= 1000);
    assert.ok(b.total_requests >= first[0]!.total_requests + 52, 'every request counted');
    assert.ok(b.rate_rps > 0, `a rate: ${JSON.stringify(b)}`);
    assert.ok(b.client_error_ratio > 0, 'the 4xx seen');
    assert.equal(b.error_ratio, 0);
    assert.ok(b.p99_ms >= b.p50_ms && b.p50_ms > 0);
    assert.equal(b.pool.max, 10);
    assert.deepEqual(b.workers.map((w) => w.worker), [null], 'a single process is one worker, without a slot');
    assert.equal(b.workers[0]!.pid, process.pid);
    assert.equal(b.workers_expected, 1);
    assert.equal(b.cache, null, 'CACHE_MODE=off (the default outside production): no cache panel');
    assert.equal(b.workers[0]!.cache, null);
    // PostgreSQL always has its job queue.
    assert.equal(b.jobs?.unavailable, false);
    assert.ok(Number.isInteger(b.jobs.queued) && Number.isInteger(b.jobs.running), JSON.stringify(b.jobs));
    assert.deepEqual(Object.keys(b.jobs.finished).slice(0, 3), ['succeeded', 'failed', 'retried']);
    assert.deepEqual(b.jobs.recent_failures, []);
  });
});

describe('the same protection as /metrics', () => {
  const token = 'metrics-token-5d1e8a7c3b2f9e04';
  let app: FastifyInstance;
  before(async () => { app = await startApp(db.url, { METRICS_TOKEN: token }); });
  after(async () => { await app?.close(); });

  test('with METRICS_TOKEN, every dashboard route wants it; with it, they answer', async () => {
    for (const url of ['/dashboard', '/dashboard/assets/dashboard.js', '/dashboard/events?count=1', '/metrics']) {
      const refused = await app.inject(url);
      assert.equal(refused.statusCode, 401, url);
      assert.ok(refused.json().detail, url);
      assert.equal((await app.inject({ url, headers: { authorization: `Bearer ${token}` } })).statusCode, 200, url);
    }
  });
});

describe('the pool and error panels under database load (POOL_MAX=2)', () => {
  let app: FastifyInstance;
  before(async () => { app = await startApp(db.url, { POOL_MAX: '2', POOL_ACQUIRE_TIMEOUT_MS: '1500' }); });
  after(async () => { await app?.close(); });

  test('slow queries fill the pool (active, then waiting), and the 5xx they end in move the error rate', async () => {
    const live = await liveFrames(app);
    try {
      const calm = await live.next();
      assert.deepEqual([calm.pool.active, calm.pool.waiting, calm.pool.max], [0, 0, 2], JSON.stringify(calm.pool));
      assert.equal(calm.error_ratio, 0);
      // Four real 5 s statements on two connections, each given 2.5 s: two run and are cancelled at their deadline
      // (504), two wait for a connection until the acquire timeout (503). Real 5xx, from a real database.
      const slow = Promise.all(Array.from({ length: 4 }, () =>
        app.inject({ url: '/slow_query', headers: { 'x-request-timeout': '2.5' } })));
      let busy: Frame | undefined;
      while (!busy) {
        const f = await live.next();
        if (f.pool.active === 2 && f.pool.waiting === 2) busy = f;
        else assert.ok(f.t - calm.t < 2500, `the pool never showed 2 active and 2 waiting: ${JSON.stringify(f.pool)}`);
      }
      const statuses = (await slow).map((r) => r.statusCode);
      assert.ok(statuses.every((st) => st === 503 || st === 504), `every slow query ended in a 5xx: ${statuses.join(', ')}`);
      let failing: Frame | undefined;
      for (let i = 0; i < 4 && !failing; i++) {
        const f = await live.next();
        if (f.error_ratio > 0) failing = f;
      }
      assert.ok(failing, 'a frame showed the 5xx');
      assert.ok(failing.error_ratio > 0 && failing.error_ratio <= 1);
      // And both figures come back down once the load is gone.
      let after: Frame | undefined;
      for (let i = 0; i < 6 && !after; i++) {
        const f = await live.next();
        if (f.pool.active === 0 && f.pool.waiting === 0 && f.error_ratio === 0) after = f;
      }
      assert.ok(after, 'the pool and the error rate came back to 0');
    } finally {
      live.close();
    }
  });
});

describe('a dashboard left open', () => {
  test('does not hold up a drain: its stream ends and the drain completes', async () => {
    const app = await startApp(db.url);
    try {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = app.server.address() as { port: number };
      let body = '';
      let client!: ReturnType<typeof request>;
      const ended = new Promise<void>((resolve, reject) => {
        client = request(`http://127.0.0.1:${port}/dashboard/events`, (res) => {
          res.setEncoding('utf8');
          res.on('data', (d) => (body += d));
          res.on('end', resolve);
        }).on('error', reject);
        client.end();
      });
      while (framesOf(body).length < 1) await new Promise((r) => setTimeout(r, 50));
      const started = Date.now();
      const late = new Promise<string>((r) => setTimeout(() => r('late'), 3000).unref());
      const outcome = await Promise.race([Promise.all([app.drain(), ended]).then(() => 'drained'), late]);
      // If the stream held the drain, the client leaves, so the app can still close.
      if (outcome !== 'drained') client.destroy();
      assert.equal(outcome, 'drained', 'the open stream ended and the drain completed within 3 s');
      assert.ok(Date.now() - started < 3000);
    } finally {
      await app.close();
    }
  });
});

const redisSkip = redisUnavailable() ?? false;

describe('the cache panel: two instances sharing Redis (CACHE_MODE=redis)', { skip: redisSkip }, () => {
  let redis: TestRedis;
  let a: FastifyInstance;
  let b: FastifyInstance;
  before(async () => {
    redis = await startRedis();
    const env = { REDIS_URL: redis.url, CACHE_MODE: 'redis', CACHE_TTL_MS: '60000' };
    a = await startApp(db.url, env);
    b = await startApp(db.url, env);
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await redis?.stop();
  });

  test('each frame\'s hit ratio covers the lookups since the previous one: any layer\'s hit over the first layer\'s lookups', async () => {
    // 20 users read once through a: each is in Redis now, and in a's memory only.
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const created = await a.inject({ method: 'POST', url: '/users', payload: userBody() });
      ids.push(created.json().id as string);
      assert.equal((await a.inject(`/users/${ids[i]}`)).statusCode, 200);
    }
    const frames = await liveFrames(b);
    try {
      const first = await frames.next();
      assert.deepEqual(first.cache, {
        lookups: 0, hit_ratio: null,
        layers: [{ name: 'memory', hits: 0, misses: 0, hit_ratio: null }, { name: 'redis', hits: 0, misses: 0, hit_ratio: null }],
      }, 'the first frame has no previous one: no lookups measured, no ratio');
      // Through b: 20 memory misses that Redis answers, and 10 ids nobody has (a miss in both layers).
      for (const id of ids) assert.equal((await b.inject(`/users/${id}`)).statusCode, 200);
      for (let i = 0; i < 10; i++) assert.equal((await b.inject(`/users/${randomUUID()}`)).statusCode, 404);
      const second = await frames.next();
      assert.deepEqual(second.cache, {
        lookups: 30, hit_ratio: 0.667,
        layers: [{ name: 'memory', hits: 0, misses: 30, hit_ratio: 0 }, { name: 'redis', hits: 20, misses: 10, hit_ratio: 0.667 }],
      });
      assert.deepEqual(second.workers[0]!.cache, second.cache, 'one process: its worker is the group');
      // The same 20 again: b's memory answers now, Redis is not asked.
      for (const id of ids) await b.inject(`/users/${id}`);
      const third = await frames.next();
      assert.equal(third.cache?.hit_ratio, 1);
      assert.deepEqual(third.cache?.layers.map((l) => [l.name, l.hits, l.misses]), [['memory', 20, 0], ['redis', 0, 0]]);
      assert.equal(third.cache?.layers[1]!.hit_ratio, null, 'a layer not asked has no ratio');
      // Nothing read: a frame without lookups shows no ratio rather than a made-up one.
      const quiet = await frames.next();
      assert.equal(quiet.cache?.lookups, 0);
      assert.equal(quiet.cache?.hit_ratio, null);
    } finally {
      frames.close();
    }
  });
});

describe('the jobs panel: a real queue', () => {
  let jdb: TestDatabase;
  let app: FastifyInstance;
  let sql: postgres.Sql;
  before(async () => {
    jdb = await createTestDatabase();
    app = await buildApp(testConfig(jdb.url, { JOB_POLL_MS: '50' }), { logger: false });
    app.jobs.define({ kind: 'dash-fails', async run() { throw new Error('the remote said no: 503 Service Unavailable'); } });
    app.jobs.define({ kind: 'dash-ok', async run() { return { ok: true }; } });
    await app.ready();
    await waitFor(() => app.backend.probes.schemaReady(), 20_000);
    sql = postgres(jdb.url, { max: 2, onnotice: () => {} });
  });
  after(async () => {
    await app?.close();
    await sql?.end();
    await jdb?.destroy();
  });

  test('queued jobs counted, finished attempts by outcome, and a failed job in the recent failures', async () => {
    const store = app.jobs.store();
    const before = framesOf((await app.inject('/dashboard/events?count=1')).body)[0]!.jobs!;
    for (let i = 0; i < 3; i++) await store.enqueue({ kind: 'dash-nobody-runs' });
    const ok = (await store.enqueue({ kind: 'dash-ok' }))!;
    const failed = (await store.enqueue({ kind: 'dash-fails', maxAttempts: 2 }))!;
    await waitFor(async () => (await store.get(failed.id))?.state === 'failed' && (await store.get(ok.id))?.state === 'succeeded', 20_000);
    const jobs = framesOf((await app.inject('/dashboard/events?count=1')).body)[0]!.jobs!;
    assert.equal(jobs.unavailable, false);
    assert.equal(jobs.queued! - before.queued!, 3, 'the three jobs no worker runs');
    assert.equal(jobs.finished.succeeded! - before.finished.succeeded!, 1);
    assert.equal(jobs.finished.retried! - before.finished.retried!, 1, 'the first attempt of the failing job');
    assert.equal(jobs.finished.failed! - before.finished.failed!, 1);
    const [latest] = jobs.recent_failures!;
    assert.deepEqual({ ...latest, finished_at: undefined }, {
      id: failed.id, kind: 'dash-fails', error: 'the remote said no: 503 Service Unavailable', finished_at: undefined,
    });
    assert.match(latest!.finished_at!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(jobs.recent_failures!.length <= 5);
  });

  test('the queue hung (its table locked): frames go on, a second apart, the panel saying so; then it comes back', async () => {
    const frames = await liveFrames(app);
    // Released in `finally` too: a failed assertion must not leave the lock held, or the app's close waits on it
    // until the test runner's timeout (CI saw the file stall for ten minutes).
    let release = () => {};
    let held: Promise<unknown> = Promise.resolve();
    try {
      assert.equal((await frames.next()).jobs?.unavailable, false);
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => { locked = r; });
      held = sql.begin(async (tx) => {
        await tx`LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE`;
        locked();
        await new Promise<void>((r) => { release = r; });
      });
      await isLocked;
      const during: Frame[] = [];
      for (let i = 0; i < 3; i++) during.push(await frames.next(2500));
      // The first may have been read just before the lock; the rest must say the queue is away.
      assert.ok(during.slice(1).every((f) => f.jobs?.unavailable === true && f.jobs.queued === null && f.jobs.recent_failures === null),
        JSON.stringify(during.map((f) => f.jobs)));
      assert.ok(during.every((f) => f.rate_rps >= 0 && typeof f.jobs?.finished.succeeded === 'number'), 'the rest of the frame is there');
      // The jobs gauge reads the same queue: a scrape waits for it 500 ms at most, keeping its last figures.
      const scrapeStarted = performance.now();
      const scrape = await app.inject('/metrics/prometheus');
      assert.equal(scrape.statusCode, 200);
      assert.ok(performance.now() - scrapeStarted < 1500, `the scrape was not held by the hung queue: ${performance.now() - scrapeStarted} ms`);
      for (let i = 1; i < during.length; i++) {
        const gap = during[i]!.t - during[i - 1]!.t;
        // A second, plus the read's 500 ms deadline, plus scheduling on a loaded machine (CI saw 1734 ms); a read
        // that waited on the lock would hold its frame until the lock's release, seconds later.
        assert.ok(gap < 2200, `frames still a second apart (the read's deadline is 500 ms): ${gap} ms`);
      }
      release();
      await held;
      const back = await waitFor(async () => {
        const f = await frames.next(2500);
        return f.jobs?.unavailable === false ? f : undefined;
      }, 10_000, 0);
      assert.equal(typeof back.jobs?.queued, 'number');
    } finally {
      release();
      await held;
      frames.close();
    }
  });
});

describe('the panels over several workers (the frame source on the parts the primary gathers)', () => {
  /** A worker's part as it crosses IPC, with its cache and job counters in prom-client's JSON. */
  function part(pid: number, worker: number, memory: [number, number], succeeded: number): MetricsPart {
    const counter = (name: string, values: { labels: Record<string, string>; value: number }[]) =>
      ({ name, help: name, type: 'counter', aggregator: 'sum', values }) as unknown as MetricsPart['prom'][number];
    return {
      pid, worker, totalRequests: 0, inFlight: 0, byStatusClass: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 }, windowMs: [],
      db: { queries: 0, failed: 0, totalMs: 0, errors: { unavailable: 0, timeout: 0, bad_input: 0, other: 0 } }, pools: {}, uptimeSeconds: 1,
      prom: [
        counter('cache_hits_total', [{ labels: { layer: 'memory' }, value: memory[0] }]),
        counter('cache_misses_total', [{ labels: { layer: 'memory' }, value: memory[1] }]),
        counter('jobs_finished_total', [{ labels: { kind: 'k', outcome: 'succeeded' }, value: succeeded }]),
      ],
    };
  }
  const queue = { unavailable: false as const, queued: 7, running: 1, recent_failures: [] };

  test('the group\'s ratio is the sum of each worker\'s lookups since its last frame; a restart takes nothing away', () => {
    const next = frames({ cache: true });
    const first = next({ parts: [part(101, 1, [10, 0], 2), part(102, 2, [0, 0], 3)], expected: 2 }, queue);
    assert.equal(first.cache?.hit_ratio, null);
    assert.deepEqual(first.jobs, { unavailable: false, queued: 7, running: 1, finished: { succeeded: 5, failed: 0, retried: 0 }, recent_failures: [] },
      'finished: summed over the workers, since each started; queued and running: the queue\'s own, not summed');
    const second = next({ parts: [part(101, 1, [20, 10], 2), part(102, 2, [30, 0], 3)], expected: 2 }, queue);
    assert.deepEqual(second.workers.map((w) => [w.worker, w.cache?.lookups, w.cache?.hit_ratio]), [[1, 20, 0.5], [2, 30, 1]]);
    assert.equal(second.cache?.lookups, 50);
    assert.equal(second.cache?.hit_ratio, 0.8);
    // Worker 2 restarted (a new pid, counting from 0) and worker 1 was idle: no lookups, not a negative number.
    const third = next({ parts: [part(101, 1, [20, 10], 2), part(103, 2, [5, 5], 0)], expected: 2 }, queue);
    assert.equal(third.cache?.lookups, 0);
    assert.equal(third.cache?.hit_ratio, null);
    assert.equal(third.jobs?.finished.succeeded, 2);
    // A worker that missed a frame is measured from its last answer.
    next({ parts: [part(101, 1, [20, 10], 2)], expected: 2 }, queue);
    const fifth = next({ parts: [part(101, 1, [24, 10], 2), part(103, 2, [9, 9], 0)], expected: 2 }, queue);
    assert.deepEqual([fifth.cache?.lookups, fifth.cache?.hit_ratio], [12, 0.667]);
  });

  test('no cache: null for the group and every worker; no queue: no jobs panel', () => {
    const frame = frames({ cache: false })({ parts: [part(101, 1, [1, 1], 0)], expected: 1 }, undefined);
    assert.equal(frame.cache, null);
    assert.equal(frame.workers[0]!.cache, null);
    assert.equal(frame.jobs, null);
  });
});
