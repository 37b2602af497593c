/**
 * Load and latency demonstrations of the original service: `/performance/async` and `/performance/sync` run N
 * real reads through the repository concurrently or one after another; `/slow_query` and `/long_running_query`
 * hold a real database sleep. All of them honour the request deadline (`X-Request-Timeout`).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import { isAppError } from '../../platform/errors.ts';
import { DB_ERRORS, errorResponses } from '../../platform/http/error-schemas.ts';

const tags = ['operations'];

const PerfQuery = Type.Object({
  requests: Type.Integer({ minimum: 1, maximum: 1000, default: 100, description: 'How many reads to run' }),
});

const Mode = Type.Unsafe<'async' | 'sync'>({ type: 'string', enum: ['async', 'sync'] });

const PerfResult = Type.Object({
  requests: Type.Integer(),
  total_time: Type.Number({ description: 'seconds' }),
  requests_per_second: Type.Number(),
  avg_time_per_request: Type.Number({ description: 'seconds' }),
  successful_requests: Type.Integer(),
  mode: Mode,
}, { title: 'PerformanceResult' });
type PerfResult = Static<typeof PerfResult>;

const Message = Type.Object({ message: Type.String() });

const performanceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { users, probes } = app.backend;
  // Each read is a statement of its own (`alone`): concurrent identical reads would otherwise share one.
  const read = (request: FastifyRequest) => users.list({ limit: 1 }, { deadline: request.deadline, alone: true });

  /**
   * Runs the reads and reports them. Concurrency is bounded by the pool: the gate queues reads beyond it. Some
   * reads may fail (e.g. no connection free in time) and are reported as such, but a timeout means the request
   * deadline expired, which is a 504 like everywhere else, and when nothing succeeded the first error answers.
   */
  async function run(mode: 'async' | 'sync', n: number, request: FastifyRequest): Promise<PerfResult> {
    const started = performance.now();
    const failures: unknown[] = [];
    if (mode === 'async') {
      const results = await Promise.allSettled(Array.from({ length: n }, () => read(request)));
      for (const r of results) if (r.status === 'rejected') failures.push(r.reason);
    } else {
      for (let i = 0; i < n; i++) {
        try {
          await read(request);
        } catch (err) {
          failures.push(err);
          if (isTimeout(err)) break;
        }
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const timeout = failures.find(isTimeout);
    if (timeout !== undefined || failures.length === n) throw timeout ?? failures[0];
    return {
      requests: n,
      total_time: seconds,
      requests_per_second: n / seconds,
      avg_time_per_request: seconds / n,
      successful_requests: n - failures.length,
      mode,
    };
  }

  for (const mode of ['async', 'sync'] as const) {
    app.get(`/performance/${mode}`, {
      schema: {
        tags,
        summary: mode === 'async' ? 'Run N real reads concurrently' : 'Run N real reads one after another',
        querystring: PerfQuery,
        response: { 200: PerfResult, ...errorResponses(400, ...DB_ERRORS) },
      },
    }, async (request) => run(mode, request.query.requests, request));
  }

  app.get('/slow_query', {
    schema: {
      tags, summary: 'A real 5 s database operation',
      description: 'With `X-Request-Timeout` below 5 s: 504 when it expires, and the statement is cancelled.',
      response: { 200: Message, ...errorResponses(400, ...DB_ERRORS) },
    },
  }, async (request) => {
    await probes.sleep(5, request);
    return { message: 'Slow query completed' };
  });

  app.get('/long_running_query', {
    schema: {
      tags, summary: 'A real 10 s database operation; other requests stay fast meanwhile',
      response: { 200: Message, ...errorResponses(400, ...DB_ERRORS) },
    },
  }, async (request) => {
    await probes.sleep(10, request);
    return { message: 'Long query completed' };
  });
};

const isTimeout = (err: unknown) => isAppError(err) && err.kind === 'timeout';

export default performanceRoutes;
