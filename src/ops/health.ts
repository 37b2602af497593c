/**
 * Root and health endpoints: `/` (what this is), `/health` (always 200, says whether the database answers),
 * `/health/live` (the process serves) and `/health/ready` (the database answers and the schema is current).
 *
 * Every probe is bounded by a deadline well under a second, so these answer promptly while the database hangs.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { ErrorBody } from '../schemas.ts';

export const VERSION = '0.1.0';
const tags = ['operations'];
const PROBE_MS = 800;

const Health = Type.Object({
  status: Type.Unsafe<'healthy' | 'unhealthy'>({ type: 'string', enum: ['healthy', 'unhealthy'] }),
  database_connected: Type.Boolean(),
  cassandra_connected: Type.Optional(Type.Boolean()),
  backend: Type.Unsafe<'postgres' | 'cassandra'>({ type: 'string', enum: ['postgres', 'cassandra'] }),
  timestamp: Type.String({ format: 'date-time' }),
});

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const repo = app.repository;
  const probe = <T>(p: Promise<T>) => p.then(() => true, () => false);

  app.get('/', {
    schema: {
      tags, summary: 'Service information',
      response: { 200: Type.Object({ message: Type.String(), version: Type.String(), docs: Type.String() }) },
    },
  }, async () => ({ message: 'Spate users API', version: VERSION, docs: '/docs' }));

  app.get('/health', {
    schema: { tags, summary: 'Health: 200 always, with the database state', response: { 200: Health } },
  }, async () => {
    const connected = await probe(repo.ping({ deadline: performance.now() + PROBE_MS }));
    return {
      status: connected ? 'healthy' as const : 'unhealthy' as const,
      database_connected: connected,
      ...(repo.backend === 'cassandra' ? { cassandra_connected: connected } : {}),
      backend: repo.backend,
      timestamp: new Date().toISOString(),
    };
  });

  app.get('/health/live', {
    schema: { tags, summary: 'Liveness: 200 while the process serves', response: { 200: Type.Object({ status: Type.String() }) } },
  }, async () => ({ status: 'alive' }));

  app.get('/health/ready', {
    schema: {
      tags, summary: 'Readiness: 200 when the database answers and the schema is current, else 503',
      response: { 200: Type.Object({ status: Type.String() }), 503: ErrorBody },
    },
  }, async (_request, reply) => {
    const ready = !app.draining && (await repo.schemaReady({ deadline: performance.now() + PROBE_MS }).catch(() => false));
    if (ready) return { status: 'ready' };
    return reply.code(503).header('retry-after', '1').send({ detail: 'Service temporarily unavailable: database not ready' });
  });
};

export default healthRoutes;
