/**
 * `GET /dashboard`: one live page (src/modules/ops/dashboard/), its assets, and `GET /dashboard/events`, the
 * server-sent events that feed it a frame a second (src/modules/ops/dashboard-feed.ts). Who may see it is the
 * policy's `metrics` rule, as for `/metrics`.
 *
 * Nothing is built at run time: the page, its script and its style are plain files read once at start, and
 * uPlot is served from its npm package (MIT; its licence travels with it in node_modules/uplot/LICENSE).
 * With WORKERS > 1 the frames describe every worker, whichever one holds the stream. The job queue is read by
 * the worker holding the stream (its counts are already those of every instance), shared by every stream.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { errorResponses } from '../../platform/http/error-schemas.ts';
import { frames } from './dashboard-feed.ts';
import { queueReader } from './dashboard-jobs.ts';

const tags = ['operations'];
/** How often a stream sends a frame. */
const INTERVAL_MS = 1000;

const here = (file: string) => new URL(`./dashboard/${file}`, import.meta.url);
const uplot = (file: string) => createRequire(import.meta.url).resolve(`uplot/dist/${file}`);

const ASSETS = {
  'dashboard.js': { file: here('dashboard.js'), type: 'text/javascript; charset=utf-8' },
  'dashboard.css': { file: here('dashboard.css'), type: 'text/css; charset=utf-8' },
  'uPlot.min.js': { file: uplot('uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { file: uplot('uPlot.min.css'), type: 'text/css; charset=utf-8' },
} as const;
type AssetName = keyof typeof ASSETS;

const text = (type: string, description: string) => ({ description, content: { [type]: { schema: Type.String() } } });
/** The events' body is a stream; the schema documents it as text. */
const eventStream = {
  description: 'Events named `frame`, each a JSON object',
  content: { 'text/event-stream': { schema: Type.Unsafe<PassThrough>({ type: 'string' }) } },
};

const EventsQuery = Type.Object({
  count: Type.Optional(Type.Integer({
    minimum: 1, maximum: 86_400, description: 'Close the stream after this many frames (default: until the client leaves)',
  })),
});

const dashboardRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const page = readFileSync(here('index.html'), 'utf8');
  const assets = new Map(Object.entries(ASSETS).map(([name, a]) => [name, { body: readFileSync(a.file, 'utf8'), type: a.type }]));
  const hasCache = app.usersCache.cache !== undefined;
  const readQueue = app.backend.jobs ? queueReader(app.backend.jobs, { log: app.log }) : undefined;

  app.get('/dashboard', {
    schema: { tags, summary: 'A live dashboard of the service (HTML)', response: { 200: text('text/html', 'The page') } },
  }, async (_request, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(page));

  app.get('/dashboard/assets/:name', {
    schema: {
      tags, summary: 'A file of the dashboard page',
      params: Type.Object({ name: Type.Unsafe<AssetName>({ type: 'string', enum: Object.keys(ASSETS) }) }),
      response: { 200: text('application/octet-stream', 'The file, with its own type'), ...errorResponses(400) },
    },
  }, async (request, reply) => {
    const asset = assets.get(request.params.name)!;
    return reply.type(asset.type).header('cache-control', 'no-cache').send(asset.body);
  });

  app.get('/dashboard/events', {
    schema: {
      tags, summary: 'The dashboard\'s live figures as server-sent events (one `frame` a second)',
      querystring: EventsQuery,
      response: { 200: eventStream, ...errorResponses(400) },
    },
  }, async (request, reply) => {
    const limit = request.query.count ?? Infinity;
    const next = frames({ cache: hasCache });
    const stream = new PassThrough();
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    let over = false;
    const end = () => {
      over = true;
      clearTimeout(timer);
      stream.end();
    };
    // A drain (SIGTERM, POST /shutdown) or close must not wait for a dashboard left open: its stream ends at the
    // next tick, and EventSource reconnects to whichever instance serves then.
    const tick = async () => {
      if (over) return;
      if (app.draining) return end();
      // The queue's read resolves within its own deadline and never rejects (dashboard-jobs.ts).
      const [view, queue] = await Promise.all([app.metrics.group(), readQueue?.()]);
      const frame = next(view, queue);
      if (over) return;
      stream.write(`event: frame\ndata: ${JSON.stringify(frame)}\n\n`);
      if (++sent >= limit) return end();
      timer = setTimeout(() => void run(), INTERVAL_MS);
    };
    const run = () => tick().catch((err: unknown) => {
      request.log.error({ err }, 'dashboard frame failed; ending the stream');
      end();
    });
    reply.raw.once('close', end);
    stream.write(`retry: ${2 * INTERVAL_MS}\n\n`);
    void run();
    return reply
      .type('text/event-stream; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('x-accel-buffering', 'no')
      .send(stream);
  });
};

export default dashboardRoutes;
