/**
 * The one place where an error's kind becomes HTTP: its status and the headers that go with it.
 *
 * Nothing below the routes knows a status; the catalogue (src/platform/errors.ts) says what went wrong and this
 * table says how HTTP puts it, so a second transport (a job runner, a CLI) can read the same errors its own way.
 */
import type { AppError, ErrorKind } from '../errors.ts';

const STATUS: Record<ErrorKind, number> = {
  validation: 422,
  bad_input: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  request_timeout: 408,
  too_large: 413,
  headers_too_large: 431,
  unsupported_media_type: 415,
  rate_limited: 429,
  precondition_failed: 412,
  gone: 410,
  // tus 1.0 checksum extension: https://tus.io/protocols/resumable-upload#checksum
  checksum_mismatch: 460,
  internal: 500,
  unavailable: 503,
  timeout: 504,
};

export const statusOf = (kind: ErrorKind): number => STATUS[kind];

/** The status and headers of a catalogue error. */
export function httpOf(err: AppError): { status: number; headers: Record<string, string> } {
  const headers: Record<string, string> = {};
  const { retryAfterS, allow, closing } = err.hints;
  if (retryAfterS !== undefined) headers['retry-after'] = String(retryAfterS);
  if (allow !== undefined) headers.allow = allow.join(', ');
  if (closing) headers.connection = 'close';
  if (err.kind === 'unauthorized') headers['www-authenticate'] = 'Bearer';
  return { status: STATUS[err.kind], headers };
}
