/**
 * UUID helpers: parsing path ids, and generating the ids of new users.
 *
 * New ids are UUIDv7 (RFC 9562): a millisecond timestamp followed by randomness. Because they sort by creation
 * time, keyset pagination over the primary key lists users oldest first, rows inserted during a walk land after
 * the walker, and B-tree inserts stay on the right-most page instead of splitting pages all over the index.
 */
import { randomFillSync } from 'node:crypto';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The canonical lowercase form of `raw`, or null when it is not a UUID. Accepts any case. */
export function parseUuid(raw: string): string | null {
  return UUID_RE.test(raw) ? raw.toLowerCase() : null;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const RANDOM_BATCH = 16 * 512;
const random = Buffer.alloc(RANDOM_BATCH);
let randomOffset = RANDOM_BATCH;
let lastMs = -1;
let sequence = 0;

/**
 * A new UUIDv7. Ids from one process are strictly increasing: within one millisecond the 12-bit `rand_a` field
 * is used as a counter (RFC 9562, method 1), and on overflow the timestamp is advanced by a millisecond.
 */
export function uuidv7(nowMs: number = Date.now()): string {
  if (randomOffset === RANDOM_BATCH) {
    randomFillSync(random);
    randomOffset = 0;
  }
  const r = randomOffset;
  randomOffset += 16;
  if (nowMs > lastMs) {
    lastMs = nowMs;
    sequence = (random[r + 6]! << 4) | (random[r + 7]! >> 4); // random start, top half: room to count up
    sequence &= 0x7ff;
  } else if (++sequence > 0xfff) {
    lastMs += 1;
    sequence = 0;
  }
  const ms = lastMs;
  const hi = Math.floor(ms / 0x1000000); // top 24 of the 48 timestamp bits
  const lo = ms % 0x1000000;
  return (
    HEX[(hi >>> 16) & 0xff]! + HEX[(hi >>> 8) & 0xff]! + HEX[hi & 0xff]! +
    HEX[(lo >>> 16) & 0xff]! + '-' + HEX[(lo >>> 8) & 0xff]! + HEX[lo & 0xff]! + '-' +
    HEX[0x70 | (sequence >>> 8)]! + HEX[sequence & 0xff]! + '-' +
    HEX[0x80 | (random[r + 8]! & 0x3f)]! + HEX[random[r + 9]!]! + '-' +
    HEX[random[r + 10]!]! + HEX[random[r + 11]!]! + HEX[random[r + 12]!]! +
    HEX[random[r + 13]!]! + HEX[random[r + 14]!]! + HEX[random[r + 15]!]!
  );
}
