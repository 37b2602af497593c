/**
 * The users cache in Prometheus: hits and misses per layer, entries, bytes, evictions and admission rejections of
 * the in-process layer, and the delay of invalidations received from other instances. Figures are read from the
 * cache when scraped, so the hot path counts with plain integers.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { UsersCache } from './cached-users.ts';
import type { LayerStats } from './memory-layer.ts';

/** Seconds from a write's publication on one instance to its receipt on another. */
const DELAY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** Registers the cache's series; returns the observer of invalidation delays (ms). */
export function registerCacheMetrics(registry: Registry, cache: () => UsersCache | undefined): (ms: number) => void {
  const layers = () => cache()?.status().layers ?? [];
  const perLayer = <T extends 'hits' | 'misses'>(field: T) => function collect(this: Counter) {
    this.reset();
    for (const l of layers()) this.inc({ layer: l.name }, l[field]);
  };
  new Counter({ name: 'cache_hits_total', help: 'Users cache hits by layer', labelNames: ['layer'], registers: [registry], collect: perLayer('hits') });
  new Counter({ name: 'cache_misses_total', help: 'Users cache misses by layer', labelNames: ['layer'], registers: [registry], collect: perLayer('misses') });
  const memory = () => cache()?.status().layers.find((l) => l.name === 'memory') as LayerStats | undefined;
  new Gauge({
    name: 'cache_entries', help: 'Entries in the in-process users cache', registers: [registry],
    collect() { this.set(memory()?.entries ?? 0); },
  });
  new Gauge({
    name: 'cache_bytes', help: 'Estimated bytes held by the in-process users cache', registers: [registry],
    collect() { this.set(memory()?.bytes ?? 0); },
  });
  new Counter({
    name: 'cache_evictions_total', help: 'Entries the in-process users cache evicted to stay within its bounds', registers: [registry],
    collect() { this.reset(); this.inc(memory()?.evictions ?? 0); },
  });
  new Counter({
    name: 'cache_rejections_total', help: 'Loads the full in-process users cache did not admit (asked for less often than the entry they would evict)',
    registers: [registry],
    collect() { this.reset(); this.inc(memory()?.rejections ?? 0); },
  });
  const delay = new Histogram({
    name: 'cache_invalidation_delay_seconds', help: 'Delay of cache invalidations received from other instances',
    buckets: DELAY_BUCKETS, registers: [registry],
  });
  return (ms) => delay.observe(ms / 1000);
}
