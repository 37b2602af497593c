/**
 * PostgreSQL's binary COPY format, both ways, for the users table (docs/bulk.md): rows encoded straight into
 * Buffers for an import's `COPY users FROM STDIN (FORMAT binary)`, and tuples of an export's
 * `COPY (SELECT ...) TO STDOUT (FORMAT binary)` decoded into `User`s.
 *
 * Binary rather than text because the text format costs twice on a million rows: escaping every string here, and
 * parsing every uuid and timestamp on the server (the timestamp parser dominated a text COPY of `users`). The
 * format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format"): an 11-byte signature, flags
 * and header-extension length (int32 each), then per tuple an int16 field count and per field an int32 byte
 * length and the type's binary send form (uuid: 16 bytes; text: UTF-8; int4: 4 bytes; timestamptz: int64
 * microseconds since 2000-01-01 UTC), and an int16 -1 at the end.
 */
import type { User } from '../users-store.ts';

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
/** Signature, flags 0, no header extension. */
export const COPY_HEADER = Buffer.concat([SIGNATURE, Buffer.alloc(8)]);
export const COPY_TRAILER = Buffer.from([0xff, 0xff]);

const PG_EPOCH_MS = 946_684_800_000;
const TWO_32 = 2 ** 32;

/** Fixed bytes of one imported row besides its two strings: count, id, two lengths, age, two timestamps. */
const ROW_FIXED = 2 + (4 + 16) + 4 + 4 + (4 + 4) + 2 * (4 + 8);

/** A timestamp's field as COPY sends it: length 8, then int64 microseconds since 2000-01-01. */
function timestampField(t: Date): Buffer {
  const us = (t.getTime() - PG_EPOCH_MS) * 1000;
  const b = Buffer.alloc(12);
  b.writeInt32BE(8, 0);
  const hi = Math.floor(us / TWO_32);
  b.writeInt32BE(hi, 4);
  b.writeUInt32BE(us - hi * TWO_32, 8);
  return b;
}

/**
 * Encodes an import's rows (id prefix + line, name, email, age, created_at = updated_at = the import's stamp)
 * into Buffers of about `size` bytes. `take()` hands over what was written and starts a fresh Buffer, so a
 * Buffer given to the driver is never written again.
 */
export class ImportRowEncoder {
  private buf: Buffer;
  private at = 0;
  /** The id's first 11 bytes: the import's prefix (src/db/bulk-store.ts). */
  private readonly prefix: Buffer;
  /** Both timestamp fields: they are the same for every row of an import. */
  private readonly stamps: Buffer;

  constructor(idPrefix: string, stamp: Date, private readonly size: number) {
    this.prefix = Buffer.from(idPrefix.replaceAll('-', ''), 'hex');
    const t = timestampField(stamp);
    this.stamps = Buffer.concat([t, t]);
    this.buf = Buffer.allocUnsafe(size);
  }

  get length(): number {
    return this.at;
  }

  /** Appends one row; the caller takes the Buffer first when `fits` says no. */
  row(line: number, name: string, email: string, age: number): void {
    const b = this.buf;
    let at = this.at;
    b.writeInt16BE(6, at);
    b.writeInt32BE(16, at + 2);
    this.prefix.copy(b, at + 6);
    b.writeUIntBE(line, at + 17, 5);
    at += 22;
    // The length is written after the bytes, which is when it is known.
    const n = b.write(name, at + 4, 'utf8');
    b.writeInt32BE(n, at);
    at += 4 + n;
    const e = b.write(email, at + 4, 'utf8');
    b.writeInt32BE(e, at);
    at += 4 + e;
    b.writeInt32BE(4, at);
    b.writeInt32BE(age, at + 4);
    at += 8;
    this.stamps.copy(b, at);
    this.at = at + this.stamps.length;
  }

  /** Whether a row with these strings surely fits (a UTF-16 code unit is at most 3 bytes of UTF-8). */
  fits(name: string, email: string): boolean {
    return this.at + ROW_FIXED + 3 * (name.length + email.length) <= this.buf.length;
  }

  take(): Buffer {
    const out = this.buf.subarray(0, this.at);
    this.buf = Buffer.allocUnsafe(this.size);
    this.at = 0;
    return out;
  }
}

const uuidText = (b: Buffer, at: number) => {
  const h = b.toString('hex', at, at + 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/**
 * Decodes the binary COPY of `SELECT id, name, email, age, created_at, updated_at`, chunk by chunk as the driver
 * hands them over (a tuple may span chunks). Timestamps are truncated to milliseconds, as postgres.js's own
 * parsing of the text form is, so a user reads the same whichever way it was fetched.
 */
export class UserDecoder {
  private carry: Buffer | undefined;
  private headerSeen = false;
  /** The last timestamp decoded: rows written together (an import) share it, and so can their `Date`. */
  private lastUs = Number.NaN;
  private lastDate = new Date(0);
  /** True once the trailer arrived: a stream that ends without it was cut. */
  ended = false;

  /** The users complete in `chunk` (with what was left over from the chunk before). */
  push(chunk: Buffer): User[] {
    const b = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = undefined;
    let at = 0;
    if (!this.headerSeen) {
      if (b.length < COPY_HEADER.length) { this.carry = b; return []; }
      if (!b.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('not a binary COPY stream');
      at = COPY_HEADER.length + b.readInt32BE(SIGNATURE.length + 4);
      this.headerSeen = true;
    }
    const out: User[] = [];
    const end = b.length;
    // Field by field, each length checked against what arrived; an incomplete tuple waits for the next chunk.
    // The layout is fixed (6 fields, none NULL: the table's NOT NULLs), so only the two strings have lengths to read.
    while (at + 2 <= end) {
      if (b.readInt16BE(at) === -1) { this.ended = true; at += 2; break; }
      const nameAt = at + 2 + 20;
      if (nameAt + 4 > end) break;
      const nl = b.readInt32BE(nameAt);
      const emailAt = nameAt + 4 + nl;
      if (emailAt + 4 > end) break;
      const el = b.readInt32BE(emailAt);
      const ageAt = emailAt + 4 + el;
      const next = ageAt + 8 + 12 + 12;
      if (next > end) break;
      const created_at = this.timestamp(b, ageAt + 8 + 4);
      out.push({
        id: uuidText(b, at + 2 + 4),
        name: b.toString('utf8', nameAt + 4, emailAt),
        email: b.toString('utf8', emailAt + 4, ageAt),
        age: b.readInt32BE(ageAt + 4),
        created_at,
        updated_at: this.timestamp(b, ageAt + 8 + 12 + 4),
      });
      at = next;
    }
    // A copy, so the rest of a large chunk is not kept alive by its tail.
    if (at < end) this.carry = Buffer.from(b.subarray(at));
    return out;
  }

  private timestamp(b: Buffer, at: number): Date {
    const us = b.readInt32BE(at) * TWO_32 + b.readUInt32BE(at + 4);
    if (us !== this.lastUs) {
      this.lastUs = us;
      this.lastDate = new Date(Math.floor(us / 1000) + PG_EPOCH_MS);
    }
    return this.lastDate;
  }
}
