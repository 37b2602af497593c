/**
 * The in-process layer: a least-recently-used map bounded by entries and by bytes, each entry with an absolute
 * expiry. A `Map` keeps insertion order, so re-inserting on a hit makes the first key the least recently used.
 *
 * A hit re-inserts its entry only when it is not among the last quarter of the layer's capacity inserted: the
 * hottest keys would otherwise pay a delete and a set of the Map on every hit (most of the layer's cost under a
 * skewed load, docs/benchmarks.md). So the order is least recently used to within that quarter: an entry hit
 * after its last re-insertion is evicted no sooner than three quarters of `maxEntries` insertions after the hit.
 *
 * What a load brings is `offer`ed, and a full layer admits it only when its key was asked for more often lately
 * than the key it would evict (TinyLFU, src/modules/cache/frequency-sketch.ts), or that entry has expired.
 * Without that, reads spread over more ids than the layer holds (by id, at random, over a large table) store
 * every miss and evict an entry for it: each request allocates an entry that lives until evicted, is promoted by
 * the young collector and dies in the old generation, which cost a fifth of the throughput and half as much
 * again on the 99th percentile against no cache at all (docs/caching.md, "Admission"). Skewed loads keep their
 * hits: their hot keys win the comparison. Writes `set` what they wrote, unconditionally.
 */
import { FrequencySketch } from './frequency-sketch.ts';

interface Slot<V> {
  value: V;
  bytes: number;
  /** `performance.now()` after which the entry is never served. */
  expires: number;
  /** The insertion count when the entry was last put at the back of the map. */
  at: number;
}

export interface LayerStats {
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
  evictions: number;
  /** Loads offered to a full layer and not admitted. */
  rejections: number;
}

export class MemoryLayer<V> {
  #map = new Map<string, Slot<V>>();
  #bytes = 0;
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  #rejections = 0;
  readonly #sketch: FrequencySketch;
  /** Insertions at the back of the map so far. */
  #clock = 0;
  /** A hit moves its entry back only when more insertions than this came after the entry's own. */
  readonly #recent: number;

  /** `seed`: of the frequency sketch's hashes, for tests that need its collisions to be the same every run. */
  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    seed?: number,
  ) {
    this.#recent = Math.max(1, Math.floor(maxEntries / 4));
    this.#sketch = new FrequencySketch(maxEntries, seed);
  }

  get(key: string, now = performance.now()): V | undefined {
    this.#sketch.increment(key);
    const slot = this.#map.get(key);
    if (slot === undefined || slot.expires <= now) {
      if (slot !== undefined) this.delete(key);
      this.#misses++;
      return undefined;
    }
    if (this.#clock - slot.at >= this.#recent) {
      this.#map.delete(key);
      this.#map.set(key, slot);
      slot.at = ++this.#clock;
    }
    this.#hits++;
    return slot.value;
  }

  /** Stores `value` until `expires`; a value larger than the whole budget is not stored. */
  set(key: string, value: V, bytes: number, expires: number): void {
    this.delete(key);
    if (bytes > this.maxBytes) return;
    this.#map.set(key, { value, bytes, expires, at: ++this.#clock });
    this.#bytes += bytes;
    while (this.#map.size > this.maxEntries || this.#bytes > this.maxBytes) {
      this.delete(this.#map.keys().next().value as string);
      this.#evictions++;
    }
  }

  /**
   * Stores a loaded `value` when there is room, when it replaces the key's own entry, or when its key was asked for
   * more often lately than the least recently used key it would evict (or that entry has expired). Returns whether
   * it was stored.
   */
  offer(key: string, value: V, bytes: number, expires: number, now = performance.now()): boolean {
    const full = this.#map.size >= this.maxEntries || this.#bytes + bytes > this.maxBytes;
    if (full && !this.#map.has(key)) {
      const [victim, slot] = (this.#map.entries().next().value ?? []) as [string?, Slot<V>?];
      if (slot !== undefined && slot.expires > now && this.#sketch.frequency(key) <= this.#sketch.frequency(victim!)) {
        this.#rejections++;
        return false;
      }
    }
    this.set(key, value, bytes, expires);
    return this.#map.has(key);
  }

  delete(key: string): void {
    const slot = this.#map.get(key);
    if (slot === undefined) return;
    this.#map.delete(key);
    this.#bytes -= slot.bytes;
  }

  clear(): void {
    this.#map.clear();
    this.#bytes = 0;
  }

  stats(): LayerStats {
    return { entries: this.#map.size, bytes: this.#bytes, hits: this.#hits, misses: this.#misses, evictions: this.#evictions, rejections: this.#rejections };
  }
}
