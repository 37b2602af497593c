/**
 * `GET /cache/status` and `POST /cache/clear` (the contract's "Caching"): what each layer holds and how it
 * serves, and a clear of every layer on every instance. Who may call them is in src/modules/auth/policy.ts.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { errorResponses } from '../../platform/http/error-schemas.ts';

const tags = ['cache'];

const Layer = Type.Object({
  name: Type.String({ description: '`memory` (in-process) or `redis` (shared)' }),
  entries: Type.Union([Type.Integer(), Type.Null()], { description: 'null for Redis: counting its keys would scan it' }),
  hits: Type.Integer(),
  misses: Type.Integer(),
  hit_ratio: Type.Number(),
  bytes: Type.Optional(Type.Integer()),
  evictions: Type.Optional(Type.Integer()),
  rejections: Type.Optional(Type.Integer({ description: 'Loads a full in-process layer did not admit: asked for less often than the entry they would evict' })),
  errors: Type.Optional(Type.Integer()),
  up: Type.Optional(Type.Boolean()),
});

const Status = Type.Object({
  mode: Type.String({ enum: ['off', 'memory', 'redis'] }),
  layers: Type.Array(Layer),
  bus: Type.Object({ kind: Type.String({ description: '`local`, `redis`, or `none` when the cache is off' }), connected: Type.Boolean() }),
  ttl_ms: Type.Optional(Type.Integer({ description: 'The maximum staleness of any cached read' })),
});

const cacheRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/cache/status', {
    schema: { tags, summary: 'Cache layers, their figures, and the invalidation bus', response: { 200: Status, ...errorResponses(401, 403) } },
  }, async () => app.usersCache.status());

  app.post('/cache/clear', {
    schema: {
      tags, summary: 'Clear every cache layer on every instance (admin)',
      response: { 200: Type.Object({ cleared: Type.Literal(true) }), ...errorResponses(401, 403) },
    },
  }, async () => {
    await app.usersCache.cache?.clear();
    return { cleared: true as const };
  });
};

export default cacheRoutes;
