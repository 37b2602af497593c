/**
 * The metrics plugin: one prom-client Registry per app (never the global one, so several apps in one process do
 * not collide), fed by two cheap Fastify hooks and by the storage `onQuery` hook, and read by `GET /metrics`.
 *
 * The per-request path is benchmarked against bare Fastify, so it allocates nothing in the steady state: counters
 * and the in-flight figure are plain numbers that gauges read in `collect()` at scrape time, and the two duration
 * histograms are our own (`FastHistogram`), because prom-client's `observe` hashes a label object into a string
 * on every call (about 1.4 µs against 0.08 µs here). prom-client still renders them: they implement its metric
 * interface.
 *
 * With WORKERS > 1 every reader goes through `group()`: the process layer (src/process/cluster.ts) joins the
 * worker to its group, and the figures of every worker are merged (src/platform/metrics-group.ts).
 */
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { ErrorKind } from './errors.ts';
import type { RunnerObserver } from './jobs/runner.ts';
import type { HostStats, PoolStats, QueryObserver, ReplicaStats } from './probes.ts';
import { sharedWithDeadline } from './lib/deadline.ts';
import { groupText, windowStats, type DbErrorKind, type GroupView, type MetricsPart } from './metrics-group.ts';

export type { DbErrorKind, GroupView, MetricsPart } from './metrics-group.ts';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

/** The kinds a database failure is counted under (DbErrorKind); every other kind (a bug, mostly) is `other`. */
const DB_ERROR_KINDS: readonly DbErrorKind[] = ['unavailable', 'timeout', 'bad_input', 'other'];
const dbKindOf = (kind: ErrorKind): DbErrorKind =>
  kind === 'unavailable' || kind === 'timeout' || kind === 'bad_input' ? kind : 'other';

/** The figures of every pool the backend opened, by name (`users` first); none before the backend is open. */
export type PoolsReader = () => Record<string, PoolStats>;

/** Jobs queued and running by kind, read from the queue at scrape time. */
export type JobCountsReader = () => Promise<{ kind: string; state: string; count: number }[]>;

/** How long a scrape waits for the queue's counts of the `jobs` gauge. */
const JOB_COUNTS_MS = 500;

/** Seconds; a job waits milliseconds when workers are idle, and may run for minutes. */
const JOB_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * The job metrics: outcomes per kind (succeeded, retried, failed, cancelled, lost, returned at shutdown), queue
 * latency (from due to started) and run time, and the queued and running gauges. A job costs far more than an
 * observation, so prom-client's own histograms do here.
 */
function jobMetrics(registry: Registry): { observer: RunnerObserver; read(reader: JobCountsReader): void } {
  let counts: JobCountsReader = async () => [];
  // A hung queue must not hang the scrape (nor the dashboard's frames, which read this registry): one read at a
  // time, each scrape waiting for it at most JOB_COUNTS_MS.
  const readCounts = sharedWithDeadline(() => counts(), JOB_COUNTS_MS);
  const started = new Counter({ name: 'jobs_started_total', help: 'Job attempts started, by kind', labelNames: ['kind'], registers: [registry] });
  const finished = new Counter({
    name: 'jobs_finished_total', help: 'Job attempts ended, by kind and outcome (succeeded, retried, failed, cancelled, lost, returned)',
    labelNames: ['kind', 'outcome'], registers: [registry],
  });
  const latency = new Histogram({
    name: 'job_queue_latency_seconds', help: 'From when a job was due to when an attempt started, by kind',
    labelNames: ['kind'], buckets: JOB_BUCKETS, registers: [registry],
  });
  const runTime = new Histogram({
    name: 'job_run_duration_seconds', help: 'Run time of job attempts, by kind', labelNames: ['kind'], buckets: JOB_BUCKETS, registers: [registry],
  });
  new Gauge({
    name: 'jobs', help: 'Jobs queued or running now, by kind and state, across every instance', labelNames: ['kind', 'state'], registers: [registry],
    async collect() {
      // The queue away or slow: the gauge keeps its last figures rather than failing or holding the scrape.
      const rows = await readCounts().catch(() => undefined);
      if (!rows) return;
      this.reset();
      for (const r of rows) this.set({ kind: r.kind, state: r.state }, r.count);
    },
  });
  return {
    observer: {
      started(kind, waitS) { started.inc({ kind }); latency.observe({ kind }, waitS); },
      finished(kind, outcome, runS) { finished.inc({ kind, outcome }); runTime.observe({ kind }, runS); },
    },
    read(reader) { counts = reader; },
  };
}

/** Live figures for the JSON view of `/metrics`. */
export interface MetricsSnapshot {
  /** Requests received since the app started, the one asking included. */
  totalRequests: number;
  inFlight: number;
  /** Completed responses by status class. */
  byStatusClass: { '1xx': number; '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** Response times in ms over the sliding window of the last `samples` responses. */
  window: { samples: number; avgMs: number; p50Ms: number; p95Ms: number; p99Ms: number; maxMs: number };
  db: { queries: number; failed: number; avgMs: number; errors: Record<DbErrorKind, number> };
  uptimeSeconds: number;
}

/** Gathers the parts of every worker of the group (the cluster's IPC). */
export type GroupCollector = () => Promise<GroupView>;

export interface Metrics {
  readonly registry: Registry;
  /** The storage adapter's `onQuery` hook: one call per statement, transaction, cursor or page. */
  readonly observeQuery: QueryObserver;
  /** Where the pool gauges read their figures, once the backend is open (the app assembly wires it). */
  readPools(reader: PoolsReader): void;
  /** Where the read-replica gauges read their figures, when the backend has replicas (the app assembly wires it). */
  readReplicas(reader: () => ReplicaStats[]): void;
  /** The job runner's hook: jobs started and ended, per kind. */
  readonly jobs: RunnerObserver;
  /** Where the queued and running job gauges read their figures (the queue, for every instance at once). */
  readJobCounts(reader: JobCountsReader): void;
  snapshot(): MetricsSnapshot;
  /** This process's figures as plain data, for the group (and for `group()` of a single process). */
  part(): Promise<MetricsPart>;
  /** Makes `group()` read the whole process group through `collect` (src/process/cluster.ts). */
  joinGroup(collect: GroupCollector): void;
  /** The figures of every process serving this port: this one alone unless it joined a group. */
  group(): Promise<GroupView>;
  /** The Prometheus text of the group (of this registry alone for a single process). */
  prometheusText(): Promise<string>;
  /**
   * An answer given outside the request hooks (src/platform/http/refusals.ts: the HTTP parser's and the
   * router's refusals), counted as route `unmatched`; `newRequest` when no hook counted the request itself.
   */
  observeRefusal(method: string, status: number, newRequest: boolean): void;
}

/** Seconds; requests here take well under a millisecond, and `/long_running_query` takes 10 s. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** One labelled series of a `FastHistogram`: per-bucket counts (not cumulative), sum and count. */
class Series {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly labels: Readonly<Record<string, string>>, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/**
 * A histogram whose series are looked up once and then observed with no allocation. It implements the part of
 * prom-client's metric interface the Registry uses (`name`, `help`, `type`, `get`, `reset`).
 */
class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    private readonly bounds: readonly number[] = DURATION_BUCKETS,
  ) {}

  /** The series for these label values (in `labelNames` order), created on first use. */
  series(values: readonly string[]): Series {
    const key = values.join('\u0000');
    let s = this.#series.get(key);
    if (s === undefined) {
      s = new Series(Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]!])), this.bounds);
      this.#series.set(key, s);
    }
    return s;
  }

  async get() {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const s of this.#series.values()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le: '+Inf' }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.#series.clear();
  }
}

/** The last `size` response times (ms) in a ring, for live percentiles without unbounded memory. */
class SlidingWindow {
  readonly #ring: Float64Array;
  readonly #scratch: Float64Array;
  #next = 0;
  #filled = 0;

  constructor(size: number) {
    this.#ring = new Float64Array(size);
    this.#scratch = new Float64Array(size);
  }

  record(ms: number): void {
    this.#ring[this.#next] = ms;
    this.#next = (this.#next + 1) % this.#ring.length;
    if (this.#filled < this.#ring.length) this.#filled++;
  }

  stats(): MetricsSnapshot['window'] {
    const sorted = this.#scratch.subarray(0, this.#filled);
    sorted.set(this.#ring.subarray(0, this.#filled));
    return windowStats(sorted.sort());
  }

  /** A copy of the samples held, for the group's merged percentiles (scrape time only). */
  samples(): number[] {
    return Array.from(this.#ring.subarray(0, this.#filled));
  }
}

/** How many recent responses the percentiles of `/metrics` cover. */
const WINDOW_SIZE = 1024;

/**
 * prom-client's gauges named like counters (`promtool check metrics`: a non-counter must not end in `_total`).
 * Dropped, not renamed: the per-type gauges beside them (`nodejs_active_handles{type}`, ...) carry the same
 * figures, and `sum()` over them is the total.
 */
const SUFFIXED_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const NO_POOL: PoolStats = { active: 0, idle: 0, waiting: 0, max: 0 };
const NO_POOLS: Record<string, PoolStats> = {};

export default fp(
  async (app) => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    for (const name of SUFFIXED_GAUGES) registry.removeSingleMetric(name);
    const started = performance.now();
    let pools: PoolsReader = () => NO_POOLS;
    const pool = (): PoolStats => pools().users ?? NO_POOL;

    let received = 0;
    const byClass = new Float64Array(6);
    const window = new SlidingWindow(WINDOW_SIZE);
    const dbErrors: Record<DbErrorKind, number> = { unavailable: 0, timeout: 0, bad_input: 0, other: 0 };

    const http = new FastHistogram(
      'http_request_duration_seconds', 'HTTP request duration by method, route pattern and status',
      ['method', 'route', 'status'],
    );
    const query = new FastHistogram('db_query_duration_seconds', 'Database statement duration by outcome', ['outcome']);
    const querySuccess = query.series(['success']);
    const queryError = query.series(['error']);
    const errorsByKind = new Counter({
      name: 'db_errors_total', help: 'Failed database statements by kind', labelNames: ['kind'], registers: [registry],
    });
    for (const kind of DB_ERROR_KINDS) errorsByKind.inc({ kind }, 0);
    for (const m of [http, query]) registry.registerMetric(m as unknown as Metric);

    new Gauge({
      name: 'http_requests_in_flight', help: 'Requests being served', registers: [registry],
      collect() { this.set(app.inFlight.count); },
    });
    // One series per pool the backend opened (`pool="users"`, `pool="accounts"`), read at scrape time.
    const poolGauge = (name: string, help: string, read: (p: PoolStats) => number) =>
      new Gauge({
        name, help, labelNames: ['pool'], registers: [registry],
        collect() {
          this.reset();
          for (const [name, p] of Object.entries(pools())) this.set({ pool: name }, read(p));
        },
      });
    poolGauge('db_pool_active_connections', 'Pooled connections running a query, cursor or transaction', (p) => p.active);
    poolGauge('db_pool_idle_connections', 'Pooled connections free (open or not yet opened)', (p) => p.idle);
    poolGauge('db_pool_waiting_requests', 'Callers queued for a pooled connection', (p) => p.waiting);
    poolGauge('db_pool_max_connections', 'Upper bound of pooled connections', (p) => p.max);
    // Per-host driver figures (Cassandra): one series per host the driver knows, read at scrape time.
    const hostGauge = (name: string, help: string, read: (h: HostStats) => number, aggregator: 'sum' | 'min' = 'sum') =>
      new Gauge({
        name, help, labelNames: ['host'], registers: [registry], aggregator,
        collect() {
          this.reset();
          for (const h of pool().hosts ?? []) this.set({ host: h.host }, read(h));
        },
      });
    // Across workers a host is up only if every worker's driver sees it up.
    hostGauge('db_host_up', 'The driver considers the database host usable (1) or down (0)', (h) => (h.up ? 1 : 0), 'min');
    hostGauge('db_host_open_connections', 'Driver connections open to the database host', (h) => h.openConnections);
    hostGauge('db_host_in_flight_requests', 'Requests sent to the database host and not yet answered', (h) => h.inFlight);

    // One series per read replica (`replica="host:port"`), read at scrape time; none without replicas.
    let replicas: () => ReplicaStats[] = () => [];
    const replicaGauge = (name: string, help: string, read: (r: ReplicaStats) => number | null) =>
      new Gauge({
        name, help, labelNames: ['replica'], registers: [registry],
        collect() {
          this.reset();
          for (const r of replicas()) {
            const value = read(r);
            if (value !== null) this.set({ replica: r.name }, value);
          }
        },
      });
    replicaGauge('db_replica_up', 'The read replica serves reads (1): answering and within REPLICA_MAX_LAG_MS', (r) => (r.state === 'up' ? 1 : 0));
    replicaGauge('db_replica_lag_seconds', 'How far behind the primary the read replica may be, at most (measured)', (r) => (r.lagMs === null ? null : r.lagMs / 1000));
    replicaGauge('db_replica_lag_bytes', 'WAL bytes the read replica had not yet replayed at its last probe', (r) => r.lagBytes);
    new Counter({
      name: 'db_replica_reads_total', help: 'Reads (pages and streams) sent to the read replica', labelNames: ['replica'],
      registers: [registry],
      collect() {
        this.reset();
        for (const r of replicas()) this.inc({ replica: r.name }, r.reads);
      },
    });

    // route -> method -> status -> series, so the hot path does three Map lookups and no string building.
    const seriesCache = new Map<string, Map<string, Map<number, Series>>>();
    function httpSeries(route: string, method: string, status: number): Series {
      let byMethod = seriesCache.get(route);
      if (byMethod === undefined) seriesCache.set(route, (byMethod = new Map()));
      let byStatus = byMethod.get(method);
      if (byStatus === undefined) byMethod.set(method, (byStatus = new Map()));
      let s = byStatus.get(status);
      if (s === undefined) byStatus.set(status, (s = http.series([method, route, String(status)])));
      return s;
    }

    // Callback-style hooks: an async hook would allocate a promise per request.
    app.addHook('onRequest', (_request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => {
      received++;
      done();
    });

    app.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
      const ms = reply.elapsedTime;
      const status = reply.statusCode;
      httpSeries(request.routeOptions.url ?? 'unmatched', request.method, status).observe(ms / 1000);
      window.record(ms);
      byClass[Math.min(5, Math.floor(status / 100))]!++;
      done();
    });

    // The adapter reports the kind it mapped the failure to (the same mapping that decided the response status),
    // so this stays backend-neutral.
    const observeQuery: QueryObserver = (seconds, kind) => {
      if (kind === undefined) {
        querySuccess.observe(seconds);
        return;
      }
      queryError.observe(seconds);
      const counted = dbKindOf(kind);
      dbErrors[counted]++;
      errorsByKind.inc({ kind: counted });
    };

    const observeRefusal = (method: string, status: number, newRequest: boolean): void => {
      if (newRequest) received++;
      httpSeries('unmatched', method, status).observe(0);
      byClass[Math.min(5, Math.floor(status / 100))]!++;
    };

    const part = async (): Promise<MetricsPart> => {
      const s = snapshot();
      return {
        pid: process.pid,
        totalRequests: s.totalRequests,
        inFlight: s.inFlight,
        byStatusClass: s.byStatusClass,
        windowMs: window.samples(),
        db: { queries: s.db.queries, failed: s.db.failed, totalMs: s.db.avgMs * s.db.queries, errors: s.db.errors },
        pools: pools(),
        uptimeSeconds: s.uptimeSeconds,
        prom: await registry.getMetricsAsJSON(),
      };
    };
    let collect: GroupCollector | undefined;

    const snapshot = (): MetricsSnapshot => {
      const queries = querySuccess.count + queryError.count;
      return {
        totalRequests: received,
        inFlight: app.inFlight.count,
        byStatusClass: { '1xx': byClass[1]!, '2xx': byClass[2]!, '3xx': byClass[3]!, '4xx': byClass[4]!, '5xx': byClass[5]! },
        window: window.stats(),
        db: {
          queries,
          failed: queryError.count,
          avgMs: queries === 0 ? 0 : ((querySuccess.sum + queryError.sum) / queries) * 1000,
          errors: { ...dbErrors },
        },
        uptimeSeconds: (performance.now() - started) / 1000,
      };
    };
    const jobs = jobMetrics(registry);

    app.decorate('metrics', {
      registry,
      observeQuery,
      readPools(reader) {
        pools = reader;
      },
      readReplicas(reader) {
        replicas = reader;
      },
      jobs: jobs.observer,
      readJobCounts: jobs.read,
      observeRefusal,
      snapshot,
      part,
      joinGroup(collector) {
        collect = collector;
      },
      group: async () => (collect ? collect() : { parts: [await part()], expected: 1 }),
      prometheusText: async () => (collect ? groupText((await collect()).parts) : registry.metrics()),
    } satisfies Metrics);
  },
  { name: 'metrics', dependencies: ['in-flight'] },
);
