/**
 * Configuration: every environment variable Spate reads, parsed once, typed and validated.
 *
 * `.env` is read too. A bad value throws a `ConfigError` naming the variable, and the server turns that into a
 * one-line message and exit code 1. Defaults let a new user start with no configuration at all: embedded
 * PostgreSQL under ./data, listening on 127.0.0.1:8000.
 */
import envSchema from 'env-schema';
import { Type, type Static } from 'typebox';

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
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  POOL_MAX: Type.Integer({ default: 10, minimum: 1, maximum: 1000 }),
  POOL_ACQUIRE_TIMEOUT_MS: Type.Integer({ default: 2000, minimum: 1, maximum: 600_000 }),
  STATEMENT_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 1, maximum: 86_400_000 }),
  BODY_LIMIT: Type.Integer({ default: 1_048_576, minimum: 1024, maximum: 1_073_741_824 }),
  BATCH_MAX: Type.Integer({ default: 1000, minimum: 1, maximum: 100_000 }),
  SHUTDOWN_TIMEOUT: Type.Number({ default: 30, exclusiveMinimum: 0, maximum: 3600 }),
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
  cassandra: { hosts: string[]; port: number; keyspace: string; localDc: string } | undefined;
  redisUrl: string | undefined;
  pool: { max: number; acquireTimeoutMs: number; statementTimeoutMs: number };
  bodyLimit: number;
  batchMax: number;
  shutdownTimeoutMs: number;
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
    cassandra: hosts?.length
      ? { hosts, port: env.CASSANDRA_PORT, keyspace: env.CASSANDRA_KEYSPACE, localDc: env.CASSANDRA_LOCAL_DC }
      : undefined,
    redisUrl: env.REDIS_URL,
    pool: {
      max: env.POOL_MAX,
      acquireTimeoutMs: env.POOL_ACQUIRE_TIMEOUT_MS,
      statementTimeoutMs: env.STATEMENT_TIMEOUT_MS,
    },
    bodyLimit: env.BODY_LIMIT,
    batchMax: env.BATCH_MAX,
    shutdownTimeoutMs: Math.round(env.SHUTDOWN_TIMEOUT * 1000),
  };
}
