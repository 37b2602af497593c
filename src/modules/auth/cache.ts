/**
 * In-process caches of what every authenticated request needs: API keys by digest, accounts by id and sessions
 * by id, each for a short TTL, so the hot path (an API key on every request) costs a digest and a map lookup.
 *
 * Staleness is bounded three ways: a revocation in this process evicts at once; with Redis, every instance
 * evicts on the invalidation it receives (src/platform/bus.ts), and while the subscription is down, or silent
 * for two heartbeats (a hung Redis), the caches are bypassed entirely; without Redis, other instances see a
 * change within the TTL.
 */

/** A change other instances must hear about. */
export type Invalidation =
  | { kind: 'account'; id: string }
  | { kind: 'session'; id: string }
  | { kind: 'api_key'; id: string }
  | { kind: 'all' };

interface Entry<V> {
  value: V;
  expires: number;
}

/** A map with a TTL per entry and a size cap (oldest inserted goes first). */
export class TtlCache<K, V> {
  #map = new Map<K, Entry<V>>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
  ) {}

  get(key: K, now = performance.now()): V | undefined {
    const e = this.#map.get(key);
    if (e === undefined) return undefined;
    if (e.expires <= now) {
      this.#map.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: K, value: V, now = performance.now()): void {
    if (this.ttlMs <= 0) return;
    this.#map.delete(key);
    if (this.#map.size >= this.maxEntries) this.#map.delete(this.#map.keys().next().value as K);
    this.#map.set(key, { value, expires: now + this.ttlMs });
  }

  delete(key: K): void {
    this.#map.delete(key);
  }

  /** Deletes every entry whose value matches. */
  deleteWhere(match: (value: V) => boolean): void {
    for (const [k, e] of this.#map) if (match(e.value)) this.#map.delete(k);
  }

  clear(): void {
    this.#map.clear();
  }

  get size(): number {
    return this.#map.size;
  }
}
