/**
 * The figures of a process group (WORKERS > 1): each worker's `MetricsPart`, plain data that crosses the cluster's
 * IPC channel, and how the parts of every worker merge into the one view `/metrics` and the dashboard show.
 *
 * Merging: counters, in-flight requests and pool connections are summed (each worker has its own pool); the
 * window percentiles are computed again over the union of every worker's window samples (exact for those
 * samples, not an average of percentiles); a database host is up only if every worker sees it up. The
 * Prometheus families merge by prom-client's own aggregation (`AggregatorRegistry.aggregate`): each family by
 * its `aggregator` (`sum` unless it says otherwise), histograms bucket by bucket.
 */
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { HostStats, PoolStats } from './probes.ts';

export type StatusClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx';
export type DbErrorKind = 'unavailable' | 'timeout' | 'bad_input' | 'other';

/** One process's live figures as plain data (it crosses IPC as JSON). */
export interface MetricsPart {
  pid: number;
  /** The cluster slot (1..WORKERS) of the worker, stamped by the primary; absent for a single process. */
  worker?: number;
  totalRequests: number;
  inFlight: number;
  byStatusClass: Record<StatusClass, number>;
  /** The most recent response times in ms (the sliding window), in no particular order. */
  windowMs: number[];
  db: { queries: number; failed: number; totalMs: number; errors: Record<DbErrorKind, number> };
  pools: Record<string, PoolStats>;
  uptimeSeconds: number;
  /** The Prometheus registry as prom-client's JSON (`getMetricsAsJSON`). */
  prom: MetricObjectWithValues<MetricValue<string>>[];
}

/** What a metrics reader gets: the parts that answered, and how many workers were asked. */
export interface GroupView {
  parts: MetricsPart[];
  /** Workers in the group; `parts.length` is smaller when some did not answer in time (starting, dying). */
  expected: number;
}

export interface WindowStats { samples: number; avgMs: number; p50Ms: number; p95Ms: number; p99Ms: number; maxMs: number }

/** Nearest-rank statistics of `sorted` (ascending): the smallest sample with at least p% at or below it. */
export function windowStats(sorted: ArrayLike<number>): WindowStats {
  const n = sorted.length;
  if (n === 0) return { samples: 0, avgMs: 0, p50Ms: 0, p95Ms: 0, p99Ms: 0, maxMs: 0 };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  const rank = (p: number) => sorted[Math.max(0, Math.ceil(p * n) - 1)]!;
  return { samples: n, avgMs: sum / n, p50Ms: rank(0.5), p95Ms: rank(0.95), p99Ms: rank(0.99), maxMs: sorted[n - 1]! };
}

/** The merged figures of several parts (one part merges to itself). */
export interface MergedFigures {
  totalRequests: number;
  inFlight: number;
  byStatusClass: Record<StatusClass, number>;
  window: WindowStats;
  db: { queries: number; failed: number; avgMs: number; errors: Record<DbErrorKind, number> };
  pools: Record<string, PoolStats>;
  /** The longest-running worker's uptime. */
  uptimeSeconds: number;
}

const sumPools = (a: PoolStats, b: PoolStats): PoolStats => ({
  active: a.active + b.active,
  idle: a.idle + b.idle,
  waiting: a.waiting + b.waiting,
  max: a.max + b.max,
  ...(a.hosts || b.hosts ? { hosts: mergeHosts([...(a.hosts ?? []), ...(b.hosts ?? [])]) } : {}),
});

function mergeHosts(hosts: HostStats[]): HostStats[] {
  const byHost = new Map<string, HostStats>();
  for (const h of hosts) {
    const seen = byHost.get(h.host);
    byHost.set(h.host, seen === undefined ? { ...h } : {
      host: h.host,
      up: seen.up && h.up,
      openConnections: seen.openConnections + h.openConnections,
      inFlight: seen.inFlight + h.inFlight,
    });
  }
  return [...byHost.values()];
}

export function mergeParts(parts: readonly MetricsPart[]): MergedFigures {
  const byStatusClass: Record<StatusClass, number> = { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 };
  const errors: Record<DbErrorKind, number> = { unavailable: 0, timeout: 0, bad_input: 0, other: 0 };
  const pools: Record<string, PoolStats> = {};
  let totalRequests = 0, inFlight = 0, queries = 0, failed = 0, totalMs = 0, uptimeSeconds = 0, samples = 0;
  for (const p of parts) {
    totalRequests += p.totalRequests;
    inFlight += p.inFlight;
    for (const k of Object.keys(byStatusClass) as StatusClass[]) byStatusClass[k] += p.byStatusClass[k];
    for (const k of Object.keys(errors) as DbErrorKind[]) errors[k] += p.db.errors[k];
    queries += p.db.queries;
    failed += p.db.failed;
    totalMs += p.db.totalMs;
    uptimeSeconds = Math.max(uptimeSeconds, p.uptimeSeconds);
    samples += p.windowMs.length;
    for (const [name, pool] of Object.entries(p.pools)) pools[name] = pools[name] ? sumPools(pools[name], pool) : pool;
  }
  const all = new Float64Array(samples);
  let at = 0;
  for (const p of parts) {
    all.set(p.windowMs, at);
    at += p.windowMs.length;
  }
  return {
    totalRequests,
    inFlight,
    byStatusClass,
    window: windowStats(all.sort()),
    db: { queries, failed, avgMs: queries === 0 ? 0 : totalMs / queries, errors },
    pools,
    uptimeSeconds,
  };
}

/** The Prometheus text exposition of the whole group. */
export function groupText(parts: readonly MetricsPart[]): Promise<string> {
  return AggregatorRegistry.aggregate(parts.map((p) => p.prom)).metrics();
}
