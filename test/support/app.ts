/**
 * Builds the real app for tests, against a real database, exactly as the server does.
 */
import { after, before } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { buildApp, type BuildOptions } from '../../src/app.ts';
import { loadConfig, type Config } from '../../src/platform/config.ts';
import { createTestDatabase, type TestDatabase } from './postgres.ts';
import { UNSHED } from './unshed.ts';

export { UNSHED };

/** Configuration from explicit values only, never the developer's environment or .env. */
export function testConfig(databaseUrl: string, env: Record<string, string> = {}): Config {
  return loadConfig({ DATABASE_URL: databaseUrl, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', ...UNSHED, ...env });
}

export async function startApp(
  databaseUrl: string,
  env: Record<string, string> = {},
  opts: BuildOptions = {},
): Promise<FastifyInstance> {
  const config = testConfig(databaseUrl, env);
  const app = await buildApp(config, { logger: { level: config.logLevel }, ...opts });
  await app.ready();
  return app;
}

/** A valid user body with overrides; the email is unique per call. */
let seq = 0;
export function userBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  seq += 1;
  return { name: `Test User ${seq}`, email: `user${seq}.${Date.now()}@example.com`, age: 30, ...overrides };
}

/** A test file's own database, the real app on it and a direct connection, opened before its tests and closed after. */
export interface AppOnDatabase {
  readonly db: TestDatabase;
  readonly app: FastifyInstance;
  /** A connection of the test's own, to check what was stored without going through the app. */
  readonly sql: postgres.Sql;
}

export function appOnNewDatabase(env: Record<string, string> = {}): AppOnDatabase {
  const ctx = {} as { db: TestDatabase; app: FastifyInstance; sql: postgres.Sql };
  before(async () => {
    ctx.db = await createTestDatabase();
    ctx.app = await startApp(ctx.db.url, env);
    ctx.sql = postgres(ctx.db.url, { max: 2, onnotice: () => {} });
  });
  after(async () => {
    await ctx.app?.close();
    await ctx.sql?.end();
    await ctx.db?.destroy();
  });
  return ctx;
}
