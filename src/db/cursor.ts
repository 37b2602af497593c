/**
 * Opaque pagination cursors: a backend tag byte plus the adapter's own position bytes, in base64url.
 *
 * The tag keeps a cursor from one backend from being misread by another; anything that does not decode to the
 * expected tag is rejected as `invalidCursor` (400) rather than silently restarting the walk.
 */
import { errors } from '../platform/errors.ts';

export const CURSOR_TAG = { postgres: 0x01, cassandra: 0x02, redis: 0x03 } as const;

export function encodeCursor(tag: number, position: Uint8Array): string {
  const buf = Buffer.allocUnsafe(position.length + 1);
  buf[0] = tag;
  buf.set(position, 1);
  return buf.toString('base64url');
}

/** The position bytes of `cursor`; throws `invalidCursor` when it is not a cursor of this backend. */
export function decodeCursor(tag: number, cursor: string): Buffer {
  if (!/^[A-Za-z0-9_-]{2,4096}$/.test(cursor)) throw errors.invalidCursor();
  const buf = Buffer.from(cursor, 'base64url');
  if (buf[0] !== tag || buf.length < 2 || buf.toString('base64url') !== cursor) throw errors.invalidCursor();
  return buf.subarray(1);
}
