/**
 * The /auth routes: tokens (OAuth2 password grant), refresh, logout, registration, the caller's identity and
 * API keys. Thin over the auth service; who may call what is decided by the policy table (src/modules/auth/policy.ts),
 * applied by the auth plugin, not here.
 *
 * Registered in a context of their own that also parses `application/x-www-form-urlencoded` (what OAuth2 clients
 * and Swagger UI send to the token endpoint), so no other route starts accepting forms.
 */
import formbody from '@fastify/formbody';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../platform/errors.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';
import { errorResponses } from '../../platform/http/error-schemas.ts';
import type { AuthService } from './service.ts';
import {
  AccountPublic, CONFLICT, ApiKeyCreate, ApiKeyCreated, ApiKeyList, IdParams, LogoutRequest, Me, RefreshRequest,
  RegisterRequest, TokenRequest, TokenResponse,
} from './auth-schemas.ts';

const tags = ['auth'];
/** Auth bodies are small; a password is at most 1 KiB. */
const BODY_LIMIT = 16 * 1024;
const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' };

export interface AuthRoutesOptions {
  /** The service, once the accounts store is open (after the app is ready). */
  service: () => AuthService;
  registration: boolean;
}

/** The caller as an account principal, or 401 (the policy admits only such callers to these routes). */
function accountCaller(request: FastifyRequest) {
  const p = request.principal;
  if (p === undefined || !('accountId' in p)) throw errors.unauthorized();
  return p;
}

export function idOf(raw: string): string {
  const id = parseUuid(raw);
  if (id === null) throw errors.invalidUuid();
  return id;
}

const authRoutes: FastifyPluginAsyncTypebox<AuthRoutesOptions> = async (app, { service, registration }) => {
  await app.register(formbody, { bodyLimit: BODY_LIMIT });

  app.post('/auth/token', {
    bodyLimit: BODY_LIMIT,
    schema: {
      tags, summary: 'Log in (OAuth2 password grant): an access token and a refresh token',
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      description: 'Form (`username`, `password`) or JSON (`email` or `username`, `password`). Every failure is the same 401.',
      body: TokenRequest,
      response: { 200: TokenResponse, ...errorResponses(401, 413, 429, 503) },
    },
  }, async (request, reply) => {
    const { email, username, password } = request.body;
    const tokens = await service().login((email ?? username ?? '').trim(), password);
    return reply.headers(NO_STORE).send(tokens);
  });

  app.post('/auth/refresh', {
    bodyLimit: BODY_LIMIT,
    schema: {
      tags, summary: 'Exchange a refresh token for new tokens (the old refresh token stops working)',
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      description: 'Presenting an already-used refresh token revokes its whole session (every token issued from that login).',
      body: RefreshRequest,
      response: { 200: TokenResponse, ...errorResponses(401, 413, 429, 503) },
    },
  }, async (request, reply) => reply.headers(NO_STORE).send(await service().refresh(request.body.refresh_token)));

  app.post('/auth/logout', {
    bodyLimit: BODY_LIMIT,
    schema: {
      tags, summary: 'End a session: the one of the refresh token sent, else the one of the access token',
      body: LogoutRequest,
      response: { 204: Type.Null({ description: 'Session revoked' }), ...errorResponses(401, 413, 429, 503) },
    },
  }, async (request, reply) => {
    await service().logout(request.body.refresh_token, request.principal);
    return reply.code(204).send(null);
  });

  if (registration) {
    app.post('/auth/register', {
      bodyLimit: BODY_LIMIT,
      schema: {
        tags, summary: 'Create an account (role viewer)',
        description: 'Can be turned off with AUTH_REGISTRATION=false. Any role or id in the body is ignored.',
        body: RegisterRequest,
        response: { 201: AccountPublic, ...CONFLICT, ...errorResponses(413, 429, 503) },
      },
    }, async (request, reply) => {
      const account = await service().register(request.body.email.trim(), request.body.password);
      return reply.code(201).send(account);
    });
  }

  app.get('/auth/me', {
    schema: { tags, summary: 'The calling account and its scopes', response: { 200: Me, ...errorResponses(401, 503) } },
  }, async (request) => {
    const caller = accountCaller(request);
    return { account: await service().account(caller), scopes: [...caller.scopes], auth: caller.kind };
  });

  app.post('/auth/api-keys', {
    bodyLimit: BODY_LIMIT,
    schema: {
      tags, summary: 'Create an API key (the key is in this response only)',
      description: 'Scopes default to, and cannot exceed, those of the account role. Needs an access token (not a key).',
      body: ApiKeyCreate,
      response: { 201: ApiKeyCreated, ...errorResponses(401, 403, 413, 503) },
    },
  }, async (request, reply) => {
    const { name, scopes, expires_in: expiresInS } = request.body;
    const created = await service().createApiKey(accountCaller(request), { name, scopes, expiresInS });
    return reply.code(201).headers(NO_STORE).send(created);
  });

  app.get('/auth/api-keys', {
    schema: { tags, summary: "The calling account's API keys (never the keys themselves)", response: { 200: ApiKeyList, ...errorResponses(401, 403, 503) } },
  }, async (request) => service().listApiKeys(accountCaller(request)));

  app.delete('/auth/api-keys/:id', {
    schema: {
      tags, summary: 'Revoke an API key (effective at once, on every instance)', params: IdParams,
      response: { 204: Type.Null({ description: 'Revoked' }), ...errorResponses(400, 401, 403, 404, 503) },
    },
  }, async (request, reply) => {
    await service().revokeApiKey(accountCaller(request), idOf(request.params.id));
    return reply.code(204).send(null);
  });
};

export default authRoutes;
