/**
 * Tracing end to end (docs/tracing.md): the real server process on PostgreSQL and Redis, exporting to a real
 * OTLP/HTTP receiver (JSON protocol) that this test runs, and the span tree of one request that enqueues a job.
 * Then the same server with tracing off: no OpenTelemetry module loaded, no trace fields on log lines.
 *
 * The request that enqueues a job is a test-only route added from outside the app by a preload
 * (test/support/trace-probe.mjs explains why and how); a user write whose webhook delivery carries the trace to a
 * real receiver is the second such request.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import postgres from 'postgres';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { redisUnavailable, startRedis, type TestRedis } from './support/redis.ts';
import { startServer, type ServerProcess } from './support/server.ts';
import { KIND, ancestors, startReceiver, type Receiver } from './support/otlp-receiver.ts';
import { startJobsHarness, waitFor } from './jobs-support.ts';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const PROBE = new URL('./support/trace-probe.mjs', import.meta.url).pathname;

let db: TestDatabase;
let redis: TestRedis;
let receiver: Receiver;
const servers: ServerProcess[] = [];

before(async () => {
  const why = redisUnavailable();
  if (why) throw new Error(why);
  [db, redis, receiver] = await Promise.all([createTestDatabase(), startRedis(), startReceiver()]);
});
after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  receiver.server.close();
  await redis.stop();
  await db.destroy();
});

async function serverWith(env: Record<string, string>): Promise<ServerProcess> {
  const server = await startServer({
    DATABASE_URL: db.url, REDIS_URL: redis.url, CACHE_MODE: 'redis', AUTH_MODE: 'off', JOB_POLL_MS: '100',
    NODE_OPTIONS: `--import=${PROBE}`, ...env,
  });
  servers.push(server);
  await waitFor(async () => (await fetch(`${server.baseUrl}/health/ready`)).ok, 30_000, 100);
  return server;
}

/** The JSON log lines the server wrote so far. */
const logLines = (s: ServerProcess) => s.output().split('\n').flatMap((l) => {
  try { return [JSON.parse(l) as Record<string, unknown>]; } catch { return []; }
});

test('with an OTLP endpoint set: one trace from the caller through the server, its database calls and its job', async () => {
  const server = await serverWith({
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_SERVICE_NAME: 'spate-under-test', OTEL_BSP_SCHEDULE_DELAY: '100',
  });
  const traceId = hex(16);
  const callerSpan = hex(8);
  const res = await fetch(`${server.baseUrl}/test/trace-probe`, {
    method: 'POST', headers: { traceparent: `00-${traceId}-${callerSpan}-01` },
  });
  assert.equal(res.status, 202);
  const { id: jobId } = (await res.json()) as { id: string };

  const inTrace = () => receiver.spans.filter((s) => s.traceId === traceId);
  // Spans leave in batches as they end, and the job may well end before the request's server span does: wait for
  // the job's span and the server span both.
  const spans = await waitFor(() => {
    const now = inTrace();
    return now.some((s) => s.name === 'job jobs.retention') && now.some((s) => s.kind === KIND.server) ? now : undefined;
  }, 30_000, 50);
  const jobSpan = spans.find((s) => s.name === 'job jobs.retention')!;

  // The server span continues the caller's trace: a child of the caller's span, named by method and route.
  const serverSpan = spans.find((s) => s.kind === KIND.server);
  assert.ok(serverSpan, `no server span in ${JSON.stringify(spans.map((s) => s.name))}`);
  assert.equal(serverSpan.parentSpanId, callerSpan);
  assert.equal(serverSpan.name, 'POST /test/trace-probe');
  assert.equal(serverSpan.attributes['http.response.status_code'], 202);
  assert.equal(serverSpan.service, 'spate-under-test');

  // The enqueue is a database span under the server span, with the statement's text and no values.
  const insert = spans.find((s) => s.kind === KIND.client && s.attributes['db.system.name'] === 'postgresql' && s.name === 'INSERT postgresql');
  assert.ok(insert, `no INSERT span in ${JSON.stringify(spans.map((s) => s.name))}`);
  assert.ok(ancestors(insert, spans).includes(serverSpan));
  assert.match(String(insert.attributes['db.query.text']), /^\s*INSERT INTO jobs .*VALUES \(\$1, \$2/s);

  // The job ran in a span of the same trace, a descendant of the request's span, with its own database call.
  assert.equal(jobSpan.kind, KIND.consumer);
  assert.equal(jobSpan.attributes['spate.job.id'], jobId);
  assert.ok(ancestors(jobSpan, spans).includes(serverSpan), 'the job span descends from the server span');
  const jobDb = spans.find((s) => s.parentSpanId === jobSpan.spanId && s.attributes['db.system.name'] === 'postgresql');
  assert.ok(jobDb, 'the job made a database call inside its span');
  assert.equal(jobDb.name, 'DELETE postgresql');

  // The trace context was stored with the job.
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ traceparent: string | null }[]>`SELECT traceparent FROM jobs WHERE id = ${jobId}`;
    assert.match(row!.traceparent ?? '', new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
  } finally {
    await sql.end();
  }

  // The access line of that request names its trace.
  const access = await waitFor(() => logLines(server).find((l) => l.msg === 'request completed' && l.route === '/test/trace-probe'));
  assert.equal(access.trace_id, traceId);
  assert.match(String(access.span_id), /^[0-9a-f]{16}$/);

  // Redis commands (the users cache, with CACHE_MODE=redis) are spans of the request that made them.
  const readTrace = hex(16);
  const created = await fetch(`${server.baseUrl}/users`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Ada', email: 'ada@example.com', age: 36 }),
  });
  assert.equal(created.status, 201);
  const user = (await created.json()) as { id: string };
  const read = await fetch(`${server.baseUrl}/users/${user.id}?email=ada@example.com`, { headers: { traceparent: `00-${readTrace}-${hex(8)}-01` } });
  assert.equal(read.status, 200);
  // The server span ends after the Redis calls: wait for both.
  const readSpans = await waitFor(() => {
    const now = receiver.spans.filter((s) => s.traceId === readTrace);
    return now.some((s) => s.attributes['db.system.name'] === 'redis') && now.some((s) => s.kind === KIND.server) ? now : undefined;
  }, 30_000, 50);
  const redisSpan = readSpans.find((s) => s.attributes['db.system.name'] === 'redis')!;
  const readServer = readSpans.find((s) => s.kind === KIND.server);
  assert.ok(readServer && ancestors(redisSpan, readSpans).includes(readServer), 'the Redis span is under the read request');
  // The query string stays out of the span, as it stays out of the logs.
  assert.equal(readServer.attributes['url.path'], `/users/${user.id}`);
  // A Redis span names its command only: the cache's values (a user's name and email) and keys stay out.
  for (const s of readSpans.filter((x) => x.attributes['db.system.name'] === 'redis')) {
    assert.match(String(s.attributes['db.query.text']), /^[a-z]+$/, `${s.name}: ${String(s.attributes['db.query.text'])}`);
  }

  // Spans left as OTLP/HTTP JSON, to the standard path under OTEL_EXPORTER_OTLP_ENDPOINT.
  assert.ok(receiver.requests.every((r) => r.path === '/v1/traces' && r.contentType === 'application/json'));

  // The positive control of the test below: with tracing on, the probe sees the SDK's modules.
  const loaded = (await (await fetch(`${server.baseUrl}/test/loaded-modules`)).json()) as string[];
  assert.ok(loaded.some((p) => p.includes('@opentelemetry/sdk-trace-base')), 'the probe lists loaded SDK modules');

  // Spans still buffered at shutdown are flushed before the process exits.
  const lastTrace = hex(16);
  assert.equal((await fetch(`${server.baseUrl}/health/live`, { headers: { traceparent: `00-${lastTrace}-${hex(8)}-01` } })).status, 200);
  assert.equal(await server.stop(), 0);
  assert.ok(receiver.spans.some((s) => s.traceId === lastTrace), 'the last span was exported at shutdown');
});

test("a user write's webhook delivery continues its trace: outbox, delivery job, and the receiver's traceparent", async () => {
  // A real webhook receiver on loopback (allowed explicitly), recording the traceparent of each delivery.
  const got: { traceparent: string | undefined; id: string | undefined }[] = [];
  const hook = createServer((req, res) => {
    got.push({ traceparent: req.headers.traceparent as string | undefined, id: req.headers['webhook-id'] as string | undefined });
    req.resume().on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  try {
    const server = await serverWith({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '100',
      WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
    });
    const port = (hook.address() as AddressInfo).port;
    const registered = await fetch(`${server.baseUrl}/webhooks`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: `http://127.0.0.1:${port}/hook`, events: ['user.created'] }),
    });
    assert.equal(registered.status, 201, await registered.clone().text());

    const traceId = hex(16);
    const created = await fetch(`${server.baseUrl}/users`, {
      method: 'POST', headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${hex(8)}-01` },
      body: JSON.stringify({ name: 'Grace', email: 'grace@example.com', age: 45 }),
    });
    assert.equal(created.status, 201);
    const delivery = await waitFor(() => got[0], 30_000, 50);
    // The receiver sees the same trace, from a span of Spate's (not the caller's own span id).
    assert.match(delivery.traceparent ?? '', new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));

    const spans = await waitFor(() => {
      const now = receiver.spans.filter((x) => x.traceId === traceId);
      return now.some((x) => x.name === 'job webhook.deliver') && now.some((x) => x.kind === KIND.server) ? now : undefined;
    }, 30_000, 50);
    const serverSpan = spans.find((x) => x.kind === KIND.server)!;
    const jobSpan = spans.find((x) => x.name === 'job webhook.deliver')!;
    assert.equal(serverSpan.name, 'POST /users');
    assert.ok(ancestors(jobSpan, spans).includes(serverSpan), 'the delivery job descends from the request that made the change');
    // The header names the delivery job's span (or one under it): the receiver's spans join the tree there.
    const parentId = delivery.traceparent!.split('-')[2];
    const sender = spans.find((x) => x.spanId === parentId);
    assert.ok(sender && (sender === jobSpan || ancestors(sender, spans).includes(jobSpan)), 'the traceparent sent names a span of the delivery');
  } finally {
    hook.close();
  }
});

test('with tracing off (no OTEL_* set): no OpenTelemetry module is loaded, no trace fields are logged, no trace stored', async () => {
  const server = await serverWith({});
  const res = await fetch(`${server.baseUrl}/test/trace-probe`, {
    method: 'POST', headers: { traceparent: `00-${hex(16)}-${hex(8)}-01` },
  });
  assert.equal(res.status, 202);
  const { id: jobId } = (await res.json()) as { id: string };
  // prom-client loads the OpenTelemetry API (a no-op until an SDK registers) for its exemplars, as it did before
  // tracing existed; nothing else of OpenTelemetry may load.
  const loaded = (await (await fetch(`${server.baseUrl}/test/loaded-modules`)).json()) as string[];
  assert.ok(loaded.some((p) => p.includes('/@opentelemetry/api/')), 'the probe sees the API that prom-client loads');
  assert.deepEqual(loaded.filter((p) => !p.includes('/@opentelemetry/api/')), []);
  const access = await waitFor(() => logLines(server).find((l) => l.msg === 'request completed' && l.route === '/test/trace-probe'));
  assert.equal(access.trace_id, undefined);
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ traceparent: string | null }[]>`SELECT traceparent FROM jobs WHERE id = ${jobId}`;
    assert.equal(row!.traceparent, null);
  } finally {
    await sql.end();
  }
  assert.equal(await server.stop(), 0);
});

test("a job's stored trace carries to every later step of its chain, and an explicit null stores none", async () => {
  const h = await startJobsHarness();
  try {
    const b = await h.backend();
    const ran: string[] = [];
    const r = h.runner(b, ['s1', 's2', 's3', 'lone'].map((kind) => ({ kind, async run() { ran.push(kind); } })));
    await r.start();
    const traceparent = `00-${hex(16)}-${hex(8)}-01`;
    const first = (await b.jobs!.enqueue({ kind: 's1', traceparent, then: [{ kind: 's2' }, { kind: 's3' }] }))!;
    assert.equal(first.traceparent, traceparent);
    const lone = (await b.jobs!.enqueue({ kind: 'lone', traceparent: null }))!;
    await waitFor(async () => (await h.sql`SELECT 1 FROM jobs WHERE chain_id = ${first.id} AND state = 'succeeded'`).length === 3);
    const rows = await h.sql<{ kind: string; traceparent: string | null }[]>`
      SELECT kind, traceparent FROM jobs WHERE chain_id = ${first.id} OR id = ${lone.id} ORDER BY kind`;
    await r.stop(1000);
    // Ordered by kind, not id: the runner may take s1 and enqueue s2 before 'lone' is enqueued (CI on Node 20 did).
    assert.deepEqual(rows.map((x) => [x.kind, x.traceparent]), [['lone', null], ['s1', traceparent], ['s2', traceparent], ['s3', traceparent]]);
  } finally {
    await h.destroy();
  }
});

test('with WORKERS=2 every worker traces: requests on fresh connections, spread over both, all give a server span', async () => {
  const server = await serverWith({
    WORKERS: '2', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '100',
  });
  // Both workers listening (the primary logs each), so that the requests below are spread over the two.
  await waitFor(() => logLines(server).filter((l) => l.pid === server.pid && l.msg === 'worker listening').length >= 2, 30_000, 50);
  const traces = Array.from({ length: 8 }, () => hex(16));
  for (const traceId of traces) {
    // A connection of its own each, so the primary hands them to the workers in turn.
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${server.baseUrl}/users?limit=1`, {
        agent: false, headers: { connection: 'close', traceparent: `00-${traceId}-${hex(8)}-01` },
      }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 200);
  }
  await waitFor(() => traces.every((t) => receiver.spans.some((s) => s.traceId === t && s.kind === KIND.server)), 30_000, 50);
  // Both workers answered some of them (their access lines, with each request's trace id, name two processes).
  const access = await waitFor(() => {
    const lines = logLines(server).filter((l) => l.msg === 'request completed' && traces.includes(String(l.trace_id)));
    return lines.length === traces.length ? lines : undefined;
  });
  assert.equal(new Set(access.map((l) => l.pid)).size, 2);
  assert.equal(await server.stop(), 0);
});
