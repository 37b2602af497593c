/**
 * `/metrics` (JSON and Prometheus text), `/metrics/prometheus` and the performance endpoints, against a real
 * PostgreSQL: the shapes, and that the figures are live (they move with the traffic the test makes).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { startApp, userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

let db: TestDatabase;
let app: FastifyInstance;
let sql: postgres.Sql;

before(async () => {
  db = await createTestDatabase();
  app = await startApp(db.url);
  sql = postgres(db.url, { max: 1, onnotice: () => {} });
});
after(async () => {
  await app?.close();
  await sql?.end();
  await db?.destroy();
});

/** Statements of the app that the database server is running right now (its own view, not the app's). */
async function runningOnServer(): Promise<number> {
  const [row] = await sql`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE application_name = 'spate' AND state = 'active' AND pid <> pg_backend_pid()`;
  return row!.n as number;
}

interface MetricsBody {
  total_requests: number;
  requests_by_status: Record<'1xx' | '2xx' | '3xx' | '4xx' | '5xx', number>;
  in_flight: number;
  query_performance: Record<
    'avg_response_time_ms' | 'p50_response_time_ms' | 'p95_response_time_ms' | 'p99_response_time_ms' | 'max_response_time_ms' | 'window_size',
    number
  >;
  database_connections: { active: number; idle: number; total: number; waiting: number; max: number };
  database: { queries: number; errors: number; errors_by_kind: Record<'unavailable' | 'timeout' | 'bad_input' | 'other', number>; avg_query_time_ms: number };
  backend: string;
  uptime_seconds: number;
  timestamp: string;
}

async function metricsJson(target = app): Promise<MetricsBody> {
  const res = await target.inject('/metrics');
  assert.equal(res.statusCode, 200, res.body);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  return res.json();
}

async function prometheusText(headers: Record<string, string> = {}, url = '/metrics'): Promise<string> {
  const res = await app.inject({ url, headers });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  return res.body;
}

async function createUser(): Promise<{ id: string }> {
  const res = await app.inject({ method: 'POST', url: '/users', payload: userBody() });
  assert.equal(res.statusCode, 201, res.body);
  return res.json();
}

/** The value of one sample line (`name{labels} value`) in an exposition, or undefined. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('GET /metrics (JSON)', () => {
  test('has the contract fields and the extra ones, with sane types', async () => {
    const m = await metricsJson();
    for (const k of ['total_requests', 'in_flight', 'uptime_seconds'] as const) assert.equal(typeof m[k], 'number', k);
    for (const k of ['avg_response_time_ms', 'p50_response_time_ms', 'p95_response_time_ms', 'p99_response_time_ms', 'max_response_time_ms', 'window_size'] as const) {
      assert.equal(typeof m.query_performance[k], 'number', k);
    }
    assert.deepEqual(Object.keys(m.requests_by_status).sort(), ['1xx', '2xx', '3xx', '4xx', '5xx']);
    assert.deepEqual(Object.keys(m.database.errors_by_kind).sort(), ['bad_input', 'other', 'timeout', 'unavailable']);
    const pool = m.database_connections;
    assert.equal(pool.max, 10, 'the default pool size');
    assert.equal(pool.total, 10, 'total is the pool size');
    assert.equal(pool.active, 0, 'nothing else is running');
    assert.equal(pool.idle, 10);
    assert.equal(pool.waiting, 0);
    const pools = (m as unknown as { database_pools: Record<string, { max: number }> }).database_pools;
    assert.deepEqual(Object.keys(pools).sort(), ['accounts', 'jobs', 'jobsWorker', 'users'], 'every pool the backend opened');
    assert.deepEqual([pools.users!.max, pools.accounts!.max, pools.jobs!.max], [10, 4, 4]);
    assert.equal(m.in_flight, 1, 'the request asking is the only one in flight');
    assert.equal(m.backend, 'postgres');
    assert.match(m.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  test('the numbers move with traffic', async () => {
    const user = await createUser();
    const before = await metricsJson();
    const made = [`/users/${user.id}`, `/users/${user.id}`, `/users/${user.id}`, '/users?limit=2', '/users', '/no/such/path'];
    for (const url of made) await app.inject(url);
    await app.inject({ method: 'POST', url: '/users', payload: userBody() });
    const after = await metricsJson();

    // `before` counted itself when it arrived, `after` did too: the difference is our requests plus one.
    assert.equal(after.total_requests - before.total_requests, made.length + 1 + 1);
    assert.equal(after.requests_by_status['2xx'] - before.requests_by_status['2xx'], 6 + 1, 'six 2xx plus `before` itself');
    assert.equal(after.requests_by_status['4xx'] - before.requests_by_status['4xx'], 1);
    assert.ok(after.database.queries - before.database.queries >= 6, 'every database-backed request ran a query');
    assert.equal(after.database.errors, before.database.errors);
    const q = after.query_performance;
    assert.ok(q.window_size > before.query_performance.window_size || q.window_size === 1024);
    assert.ok(q.avg_response_time_ms > 0 && q.p50_response_time_ms > 0, JSON.stringify(q));
    assert.ok(q.p50_response_time_ms <= q.p95_response_time_ms);
    assert.ok(q.p95_response_time_ms <= q.p99_response_time_ms);
    assert.ok(q.p99_response_time_ms <= q.max_response_time_ms);
    assert.ok(after.database.avg_query_time_ms > 0);
    assert.ok(after.uptime_seconds >= before.uptime_seconds);
  });

  test('pool figures are live: active is what the database server is running for the app', async () => {
    const timeoutsBefore = (await metricsJson()).database.errors_by_kind.timeout;
    const slow = Array.from({ length: 3 }, () => app.inject({ url: '/slow_query', headers: { 'x-request-timeout': '1.5' } }));
    try {
      let running = await runningOnServer();
      for (let i = 0; i < 100 && running < 3; i++) {
        await sleep(20);
        running = await runningOnServer();
      }
      assert.equal(running, 3, 'the three sleeps are on the server');
      const pool = (await metricsJson()).database_connections;
      // idle and total count the pool's slots: postgres.js opens connections as they are needed.
      assert.deepEqual(pool, { active: 3, idle: 7, total: 10, waiting: 0, max: 10 });
    } finally {
      assert.deepEqual((await Promise.all(slow)).map((r) => r.statusCode), [504, 504, 504]);
    }
    // The cancelled statements settle a moment after the 504s; the next test counts errors from a quiet start.
    let m = await metricsJson();
    for (let i = 0; i < 100 && (m.database.errors_by_kind.timeout < timeoutsBefore + 3 || m.database_connections.active > 0); i++) {
      await sleep(20);
      m = await metricsJson();
    }
    assert.equal(m.database.errors_by_kind.timeout, timeoutsBefore + 3);
    assert.equal(m.database_connections.active, 0);
  });

  test('database errors are counted by kind', async () => {
    const before = await metricsJson();
    const refused = await app.inject({ method: 'POST', url: '/users', payload: userBody({ name: 'a\u0000b' }) });
    assert.equal(refused.statusCode, 400);
    const timedOut = await app.inject({ url: '/slow_query', headers: { 'x-request-timeout': '0.2' } });
    assert.equal(timedOut.statusCode, 504);
    // The timed-out statement settles when the server acknowledges the cancel, a moment after the 504.
    let after = await metricsJson();
    for (let i = 0; i < 50 && after.database.errors_by_kind.timeout === before.database.errors_by_kind.timeout; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await metricsJson();
    }
    assert.equal(after.database.errors_by_kind.bad_input - before.database.errors_by_kind.bad_input, 1);
    assert.equal(after.database.errors_by_kind.timeout - before.database.errors_by_kind.timeout, 1);
    assert.equal(after.database.errors - before.database.errors, 2);
    assert.equal(after.requests_by_status['5xx'] - before.requests_by_status['5xx'], 1);
  });

  test('in_flight over real HTTP: keep-alive requests and a client that goes away do not make it drift', async () => {
    const served = await startApp(db.url);
    try {
      const base = await served.listen({ port: 0, host: '127.0.0.1' });
      for (let i = 0; i < 20; i++) assert.equal((await fetch(`${base}/users?limit=1`)).status, 200);
      const gone = new AbortController();
      const abandoned = fetch(`${base}/slow_query`, { headers: { 'x-request-timeout': '0.5' }, signal: gone.signal });
      await new Promise((r) => setTimeout(r, 100));
      const during = (await (await fetch(`${base}/metrics`)).json()) as MetricsBody;
      assert.equal(during.in_flight, 2, 'the slow request and this one');
      gone.abort();
      await assert.rejects(abandoned);
      await new Promise((r) => setTimeout(r, 700)); // the handler finishes (504) after its client left
      const m = (await (await fetch(`${base}/metrics`)).json()) as MetricsBody;
      assert.equal(m.in_flight, 1);
      assert.equal(m.total_requests, 23);
    } finally {
      await served.close();
    }
  });

  test('each app has its own registry: a second app in the process starts from zero', async () => {
    const other = await startApp(db.url);
    try {
      await app.inject('/users');
      const mine = await metricsJson();
      const theirs = await metricsJson(other);
      assert.equal(theirs.total_requests, 1);
      assert.ok(mine.total_requests > 1);
    } finally {
      await other.close();
    }
  });
});

describe('Prometheus exposition', () => {
  test('at /metrics when Accept asks for text/plain; route patterns and pool gauges', async () => {
    const user = await createUser();
    await app.inject(`/users/${user.id}`);
    await app.inject('/no/such/path');
    const text = await prometheusText({ accept: 'text/plain' });
    assert.match(text, /^# HELP http_request_duration_seconds /m);
    assert.match(text, /^# TYPE http_request_duration_seconds histogram$/m);
    assert.match(text, /^http_request_duration_seconds_bucket\{method="GET",route="\/users\/:id",status="200",le="0\.005"\} \d+$/m);
    assert.ok(sample(text, 'http_request_duration_seconds_bucket', '{method="GET",route="/users/:id",status="200",le="+Inf"}')! >= 1);
    assert.ok(sample(text, 'http_request_duration_seconds_count', '{method="GET",route="/users/:id",status="200"}')! >= 1);
    assert.ok(sample(text, 'http_request_duration_seconds_count', '{method="GET",route="unmatched",status="404"}')! >= 1);
    assert.ok(!text.includes(user.id), 'raw URLs never become labels');
    assert.equal(sample(text, 'db_pool_max_connections', '{pool="users"}'), 10);
    assert.equal(sample(text, 'db_pool_active_connections', '{pool="users"}'), 0);
    assert.equal(sample(text, 'db_pool_idle_connections', '{pool="users"}'), 10);
    assert.equal(sample(text, 'db_pool_waiting_requests', '{pool="users"}'), 0);
    // Every pool the backend opened is reported: the accounts store's own pool too (AUTH_POOL_MAX, default 4).
    assert.equal(sample(text, 'db_pool_max_connections', '{pool="accounts"}'), 4);
    assert.equal(sample(text, 'http_requests_in_flight'), 1);
    assert.ok(sample(text, 'db_query_duration_seconds_count', '{outcome="success"}')! >= 2);
    assert.equal(typeof sample(text, 'db_errors_total', '{kind="unavailable"}'), 'number');
    assert.equal(typeof sample(text, 'process_cpu_user_seconds_total'), 'number', 'default process metrics');
    assert.equal(typeof sample(text, 'nodejs_eventloop_lag_seconds'), 'number');
  });

  test('bucket counts are cumulative and end with the count', async () => {
    const text = await prometheusText({}, '/metrics/prometheus');
    const labels = 'method="GET",route="/users/:id",status="200"';
    const buckets = text.split('\n').filter((l) => l.startsWith(`http_request_duration_seconds_bucket{${labels},`))
      .map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
    assert.ok(buckets.length > 5);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]! >= buckets[i - 1]!);
    assert.equal(buckets.at(-1), sample(text, 'http_request_duration_seconds_count', `{${labels}}`));
  });

  test('always at /metrics/prometheus, whatever Accept says', async () => {
    const text = await prometheusText({ accept: 'application/json' }, '/metrics/prometheus');
    assert.match(text, /^# TYPE db_pool_active_connections gauge$/m);
  });

  test('content negotiation at /metrics', async () => {
    const cases: [string, 'json' | 'text'][] = [
      ['*/*', 'json'],
      ['application/json', 'json'],
      ['application/json, text/plain, */*', 'json'],
      ['text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', 'json'],
      ['text/plain;version=0.0.4', 'text'],
      ['application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1', 'text'],
      ['application/json;q=0.5, text/plain', 'text'],
    ];
    for (const [accept, want] of cases) {
      const res = await app.inject({ url: '/metrics', headers: { accept } });
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), want === 'json' ? /^application\/json/ : /^text\/plain; version=0\.0\.4/, accept);
    }
  });
});

describe('GET /performance/{async,sync}', () => {
  for (const mode of ['async', 'sync'] as const) {
    test(`${mode}: runs N real reads and reports them`, async () => {
      const before = await metricsJson();
      const res = await app.inject(`/performance/${mode}?requests=25`);
      assert.equal(res.statusCode, 200, res.body);
      const body = res.json();
      assert.deepEqual(Object.keys(body).sort(), ['avg_time_per_request', 'mode', 'requests', 'requests_per_second', 'successful_requests', 'total_time']);
      assert.equal(body.mode, mode);
      assert.equal(body.requests, 25);
      assert.equal(body.successful_requests, 25);
      assert.ok(body.total_time > 0 && body.total_time < 10, 'seconds');
      assert.ok(Math.abs(body.avg_time_per_request - body.total_time / 25) < 1e-9);
      assert.ok(Math.abs(body.requests_per_second - 25 / body.total_time) < 1e-6);
      const after = await metricsJson();
      assert.ok(after.database.queries - before.database.queries >= 25, 'the reads really reached the database');
    });
  }

  test('requests defaults to 100', async () => {
    const res = await app.inject('/performance/async');
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().requests, 100);
    assert.equal(res.json().successful_requests, 100);
  });

  test('1000 concurrent reads queue on the pool and all succeed', async () => {
    const res = await app.inject('/performance/async?requests=1000');
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().successful_requests, 1000);
    assert.equal(app.backend.probes.pools().users.waiting, 0);
  });

  for (const bad of ['0', '1001', 'abc', '1.5']) {
    test(`422 for requests=${bad}`, async () => {
      const res = await app.inject(`/performance/sync?requests=${bad}`);
      assert.equal(res.statusCode, 422, res.body);
      assert.deepEqual(res.json().detail[0].loc, ['query', 'requests']);
    });
  }

  test('an expired deadline is a 504', async () => {
    const res = await app.inject({ url: '/performance/sync?requests=1000', headers: { 'x-request-timeout': '0.001' } });
    assert.equal(res.statusCode, 504, res.body);
    assert.deepEqual(res.json(), { detail: 'Gateway Timeout' });
  });
});

test('the OpenAPI document lists these routes under operations', async () => {
  const doc = (await app.inject('/openapi.json')).json();
  for (const path of ['/metrics', '/metrics/prometheus', '/performance/async', '/performance/sync', '/slow_query', '/long_running_query']) {
    assert.deepEqual(doc.paths[path]?.get?.tags, ['operations'], path);
  }
  assert.ok(doc.paths['/metrics'].get.responses['200'].content['application/json'].schema.properties.query_performance);
  assert.ok(doc.paths['/metrics'].get.responses['200'].content['text/plain']);
});
