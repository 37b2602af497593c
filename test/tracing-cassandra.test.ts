/**
 * Cassandra spans (docs/tracing.md): the SDK started in this process, exporting to a real OTLP/HTTP receiver, and
 * the real app on a real Cassandra node; each request's CQL calls are database spans under its server span.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { KIND, ancestors, startReceiver, type Receiver } from './support/otlp-receiver.ts';
import { waitFor } from './jobs-support.ts';

exitWhenDone();
const skip = skipReason('cassandra');
const hex = (bytes: number) => randomBytes(bytes).toString('hex');

let receiver: Receiver;
let backend: TestBackend;
let app: FastifyInstance;
let stopTracing: (() => Promise<void>) | undefined;

before(async () => {
  if (skip) return;
  receiver = await startReceiver();
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
  process.env.OTEL_BSP_SCHEDULE_DELAY = '100';
  // Before the app is built, as src/process/server.ts does.
  const { startTracing } = await import('../src/platform/tracing/sdk.ts');
  stopTracing = startTracing().shutdown;
  backend = await startBackend('cassandra');
  app = await backend.startApp({ AUTH_MODE: 'off' });
});
after(async () => {
  await app?.close();
  await stopTracing?.();
  await backend?.destroy();
  receiver?.server.close();
});

test('each CQL call of a request is a span under its server span, with the statement and no values', { skip }, async () => {
  const traceId = hex(16);
  const res = await app.inject({
    method: 'POST', url: '/users', headers: { traceparent: `00-${traceId}-${hex(8)}-01` },
    payload: { name: 'Grace', email: 'grace@example.com', age: 85 },
  });
  assert.equal(res.statusCode, 201);
  const cql = await waitFor(() => {
    const found = receiver.spans.filter((s) => s.traceId === traceId && s.attributes['db.system.name'] === 'cassandra');
    return found.length > 0 && receiver.spans.some((s) => s.traceId === traceId && s.kind === KIND.server) ? found : undefined;
  }, 30_000, 50);
  const spans = receiver.spans.filter((s) => s.traceId === traceId);
  const server = spans.find((s) => s.kind === KIND.server)!;
  for (const span of cql) {
    assert.equal(span.kind, KIND.client);
    assert.ok(ancestors(span, spans).includes(server), `${span.name} is under the server span`);
    const text = String(span.attributes['db.query.text'] ?? '');
    assert.ok(!text.includes('grace@example.com') && !text.includes('Grace'), `no values in ${text}`);
  }
  assert.ok(cql.some((s) => /^INSERT cassandra$/.test(s.name) && /INSERT INTO .*users.*\?/s.test(String(s.attributes['db.query.text']))),
    `an INSERT span among ${JSON.stringify(cql.map((s) => s.name))}`);
});
