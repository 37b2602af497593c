/**
 * The tracing seams in one process (docs/tracing.md): which OTEL_* settings turn tracing on and which are refused,
 * the seams doing nothing while it is off, and, with the SDK started, `traceHeaders()` (what an outgoing webhook
 * carries) and a job's span joining the trace stored with it. The end-to-end tree is test/tracing.test.ts.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { context, trace } from '@opentelemetry/api';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { currentTraceparent, runTracedJob, traceHeaders, tracer } from '../src/platform/tracing/context.ts';

const tracingOn = (env: Record<string, string>) => loadConfig({ DATABASE_URL: 'postgres://x@localhost/x', ...env }).tracing.enabled;

test('tracing is on when an OTLP endpoint is set or OTEL_TRACES_EXPORTER=otlp, and off by default', () => {
  assert.equal(tracingOn({}), false);
  assert.equal(tracingOn({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }), true);
  assert.equal(tracingOn({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }), true);
  assert.equal(tracingOn({ OTEL_TRACES_EXPORTER: 'otlp' }), true);
  assert.equal(tracingOn({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }), false);
  assert.equal(tracingOn({ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' }), false);
});

test('an OTEL_* value Spate cannot honour is refused at start, naming the variable', () => {
  for (const [name, value] of [
    ['OTEL_EXPORTER_OTLP_PROTOCOL', 'http/protobuf'],
    ['OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc'],
    ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'grpc'],
    ['OTEL_TRACES_EXPORTER', 'zipkin'],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', 'collector:4318'],
    ['OTEL_TRACES_SAMPLER', 'sometimes'],
    ['OTEL_TRACES_SAMPLER_ARG', '2'],
  ] as const) {
    assert.throws(() => tracingOn({ [name]: value }), (err: Error) => err instanceof ConfigError && err.message.includes(name), `${name}=${value}`);
  }
});

test('with tracing off the seams do nothing: no headers, no trace stored, the job just runs', async () => {
  assert.equal(tracer(), undefined);
  assert.deepEqual(traceHeaders(), {});
  assert.equal(currentTraceparent(), null);
  assert.equal(await runTracedJob({ id: 'j', kind: 'k', attempts: 1, traceparent: null }, async () => 42), 42);
});

describe('with the SDK started', () => {
  let stop: (() => Promise<void>) | undefined;
  const received: string[] = [];
  const sink = createServer((req, res) => { req.resume(); req.on('end', () => { received.push(req.url ?? ''); res.end('{}'); }); });

  before(async () => {
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
    const { startTracing } = await import('../src/platform/tracing/sdk.ts');
    stop = startTracing().shutdown;
  });
  after(async () => {
    await stop?.();
    sink.close();
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  });

  test('traceHeaders() gives the traceparent of the active span, for an outgoing request', () => {
    assert.deepEqual(traceHeaders(), {}, 'nothing outside a span');
    trace.getTracer('test').startActiveSpan('outgoing', (span) => {
      const { traceId, spanId } = span.spanContext();
      assert.deepEqual(traceHeaders(), { traceparent: `00-${traceId}-${spanId}-01` });
      assert.equal(currentTraceparent(), `00-${traceId}-${spanId}-01`);
      span.end();
    });
  });

  test("a job's span is a child of the context stored with it; a job without one starts its own trace", async () => {
    const stored = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const inStored = await runTracedJob({ id: 'j1', kind: 'demo', attempts: 1, traceparent: stored }, async () =>
      trace.getSpan(context.active())!.spanContext());
    assert.equal(inStored.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.notEqual(inStored.spanId, 'b7ad6b7169203331');
    const own = await runTracedJob({ id: 'j2', kind: 'demo', attempts: 1, traceparent: null }, async () =>
      trace.getSpan(context.active())!.spanContext());
    assert.notEqual(own.traceId, '0af7651916cd43dd8448eb211c80319c');
    await assert.rejects(runTracedJob({ id: 'j3', kind: 'demo', attempts: 1, traceparent: stored }, async () => {
      throw new Error('boom');
    }), /boom/);
  });

  test('a database call outside any trace makes no span (polls and probes would be a root span each)', () => {
    assert.equal(tracer()!.dbCall('postgresql', 'query', 'SELECT 1'), undefined);
    trace.getTracer('test').startActiveSpan('request', (span) => {
      const call = tracer()!.dbCall('postgresql', 'query', 'SELECT 1');
      assert.ok(call);
      call.end();
      span.end();
    });
  });
});
