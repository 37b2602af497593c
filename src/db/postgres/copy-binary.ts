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

const hex = (b: Buffer, from: number) => b.toString('hex', from, from + 16);
const uuidText = (h: string) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
const timestamp = (b: Buffer, at: number) => new Date(Math.floor((b.readInt32BE(at) * TWO_32 + b.readUInt32BE(at + 4)) / 1000) + PG_EPOCH_MS);

/**
 * Decodes the binary COPY of `SELECT id, name, email, age, created_at, updated_at`, chunk by chunk as the driver
 * hands them over (a tuple may span chunks). Timestamps are truncated to milliseconds, as postgres.js's own
 * parsing of the text form is, so a user reads the same whichever way it was fetched.
 */
export class UserDecoder {
  private carry: Buffer | undefined;
  private headerSeen = false;
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
    while (at + 2 <= b.length) {
      const fields = b.readInt16BE(at);
      if (fields === -1) { this.ended = true; at += 2; break; }
      const end = tupleEnd(b, at + 2, fields);
      if (end < 0) break;
      let p = at + 2 + 4;
      const id = uuidText(hex(b, p));
      p += 16;
      const nl = b.readInt32BE(p);
      const name = b.toString('utf8', p + 4, p + 4 + nl);
      p += 4 + nl;
      const el = b.readInt32BE(p);
      const email = b.toString('utf8', p + 4, p + 4 + el);
      p += 4 + el;
      const age = b.readInt32BE(p + 4);
      p += 8;
      const created_at = timestamp(b, p + 4);
      const updated_at = timestamp(b, p + 16);
      out.push({ id, name, email, age, created_at, updated_at });
      at = end;
    }
    // A copy, so the rest of a large chunk is not kept alive by its tail.
    if (at < b.length) this.carry = Buffer.from(b.subarray(at));
    return out;
  }
}

/** Where the tuple whose fields start at `at` ends, or -1 when it is not complete in `b`. No NULLs in users. */
function tupleEnd(b: Buffer, at: number, fields: number): number {
  for (let i = 0; i < fields; i++) {
    if (at + 4 > b.length) return -1;
    at += 4 + Math.max(0, b.readInt32BE(at));
  }
  return at <= b.length ? at : -1;
}
