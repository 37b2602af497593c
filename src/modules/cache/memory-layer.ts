/**
 * The in-process layer: a least-recently-used map bounded by entries and by bytes, each entry with an absolute
 * expiry. A `Map` keeps insertion order, so re-inserting on a hit makes the first key the least recently used.
 *
 * A hit re-inserts its entry only when it is not among the last quarter of the layer's capacity inserted: the
 * hottest keys would otherwise pay a delete and a set of the Map on every hit (most of the layer's cost under a
 * skewed load, docs/benchmarks.md). So the order is least recently used to within that quarter: an entry hit
 * after its last re-insertion is evicted no sooner than three quarters of `maxEntries` insertions after the hit.
 */

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
}

export class MemoryLayer<V> {
  #map = new Map<string, Slot<V>>();
  #bytes = 0;
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  /** Insertions at the back of the map so far. */
  #clock = 0;
  /** A hit moves its entry back only when more insertions than this came after the entry's own. */
  readonly #recent: number;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {
    this.#recent = Math.max(1, Math.floor(maxEntries / 4));
  }

  get(key: string, now = performance.now()): V | undefined {
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
    return { entries: this.#map.size, bytes: this.#bytes, hits: this.#hits, misses: this.#misses, evictions: this.#evictions };
  }
}
