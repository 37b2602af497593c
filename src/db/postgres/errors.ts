/**
 * Maps postgres.js and PostgreSQL errors onto the error catalogue, following the contract's failure table.
 *
 * Driver and server messages never reach a response body: each error becomes a catalogue entry with a fixed
 * text, and the original is kept as `cause` so the error handler can log it.
 */
import { AppError, errors } from '../../platform/errors.ts';

/** Connection-level failures raised by postgres.js or Node's socket layer. */
const CONNECTION_CODES = new Set([
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
]);

/** SQLSTATEs after which a retry in a new transaction may succeed. */
export const RETRYABLE_SQLSTATES = new Set(['40001', '40P01']);

/** The SQLSTATE or driver code of an error, if it has one. */
export const errorCode = (err: unknown): string | undefined =>
  typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : undefined;

/** Turns anything a query threw into an `AppError` from the catalogue. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const code = errorCode(err);
  if (code === undefined) return errors.internal(err);
  if (code === '57014') return errors.timeout(err); // query_canceled: our deadline or statement_timeout
  if (CONNECTION_CODES.has(code)) return errors.unavailable('database unreachable', err);
  // 08: connection exception; 57P0x: admin shutdown, crash shutdown, cannot connect now;
  // 53300: too many connections; 25006/hot standby read-only after a failover.
  if (code.startsWith('08') || code.startsWith('57P') || code === '53300' || code === '25006') {
    return errors.unavailable('database unavailable', err);
  }
  // 22: data exception, 23: integrity constraint violation: input the database refused.
  if (code.startsWith('22') || code.startsWith('23')) return errors.badInput(err);
  return errors.internal(err);
}
