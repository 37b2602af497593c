/**
 * `GET /metrics` and `GET /metrics/prometheus`: the contract's JSON view of live figures, and the Prometheus text
 * exposition of the app's registry (at `/metrics` too when the `Accept` header prefers it).
 *
 * Percentiles come from a sliding window of the last 1024 response times (see the metrics plugin), so they say
 * how the service is doing now rather than since it started.
 *
 * With WORKERS > 1 both describe the whole process group, whichever worker answers: counts and pools are summed
 * over the workers, percentiles are computed over the union of their windows (src/platform/metrics-group.ts),
 * and `workers` lists each one.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { Registry } from 'prom-client';
import { negotiate } from '../../platform/http/accept.ts';
import { mergeParts, type MergedFigures } from '../../platform/metrics-group.ts';
import type { PoolStats } from '../../platform/probes.ts';
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
  }, { description: 'The main (users) pool' }),
  database_pools: Type.Record(Type.String(), Type.Object({ active: Count, idle: Count, waiting: Count, max: Count }), {
    description: 'Every pool the backend opened, by name (users, and accounts on PostgreSQL)',
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
  workers: Type.Array(Type.Object({
    worker: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'Cluster slot; null for a single process' }),
    pid: Count,
    total_requests: Count,
    in_flight: Count,
    p50_response_time_ms: Ms,
    p99_response_time_ms: Ms,
    database_connections: Type.Object({ active: Count, idle: Count, waiting: Count, max: Count }),
  }), { description: 'Each process of the group that answered (one without WORKERS)' }),
  workers_expected: count('Processes in the group; more than `workers` lists when some did not answer in time'),
  database_replicas: Type.Optional(Type.Array(Type.Object({
    name: Type.String({ description: 'host:port' }),
    state: Type.String({ description: 'up (serving reads), lagging (behind REPLICA_MAX_LAG_MS) or down' }),
    lag_ms: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'How far behind the primary its data may be now, at most (measured); null when down' }),
    lag_bytes: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
    reads: count('Reads (pages and streams) sent to it'),
  }), { description: 'Read replicas (DATABASE_REPLICA_URLS); their pools are in database_pools as replica:host:port' })),
  backend: Type.String(),
  // The users cache (src/modules/cache/): its GET /cache/status figures.
  cache: Type.Optional(Type.Unsafe<object>({ type: 'object', additionalProperties: true })),
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
const NO_POOL: PoolStats = { active: 0, idle: 0, waiting: 0, max: 0 };

/** The contract's figures from merged parts (one process, or the group). */
function figuresJson(s: MergedFigures) {
  const pool = s.pools.users ?? NO_POOL;
  return {
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
    database_pools: Object.fromEntries(Object.entries(s.pools).map(([name, p]) => [name, {
      active: p.active, idle: p.idle, waiting: p.waiting, max: p.max,
    }])),
    uptime_seconds: round(s.uptimeSeconds),
  };
}

const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { metrics } = app;

  // OpenMetrics is answered with the Prometheus text format too: Prometheus lists it as its fallback, and
  // prom-client's OpenMetrics renderer renames counters in place, which would corrupt later text scrapes.
  const sendPrometheus = async (reply: FastifyReply) =>
    reply.type(PROMETHEUS_TEXT).send(await metrics.prometheusText());

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
    const view = await metrics.group();
    const s = mergeParts(view.parts);
    return reply.type('application/json').send({
      ...figuresJson(s),
      workers: view.parts.map((p) => {
        const one = mergeParts([p]);
        const pool = one.pools.users ?? NO_POOL;
        return {
          worker: p.worker ?? null,
          pid: p.pid,
          total_requests: p.totalRequests,
          in_flight: p.inFlight,
          p50_response_time_ms: round(one.window.p50Ms),
          p99_response_time_ms: round(one.window.p99Ms),
          database_connections: { active: pool.active, idle: pool.idle, waiting: pool.waiting, max: pool.max },
        };
      }),
      workers_expected: view.expected,
      ...(app.backend.probes.replicas ? {
        database_replicas: app.backend.probes.replicas().map((r) => ({
          name: r.name, state: r.state, lag_ms: r.lagMs, lag_bytes: r.lagBytes, reads: r.reads,
        })),
      } : {}),
      backend: app.backend.name,
      cache: app.usersCache?.status(),
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
  const chosen = negotiate(accept, ['application/json', 'text/plain', 'application/openmetrics-text']);
  return chosen === 'text/plain' || chosen === 'application/openmetrics-text';
}
