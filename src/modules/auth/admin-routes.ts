/**
 * Account administration (`admin` scope, per the policy table): list, create, change role, disable or
 * re-password, delete. Disabling, deleting or re-passwording an account ends its sessions and keys at once.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errorResponses } from '../../platform/http/error-schemas.ts';
import { idOf, type AuthRoutesOptions } from './routes.ts';
import { CONFLICT, AccountCreate, AccountList, AccountListQuery, AccountPublic, AccountUpdate, IdParams } from './auth-schemas.ts';

const tags = ['auth'];

/** The acting account; undefined for a loopback caller with AUTH_MODE=off, which the policy admits as admin. */
function actor(request: FastifyRequest) {
  const p = request.principal;
  return p !== undefined && 'accountId' in p ? p : undefined;
}

const adminRoutes: FastifyPluginAsyncTypebox<Pick<AuthRoutesOptions, 'service'>> = async (app, { service }) => {
  app.get('/auth/accounts', {
    schema: {
      tags, summary: 'List accounts, oldest first', querystring: AccountListQuery,
      response: { 200: AccountList, ...errorResponses(401, 403, 503) },
    },
  }, async (request) => {
    const { limit, after } = request.query;
    return service().listAccounts({ limit, after: after === undefined ? undefined : idOf(after) });
  });

  app.post('/auth/accounts', {
    schema: {
      tags, summary: 'Create an account with a role', body: AccountCreate,
      response: { 201: AccountPublic, ...CONFLICT, ...errorResponses(401, 403, 413, 503) },
    },
  }, async (request, reply) => {
    const { email, password, role } = request.body;
    return reply.code(201).send(await service().createAccount({ email: email.trim(), password, role }));
  });

  app.patch('/auth/accounts/:id', {
    schema: {
      tags, summary: "Change an account's role, disable or enable it, or set its password", params: IdParams, body: AccountUpdate,
      response: { 200: AccountPublic, ...CONFLICT, ...errorResponses(400, 401, 403, 404, 413, 503) },
    },
  }, async (request) => service().updateAccount(actor(request), idOf(request.params.id), request.body));

  app.delete('/auth/accounts/:id', {
    schema: {
      tags, summary: 'Delete an account with its sessions and keys', params: IdParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...CONFLICT, ...errorResponses(400, 401, 403, 404, 503) },
    },
  }, async (request, reply) => {
    await service().deleteAccount(actor(request), idOf(request.params.id));
    return reply.code(204).send(null);
  });
};

export default adminRoutes;
