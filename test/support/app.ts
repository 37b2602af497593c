/**
 * Builds the real app for tests, against a real database, exactly as the server does.
 */
import type { FastifyInstance } from 'fastify';
import { buildApp, type BuildOptions } from '../../src/app.ts';
import { loadConfig, type Config } from '../../src/config.ts';

/** Configuration from explicit values only, never the developer's environment or .env. */
export function testConfig(databaseUrl: string, env: Record<string, string> = {}): Config {
  return loadConfig({ DATABASE_URL: databaseUrl, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', ...env });
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
