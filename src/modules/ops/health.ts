/**
 * Root and health endpoints: `/` (what this is), `/health` (always 200, says whether the database answers),
 * `/health/live` (the process serves) and `/health/ready` (the database answers, the schema is current and the
 * pool is not exhausted: every connection busy with callers queued, so this instance cannot take more work).
 *
 * Every probe is bounded by a deadline well under a second, so these answer promptly while the database hangs.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { VERSION } from '../../platform/version.ts';
import { ErrorBody } from '../../platform/http/error-schemas.ts';
import type { ReplicaStats } from '../../platform/probes.ts';

const tags = ['operations'];
const PROBE_MS = 800;

const Health = Type.Object({
  status: Type.Unsafe<'healthy' | 'unhealthy'>({ type: 'string', enum: ['healthy', 'unhealthy'] }),
  database_connected: Type.Boolean(),
  cassandra_connected: Type.Optional(Type.Boolean()),
  backend: Type.Unsafe<'postgres' | 'cassandra'>({ type: 'string', enum: ['postgres', 'cassandra'] }),
  timestamp: Type.String({ format: 'date-time' }),
  replicas: Type.Optional(Type.Array(Type.Object({
    name: Type.String({ description: 'host:port' }),
    state: Type.Unsafe<ReplicaStats['state']>({
      type: 'string', enum: ['up', 'lagging', 'down'],
      description: 'up: serving reads; lagging: further behind than REPLICA_MAX_LAG_MS; down: not answering',
    }),
    lag_ms: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'How far behind the primary its data may be now, at most (measured); null when down' }),
    lag_bytes: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'WAL not yet replayed at the last probe' }),
    replay_paused: Type.Boolean(),
  }), { description: 'Read replicas (DATABASE_REPLICA_URLS), each with its measured lag' })),
});

/** The replicas as /health shows them. */
const replicasView = (stats: ReplicaStats[]) => stats.map((r) => ({
  name: r.name, state: r.state, lag_ms: r.lagMs, lag_bytes: r.lagBytes, replay_paused: r.replayPaused,
}));

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { name, probes } = app.backend;
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
    const connected = await probe(probes.ping({ deadline: performance.now() + PROBE_MS }));
    return {
      status: connected ? 'healthy' as const : 'unhealthy' as const,
      database_connected: connected,
      // The contract names Cassandra's connection on its own as well.
      ...(name === 'cassandra' ? { cassandra_connected: connected } : {}),
      backend: name,
      timestamp: new Date().toISOString(),
      ...(probes.replicas ? { replicas: replicasView(probes.replicas()) } : {}),
    };
  });

  app.get('/health/live', {
    schema: { tags, summary: 'Liveness: 200 while the process serves', response: { 200: Type.Object({ status: Type.String() }) } },
  }, async () => ({ status: 'alive' }));

  app.get('/health/ready', {
    schema: {
      tags, summary: 'Readiness: 200 when the database answers, the schema is current and the pool has room, else 503',
      response: { 200: Type.Object({ status: Type.String() }), 503: ErrorBody },
    },
  }, async (_request, reply) => {
    const pool = probes.pools().users;
    if (pool.active >= pool.max && pool.waiting > 0) {
      return reply.code(503).header('retry-after', '1').send({ detail: 'Service temporarily unavailable: database pool exhausted' });
    }
    const ready = !app.draining && (await probes.schemaReady({ deadline: performance.now() + PROBE_MS }).catch(() => false));
    if (ready) return { status: 'ready' };
    return reply.code(503).header('retry-after', '1').send({ detail: 'Service temporarily unavailable: database not ready' });
  });
};

export default healthRoutes;
