/**
 * Configuration: every environment variable Spate reads, parsed once, typed and validated.
 *
 * `.env` is read too. A bad value throws a `ConfigError` naming the variable, and the server turns that into a
 * one-line message and exit code 1. Defaults let a new user start with no configuration at all: embedded
 * PostgreSQL under ./data, listening on 127.0.0.1:8000.
 */
import { availableParallelism } from 'node:os';
import envSchema from 'env-schema';
import { Type, type Static } from 'typebox';

const READ_CONSISTENCIES = ['ONE', 'TWO', 'THREE', 'QUORUM', 'ALL', 'LOCAL_QUORUM', 'LOCAL_ONE'] as const;
const WRITE_CONSISTENCIES = [...READ_CONSISTENCIES, 'ANY', 'EACH_QUORUM'] as const;
export type ReadConsistency = (typeof READ_CONSISTENCIES)[number];
export type WriteConsistency = (typeof WRITE_CONSISTENCIES)[number];
export type SerialConsistency = 'SERIAL' | 'LOCAL_SERIAL';

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
    type: 'string', enum: ['SimpleStrategy', 'NetworkTopologyStrategy'], default: 'SimpleStrategy',
  }),
  CASSANDRA_REPLICATION_FACTOR: Type.Integer({ default: 1, minimum: 1, maximum: 100 }),
  CASSANDRA_READ_CONSISTENCY: Type.Unsafe<ReadConsistency>({ type: 'string', enum: READ_CONSISTENCIES, default: 'LOCAL_QUORUM' }),
  CASSANDRA_WRITE_CONSISTENCY: Type.Unsafe<WriteConsistency>({ type: 'string', enum: WRITE_CONSISTENCIES, default: 'LOCAL_QUORUM' }),
  CASSANDRA_SERIAL_CONSISTENCY: Type.Unsafe<SerialConsistency>({
    type: 'string', enum: ['SERIAL', 'LOCAL_SERIAL'], default: 'LOCAL_SERIAL',
  }),
  CASSANDRA_REQUEST_TIMEOUT_MS: Type.Integer({ default: 12_000, minimum: 1, maximum: 600_000 }),
  CASSANDRA_SPECULATIVE_DELAY_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
  CASSANDRA_FAIL_FAST: Type.Boolean({ default: true }),
  CASSANDRA_PROTOCOL_VERSION: Type.Optional(Type.Integer({ minimum: 3, maximum: 4 })),
  CASSANDRA_USERNAME: Type.Optional(Type.String({ minLength: 1 })),
  CASSANDRA_PASSWORD: Type.Optional(Type.String()),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  POOL_MAX: Type.Integer({ default: 10, minimum: 1, maximum: 1000 }),
  POOL_ACQUIRE_TIMEOUT_MS: Type.Integer({ default: 2000, minimum: 1, maximum: 600_000 }),
  STATEMENT_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 1, maximum: 86_400_000 }),
  BODY_LIMIT: Type.Integer({ default: 1_048_576, minimum: 1024, maximum: 1_073_741_824 }),
  BATCH_MAX: Type.Integer({ default: 1000, minimum: 1, maximum: 100_000 }),
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
  pool: { max: number; acquireTimeoutMs: number; statementTimeoutMs: number };
  bodyLimit: number;
  batchMax: number;
  shutdownTimeoutMs: number;
  /** Worker processes sharing the port (src/cluster.ts); 1 serves from this process alone. */
  workers: number;
  auth: AuthConfig;
  rateLimit: RateLimitConfig;
  http: HttpConfig;
  /** `/metrics*` answer only to this bearer token (or an admin) when set. */
  metricsToken: string | undefined;
}

/**
 * The Cassandra backend (docs/cassandra.md). Only the connection fields are required, so a config built by hand
 * (tests) stays short; `loadConfig` always fills every field, and the adapter applies the same defaults.
 */
export interface CassandraConfig {
  hosts: string[];
  port: number;
  keyspace: string;
  localDc: string;
  /** Used only when the keyspace does not exist yet. Default SimpleStrategy, factor 1. */
  replication?: { strategy: 'SimpleStrategy' | 'NetworkTopologyStrategy'; factor: number };
  /** Default LOCAL_QUORUM for both. */
  readConsistency?: ReadConsistency;
  writeConsistency?: WriteConsistency;
  /** The Paxos phase of conditional updates. Default LOCAL_SERIAL. */
  serialConsistency?: SerialConsistency;
  /** Bound on one repository call when the request sets no deadline. Default 12000. */
  requestTimeoutMs?: number;
  /** Send an idempotent request to a second host when the first has not answered after this long. Default off. */
  speculativeDelayMs?: number;
  /** Answer 503 at once when the driver sees too few replicas up for the consistency level. Default true. */
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

function toConfig(env: Env): Config {
  const hosts = env.CASSANDRA_HOSTS?.split(',').map((h) => h.trim()).filter(Boolean);
  if (env.CASSANDRA_HOSTS !== undefined && env.DATABASE_URL !== undefined) {
    throw new ConfigError('Invalid configuration: set DATABASE_URL or CASSANDRA_HOSTS, not both');
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
      acquireTimeoutMs: env.POOL_ACQUIRE_TIMEOUT_MS,
      statementTimeoutMs: env.STATEMENT_TIMEOUT_MS,
    },
    bodyLimit: env.BODY_LIMIT,
    batchMax: env.BATCH_MAX,
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
  };
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
