/**
 * Callers for the auth tests: accounts of each role, their access tokens and API keys, made through the real
 * HTTP API of an app built with AUTH_MODE=on and a bootstrap admin.
 */
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';

export const ADMIN = { email: 'root@example.com', password: 'admin password 123' };
export const PASSWORD = 'password 12345';
/** A fixed, valid secret, so tests can forge tokens with it. */
export const JWT_SECRET = 'test-secret-4f8a1c9e2b7d6035aa91e0c4d2f7b8e5';

/** Environment of an app with authentication on, a bootstrap admin and limits too high to get in the way. */
export function authEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    AUTH_MODE: 'on',
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    JWT_SECRET,
    RATE_LIMIT_MAX: '1000000',
    RATE_LIMIT_LOGIN_MAX: '100000',
    RATE_LIMIT_LOGIN_IP_MAX: '100000',
    ...extra,
  };
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

let seq = 0;
export const uniqueEmail = (tag = 'acct') => `${tag}${++seq}.${process.pid}.${Date.now()}@example.com`;

export interface Tokens {
  access_token: string;
  refresh_token: string;
}

export async function login(app: FastifyInstance, email: string, password: string): Promise<Tokens> {
  const res = await app.inject({ method: 'POST', url: '/auth/token', payload: { email, password } });
  assert.equal(res.statusCode, 200, res.body);
  return res.json();
}

export async function createAccount(app: FastifyInstance, adminToken: string, role: 'viewer' | 'editor' | 'admin', email = uniqueEmail(role)) {
  const res = await app.inject({
    method: 'POST', url: '/auth/accounts', headers: bearer(adminToken), payload: { email, password: PASSWORD, role },
  });
  assert.equal(res.statusCode, 201, res.body);
  const account = res.json() as { id: string; email: string; role: string };
  return { account, tokens: await login(app, email, PASSWORD) };
}

export async function createKey(app: FastifyInstance, token: string, body: Record<string, unknown> = { name: 'test' }) {
  const res = await app.inject({ method: 'POST', url: '/auth/api-keys', headers: bearer(token), payload: body });
  assert.equal(res.statusCode, 201, res.body);
  return res.json() as { id: string; key: string; scopes: string[] };
}
