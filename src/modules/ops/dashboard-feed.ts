/**
 * What the dashboard shows, one frame per tick: the group's figures (src/platform/metrics-group.ts) turned into
 * rates over the time since the previous frame of the same stream, for the whole group and for each worker, and
 * the job queue's panel (src/modules/ops/dashboard-jobs.ts).
 *
 * The group's changes are the sums of each worker's own changes (keyed by pid), so a worker that restarts from
 * zero, or one that did not answer this time, takes nothing away from the others. docs/operations.md
 * ("Dashboard") says where each panel's figure comes from.
 */
import { mergeParts, type GroupView, type MetricsPart } from '../../platform/metrics-group.ts';
import type { PoolStats } from '../../platform/probes.ts';
import { LAYER_ORDER } from '../cache/cached-users.ts';
import type { QueueRead, RecentFailure } from './dashboard-jobs.ts';

export interface LayerFigures {
  name: string;
  hits: number;
  misses: number;
  /** hits / (hits + misses) of this layer; null when it was not asked. */
  hit_ratio: number | null;
}

/** The users cache since the previous frame. */
export interface CacheFigures {
  /** Lookups: the first layer's hits and misses (every lookup asks it first). */
  lookups: number;
  /** Lookups some layer answered, over `lookups`; null when there were none (nothing to divide). */
  hit_ratio: number | null;
  layers: LayerFigures[];
}

export interface Figures {
  total_requests: number;
  in_flight: number;
  /** Requests per second since the previous frame (0 in the first). */
  rate_rps: number;
  /** Share of the responses since the previous frame that were 5xx (0 when there were none). */
  error_ratio: number;
  /** Share of them that were 4xx. */
  client_error_ratio: number;
  p50_ms: number;
  p99_ms: number;
  pool: { active: number; idle: number; waiting: number; max: number };
  /** Null when the service has no cache (CACHE_MODE=off). */
  cache: CacheFigures | null;
}

export interface JobsFigures {
  /** The queue did not answer within the read's deadline: `queued`, `running`, `recent_failures` are null. */
  unavailable: boolean;
  /** Across every instance (the queue's own counts). */
  queued: number | null;
  running: number | null;
  /** Attempts ended since each process of the group started, by outcome (jobs_finished_total), summed. */
  finished: Record<string, number>;
  recent_failures: RecentFailure[] | null;
}

export interface Frame extends Figures {
  /** Epoch milliseconds. */
  t: number;
  workers: (Figures & { worker: number | null; pid: number })[];
  workers_expected: number;
  /** Null when the service has no job queue. */
  jobs: JobsFigures | null;
}

export interface FrameOptions {
  /** The service has a users cache (CACHE_MODE is not off). */
  cache: boolean;
}

interface Counts { t: number; total: number; answered: number; e4: number; e5: number }
/** A worker's cache counters as read: layer -> hits and misses since it started. */
type LayerCounts = Map<string, { hits: number; misses: number }>;

const NO_POOL: PoolStats = { active: 0, idle: 0, waiting: 0, max: 0 };
const round = (x: number) => Math.round(x * 1000) / 1000;
const ratio = (part: number, whole: number) => (whole > 0 ? round(Math.min(1, part / whole)) : null);
/** The outcomes the panel always shows, 0 or not; others appear once they happen. */
const OUTCOMES = ['succeeded', 'failed', 'retried'];

/** The values of one prom-client family in a part's JSON, with their labels. */
function series(part: MetricsPart, name: string): { labels: Record<string, string | number>; value: number }[] {
  return (part.prom.find((m) => m.name === name)?.values ?? []) as { labels: Record<string, string | number>; value: number }[];
}

function layerCounts(part: MetricsPart): LayerCounts {
  const counts: LayerCounts = new Map();
  const at = (layer: string) => counts.get(layer) ?? counts.set(layer, { hits: 0, misses: 0 }).get(layer)!;
  for (const v of series(part, 'cache_hits_total')) at(String(v.labels.layer)).hits += v.value;
  for (const v of series(part, 'cache_misses_total')) at(String(v.labels.layer)).misses += v.value;
  return counts;
}

/** The change from `before` to `now`, layer by layer; a counter that went down (a restart) changed by 0. */
function layerDelta(now: LayerCounts, before: LayerCounts | undefined): LayerCounts {
  const delta: LayerCounts = new Map();
  for (const [layer, c] of now) {
    const b = before?.get(layer);
    delta.set(layer, before === undefined ? { hits: 0, misses: 0 } : {
      hits: Math.max(0, c.hits - (b?.hits ?? 0)), misses: Math.max(0, c.misses - (b?.misses ?? 0)),
    });
  }
  return delta;
}

function addLayers(into: LayerCounts, more: LayerCounts): LayerCounts {
  for (const [layer, c] of more) {
    const seen = into.get(layer);
    into.set(layer, seen === undefined ? { ...c } : { hits: seen.hits + c.hits, misses: seen.misses + c.misses });
  }
  return into;
}

function cacheFigures(delta: LayerCounts): CacheFigures {
  const layers = LAYER_ORDER.filter((name) => delta.has(name)).map((name) => {
    const { hits, misses } = delta.get(name)!;
    return { name, hits, misses, hit_ratio: ratio(hits, hits + misses) };
  });
  const first = layers[0];
  const lookups = first === undefined ? 0 : first.hits + first.misses;
  return { lookups, hit_ratio: ratio(layers.reduce((n, l) => n + l.hits, 0), lookups), layers };
}

function finishedJobs(parts: readonly MetricsPart[]): Record<string, number> {
  const finished: Record<string, number> = Object.fromEntries(OUTCOMES.map((o) => [o, 0]));
  for (const p of parts) {
    for (const v of series(p, 'jobs_finished_total')) {
      const outcome = String(v.labels.outcome);
      finished[outcome] = (finished[outcome] ?? 0) + v.value;
    }
  }
  return finished;
}

function jobsFigures(parts: readonly MetricsPart[], queue: QueueRead): JobsFigures {
  const finished = finishedJobs(parts);
  if (queue.unavailable) return { unavailable: true, queued: null, running: null, finished, recent_failures: null };
  return { unavailable: false, queued: queue.queued, running: queue.running, finished, recent_failures: queue.recent_failures };
}

/** A frame source for one stream: it remembers the previous counts, for the whole group and per worker. */
export function frames({ cache }: FrameOptions): (view: GroupView, queue: QueueRead | undefined) => Frame {
  const previous = new Map<string, Counts>();
  // By pid, kept while the stream lasts: a worker that misses a frame is measured from its last answer.
  const previousLayers = new Map<number, LayerCounts>();

  function figures(key: string, parts: readonly MetricsPart[], t: number, layers: LayerCounts | undefined): Figures {
    const m = mergeParts(parts);
    const c = m.byStatusClass;
    const now: Counts = { t, total: m.totalRequests, answered: c['1xx'] + c['2xx'] + c['3xx'] + c['4xx'] + c['5xx'], e4: c['4xx'], e5: c['5xx'] };
    const before = previous.get(key);
    previous.set(key, now);
    // A restarted worker starts from zero: no negative rates.
    const delta = (k: keyof Counts) => (before === undefined ? 0 : Math.max(0, now[k] - before[k]));
    const seconds = before === undefined ? 0 : (t - before.t) / 1000;
    const answered = delta('answered');
    const pool = m.pools.users ?? NO_POOL;
    return {
      total_requests: m.totalRequests,
      in_flight: m.inFlight,
      rate_rps: seconds > 0 ? round(delta('total') / seconds) : 0,
      error_ratio: answered > 0 ? round(delta('e5') / answered) : 0,
      client_error_ratio: answered > 0 ? round(delta('e4') / answered) : 0,
      p50_ms: round(m.window.p50Ms),
      p99_ms: round(m.window.p99Ms),
      pool: { active: pool.active, idle: pool.idle, waiting: pool.waiting, max: pool.max },
      cache: layers === undefined ? null : cacheFigures(layers),
    };
  }

  return (view, queue) => {
    const t = Date.now();
    // Each worker's cache change since its previous answer; the group's is their sum.
    const deltas = new Map<number, LayerCounts>();
    if (cache) {
      for (const p of view.parts) {
        const now = layerCounts(p);
        deltas.set(p.pid, layerDelta(now, previousLayers.get(p.pid)));
        previousLayers.set(p.pid, now);
      }
    }
    const groupLayers = cache ? [...deltas.values()].reduce(addLayers, new Map()) : undefined;
    return {
      t,
      ...figures('all', view.parts, t, groupLayers),
      workers: view.parts.map((p) => ({
        worker: p.worker ?? null, pid: p.pid, ...figures(`pid:${p.pid}`, [p], t, cache ? deltas.get(p.pid) : undefined),
      })),
      workers_expected: view.expected,
      jobs: queue === undefined ? null : jobsFigures(view.parts, queue),
    };
  };
}
