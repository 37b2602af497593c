/**
 * Configuration: every environment variable Spate reads, parsed once, typed and validated.
 *
 * `.env` is read too. A bad value throws a `ConfigError` naming the variable, and the server turns that into a
 * one-line message and exit code 1. Defaults let a new user start with no configuration at all: embedded
 * PostgreSQL under ./data, listening on 127.0.0.1:8000.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import envSchema from 'env-schema';
import { Type, type Static } from 'typebox';

const READ_CONSISTENCIES = ['ONE', 'TWO', 'THREE', 'QUORUM', 'ALL', 'LOCAL_QUORUM', 'LOCAL_ONE'] as const;
const WRITE_CONSISTENCIES = [...READ_CONSISTENCIES, 'ANY', 'EACH_QUORUM'] as const;
export type ReadConsistency = (typeof READ_CONSISTENCIES)[number];
export type WriteConsistency = (typeof WRITE_CONSISTENCIES)[number];
export type SerialConsistency = 'SERIAL' | 'LOCAL_SERIAL';

/** The Cassandra defaults, written once: the environment's defaults and a config built by hand (tests) share them. */
export const CASSANDRA_DEFAULTS = {
  readConsistency: 'LOCAL_QUORUM',
  writeConsistency: 'LOCAL_QUORUM',
  serialConsistency: 'LOCAL_SERIAL',
  requestTimeoutMs: 12_000,
  failFast: true,
  replication: { strategy: 'SimpleStrategy', factor: 1 },
} as const satisfies Partial<CassandraConfig>;

const Env = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  PORT: Type.Integer({ default: 8000, minimum: 0, maximum: 65535 }),
  LOG_LEVEL: Type.Unsafe<string>({
    type: 'string',
    enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    default: 'info',
  }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATA_DIR: Type.String({ default: './data', minLength: 1 }),
  CASSANDRA_HOSTS: Type.Optional(Type.String({ minLength: 1 })),
  CASSANDRA_PORT: Type.Integer({ default: 9042, minimum: 1, maximum: 65535 }),
  CASSANDRA_KEYSPACE: Type.String({ default: 'spate', pattern: '^[A-Za-z][A-Za-z0-9_]{0,47}$' }),
  CASSANDRA_LOCAL_DC: Type.String({ default: 'datacenter1', minLength: 1 }),
  // The keyspace is created with these only when it does not exist yet; an existing keyspace is never altered.
  CASSANDRA_REPLICATION_STRATEGY: Type.Unsafe<'SimpleStrategy' | 'NetworkTopologyStrategy'>({
    type: 'string', enum: ['SimpleStrategy', 'NetworkTopologyStrategy'], default: CASSANDRA_DEFAULTS.replication.strategy,
  }),
  CASSANDRA_REPLICATION_FACTOR: Type.Integer({ default: CASSANDRA_DEFAULTS.replication.factor, minimum: 1, maximum: 100 }),
  CASSANDRA_READ_CONSISTENCY: Type.Unsafe<ReadConsistency>({ type: 'string', enum: READ_CONSISTENCIES, default: CASSANDRA_DEFAULTS.readConsistency }),
  CASSANDRA_WRITE_CONSISTENCY: Type.Unsafe<WriteConsistency>({ type: 'string', enum: WRITE_CONSISTENCIES, default: CASSANDRA_DEFAULTS.writeConsistency }),
  CASSANDRA_SERIAL_CONSISTENCY: Type.Unsafe<SerialConsistency>({
    type: 'string', enum: ['SERIAL', 'LOCAL_SERIAL'], default: CASSANDRA_DEFAULTS.serialConsistency,
  }),
  CASSANDRA_REQUEST_TIMEOUT_MS: Type.Integer({ default: CASSANDRA_DEFAULTS.requestTimeoutMs, minimum: 1, maximum: 600_000 }),
  CASSANDRA_SPECULATIVE_DELAY_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
  CASSANDRA_FAIL_FAST: Type.Boolean({ default: CASSANDRA_DEFAULTS.failFast }),
  CASSANDRA_PROTOCOL_VERSION: Type.Optional(Type.Integer({ minimum: 3, maximum: 4 })),
  CASSANDRA_USERNAME: Type.Optional(Type.String({ minLength: 1 })),
  CASSANDRA_PASSWORD: Type.Optional(Type.String()),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  POOL_MAX: Type.Integer({ default: 10, minimum: 1, maximum: 1000 }),
  POOL_ACQUIRE_TIMEOUT_MS: Type.Integer({ default: 2000, minimum: 1, maximum: 600_000 }),
  // Connections kept open and warm (default: POOL_MAX); above it, a connection idle for POOL_IDLE_TIMEOUT closes.
  POOL_MIN: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
  POOL_IDLE_TIMEOUT: Type.Integer({ default: 60, minimum: 1, maximum: 86_400 }),
  STATEMENT_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 1, maximum: 86_400_000 }),
  BODY_LIMIT: Type.Integer({ default: 1_048_576, minimum: 1024, maximum: 1_073_741_824 }),
  BATCH_MAX: Type.Integer({ default: 1000, minimum: 1, maximum: 100_000 }),
  // How long an Idempotency-Key is remembered (docs/reliability.md): a retry within it never writes twice.
  IDEMPOTENCY_TTL_S: Type.Integer({ default: 86_400, minimum: 60, maximum: 2_592_000 }),
  SHUTDOWN_TIMEOUT: Type.Number({ default: 30, exclusiveMinimum: 0, maximum: 3600 }),
  WORKERS: Type.String({ default: '1' }),
  // Security (docs/security.md).
  AUTH_MODE: Type.Optional(Type.Unsafe<'on' | 'off'>({ type: 'string', enum: ['on', 'off'] })),
  AUTH_REGISTRATION: Type.Optional(Type.Boolean()),
  JWT_SECRET: Type.Optional(Type.String()),
  JWT_ISSUER: Type.String({ default: 'spate', minLength: 1 }),
  JWT_AUDIENCE: Type.String({ default: 'spate-api', minLength: 1 }),
  ACCESS_TOKEN_TTL: Type.Integer({ default: 900, minimum: 30, maximum: 86_400 }),
  REFRESH_TOKEN_TTL: Type.Integer({ default: 1_209_600, minimum: 60, maximum: 31_536_000 }),
  AUTH_CACHE_TTL_MS: Type.Integer({ default: 5000, minimum: 0, maximum: 300_000 }),
  AUTH_POOL_MAX: Type.Integer({ default: 4, minimum: 1, maximum: 100 }),
  ADMIN_EMAIL: Type.Optional(Type.String({ minLength: 3, maxLength: 254, pattern: '^[^@\\s]+@[^@\\s]+$' })),
  ADMIN_PASSWORD: Type.Optional(Type.String()),
  METRICS_TOKEN: Type.Optional(Type.String()),
  RATE_LIMIT_MAX: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ default: 60_000, minimum: 1000, maximum: 86_400_000 }),
  RATE_LIMIT_LOGIN_MAX: Type.Integer({ default: 10, minimum: 1, maximum: 1_000_000 }),
  RATE_LIMIT_LOGIN_IP_MAX: Type.Integer({ default: 100, minimum: 1, maximum: 1_000_000 }),
  RATE_LIMIT_LOGIN_WINDOW_MS: Type.Integer({ default: 60_000, minimum: 1000, maximum: 86_400_000 }),
  CORS_ORIGINS: Type.Optional(Type.String()),
  CORS_CREDENTIALS: Type.Boolean({ default: false }),
  TRUST_PROXY: Type.Optional(Type.String({ minLength: 1 })),
  CONNECTION_TIMEOUT_MS: Type.Integer({ default: 0, minimum: 0, maximum: 86_400_000 }),
  KEEP_ALIVE_TIMEOUT_MS: Type.Integer({ default: 72_000, minimum: 1, maximum: 3_600_000 }),
  REQUEST_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 0, maximum: 3_600_000 }),
  HEADERS_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 100, maximum: 3_600_000 }),
  // Resilience (docs/reliability.md): load shedding, stream bounds, the Redis breaker, the invalidation heartbeat.
  OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
  OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: Type.Number({ default: 0, minimum: 0, maximum: 1 }),
  OVERLOAD_MAX_HEAP_USED_BYTES: Type.Integer({ default: 0, minimum: 0 }),
  // Rows that pages in flight may hold at once (src/platform/http/cost-budget.ts); 0: no bound.
  PAGE_ROWS_IN_FLIGHT: Type.Integer({ default: 20_000, minimum: 0, maximum: 100_000_000 }),
  STREAM_STALL_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 0, maximum: 3_600_000 }),
  STREAM_POOL_SHARE: Type.Number({ default: 0.5, exclusiveMinimum: 0, maximum: 1 }),
  REDIS_BREAKER_FAILURES: Type.Integer({ default: 3, minimum: 1, maximum: 1000 }),
  REDIS_BREAKER_HALF_OPEN_MS: Type.Integer({ default: 1000, minimum: 10, maximum: 600_000 }),
  AUTH_BUS_HEARTBEAT_MS: Type.Integer({ default: 250, minimum: 10, maximum: 60_000 }),
  // Read replicas (docs/operations.md, "Read replicas").
  DATABASE_REPLICA_URLS: Type.Optional(Type.String()),
  REPLICA_MAX_LAG_MS: Type.Integer({ default: 1000, minimum: 1, maximum: 3_600_000 }),
  REPLICA_POLL_MS: Type.Integer({ default: 200, minimum: 10, maximum: 60_000 }),
  // Jobs (docs/jobs.md).
  ROLE: Type.Unsafe<'all' | 'api' | 'worker'>({ type: 'string', enum: ['all', 'api', 'worker'], default: 'all' }),
  JOB_CONCURRENCY: Type.Integer({ default: 10, minimum: 1, maximum: 1000 }),
  JOB_VISIBILITY_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 100, maximum: 86_400_000 }),
  JOB_POLL_MS: Type.Integer({ default: 1000, minimum: 10, maximum: 600_000 }),
  JOB_POOL_MAX: Type.Integer({ default: 4, minimum: 1, maximum: 100 }),
  JOB_RETENTION_DAYS: Type.Number({ default: 7, exclusiveMinimum: 0, maximum: 3650 }),
  // Events and webhooks (docs/webhooks.md).
  EVENTS: Type.Unsafe<'on' | 'off'>({ type: 'string', enum: ['on', 'off'], default: 'on' }),
  WEBHOOK_ALLOWED_HOSTS: Type.Optional(Type.String()),
  WEBHOOK_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 100, maximum: 300_000 }),
  WEBHOOK_MAX_ATTEMPTS: Type.Integer({ default: 8, minimum: 1, maximum: 100 }),
  WEBHOOK_RETRY_BASE_MS: Type.Integer({ default: 5000, minimum: 10, maximum: 3_600_000 }),
  WEBHOOK_RETRY_MAX_MS: Type.Integer({ default: 3_600_000, minimum: 10, maximum: 86_400_000 }),
  OUTBOX_POLL_MS: Type.Integer({ default: 1000, minimum: 10, maximum: 600_000 }),
  // The users cache (docs/caching.md).
  CACHE_MODE: Type.Optional(Type.Unsafe<CacheMode>({ type: 'string', enum: ['off', 'memory', 'redis'] })),
  CACHE_TTL_MS: Type.Integer({ default: 5000, minimum: 1, maximum: 3_600_000 }),
  CACHE_MAX_ENTRIES: Type.Integer({ default: 10_000, minimum: 1, maximum: 10_000_000 }),
  CACHE_MAX_BYTES: Type.Integer({ default: 64 * 1024 * 1024, minimum: 1024, maximum: 16 * 1024 * 1024 * 1024 }),
  CACHE_CONTROL: Type.String({ default: 'private, no-cache', minLength: 1, pattern: '^[\\x20-\\x7e]+$' }),
  CACHE_VARY: Type.String({ default: 'Authorization', minLength: 1, pattern: '^[A-Za-z0-9, -]+$' }),
  // Tracing (docs/tracing.md): the standard OTEL_* variables that decide whether it is on; the SDK reads the
  // others (headers, batching, resource attributes) itself.
  OTEL_SDK_DISABLED: Type.Boolean({ default: false }),
  OTEL_TRACES_EXPORTER: Type.Optional(Type.Unsafe<'otlp' | 'none'>({ type: 'string', enum: ['otlp', 'none'] })),
  OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://' })),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://' })),
  // The JSON encoding is the one exporter shipped; the spec's default (http/protobuf) is refused, not ignored.
  OTEL_EXPORTER_OTLP_PROTOCOL: Type.Optional(Type.Unsafe<'http/json'>({ type: 'string', enum: ['http/json'] })),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Type.Optional(Type.Unsafe<'http/json'>({ type: 'string', enum: ['http/json'] })),
  OTEL_TRACES_SAMPLER: Type.Optional(Type.Unsafe<string>({ type: 'string', enum: [
    'always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio',
  ] })),
  OTEL_TRACES_SAMPLER_ARG: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  // Bulk import and export (docs/bulk.md).
  EXPORTS_DIR: Type.Optional(Type.String({ minLength: 1 })),
  EXPORT_TTL_S: Type.Integer({ default: 86_400, minimum: 1, maximum: 31_536_000 }),
  EXPORT_SIGNING_SECRET: Type.Optional(Type.String()),
  IMPORT_MAX_BYTES: Type.Integer({ default: 10 * 1024 ** 3, minimum: 1024 }),
  IMPORT_MAX_ERRORS: Type.Integer({ default: 1000, minimum: 1, maximum: 1_000_000 }),
  // Resumable uploads (docs/uploads.md).
  UPLOADS_DIR: Type.Optional(Type.String({ minLength: 1 })),
  UPLOAD_MAX_BYTES: Type.Integer({ default: 10 * 1024 ** 3, minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  UPLOAD_EXPIRY_S: Type.Integer({ default: 86_400, minimum: 1, maximum: 31_536_000 }),
});
type Env = Static<typeof Env>;

/** The typed settings object that everything else receives. */
export interface Config {
  env: string;
  host: string;
  port: number;
  logLevel: string;
  /** Where the embedded PostgreSQL keeps its data when `databaseUrl` is unset. */
  dataDir: string;
  databaseUrl: string | undefined;
  cassandra: CassandraConfig | undefined;
  redisUrl: string | undefined;
  pool: { max: number; min: number; idleTimeoutS: number; acquireTimeoutMs: number; statementTimeoutMs: number };
  bodyLimit: number;
  batchMax: number;
  /** Seconds an Idempotency-Key is remembered. */
  idempotencyTtlS: number;
  shutdownTimeoutMs: number;
  /** Worker processes sharing the port (src/process/cluster.ts); 1 serves from this process alone. */
  workers: number;
  auth: AuthConfig;
  rateLimit: RateLimitConfig;
  http: HttpConfig;
  /** `/metrics*` answer only to this bearer token (or an admin) when set. */
  metricsToken: string | undefined;
  resilience: ResilienceConfig;
  /** PostgreSQL read replicas for list and stream reads; undefined when none are configured. */
  replicas: ReplicasConfig | undefined;
  jobs: JobsConfig;
  webhooks: WebhooksConfig;
  cache: CacheConfig;
  /** OpenTelemetry tracing (docs/tracing.md): on when an OTLP endpoint is set or OTEL_TRACES_EXPORTER=otlp. */
  tracing: { enabled: boolean };
  bulk: BulkConfig;
  uploads: UploadsConfig;
}

/** Bulk import and export (docs/bulk.md). */
export interface BulkConfig {
  /** Where import bodies are spooled until their job has run (under DATA_DIR). */
  spoolDir: string;
  /** Where finished exports are kept until they expire. */
  exportsDir: string;
  /** How long an export's download URL (and its file) lives. */
  exportTtlS: number;
  /** The HMAC key of download URLs; unset, one derived from JWT_SECRET, or without that one per process. */
  signingSecret: string | undefined;
  /** Largest import body accepted. */
  importMaxBytes: number;
  /** Invalid rows listed in an import's report; the count beyond is still given. */
  importMaxErrors: number;
}

/** Resumable uploads (docs/uploads.md). */
export interface UploadsConfig {
  /** Where upload files and their info live; `UPLOADS_DIR`, else `DATA_DIR`/uploads. */
  dir: string;
  /** Largest upload accepted (`Upload-Length`); larger ones are refused with 413 before anything is stored. */
  maxBytes: number;
  /** An unfinished upload expires this long after its creation and is then deleted by the sweep. */
  expiryMs: number;
}

/** Bounds that keep one fault from spreading (docs/reliability.md). */
export interface ResilienceConfig {
  /** Answer 503 early while the process is over these (0: that check off); `/health/live` is exempt. */
  overload: { maxEventLoopDelayMs: number; maxEventLoopUtilization: number; maxHeapUsedBytes: number };
  /** Rows that pages in flight may hold at once; a page that does not fit is refused with 503 (0: no bound). */
  pageRowsInFlight: number;
  /** How long a stream may wait for a reader that stopped reading before it is aborted (0: no bound). */
  streamStallTimeoutMs: number;
  /** The share of the pool open streams may hold at once; the rest stays free for everything else. */
  streamPoolShare: number;
  /** The Redis circuit breaker: consecutive failures that open it, and how long before it tries again. */
  redisBreaker: { failures: number; halfOpenMs: number };
  /** How often the invalidation subscription proves it is alive; caches are bypassed once it misses two. */
  busHeartbeatMs: number;
}

export interface ReplicasConfig {
  urls: string[];
  /** A replica serves reads only while it is at most this far behind the primary (measured). */
  maxLagMs: number;
  /** How often each replica's replay position is compared with the primary's. */
  pollMs: number;
}

/** The job queue (docs/jobs.md). */
export interface JobsConfig {
  /** `all`: API and workers in one process; `api`: no workers; `worker`: workers and the health routes only. */
  role: 'all' | 'api' | 'worker';
  /** Jobs one process runs at a time. */
  concurrency: number;
  /** A job whose worker stops extending its lease for this long (it died) is taken up again. */
  visibilityTimeoutMs: number;
  /** Delayed jobs coming due and dead workers' jobs are found by a poll this often; new jobs wake workers at once. */
  pollMs: number;
  /** Connections of the job queue's own pool. */
  poolMax: number;
  /** Ended jobs (succeeded, failed, cancelled) are deleted this long after they ended. */
  retentionMs: number;
}

export type CacheMode = 'off' | 'memory' | 'redis';

/** The users cache (docs/caching.md). */
export interface CacheConfig {
  mode: CacheMode;
  /** How long an entry lives from the moment it was read from the database: the maximum staleness of any read. */
  ttlMs: number;
  /** Bounds of the in-process layer; the least recently used entries go first. */
  maxEntries: number;
  maxBytes: number;
  /** `Cache-Control` and `Vary` of user responses; the default never lets a shared cache keep them. */
  cacheControl: string;
  vary: string;
}

/**
 * The Cassandra backend (docs/cassandra.md). Only the connection fields are required, so a config built by hand
 * (tests) stays short; `loadConfig` always fills every field, and the adapter applies `CASSANDRA_DEFAULTS` to the rest.
 */
export interface CassandraConfig {
  hosts: string[];
  port: number;
  keyspace: string;
  localDc: string;
  /** Used only when the keyspace does not exist yet. */
  replication?: { strategy: 'SimpleStrategy' | 'NetworkTopologyStrategy'; factor: number };
  /** Defaults for these and the fields below: `CASSANDRA_DEFAULTS`. */
  readConsistency?: ReadConsistency;
  writeConsistency?: WriteConsistency;
  /** The Paxos phase of conditional updates. */
  serialConsistency?: SerialConsistency;
  /** Bound on one store call when the request sets no deadline. */
  requestTimeoutMs?: number;
  /** Send an idempotent request to a second host when the first has not answered after this long. Default off. */
  speculativeDelayMs?: number;
  /** Answer 503 at once when the driver sees too few replicas up for the consistency level. */
  failFast?: boolean;
  /** Native protocol version; default negotiated (Cassandra 2.1 speaks 3). */
  protocolVersion?: number;
  credentials?: { username: string; password: string };
}

export interface AuthConfig {
  /** `on`: every non-public route needs a credential with the right scope. `off`: /users open, admin routes loopback-only. */
  mode: 'on' | 'off';
  registration: boolean;
  /** Undefined outside production when unset: the auth plugin then generates one per process. */
  jwtSecret: string | undefined;
  issuer: string;
  audience: string;
  accessTtlS: number;
  refreshTtlS: number;
  cacheTtlMs: number;
  poolMax: number;
  admin: { email: string; password: string } | undefined;
}

export interface RateLimitConfig {
  /** Requests per client per window on every route; 0 turns the general limit off. */
  max: number;
  windowMs: number;
  /** Attempts per client IP and email per window on /auth/token and /auth/register. */
  loginMax: number;
  /** Attempts per client IP (any email) per window on the same routes. */
  loginIpMax: number;
  loginWindowMs: number;
}

export interface HttpConfig {
  /** Fastify `trustProxy`: false, true, a hop count, or addresses/subnets of the proxies. */
  trustProxy: boolean | number | string[];
  cors: { origins: string[]; credentials: boolean } | undefined;
  connectionTimeoutMs: number;
  keepAliveTimeoutMs: number;
  requestTimeoutMs: number;
  headersTimeoutMs: number;
}

/** A configuration value that cannot be used; the message names the variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Reads and validates configuration from `source` (default: `process.env` plus `.env`).
 * Tests pass an explicit object so they never depend on the developer's environment.
 */
export function loadConfig(source?: Record<string, string | undefined>): Config {
  let env: Env;
  try {
    env = envSchema<Env>({
      schema: Env,
      data: source ?? {},
      dotenv: source === undefined,
      env: source === undefined,
    });
  } catch (err) {
    // env-schema reports "env/PORT must be <= 65535"; strip the prefix so the variable leads the message.
    const msg = (err as Error).message.replace(/env\//g, '').replace(/^env /, '');
    throw new ConfigError(`Invalid configuration: ${msg}`);
  }
  return toConfig(env);
}

function poolMin(env: Env): number {
  const min = env.POOL_MIN ?? env.POOL_MAX;
  if (min > env.POOL_MAX) throw new ConfigError(`Invalid configuration: POOL_MIN (${min}) must not exceed POOL_MAX (${env.POOL_MAX})`);
  return min;
}

function toConfig(env: Env): Config {
  const hosts = env.CASSANDRA_HOSTS?.split(',').map((h) => h.trim()).filter(Boolean);
  if (env.CASSANDRA_HOSTS !== undefined && env.DATABASE_URL !== undefined) {
    throw new ConfigError('Invalid configuration: set DATABASE_URL or CASSANDRA_HOSTS, not both');
  }
  // The Cassandra backend's job queue lives in Redis (docs/jobs.md): without it the service could not run jobs.
  if (hosts?.length && env.REDIS_URL === undefined) {
    throw new ConfigError('Invalid configuration: CASSANDRA_HOSTS needs REDIS_URL (the job queue of the Cassandra backend is in Redis)');
  }
  return {
    env: env.NODE_ENV,
    host: env.HOST,
    port: env.PORT,
    logLevel: env.LOG_LEVEL,
    dataDir: env.DATA_DIR,
    databaseUrl: env.DATABASE_URL,
    cassandra: hosts?.length ? cassandraConfig(env, hosts) : undefined,
    redisUrl: env.REDIS_URL,
    pool: {
      max: env.POOL_MAX,
      min: poolMin(env),
      idleTimeoutS: env.POOL_IDLE_TIMEOUT,
      acquireTimeoutMs: env.POOL_ACQUIRE_TIMEOUT_MS,
      statementTimeoutMs: env.STATEMENT_TIMEOUT_MS,
    },
    bodyLimit: env.BODY_LIMIT,
    batchMax: env.BATCH_MAX,
    idempotencyTtlS: env.IDEMPOTENCY_TTL_S,
    shutdownTimeoutMs: Math.round(env.SHUTDOWN_TIMEOUT * 1000),
    workers: parseWorkers(env.WORKERS),
    auth: authConfig(env),
    rateLimit: {
      // Off outside production, so the contract's clients and load tests from one address run unthrottled.
      max: env.RATE_LIMIT_MAX ?? (env.NODE_ENV === 'production' ? 1000 : 0),
      windowMs: env.RATE_LIMIT_WINDOW_MS,
      loginMax: env.RATE_LIMIT_LOGIN_MAX,
      loginIpMax: env.RATE_LIMIT_LOGIN_IP_MAX,
      loginWindowMs: env.RATE_LIMIT_LOGIN_WINDOW_MS,
    },
    http: httpConfig(env),
    metricsToken: env.METRICS_TOKEN === undefined ? undefined : checkedSecret('METRICS_TOKEN', env.METRICS_TOKEN, 16),
    resilience: {
      overload: {
        // On in every mode: `npm start` runs as development, and an overloaded development server must shed too.
        // Tests and load tests that measure the server unshed pass 0.
        maxEventLoopDelayMs: env.OVERLOAD_MAX_EVENT_LOOP_DELAY_MS ?? 500,
        maxEventLoopUtilization: env.OVERLOAD_MAX_EVENT_LOOP_UTILIZATION,
        maxHeapUsedBytes: env.OVERLOAD_MAX_HEAP_USED_BYTES,
      },
      pageRowsInFlight: env.PAGE_ROWS_IN_FLIGHT,
      streamStallTimeoutMs: env.STREAM_STALL_TIMEOUT_MS,
      streamPoolShare: env.STREAM_POOL_SHARE,
      redisBreaker: { failures: env.REDIS_BREAKER_FAILURES, halfOpenMs: env.REDIS_BREAKER_HALF_OPEN_MS },
      busHeartbeatMs: env.AUTH_BUS_HEARTBEAT_MS,
    },
    replicas: replicasConfig(env),
    jobs: {
      role: env.ROLE,
      concurrency: env.JOB_CONCURRENCY,
      visibilityTimeoutMs: env.JOB_VISIBILITY_TIMEOUT_MS,
      pollMs: env.JOB_POLL_MS,
      poolMax: env.JOB_POOL_MAX,
      retentionMs: Math.round(env.JOB_RETENTION_DAYS * 86_400_000),
    },
    webhooks: webhooksConfig(env),
    cache: cacheConfig(env),
    tracing: {
      enabled: !env.OTEL_SDK_DISABLED && (env.OTEL_TRACES_EXPORTER === 'otlp' || (env.OTEL_TRACES_EXPORTER === undefined
        && (env.OTEL_EXPORTER_OTLP_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) !== undefined)),
    },
    bulk: bulkConfig(env),
    uploads: {
      dir: env.UPLOADS_DIR ?? join(env.DATA_DIR, 'uploads'),
      maxBytes: env.UPLOAD_MAX_BYTES,
      expiryMs: env.UPLOAD_EXPIRY_S * 1000,
    },
  };
}

function bulkConfig(env: Env): BulkConfig {
  return {
    spoolDir: join(env.DATA_DIR, 'imports'),
    exportsDir: env.EXPORTS_DIR ?? join(env.DATA_DIR, 'exports'),
    exportTtlS: env.EXPORT_TTL_S,
    signingSecret: env.EXPORT_SIGNING_SECRET === undefined ? undefined : checkedSecret('EXPORT_SIGNING_SECRET', env.EXPORT_SIGNING_SECRET, 32),
    importMaxBytes: env.IMPORT_MAX_BYTES,
    importMaxErrors: env.IMPORT_MAX_ERRORS,
  };
}

/** One entry of WEBHOOK_ALLOWED_HOSTS: a host name or address, and the one port it is allowed on when given. */
export interface AllowedHost { host: string; port: number | undefined }

/** Events and webhooks (docs/webhooks.md). */
export interface WebhooksConfig {
  /** Record users events in the outbox, atomically with each write. */
  events: boolean;
  /** Hosts webhooks may reach although they are private, loopback or link-local addresses (refused otherwise). */
  allowedHosts: AllowedHost[];
  /** A delivery without a complete 2xx answer within this long is a failed attempt. */
  timeoutMs: number;
  /** Attempts per delivery, the first included; then the delivery job fails for good. */
  maxAttempts: number;
  /** Exponential backoff between attempts, with jitter (src/platform/jobs/backoff.ts). */
  retry: { baseMs: number; maxMs: number };
  /** The relay is woken by each commit; it also looks this often (a missed wake-up, a dead relay's events). */
  outboxPollMs: number;
}

function webhooksConfig(env: Env): WebhooksConfig {
  if (env.WEBHOOK_RETRY_MAX_MS < env.WEBHOOK_RETRY_BASE_MS) {
    throw new ConfigError('Invalid configuration: WEBHOOK_RETRY_MAX_MS must not be below WEBHOOK_RETRY_BASE_MS');
  }
  const allowedHosts = (env.WEBHOOK_ALLOWED_HOSTS ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean).map((entry) => {
    // host, host:port, [v6 address] or [v6 address]:port
    const m = /^(?:\[([\da-f:.]+)\]|([a-z\d._-]+))(?::(\d{1,5}))?$/.exec(entry);
    const port = m?.[3] === undefined ? undefined : Number(m[3]);
    if (!m || (port !== undefined && (port < 1 || port > 65535))) {
      throw new ConfigError(`Invalid configuration: WEBHOOK_ALLOWED_HOSTS entry '${entry}' is not a host, host:port or [address]:port`);
    }
    return { host: m[1] ?? m[2]!, port };
  });
  return {
    events: env.EVENTS === 'on',
    allowedHosts,
    timeoutMs: env.WEBHOOK_TIMEOUT_MS,
    maxAttempts: env.WEBHOOK_MAX_ATTEMPTS,
    retry: { baseMs: env.WEBHOOK_RETRY_BASE_MS, maxMs: env.WEBHOOK_RETRY_MAX_MS },
    outboxPollMs: env.OUTBOX_POLL_MS,
  };
}

/**
 * The cache is on by default in production only (Redis as its shared layer when REDIS_URL is set): outside it,
 * a developer who edits a row by hand sees the change at once.
 */
function cacheConfig(env: Env): CacheConfig {
  const mode = env.CACHE_MODE ?? (env.NODE_ENV !== 'production' ? 'off' : env.REDIS_URL ? 'redis' : 'memory');
  if (mode === 'redis' && env.REDIS_URL === undefined) {
    throw new ConfigError('Invalid configuration: CACHE_MODE=redis needs REDIS_URL');
  }
  return {
    mode, ttlMs: env.CACHE_TTL_MS, maxEntries: env.CACHE_MAX_ENTRIES, maxBytes: env.CACHE_MAX_BYTES,
    cacheControl: env.CACHE_CONTROL, vary: env.CACHE_VARY,
  };
}

/** `DATABASE_REPLICA_URLS` (comma-separated PostgreSQL URLs) with its lag bound and polling period. */
function replicasConfig(env: Env): ReplicasConfig | undefined {
  const urls = env.DATABASE_REPLICA_URLS?.split(',').map((u) => u.trim()).filter(Boolean) ?? [];
  if (urls.length === 0) return undefined;
  if (env.CASSANDRA_HOSTS !== undefined) {
    throw new ConfigError('Invalid configuration: DATABASE_REPLICA_URLS needs the PostgreSQL backend, not CASSANDRA_HOSTS');
  }
  urls.forEach((url, i) => {
    if (!/^postgres(ql)?:\/\/[^\s,]+$/.test(url)) {
      throw new ConfigError(`Invalid configuration: DATABASE_REPLICA_URLS entry ${i + 1} is not a postgres:// URL`);
    }
  });
  if (new Set(urls).size !== urls.length) {
    throw new ConfigError('Invalid configuration: DATABASE_REPLICA_URLS lists a replica twice');
  }
  // A replica's lag is known only as of its last poll, and it counts against the bound: polling as slowly as the
  // bound allows would leave no replica ever usable.
  if (env.REPLICA_POLL_MS * 2 > env.REPLICA_MAX_LAG_MS) {
    throw new ConfigError('Invalid configuration: REPLICA_POLL_MS must be at most half of REPLICA_MAX_LAG_MS');
  }
  return { urls, maxLagMs: env.REPLICA_MAX_LAG_MS, pollMs: env.REPLICA_POLL_MS };
}

/** Words of a value copied from an example instead of generated; anything with few distinct characters too. */
const PLACEHOLDER = /change.?(me|this|it)|placeholder|your.?(secret|password|token)|^(secret|password|jwt.?secret|admin|example|default|test)[\W\d_]*$/i;

/** A secret that is long enough and not an obvious placeholder, or a `ConfigError` naming the variable. */
function checkedSecret(name: string, value: string, minBytes: number): string {
  if (Buffer.byteLength(value) < minBytes) {
    throw new ConfigError(`Invalid configuration: ${name} must be at least ${minBytes} bytes (e.g. openssl rand -base64 48)`);
  }
  if (PLACEHOLDER.test(value) || new Set(value).size < 8) {
    throw new ConfigError(`Invalid configuration: ${name} looks like a placeholder; use a random value (e.g. openssl rand -base64 48)`);
  }
  return value;
}

function cassandraConfig(env: Env, hosts: string[]): CassandraConfig {
  if ((env.CASSANDRA_USERNAME === undefined) !== (env.CASSANDRA_PASSWORD === undefined)) {
    throw new ConfigError('Invalid configuration: set both CASSANDRA_USERNAME and CASSANDRA_PASSWORD, or neither');
  }
  for (const host of hosts) {
    if (!/^[\w.:[\]-]+$/.test(host)) {
      throw new ConfigError(`Invalid configuration: CASSANDRA_HOSTS entry '${host}' is not a host name or address`);
    }
  }
  return {
    hosts,
    port: env.CASSANDRA_PORT,
    keyspace: env.CASSANDRA_KEYSPACE,
    localDc: env.CASSANDRA_LOCAL_DC,
    replication: { strategy: env.CASSANDRA_REPLICATION_STRATEGY, factor: env.CASSANDRA_REPLICATION_FACTOR },
    readConsistency: env.CASSANDRA_READ_CONSISTENCY,
    writeConsistency: env.CASSANDRA_WRITE_CONSISTENCY,
    serialConsistency: env.CASSANDRA_SERIAL_CONSISTENCY,
    requestTimeoutMs: env.CASSANDRA_REQUEST_TIMEOUT_MS,
    speculativeDelayMs: env.CASSANDRA_SPECULATIVE_DELAY_MS,
    failFast: env.CASSANDRA_FAIL_FAST,
    protocolVersion: env.CASSANDRA_PROTOCOL_VERSION,
    credentials: env.CASSANDRA_USERNAME !== undefined && env.CASSANDRA_PASSWORD !== undefined
      ? { username: env.CASSANDRA_USERNAME, password: env.CASSANDRA_PASSWORD }
      : undefined,
  };
}

function authConfig(env: Env): AuthConfig {
  const production = env.NODE_ENV === 'production';
  if (production && env.JWT_SECRET === undefined) {
    throw new ConfigError('Invalid configuration: JWT_SECRET is required when NODE_ENV=production (e.g. openssl rand -base64 48)');
  }
  if ((env.ADMIN_EMAIL === undefined) !== (env.ADMIN_PASSWORD === undefined)) {
    throw new ConfigError('Invalid configuration: set both ADMIN_EMAIL and ADMIN_PASSWORD, or neither');
  }
  if (env.ADMIN_PASSWORD !== undefined) {
    if (env.ADMIN_PASSWORD.length < 8 || env.ADMIN_PASSWORD.length > 1024) {
      throw new ConfigError('Invalid configuration: ADMIN_PASSWORD must be 8 to 1024 characters');
    }
    if (production) checkedSecret('ADMIN_PASSWORD', env.ADMIN_PASSWORD, 12);
  }
  return {
    mode: env.AUTH_MODE ?? (production ? 'on' : 'off'),
    registration: env.AUTH_REGISTRATION ?? !production,
    jwtSecret: env.JWT_SECRET === undefined ? undefined : checkedSecret('JWT_SECRET', env.JWT_SECRET, 32),
    issuer: env.JWT_ISSUER,
    audience: env.JWT_AUDIENCE,
    accessTtlS: env.ACCESS_TOKEN_TTL,
    refreshTtlS: env.REFRESH_TOKEN_TTL,
    cacheTtlMs: env.AUTH_CACHE_TTL_MS,
    poolMax: env.AUTH_POOL_MAX,
    admin: env.ADMIN_EMAIL !== undefined && env.ADMIN_PASSWORD !== undefined
      ? { email: env.ADMIN_EMAIL, password: env.ADMIN_PASSWORD }
      : undefined,
  };
}

/** Most worker processes accepted: far past any core count, low enough that a typo cannot fork-bomb the host. */
const MAX_WORKERS = 256;

/** `WORKERS`: a count, or `auto` for one per core this process may use. */
function parseWorkers(raw: string): number {
  const value = raw.trim().toLowerCase();
  if (value === 'auto') return availableParallelism();
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= MAX_WORKERS)) {
    throw new ConfigError(`Invalid configuration: WORKERS must be auto or a whole number from 1 to ${MAX_WORKERS}`);
  }
  return n;
}

function httpConfig(env: Env): HttpConfig {
  if (env.REQUEST_TIMEOUT_MS > 0 && env.HEADERS_TIMEOUT_MS > env.REQUEST_TIMEOUT_MS) {
    throw new ConfigError('Invalid configuration: HEADERS_TIMEOUT_MS must not exceed REQUEST_TIMEOUT_MS');
  }
  return {
    trustProxy: parseTrustProxy(env.TRUST_PROXY),
    cors: parseCors(env.CORS_ORIGINS, env.CORS_CREDENTIALS),
    connectionTimeoutMs: env.CONNECTION_TIMEOUT_MS,
    keepAliveTimeoutMs: env.KEEP_ALIVE_TIMEOUT_MS,
    requestTimeoutMs: env.REQUEST_TIMEOUT_MS,
    headersTimeoutMs: env.HEADERS_TIMEOUT_MS,
  };
}

function parseTrustProxy(raw: string | undefined): HttpConfig['trustProxy'] {
  const value = raw?.trim().toLowerCase();
  if (value === undefined || value === '' || value === 'false') return false;
  if (value === 'true') return true;
  if (/^\d+$/.test(value)) return Number(value);
  const list = value.split(',').map((s) => s.trim()).filter(Boolean);
  const named = new Set(['loopback', 'linklocal', 'uniquelocal']);
  for (const item of list) {
    if (!named.has(item) && !/^[\d.]+(\/\d{1,2})?$|^[\da-f:.]+(\/\d{1,3})?$/.test(item)) {
      throw new ConfigError(`Invalid configuration: TRUST_PROXY entry '${item}' is not an address, subnet, hop count, true or false`);
    }
  }
  return list;
}

function parseCors(raw: string | undefined, credentials: boolean): HttpConfig['cors'] {
  const origins = raw?.split(',').map((s) => s.trim()).filter(Boolean) ?? [];
  if (origins.length === 0) return undefined;
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`Invalid configuration: CORS_ORIGINS entry '${origin}' is not an origin like https://app.example.com`);
    }
  }
  if (credentials && origins.includes('*')) {
    throw new ConfigError('Invalid configuration: CORS_ORIGINS=* cannot be combined with CORS_CREDENTIALS=true');
  }
  return { origins, credentials };
}
