/**
 * The OpenTelemetry SDK, loaded only when tracing is on (src/process/server.ts imports this file dynamically, so
 * a process with tracing off never loads any of it; docs/tracing.md).
 *
 * Spans leave through OTLP/HTTP with the JSON encoding, batched. The SDK reads the standard variables itself:
 * the endpoint and headers (OTEL_EXPORTER_OTLP_*), the sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG),
 * the batching (OTEL_BSP_*) and the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
 *
 * What makes the spans:
 * - incoming requests: @fastify/otel, the Fastify organisation's instrumentation, which joins the W3C
 *   `traceparent` of the request and makes the server span;
 * - Redis: @opentelemetry/instrumentation-ioredis;
 * - PostgreSQL and Cassandra: no patching; the database layer opens a span per call at the one place it
 *   already measures every call (`dbCall` below, called from src/db/postgres/db.ts and cassandra/session.ts);
 * - jobs: the runner runs each job in a span whose parent is the context stored with the job at enqueue.
 */
import { createRequire } from 'node:module';
import {
  context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span,
} from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { FastifyOtelInstrumentation } from '@fastify/otel';
import type { FastifyRequest } from 'fastify';
import { VERSION } from '../version.ts';
import { installTracer, type DbSpan, type DbSystem, type TracedJob, type Tracer } from './context.ts';

const SCOPE = 'spate';

export interface Tracing {
  /** Exports what is still buffered and stops; the seams go back to doing nothing. */
  shutdown(): Promise<void>;
}

/** The span's name for a statement: its first keyword (`SELECT`, `INSERT`, `WITH`, ...). */
const operationOf = (statement: string | undefined, fallback: string) =>
  /^\s*([A-Za-z]+)/.exec(statement ?? '')?.[1]?.toUpperCase() ?? fallback;

function endWith(span: Span, failure: string | undefined): void {
  if (failure !== undefined) {
    span.setAttribute('error.type', failure);
    span.setStatus({ code: SpanStatusCode.ERROR, message: failure });
  }
  span.end();
}

/** Starts the SDK and installs the tracer into the seams; call before the app's modules load. */
export function startTracing(): Tracing {
  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'spate', [ATTR_SERVICE_VERSION]: VERSION }))
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the defaults above.
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  // The W3C trace-context propagator and the AsyncLocalStorage context manager.
  provider.register();

  const unregister = registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new FastifyOtelInstrumentation({
        // Hooks itself into every Fastify instance as it is created (a diagnostics channel), so the app needs no
        // change. The request span and the handler span; no span per lifecycle hook (a dozen per request).
        registerOnInitialization: true,
        instrumentHooks: false,
        requestHook: (span: Span, request: FastifyRequest) => {
          span.updateName(`${request.method} ${request.routeOptions.url ?? ''}`.trim());
          // The path without its query string, which may hold personal data or credentials (as in the logs).
          span.setAttribute('url.path', request.url.split('?', 1)[0]!);
        },
      }),
      // Only commands inside a trace: the invalidation bus and health probes would otherwise be a root span each.
      // The command's name only: its keys and values are the cache's entries (a user's name and email).
      new IORedisInstrumentation({ requireParentSpan: true, dbStatementSerializer: (command) => command }),
    ],
  });
  // ioredis is CommonJS: loaded here through `require`, it is patched now, and the app's later `import` of it
  // gets this same, patched, module.
  createRequire(import.meta.url)('ioredis');

  const tracer = provider.getTracer(SCOPE, VERSION);
  const installed: Tracer = {
    dbCall(system: DbSystem, operation: string, statement: string | undefined): DbSpan | undefined {
      // Calls outside a trace (job polling, probes, scrapes) would be a root span each.
      if (trace.getSpan(context.active()) === undefined) return undefined;
      const name = operationOf(statement, operation);
      const span = tracer.startSpan(`${name} ${system}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          'db.system.name': system,
          'db.operation.name': name,
          // The statement with its placeholders: values never reach the text, since they may be personal data.
          ...(statement !== undefined ? { 'db.query.text': statement } : {}),
        },
      });
      return { end: (failure) => endWith(span, failure) };
    },

    headers() {
      const carrier: Record<string, string> = {};
      propagation.inject(context.active(), carrier);
      return carrier;
    },

    inJob<T>(job: TracedJob, work: () => Promise<T>): Promise<T> {
      const parent = job.traceparent ? propagation.extract(ROOT_CONTEXT, { traceparent: job.traceparent }) : ROOT_CONTEXT;
      const span = tracer.startSpan(`job ${job.kind}`, {
        kind: SpanKind.CONSUMER,
        attributes: { 'spate.job.id': job.id, 'spate.job.kind': job.kind, 'spate.job.attempt': job.attempts },
      }, parent);
      return context.with(trace.setSpan(parent, span), work).then(
        (value) => { span.end(); return value; },
        (err: unknown) => {
          span.recordException(err instanceof Error ? err : String(err));
          endWith(span, err instanceof Error ? err.name : 'error');
          throw err;
        },
      );
    },

    logFields(): Record<string, string> {
      const span = trace.getSpan(context.active());
      if (span === undefined) return {};
      const { traceId, spanId } = span.spanContext();
      return { trace_id: traceId, span_id: spanId };
    },
  };
  installTracer(installed);

  return {
    async shutdown() {
      installTracer(undefined);
      unregister();
      await provider.shutdown();
    },
  };
}
