/**
 * Root and health endpoints: `/` (what this is), `/health` (always 200, says whether the database answers, and
 * the state of every dependency in use), `/health/live` (the process serves) and `/health/ready` (the database
 * answers, the schema is current and the pool is not exhausted: every connection busy with callers queued, so
 * this instance cannot take more work).
 *
 * Every probe is bounded by a deadline well under a second, and `/health` runs its probes at once, so these answer
 * promptly while the database, Redis or the job queue hangs.
 */
import type { FastifyInstance } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { VERSION } from '../../platform/version.ts';
import { ErrorBody } from '../../platform/http/error-schemas.ts';
import { withDeadline } from '../../platform/lib/deadline.ts';
import type { ReplicaStats } from '../../platform/probes.ts';

const tags = ['operations'];
const PROBE_MS = 800;

const Replica = Type.Object({
  name: Type.String({ description: 'host:port' }),
  state: Type.Unsafe<ReplicaStats['state']>({
    type: 'string', enum: ['up', 'lagging', 'down'],
    description: 'up: serving reads; lagging: further behind than REPLICA_MAX_LAG_MS; down: not answering',
  }),
  lag_ms: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'How far behind the primary its data may be now, at most (measured); null when down' }),
  lag_bytes: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'WAL not yet replayed at the last probe' }),
  replay_paused: Type.Boolean(),
});

const UpDown = Type.Unsafe<'up' | 'down'>({ type: 'string', enum: ['up', 'down'], description: 'up: answered the probe within its deadline' });
const Latency = Type.Number({ minimum: 0, description: 'How long the probe took (ms), up to its deadline when it failed' });

const Dependencies = Type.Object({
  database: Type.Object({ state: UpDown, latency_ms: Latency }, { description: 'The primary database (the backend named by `backend`)' }),
  replicas: Type.Optional(Type.Array(Replica, { description: 'Read replicas (DATABASE_REPLICA_URLS), each with its measured lag' })),
  redis: Type.Optional(Type.Object({
    state: Type.Unsafe<'up' | 'down' | 'breaker_open'>({
      type: 'string', enum: ['up', 'down', 'breaker_open'],
      description: 'breaker_open: Redis failed repeatedly and its circuit breaker refuses commands without trying it (not probed)',
    }),
    latency_ms: Type.Union([Latency, Type.Null()], { description: 'How long the PING took (ms); null when not sent (breaker open)' }),
  }, { description: 'The shared Redis (REDIS_URL): rate limits, caches, the invalidation bus' })),
  job_queue: Type.Optional(Type.Object({
    store: Type.Unsafe<'postgres' | 'redis'>({ type: 'string', enum: ['postgres', 'redis'], description: 'Where the queue is held (docs/jobs.md)' }),
    state: UpDown,
    latency_ms: Latency,
  }, { description: 'The durable job queue' })),
}, { description: 'Each dependency in use, probed at once, each within 800 ms; a dependency not in use is absent' });

const Health = Type.Object({
  status: Type.Unsafe<'healthy' | 'unhealthy'>({ type: 'string', enum: ['healthy', 'unhealthy'], description: 'Whether the database answers' }),
  database_connected: Type.Boolean(),
  cassandra_connected: Type.Optional(Type.Boolean()),
  backend: Type.Unsafe<'postgres' | 'cassandra'>({ type: 'string', enum: ['postgres', 'cassandra'] }),
  timestamp: Type.String({ format: 'date-time' }),
  replicas: Type.Optional(Type.Array(Replica, { description: 'As `dependencies.replicas`, kept for the clients that read it here' })),
  dependencies: Dependencies,
});

/** The replicas as /health shows them. */
const replicasView = (stats: ReplicaStats[]) => stats.map((r) => ({
  name: r.name, state: r.state, lag_ms: r.lagMs, lag_bytes: r.lagBytes, replay_paused: r.replayPaused,
}));

/** Runs `check` within PROBE_MS: whether it answered, and how long it took. */
async function timedProbe(check: (deadline: number) => Promise<unknown>): Promise<{ state: 'up' | 'down'; latency_ms: number }> {
  const started = performance.now();
  const up = await withDeadline(check(started + PROBE_MS), PROBE_MS).then(() => true, () => false);
  return { state: up ? 'up' : 'down', latency_ms: Math.round((performance.now() - started) * 10) / 10 };
}

/** The shared Redis: not sent a PING while its breaker is open (it would be refused untried anyway). */
async function redisProbe(app: FastifyInstance) {
  const { redis, redisBreaker } = app;
  if (!redis) return undefined;
  if (redisBreaker?.open) return { state: 'breaker_open' as const, latency_ms: null };
  const ping = () => redis.ping();
  return timedProbe(() => (redisBreaker ? redisBreaker.run(ping) : ping()));
}

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { name, probes, jobs } = app.backend;

  app.get('/', {
    schema: {
      tags, summary: 'Service information',
      response: { 200: Type.Object({ message: Type.String(), version: Type.String(), docs: Type.String() }) },
    },
  }, async () => ({ message: 'Spate users API', version: VERSION, docs: '/docs' }));

  app.get('/health', {
    schema: { tags, summary: 'Health: 200 always, with the database state and every dependency\'s', response: { 200: Health } },
  }, async () => {
    const [database, redis, queue] = await Promise.all([
      timedProbe((deadline) => probes.ping({ deadline })),
      redisProbe(app),
      jobs ? timedProbe((deadline) => jobs.ping({ deadline })) : undefined,
    ]);
    const connected = database.state === 'up';
    // Measured by the router's own poll: reading the figures costs no probe.
    const replicas = probes.replicas ? replicasView(probes.replicas()) : undefined;
    return {
      status: connected ? 'healthy' as const : 'unhealthy' as const,
      database_connected: connected,
      // The contract names Cassandra's connection on its own as well.
      ...(name === 'cassandra' ? { cassandra_connected: connected } : {}),
      backend: name,
      timestamp: new Date().toISOString(),
      ...(replicas ? { replicas } : {}),
      dependencies: {
        database,
        ...(replicas ? { replicas } : {}),
        ...(redis ? { redis } : {}),
        ...(queue && jobs ? { job_queue: { store: jobs.holder, ...queue } } : {}),
      },
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
