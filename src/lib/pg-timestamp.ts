/**
 * Reading PostgreSQL `timestamptz` text into Dates cheaply.
 *
 * The driver's default turns `2024-01-10 12:34:56.789+00` into a Date with `new Date(text)`, and every response
 * then formats it back with `toISOString`: about 1.3 µs per timestamp, two per user, which is a fifth of the
 * CPU of a stream (`GET /users/stream`). `parseTimestamptz` reads the UTC form at fixed positions and returns a
 * Date that keeps its text, so formatting it is a few string slices. The pool asks for UTC sessions
 * (src/storage/postgres/db.ts) so that this form is the one PostgreSQL sends.
 */

/** A Date that remembers the `YYYY-MM-DD HH:MM:SS[.f{1,6}]+00` text it was read from. */
class PgTimestamp extends Date {
  readonly #ms: number;
  readonly #text: string;

  constructor(ms: number, text: string) {
    super(ms);
    this.#ms = ms;
    this.#text = text;
  }

  /** The same string as Date's own (milliseconds, `Z`), from the text; formatted anew if the date was changed. */
  override toISOString(): string {
    if (this.getTime() !== this.#ms) return super.toISOString();
    const t = this.#text;
    const frac = t.length > 22 ? t.slice(20, Math.min(23, t.length - 3)).padEnd(3, '0') : '000';
    return `${t.slice(0, 10)}T${t.slice(11, 19)}.${frac}Z`;
  }
}

/** The number written by the ASCII digits of `s` from `from` to `to` (exclusive), or NaN. */
function digits(s: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return n;
}

/**
 * `timestamptz` text as a Date, equal to `new Date(text)` (milliseconds truncated, as Date does). Anything but
 * the UTC form of years 100 to 9999 (another offset, BC, infinity) is left to `new Date`.
 */
export function parseTimestamptz(text: string): Date {
  const n = text.length;
  // YYYY-MM-DD HH:MM:SS+00 is 22 characters; with a fraction of 1 to 6 digits, 24 to 29.
  if (n < 22 || n === 23 || n > 29 || text.charCodeAt(10) !== 32 || !text.endsWith('+00')
    || (n > 22 && text.charCodeAt(19) !== 46)) {
    return new Date(text);
  }
  const year = digits(text, 0, 4);
  const month = digits(text, 5, 7);
  const day = digits(text, 8, 10);
  const hour = digits(text, 11, 13);
  const minute = digits(text, 14, 16);
  const second = digits(text, 17, 19);
  const ms = n > 22 ? digits(text, 20, Math.min(23, n - 3)) * 10 ** (3 - Math.min(3, n - 23)) : 0;
  // Date.UTC maps years 0-99 to 1900-1999 and rolls fields over (February 30th is March 2nd): PostgreSQL never
  // sends such text, but if it did, Date's own parser would judge it.
  if (!(year >= 100 && month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour <= 23 && minute <= 59 && second <= 59)
    || text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45 || text.charCodeAt(13) !== 58 || text.charCodeAt(16) !== 58) {
    return new Date(text);
  }
  const time = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  if (Number.isNaN(time) || (day > 28 && new Date(time).getUTCDate() !== day)) return new Date(text);
  return new PgTimestamp(time, text);
}
