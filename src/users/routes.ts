/**
 * HTTP routes of the users resource: thin handlers over the users service, each with a full schema
 * (params, query, body, every response status) that drives validation, serialization and the OpenAPI document.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { User } from '../storage/repository.ts';
import { DB_ERRORS, errorResponses } from '../schemas.ts';
import {
  BatchCreated, IdParams, ListQuery, UserCreate, UserList, UserPublic, UserUpdate, batchCreate, type BatchCreate,
} from './schemas.ts';

const tags = ['users'];

/** The JSON of list pages by page, while a page lives (see GET /users). */
const serializedPages = new WeakMap<readonly User[], string>();

export interface UsersRoutesOptions {
  batchMax: number;
}

const usersRoutes: FastifyPluginAsyncTypebox<UsersRoutesOptions> = async (app, { batchMax }) => {
  const { users } = app;

  app.post('/users', {
    schema: {
      tags, summary: 'Create a user', body: UserCreate,
      response: { 201: UserPublic, ...errorResponses(413, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const user = await users.create(request.body, request);
    return reply.code(201).header('location', `/users/${user.id}`).send(user);
  });

  app.get('/users', {
    schema: {
      tags, summary: 'List users, oldest first, with keyset pagination',
      description: 'When more rows exist, `Link: <...>; rel="next"` and `X-Next-Cursor` carry the next cursor.',
      querystring: ListQuery,
      response: { 200: UserList, ...errorResponses(400, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const { limit, cursor } = request.query;
    const page = await users.list({ limit, cursor }, request);
    if (page.nextCursor !== null) {
      const next = `/users?limit=${limit}&cursor=${page.nextCursor}`;
      reply.header('link', `<${next}>; rel="next"`).header('x-next-cursor', page.nextCursor);
    }
    // Requests that shared one read share its page object, and so its JSON: serialized once (with the route's
    // 200 schema, as Fastify would), then sent as it is (a JSON string, which the typed `send` does not expect).
    let json = serializedPages.get(page.items);
    if (json === undefined) {
      json = reply.serialize(page.items) as string;
      serializedPages.set(page.items, json);
    }
    return reply.type('application/json; charset=utf-8').send(json as never);
  });

  app.post('/users/batch', {
    schema: {
      tags, summary: `Create 1..${batchMax} users at once, all or nothing`, body: batchCreate(batchMax),
      response: { 201: BatchCreated, ...errorResponses(413, ...DB_ERRORS) },
    },
    // The original service also took a bare array; give it the documented shape before validation, so one
    // schema (and one `loc` style naming the index of a bad item) covers both.
    preValidation: async (request) => {
      if (Array.isArray(request.body)) request.body = { users: request.body } as BatchCreate;
    },
  }, async (request, reply) => {
    const created = await users.createMany(request.body.users, request);
    return reply.code(201).send({ created });
  });

  app.get('/users/:id', {
    schema: {
      tags, summary: 'Get a user', params: IdParams,
      response: { 200: UserPublic, ...errorResponses(400, 404, ...DB_ERRORS) },
    },
  }, async (request) => users.get(request.params.id, request));

  for (const method of ['PUT', 'PATCH'] as const) {
    app.route({
      method,
      url: '/users/:id',
      schema: {
        tags, summary: 'Update a user (partial: only fields present and non-null change)',
        params: IdParams, body: UserUpdate,
        response: { 200: UserPublic, ...errorResponses(400, 404, 413, ...DB_ERRORS) },
      },
      handler: async (request) => users.update(request.params.id, request.body, request),
    });
  }

  app.delete('/users/:id', {
    schema: {
      tags, summary: 'Delete a user (idempotent)', params: IdParams,
      response: { 204: Type.Null({ description: 'Deleted, or already absent' }), ...errorResponses(400, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    await users.delete(request.params.id, request);
    return reply.code(204).send(null);
  });
};

export default usersRoutes;
