/**
 * Maps cassandra-driver and Cassandra errors onto the error catalogue, following the contract's failure table.
 *
 * Driver and server messages never reach a response body: each error becomes a catalogue entry with a fixed
 * text, and the original is kept as `cause` so the error handler can log it.
 */
import { errors as driverErrors, types } from 'cassandra-driver';
import { AppError, errors } from '../../platform/errors.ts';

const codes = types.responseErrorCodes;

/** Server answers meaning "not enough replicas / this node cannot serve now": retrying later may succeed. */
const UNAVAILABLE_CODES = new Set<number>([codes.unavailableException, codes.overloaded, codes.isBootstrapping]);
/** Server-side timeouts: the coordinator gave up waiting for replicas. */
const TIMEOUT_CODES = new Set<number>([codes.readTimeout, codes.writeTimeout]);

/** Node socket errors and the driver's own connection failures ("Socket was closed", "Connection ... closed"). */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECTION_MESSAGE = /socket was closed|connection.*(closed|ended|destroyed)|not connected|connecting after shutdown/i;

const isTimeout = (err: unknown): boolean =>
  err instanceof driverErrors.OperationTimedOutError
  || (err instanceof driverErrors.ResponseError && TIMEOUT_CODES.has(err.code));

/** Turns anything a driver call threw into an `AppError` from the catalogue. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof driverErrors.NoHostAvailableError) {
    // The driver tried every host of the query plan. When each of them timed out, the request ran out of time;
    // in every other case (hosts down, Unavailable retried on the next host, no host up at all) the database
    // cannot serve it now.
    const inner = Object.values((err.innerErrors ?? {}) as Record<string, unknown>);
    if (inner.length > 0 && inner.every(isTimeout)) return errors.timeout(err);
    return errors.unavailable('no Cassandra host available', err);
  }
  if (err instanceof driverErrors.OperationTimedOutError) return errors.timeout(err);
  if (err instanceof driverErrors.BusyConnectionError) return errors.unavailable('Cassandra connections busy', err);
  if (err instanceof driverErrors.ResponseError) {
    if (UNAVAILABLE_CODES.has(err.code)) return errors.unavailable('not enough Cassandra replicas', err);
    if (TIMEOUT_CODES.has(err.code)) return errors.timeout(err);
    // Invalid: the server refused the values or the request (e.g. a batch over the size the server accepts).
    if (err.code === codes.invalid) return errors.badInput(err);
    return errors.internal(err);
  }
  if (err instanceof driverErrors.AuthenticationError) return errors.unavailable('Cassandra refused our credentials', err);
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && SOCKET_CODES.has(code)) return errors.unavailable('Cassandra unreachable', err);
  if (err instanceof driverErrors.DriverError && CONNECTION_MESSAGE.test(err.message)) {
    return errors.unavailable('Cassandra connection lost', err);
  }
  return errors.internal(err);
}

/**
 * True when the server rejected a paging state it was handed back: a forged or corrupt cursor that got past
 * our checksum. 2.1 answers a malformed one with a protocol or server error (a Java exception), later versions
 * with Invalid or a protocol error.
 */
export function isPagingStateRejection(err: unknown): boolean {
  return err instanceof driverErrors.ResponseError
    && (err.code === codes.serverError || err.code === codes.protocolError || err.code === codes.invalid);
}
