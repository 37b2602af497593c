/**
 * How often each key was asked for lately, approximately: the count-min sketch of TinyLFU (Einziger, Friedman and
 * Manes, "TinyLFU: a highly efficient cache admission policy", 2017), as Caffeine keeps one. Four counters per key,
 * each from its own hash, saturating at 15; a key's frequency is the least of its four, so a collision can only
 * overcount. After ten times `capacity` additions every counter is halved, so what was popular a while ago fades.
 *
 * Sixteen counters per entry of the cache, as Caffeine sizes its table: fewer, and the ten times `capacity` keys of
 * one sample period collide so often that a key asked for once reads as asked for several times. One byte per
 * counter instead of Caffeine's packed nibbles: simpler code, at 16 bytes per entry of the cache.
 */

const MAX_COUNT = 15;
const DEPTH = 4;
/**
 * At least 4,096 counters (4 KB), so that a small cache's sketch does not overcount most keys; at most 2^24
 * (16 MB), whatever CACHE_MAX_ENTRIES says.
 */
const MIN_WIDTH = 1 << 12;
const MAX_WIDTH = 1 << 24;

export class FrequencySketch {
  readonly #table: Uint8Array;
  readonly #mask: number;
  readonly #sampleSize: number;
  /** Random per instance, so nobody can pick keys that collide everywhere; tests fix it. */
  readonly #seed: number;
  #additions = 0;

  /** `capacity`: the entries of the cache it decides for. */
  constructor(capacity: number, seed = Math.random() * 0x1_0000_0000) {
    this.#seed = seed >>> 0;
    let width = MIN_WIDTH;
    while (width < capacity * 16 && width < MAX_WIDTH) width *= 2;
    this.#table = new Uint8Array(width);
    this.#mask = width - 1;
    this.#sampleSize = Math.max(16, 10 * capacity);
  }

  /** Counts one request for `key`. */
  increment(key: string): void {
    const h = this.#hash(key);
    const step = (Math.imul(h, 0x9e3779b1) >>> 16) | 1;
    let added = false;
    for (let i = 0, at = h; i < DEPTH; i++, at += step) {
      const slot = at & this.#mask;
      if (this.#table[slot]! < MAX_COUNT) {
        this.#table[slot]!++;
        added = true;
      }
    }
    if (added && ++this.#additions >= this.#sampleSize) this.#halve();
  }

  /** Requests for `key` counted lately (0 to 15). */
  frequency(key: string): number {
    const h = this.#hash(key);
    const step = (Math.imul(h, 0x9e3779b1) >>> 16) | 1;
    let min = MAX_COUNT;
    for (let i = 0, at = h; i < DEPTH; i++, at += step) min = Math.min(min, this.#table[at & this.#mask]!);
    return min;
  }

  #halve(): void {
    for (let i = 0; i < this.#table.length; i++) this.#table[i]! >>= 1;
    this.#additions = Math.floor(this.#additions / 2);
  }

  /** FNV-1a over the UTF-16 code units, seeded, with a final avalanche so the low bits depend on every char. */
  #hash(key: string): number {
    let h = (0x811c9dc5 ^ this.#seed) >>> 0;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    return h >>> 0;
  }
}
