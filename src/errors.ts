/**
 * The error catalogue: every error Spate answers with is a named code with a fixed status and body here.
 *
 * Everything below the routes (services, storage adapters) throws these, so one error handler turns any of
 * them into the contract's shape `{"detail": ...}` without knowing where it came from. Framework-free on
 * purpose: storage adapters import this file, never Fastify.
 */

/** One entry of a 422 body, in FastAPI's shape. */
export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export class AppError extends Error {
  override name = 'AppError';

  constructor(
    /** Stable machine-readable name, e.g. `USER_NOT_FOUND`. */
    readonly code: string,
    readonly statusCode: number,
    /** The `detail` of the response body: a message, or the list of issues of a 422. */
    readonly detail: string | ValidationIssue[],
    /** Extra response headers (`Retry-After`, `Allow`). */
    readonly headers: Record<string, string> = {},
    options?: ErrorOptions,
  ) {
    super(typeof detail === 'string' ? detail : 'Validation failed', options);
  }
}

/** Seconds a client should wait before retrying when the database is unavailable. */
const RETRY_AFTER_S = '1';

export const errors = {
  validation: (issues: ValidationIssue[]) => new AppError('VALIDATION', 422, issues),
  invalidUuid: () => new AppError('INVALID_UUID', 400, 'Invalid UUID'),
  invalidCursor: () => new AppError('INVALID_CURSOR', 400, 'Invalid cursor'),
  invalidTimeout: () =>
    new AppError('INVALID_TIMEOUT', 400, 'Invalid X-Request-Timeout header: expected a positive number of seconds'),
  noFieldsToUpdate: () => new AppError('NO_FIELDS', 400, 'No fields to update'),
  badInput: (cause?: unknown) =>
    new AppError('BAD_INPUT', 400, 'Invalid input for the database', {}, { cause }),
  /**
   * Every authentication failure (no credential where one is needed, a bad, expired or revoked token or key, a
   * wrong password, a disabled or deleted account) answers exactly this, so a caller learns nothing about which.
   */
  unauthorized: (cause?: unknown) =>
    new AppError('UNAUTHORIZED', 401, 'Not authenticated', { 'www-authenticate': 'Bearer' }, { cause }),
  forbidden: (detail = 'Forbidden') => new AppError('FORBIDDEN', 403, detail),
  accountNotFound: () => new AppError('ACCOUNT_NOT_FOUND', 404, 'Account not found'),
  apiKeyNotFound: () => new AppError('API_KEY_NOT_FOUND', 404, 'API key not found'),
  emailTaken: () => new AppError('EMAIL_TAKEN', 409, 'Email already registered'),
  conflict: (detail: string) => new AppError('CONFLICT', 409, detail),
  /** A rate limit was reached; `retryAfterS` also goes out as `Retry-After`. */
  tooManyRequests: (retryAfterS: number) =>
    new AppError('TOO_MANY_REQUESTS', 429, `Rate limit exceeded, retry in ${retryAfterS} seconds`, {
      'retry-after': String(retryAfterS),
    }),
  userNotFound: () => new AppError('USER_NOT_FOUND', 404, 'User not found'),
  notFound: () => new AppError('NOT_FOUND', 404, 'Not Found'),
  methodNotAllowed: (allow: string[]) =>
    new AppError('METHOD_NOT_ALLOWED', 405, 'Method Not Allowed', { allow: allow.join(', ') }),
  payloadTooLarge: () => new AppError('PAYLOAD_TOO_LARGE', 413, 'Request body is too large'),
  /** Database unreachable, connection lost, or no pooled connection free in time. */
  unavailable: (reason: string, cause?: unknown) =>
    new AppError(
      'DB_UNAVAILABLE',
      503,
      `Service temporarily unavailable: ${reason}`,
      { 'retry-after': RETRY_AFTER_S },
      { cause },
    ),
  /** The shared rate-limit store (Redis) cannot be reached on a route whose limit fails closed (login). */
  rateLimiterUnavailable: (cause?: unknown) =>
    new AppError('RATE_LIMITER_UNAVAILABLE', 503, 'Service temporarily unavailable: rate limiter unreachable', {
      'retry-after': RETRY_AFTER_S,
    }, { cause }),
  shuttingDown: () =>
    new AppError('SHUTTING_DOWN', 503, 'Service temporarily unavailable: shutting down', {
      'retry-after': RETRY_AFTER_S,
      connection: 'close',
    }),
  /** A request or statement deadline expired; the database work was cancelled. */
  timeout: (cause?: unknown) => new AppError('TIMEOUT', 504, 'Gateway Timeout', {}, { cause }),
  internal: (cause?: unknown) => new AppError('INTERNAL', 500, 'Internal server error', {}, { cause }),
} as const;

export const isAppError = (err: unknown): err is AppError => err instanceof AppError;
