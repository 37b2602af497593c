/**
 * A test-only preload for the real server process of test/tracing.test.ts (`NODE_OPTIONS=--import <this file>`):
 * two routes added from outside the app, through the diagnostics channel on which Fastify announces each instance
 * it creates, so the server under test is exactly what `npm start` runs, plus these:
 *
 * - `POST /test/trace-probe` enqueues a job of a kind every app runs (the queue's own retention job, which makes a
 *   database call) directly, the smallest request that enqueues a job; the tracing test also follows a user
 *   write through its webhook delivery, the API's own path into a job.
 * - `GET /test/loaded-modules` lists the modules of OpenTelemetry (and its patching helpers) that this process
 *   loaded, from the CommonJS module cache: every one of those packages is CommonJS, and each file of theirs
 *   lands in that cache however it was first imported.
 *
 * Plain JavaScript, so that the bundle-running server loads it without a TypeScript loader.
 */
import dc from 'node:diagnostics_channel';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const TRACING_MODULE = /[\\/]node_modules[\\/](@opentelemetry|@fastify[\\/]otel|import-in-the-middle|require-in-the-middle)[\\/]/;

dc.subscribe('fastify.initialization', ({ fastify }) => {
  fastify.post('/test/trace-probe', async (_request, reply) => {
    const job = await fastify.jobs.store().enqueue({ kind: 'jobs.retention' });
    return reply.code(202).send({ id: job.id });
  });
  fastify.get('/test/loaded-modules', async () => Object.keys(require.cache).filter((p) => TRACING_MODULE.test(p)));
});
