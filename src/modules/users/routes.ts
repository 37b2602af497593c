/**
 * HTTP routes of the users resource: thin handlers over the users service, each with a full schema
 * (params, query, body, every response status) that drives validation, serialization and the OpenAPI document.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errors } from '../../platform/errors.ts';
import { Type } from 'typebox';
import type { Expected, UsersStore } from '../../db/users-store.ts';
import { DB_ERRORS, errorResponses } from '../../platform/http/error-schemas.ts';
import {
  BatchCreated, IdParams, ListQuery, UserCreate, UserList, UserPublic, UserUpdate, batchCreate, batchCreateDocumented,
  type BatchCreate,
} from './user-schemas.ts';
import { createUsersService, type ClientKey, type CreateOptions } from './service.ts';
import { consistencyTokens } from './consistency-token.ts';

import { bodyEtag, ifMatchVersions, noneMatch, setValidators, userEtagOf, type CachingHeaders } from '../../platform/http/validators.ts';

const tags = ['users'];
/** A user's strong ETag: id, version and the format of UserPublic (src/platform/http/validators.ts). */
const userEtag = userEtagOf(UserPublic);

/** An `Idempotency-Key`: a token of visible ASCII, bare (as Stripe's clients send it) or a quoted string (the IETF draft). */
const IDEMPOTENCY_KEY = /^"?([\x21\x23-\x7E]{1,255})"?$/;
const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({
    description: 'Makes the create safe to retry: the same key and body within IDEMPOTENCY_TTL_S return the first answer and '
      + 'write nothing; the same key with another body is 422; a key whose first request is still running is 409.',
  })),
});

/** The create's options: its deadline, and the client's idempotency key scoped to its account. */
function createOptions(request: FastifyRequest): CreateOptions {
  const raw = request.headers['idempotency-key'];
  if (raw === undefined) return request;
  const key = typeof raw === 'string' ? IDEMPOTENCY_KEY.exec(raw)?.[1] : undefined;
  if (key === undefined) throw errors.invalidIdempotencyKey();
  const p = request.principal;
  const idempotencyKey: ClientKey = { scope: p !== undefined && 'accountId' in p ? p.accountId : 'anonymous', key };
  return { deadline: request.deadline, idempotencyKey };
}


/**
 * The JSON and ETag of a body, kept on the object it was serialized from while that object lives: a list page that
 * requests shared, or a user the users cache serves to every hit until the entry is invalidated (a write, a
 * message from another instance, the TTL: each brings a new object, so its body is serialized anew). Serialized
 * once with the route's 200 schema, as Fastify would, then sent as it is (a JSON string, which the typed `send`
 * does not expect). Cached objects are never changed in place (src/modules/cache/cached-users.ts).
 *
 * A non-enumerable symbol property, so no copy, spread or JSON of the object carries it. Not a `WeakMap`: every
 * user served, cached or not, became an entry of its ephemeron table, which V8 settles in the final pause of each
 * full collection; under get by id those pauses took 9 to 15 ms with the table and 4 to 9 without it, and the
 * 99th percentile fell from 12.7 to 14.9 ms to 11.2 to 13.0 (docs/benchmarks.md).
 */
const BODY = Symbol('serialized body');
type Body = { json: string; etag: string };
type Kept = { [BODY]?: Body };
const JSON_TYPE = 'application/json; charset=utf-8';
const pageEtag = (_items: unknown, json: string) => bodyEtag(json);

/** `etagOf` is a function made once (no closure per request: a hit allocates nothing here). */
function serializedOnce<T extends object>(reply: FastifyReply, value: T, etagOf: (value: T, json: string) => string): Body {
  let body = (value as Kept)[BODY];
  if (body === undefined) {
    const json = reply.serialize(value) as string;
    body = { json, etag: etagOf(value, json) };
    Object.defineProperty(value, BODY, { value: body });
  }
  return body;
}

// Conditional headers are described, not schema'd: a headers schema would strip every other header (Ajv's
// removeAdditional, src/platform/http/validation.ts).
const IF_MATCH_DOC = '`If-Match: <ETag>` (or `*`) makes the change conditional: 412 and nothing changed when the user '
  + 'is no longer at that version (or, with `*`, does not exist). Checked atomically with the write: of concurrent '
  + 'requests with one ETag, one succeeds. The response carries the new ETag.';
const IF_NONE_MATCH_DOC = 'Carries a strong `ETag` and `Cache-Control`; `If-None-Match` naming the current ETag gives 304.';
const NotModified = Type.Null({ description: 'Not Modified: If-None-Match names the current ETag' });

export interface UsersRoutesOptions {
  batchMax: number;
  /** The users store to serve from: the backend's, through the users cache when it is on (src/app.ts). */
  store: UsersStore;
  /** Cache-Control and Vary of GET responses (CACHE_CONTROL, CACHE_VARY). */
  caching: CachingHeaders;
}

const usersRoutes: FastifyPluginAsyncTypebox<UsersRoutesOptions> = async (app, { batchMax, store, caching }) => {
  const users = createUsersService(store);
  // Writes answer with X-Consistency-Token; reads honour it (requests are the store calls' options).
  consistencyTokens(app);

  /**
   * RFC 9110 If-Match as the store's condition on the write, which checks it in the same atomic step (a
   * conditional UPDATE, a lightweight transaction): 412 and nothing changed when it fails, so two writers holding
   * one ETag cannot both succeed.
   */
  function expectOf(request: { headers: Record<string, unknown>; params: { id: string } }): Expected | undefined {
    const header = request.headers['if-match'];
    const versions = ifMatchVersions(typeof header === 'string' ? header : undefined, request.params.id, userEtag);
    if (versions === undefined) return undefined;
    return versions === '*' ? 'exists' : { versions: versions.map((ms) => new Date(ms)) };
  }

  app.post('/users', {
    schema: {
      tags, summary: 'Create a user', body: UserCreate, headers: IdempotencyHeaders,
      response: { 201: UserPublic, ...errorResponses(400, 409, 413, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const user = await users.create(request.body, createOptions(request));
    return reply.code(201).header('location', `/users/${user.id}`).send(user);
  });

  app.get('/users', {
    schema: {
      tags, summary: 'List users, oldest first, with keyset pagination',
      description: 'When more rows exist, `Link: <...>; rel="next"` and `X-Next-Cursor` carry the next cursor. '
        + IF_NONE_MATCH_DOC,
      querystring: ListQuery,
      response: { 200: UserList, 304: NotModified, ...errorResponses(400, ...DB_ERRORS) },
    },
    // A page costs its rows against PAGE_ROWS_IN_FLIGHT (src/platform/http/cost-budget.ts).
    config: { cost: (request) => (request.query as { limit: number }).limit },
  }, async (request, reply) => {
    const { limit, cursor } = request.query;
    const page = await users.list({ limit, cursor }, request);
    if (page.nextCursor !== null) {
      const next = `/users?limit=${limit}&cursor=${page.nextCursor}`;
      reply.header('link', `<${next}>; rel="next"`).header('x-next-cursor', page.nextCursor);
    }
    // Requests that shared one read share its page object, and so its JSON.
    const body = serializedOnce(reply, page.items, pageEtag);
    setValidators(reply, body.etag, caching);
    if (noneMatch(request.headers['if-none-match'], body.etag)) return reply.code(304).send(null);
    return reply.type(JSON_TYPE).send(body.json as never);
  });

  app.post('/users/batch', {
    schema: {
      tags, summary: `Create 1..${batchMax} users at once, all or nothing`, body: batchCreate(batchMax),
      documentedBody: batchCreateDocumented(batchMax),
      headers: IdempotencyHeaders,
      response: { 201: BatchCreated, ...errorResponses(400, 409, 413, ...DB_ERRORS) },
    },
    // The original service also took a bare array; give it the documented shape before validation, so one
    // schema (and one `loc` style naming the index of a bad item) covers both.
    preValidation: async (request) => {
      if (Array.isArray(request.body)) request.body = { users: request.body } as BatchCreate;
    },
  }, async (request, reply) => {
    const created = await users.createMany(request.body.users, createOptions(request));
    return reply.code(201).send({ created });
  });

  app.get('/users/:id', {
    schema: {
      tags, summary: 'Get a user', description: IF_NONE_MATCH_DOC, params: IdParams,
      response: { 200: UserPublic, 304: NotModified, ...errorResponses(400, 404, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const user = await users.get(request.params.id, request);
    // A hit of the users cache returns the cached object: its body and tag were made by the first request.
    const body = serializedOnce(reply, user, userEtag);
    setValidators(reply, body.etag, caching);
    if (noneMatch(request.headers['if-none-match'], body.etag)) return reply.code(304).send(null);
    return reply.type(JSON_TYPE).send(body.json as never);
  });

  for (const method of ['PUT', 'PATCH'] as const) {
    app.route({
      method,
      url: '/users/:id',
      schema: {
        tags, summary: 'Update a user (partial: only fields present and non-null change)',
        params: IdParams, body: UserUpdate, description: IF_MATCH_DOC,
        response: { 200: UserPublic, ...errorResponses(400, 404, 412, 413, ...DB_ERRORS) },
      },
      handler: async (request, reply) => {
        const user = await users.update(request.params.id, request.body, request, expectOf(request));
        reply.header('etag', userEtag(user));
        return user;
      },
    });
  }

  app.delete('/users/:id', {
    schema: {
      tags, summary: 'Delete a user (idempotent)', params: IdParams, description: IF_MATCH_DOC,
      response: { 204: Type.Null({ description: 'Deleted, or already absent' }), ...errorResponses(400, 412, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    await users.delete(request.params.id, request, expectOf(request));
    return reply.code(204).send(null);
  });
};

export default usersRoutes;
