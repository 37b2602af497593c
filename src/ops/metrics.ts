/**
 * `GET /metrics` and `GET /metrics/prometheus`: the contract's JSON view of live figures, and the Prometheus text
 * exposition of the app's registry (at `/metrics` too when the `Accept` header prefers it).
 *
 * Percentiles come from a sliding window of the last 1024 response times (see the metrics plugin), so they say
 * how the service is doing now rather than since it started.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { Registry } from 'prom-client';
import { Type } from 'typebox';

const tags = ['operations'];

const count = (description?: string) => Type.Integer({ minimum: 0, ...(description ? { description } : {}) });
const Count = count();
const Ms = Type.Number({ minimum: 0, description: 'milliseconds' });

const MetricsJson = Type.Object({
  total_requests: count('Requests received since start, this one included'),
  requests_by_status: Type.Object({ '1xx': Count, '2xx': Count, '3xx': Count, '4xx': Count, '5xx': Count }),
  in_flight: count('Requests being served now, this one included'),
  query_performance: Type.Object({
    avg_response_time_ms: Ms,
    p50_response_time_ms: Ms,
    p95_response_time_ms: Ms,
    p99_response_time_ms: Ms,
    max_response_time_ms: Ms,
    window_size: count('Responses the figures above cover (the most recent ones)'),
  }, { description: 'HTTP response times over a sliding window of recent requests' }),
  database_connections: Type.Object({
    active: Count,
    idle: Count,
    total: count('active + idle'),
    waiting: count('Callers queued for a connection'),
    max: Count,
  }),
  database: Type.Object({
    queries: count('Statements, transactions and cursors run since start'),
    errors: Count,
    errors_by_kind: Type.Object({ unavailable: Count, timeout: Count, bad_input: Count, other: Count }),
    avg_query_time_ms: Ms,
  }),
  database_hosts: Type.Optional(Type.Array(Type.Object({
    host: Type.String({ description: 'address:port' }),
    up: Type.Boolean({ description: 'The driver considers the host usable' }),
    open_connections: Count,
    in_flight: count('Requests sent to the host and not yet answered'),
  }), { description: 'Per-host driver figures (Cassandra backend only)' })),
  backend: Type.String(),
  uptime_seconds: Type.Number({ minimum: 0 }),
  timestamp: Type.String({ format: 'date-time' }),
}, { title: 'Metrics' });

const PROMETHEUS_TEXT = Registry.PROMETHEUS_CONTENT_TYPE;
const prometheusResponse = {
  200: {
    description: 'Prometheus text exposition format 0.0.4',
    content: { 'text/plain': { schema: Type.String() } },
  },
};

const round = (x: number) => Math.round(x * 1000) / 1000;

const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { metrics } = app;

  // OpenMetrics is answered with the Prometheus text format too: Prometheus lists it as its fallback, and
  // prom-client's OpenMetrics renderer renames counters in place, which would corrupt later text scrapes.
  const sendPrometheus = async (reply: FastifyReply) =>
    reply.type(PROMETHEUS_TEXT).send(await metrics.registry.metrics());

  app.get('/metrics', {
    schema: {
      tags, summary: 'Live service metrics',
      description: 'JSON by default; the Prometheus text exposition when `Accept` prefers `text/plain` or '
        + '`application/openmetrics-text` over `application/json`.',
      response: {
        200: {
          description: 'Live figures',
          content: { 'application/json': { schema: MetricsJson }, 'text/plain': { schema: Type.String() } },
        },
      },
    },
  }, async (request, reply) => {
    if (prefersPrometheus(request.headers.accept)) return sendPrometheus(reply);
    const s = metrics.snapshot();
    const pool = app.repository.poolStats();
    return reply.type('application/json').send({
      total_requests: s.totalRequests,
      requests_by_status: s.byStatusClass,
      in_flight: s.inFlight,
      query_performance: {
        avg_response_time_ms: round(s.window.avgMs),
        p50_response_time_ms: round(s.window.p50Ms),
        p95_response_time_ms: round(s.window.p95Ms),
        p99_response_time_ms: round(s.window.p99Ms),
        max_response_time_ms: round(s.window.maxMs),
        window_size: s.window.samples,
      },
      database_connections: {
        active: pool.active, idle: pool.idle, total: pool.active + pool.idle, waiting: pool.waiting, max: pool.max,
      },
      database: {
        queries: s.db.queries,
        errors: s.db.failed,
        errors_by_kind: s.db.errors,
        avg_query_time_ms: round(s.db.avgMs),
      },
      ...(pool.hosts ? {
        database_hosts: pool.hosts.map((h) => ({
          host: h.host, up: h.up, open_connections: h.openConnections, in_flight: h.inFlight,
        })),
      } : {}),
      backend: app.repository.backend,
      uptime_seconds: round(s.uptimeSeconds),
      timestamp: new Date().toISOString(),
    });
  });

  app.get('/metrics/prometheus', {
    schema: { tags, summary: 'Prometheus text exposition', response: prometheusResponse },
  }, async (_request, reply) => sendPrometheus(reply));
};

export default metricsRoutes;

/**
 * True when `Accept` ranks the Prometheus text (`text/plain`) or OpenMetrics above JSON. Each candidate takes
 * the quality of the most specific range matching it; a tie goes to JSON, so `*\/*` and clients that list
 * `application/json, text/plain` (axios) get JSON, while Prometheus (OpenMetrics first, JSON only via `*\/*`)
 * and `curl -H 'Accept: text/plain'` get the exposition.
 */
export function prefersPrometheus(accept: string | undefined): boolean {
  if (accept === undefined || accept === '') return false;
  const ranges = accept.split(',').map(parseRange);
  const json = quality(ranges, 'application', 'json');
  const prom = Math.max(quality(ranges, 'text', 'plain'), quality(ranges, 'application', 'openmetrics-text'));
  return prom > json;
}

interface MediaRange { type: string; subtype: string; q: number }

function parseRange(part: string): MediaRange {
  const [range = '', ...params] = part.split(';');
  const [type = '', subtype = ''] = range.trim().toLowerCase().split('/');
  let q = 1;
  for (const p of params) {
    const [k, v] = p.split('=').map((x) => x.trim());
    if (k === 'q' && v !== undefined) q = Number.isFinite(Number(v)) ? Number(v) : 0;
  }
  return { type, subtype, q };
}

/** The quality of `type/subtype` under the most specific matching range (exact, then `type/*`, then `*\/*`). */
function quality(ranges: MediaRange[], type: string, subtype: string): number {
  let best = -1;
  let q = 0;
  for (const r of ranges) {
    const specificity = r.type === type && r.subtype === subtype ? 2
      : r.type === type && r.subtype === '*' ? 1
        : r.type === '*' && r.subtype === '*' ? 0 : -1;
    if (specificity > best) {
      best = specificity;
      q = r.q;
    }
  }
  return q;
}
