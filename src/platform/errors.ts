/**
 * The error catalogue: every error Spate answers with is a named code of a fixed kind here.
 *
 * Errors carry a kind (unavailable, timeout, bad input, conflict, ...) set where they arise; everything below the
 * routes throws these, and only the HTTP layer (src/platform/http/error-handler.ts) turns a kind into a status,
 * headers and the contract's body `{"detail": ...}`. Metrics and start-up retries read the kind too, so none of
 * them needs to know a backend's error codes or an HTTP status. Framework-free: storage adapters import this file.
 */

/** One entry of a 422 body, in FastAPI's shape. */
export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** What went wrong, independent of any transport. */
export type ErrorKind =
  | 'validation' // the request's fields break the rules (a list of issues)
  | 'bad_input' // a malformed id, cursor or header, or a value the database refused
  | 'unauthorized' // no valid credential
  | 'forbidden' // a valid credential without the right
  | 'not_found'
  | 'method_not_allowed'
  | 'conflict' // the state does not allow it (a taken email, the last admin)
  | 'too_large'
  | 'request_timeout' // the client did not send its request in time
  | 'headers_too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'precondition_failed' // a conditional request's precondition (If-Match) does not hold
  | 'gone' // it existed and will not again (an expired export, an unfinished upload past its expiry)
  | 'checksum_mismatch' // a body does not match the checksum sent with it (tus checksum extension)
  | 'unavailable' // a dependency cannot serve now; retrying later may succeed
  | 'timeout' // a deadline expired and the work was cancelled
  | 'internal'; // a bug

/** Facts a transport may need to answer well; set by the catalogue below, never by callers. */
export interface ErrorHints {
  /** Seconds to wait before retrying. */
  retryAfterS?: number;
  /** The methods a path does allow (method_not_allowed). */
  allow?: readonly string[];
  /** The process is leaving: the client should not reuse this connection. */
  closing?: boolean;
}

export class AppError extends Error {
  override name = 'AppError';

  constructor(
    /** Stable machine-readable name, e.g. `USER_NOT_FOUND`. */
    readonly code: string,
    readonly kind: ErrorKind,
    /** The `detail` of the response body: a message, or the list of issues of a validation error. */
    readonly detail: string | ValidationIssue[],
    readonly hints: ErrorHints = {},
    options?: ErrorOptions,
  ) {
    super(typeof detail === 'string' ? detail : 'Validation failed', options);
  }
}

/** Seconds a client should wait before retrying when a dependency is unavailable or a deadline passed. */
export const RETRY_AFTER_S = 1;

export const errors = {
  validation: (issues: ValidationIssue[]) => new AppError('VALIDATION', 'validation', issues),
  invalidUuid: () => new AppError('INVALID_UUID', 'bad_input', 'Invalid UUID'),
  invalidCursor: () => new AppError('INVALID_CURSOR', 'bad_input', 'Invalid cursor'),
  invalidTimeout: () =>
    new AppError('INVALID_TIMEOUT', 'bad_input', 'Invalid X-Request-Timeout header: expected a positive number of seconds'),
  /** An `X-Consistency-Token` this service did not issue (src/db/replica-router.ts). */
  invalidConsistencyToken: () => new AppError('INVALID_CONSISTENCY_TOKEN', 'bad_input', 'Invalid consistency token'),
  noFieldsToUpdate: () => new AppError('NO_FIELDS', 'bad_input', 'No fields to update'),
  badInput: (cause?: unknown) => new AppError('BAD_INPUT', 'bad_input', 'Invalid input for the database', {}, { cause }),
  /**
   * Every authentication failure (no credential where one is needed, a bad, expired or revoked token or key, a
   * wrong password, a disabled or deleted account) answers exactly this, so a caller learns nothing about which.
   */
  unauthorized: (cause?: unknown) => new AppError('UNAUTHORIZED', 'unauthorized', 'Not authenticated', {}, { cause }),
  forbidden: (detail = 'Forbidden') => new AppError('FORBIDDEN', 'forbidden', detail),
  accountNotFound: () => new AppError('ACCOUNT_NOT_FOUND', 'not_found', 'Account not found'),
  apiKeyNotFound: () => new AppError('API_KEY_NOT_FOUND', 'not_found', 'API key not found'),
  emailTaken: () => new AppError('EMAIL_TAKEN', 'conflict', 'Email already registered'),
  conflict: (detail: string) => new AppError('CONFLICT', 'conflict', detail),
  /** A rate limit was reached; the transport tells the client when to come back. */
  tooManyRequests: (retryAfterS: number) =>
    new AppError('TOO_MANY_REQUESTS', 'rate_limited', `Rate limit exceeded, retry in ${retryAfterS} seconds`, { retryAfterS }),
  invalidIdempotencyKey: () =>
    new AppError('INVALID_IDEMPOTENCY_KEY', 'bad_input', 'Invalid Idempotency-Key header: expected 1 to 255 visible ASCII characters'),
  /** The key was used before for a request with another body or route (the IETF draft and Stripe answer 422). */
  idempotencyMismatch: () =>
    new AppError('IDEMPOTENCY_MISMATCH', 'validation', [
      { loc: ['header', 'idempotency-key'], msg: 'Idempotency-Key was already used for a different request', type: 'idempotency_mismatch' },
    ]),
  /** The first request with this key is still being written; retry once it has finished. */
  idempotencyInFlight: () =>
    new AppError('IDEMPOTENCY_IN_FLIGHT', 'conflict', 'A request with this Idempotency-Key is still in progress', { retryAfterS: 1 }),
  /** `If-Match` names a version that is not the current one (or `*` and nothing exists): nothing was changed. */
  preconditionFailed: () => new AppError('PRECONDITION_FAILED', 'precondition_failed', 'Precondition Failed'),
  userNotFound: () => new AppError('USER_NOT_FOUND', 'not_found', 'User not found'),
  jobNotFound: () => new AppError('JOB_NOT_FOUND', 'not_found', 'Job not found'),
  // Bulk import and export (docs/bulk.md).
  /** An import whose file cannot be imported as a whole (a bad header, or invalid rows in all-or-nothing mode). */
  importRefused: (detail: string) => new AppError('IMPORT_REFUSED', 'bad_input', detail),
  badSignature: () => new AppError('BAD_SIGNATURE', 'forbidden', 'Invalid download signature'),
  exportGone: () => new AppError('EXPORT_GONE', 'gone', 'This export has expired'),
  // Webhooks (docs/webhooks.md).
  webhookNotFound: () => new AppError('WEBHOOK_NOT_FOUND', 'not_found', 'Webhook not found'),
  notFound: () => new AppError('NOT_FOUND', 'not_found', 'Not Found'),
  // Resumable uploads (src/modules/uploads/, docs/uploads.md).
  uploadNotFound: () => new AppError('UPLOAD_NOT_FOUND', 'not_found', 'Upload not found'),
  uploadExpired: () => new AppError('UPLOAD_EXPIRED', 'gone', 'Upload expired'),
  uploadOffsetConflict: () =>
    new AppError('UPLOAD_OFFSET_CONFLICT', 'conflict', "Upload-Offset does not match the upload's current offset"),
  uploadTooLarge: (detail: string) => new AppError('UPLOAD_TOO_LARGE', 'too_large', detail),
  checksumMismatch: () => new AppError('CHECKSUM_MISMATCH', 'checksum_mismatch', 'Checksum Mismatch: nothing was appended'),
  /** A tus request the protocol refuses (a missing or malformed tus header); `detail` names what is wrong. */
  uploadRefused: (detail: string) => new AppError('UPLOAD_REFUSED', 'bad_input', detail),
  tusVersionUnsupported: () => new AppError('TUS_VERSION', 'precondition_failed', 'Tus-Resumable: 1.0.0 required'),
  methodNotAllowed: (allow: readonly string[]) =>
    new AppError('METHOD_NOT_ALLOWED', 'method_not_allowed', 'Method Not Allowed', { allow }),
  payloadTooLarge: () => new AppError('PAYLOAD_TOO_LARGE', 'too_large', 'Request body is too large'),
  /** Database unreachable, connection lost, or no pooled connection free in time. */
  unavailable: (reason: string, cause?: unknown) =>
    new AppError('DB_UNAVAILABLE', 'unavailable', `Service temporarily unavailable: ${reason}`, { retryAfterS: RETRY_AFTER_S }, { cause }),
  /** The shared rate-limit store (Redis) cannot be reached on a route whose limit fails closed (login). */
  rateLimiterUnavailable: (cause?: unknown) =>
    new AppError('RATE_LIMITER_UNAVAILABLE', 'unavailable', 'Service temporarily unavailable: rate limiter unreachable', {
      retryAfterS: RETRY_AFTER_S,
    }, { cause }),
  shuttingDown: () =>
    new AppError('SHUTTING_DOWN', 'unavailable', 'Service temporarily unavailable: shutting down', {
      retryAfterS: RETRY_AFTER_S,
      closing: true,
    }),
  /** The process is over its load limits (event-loop delay or utilisation, heap): shed before doing any work. */
  overloaded: () =>
    new AppError('OVERLOADED', 'unavailable', 'Service temporarily unavailable: overloaded', { retryAfterS: RETRY_AFTER_S }),
  /** The request's cost (a large page's rows) does not fit in what PAGE_ROWS_IN_FLIGHT leaves now (cost-budget.ts). */
  tooMuchInFlight: () =>
    new AppError('COST_BUDGET_FULL', 'unavailable', 'Service temporarily unavailable: too many large pages in flight', {
      retryAfterS: RETRY_AFTER_S,
    }),
  /** A stream's reader stopped reading for longer than STREAM_STALL_TIMEOUT_MS; the stream was ended. */
  streamStalled: (ms: number) =>
    new AppError('STREAM_STALLED', 'timeout', `Stream reader stalled for ${ms} ms`, { retryAfterS: RETRY_AFTER_S }),
  /** A request or statement deadline expired; the database work was cancelled. */
  timeout: (cause?: unknown) => new AppError('TIMEOUT', 'timeout', 'Gateway Timeout', { retryAfterS: RETRY_AFTER_S }, { cause }),
  internal: (cause?: unknown) => new AppError('INTERNAL', 'internal', 'Internal server error', {}, { cause }),
  // Refusals of the HTTP parser and the router (src/platform/http/refusals.ts), and of text that cannot be
  // stored as sent (src/platform/http/json-body.ts). None of them repeats what the client sent.
  malformedRequest: () => new AppError('MALFORMED_REQUEST', 'bad_input', 'Bad Request: malformed HTTP request'),
  badUrl: () => new AppError('BAD_URL', 'bad_input', 'Bad Request: invalid URL encoding'),
  requestTimeout: () =>
    new AppError('REQUEST_TIMEOUT', 'request_timeout', 'Request Timeout: the request was not received in time', { closing: true }),
  headersTooLarge: () => new AppError('HEADERS_TOO_LARGE', 'headers_too_large', 'Request Header Fields Too Large'),
  unsupportedCharset: () =>
    new AppError('UNSUPPORTED_CHARSET', 'unsupported_media_type', 'Unsupported Media Type: JSON bodies must be UTF-8 (charset=utf-8 or none)'),
} as const;

export const isAppError = (err: unknown): err is AppError => err instanceof AppError;

/** The kind of anything thrown: a catalogue error's own, else `internal`. */
export const kindOf = (err: unknown): ErrorKind => (isAppError(err) ? err.kind : 'internal');
