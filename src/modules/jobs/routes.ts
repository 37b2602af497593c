/**
 * The job routes (CONTRACT.md, "Jobs"): read, list, cancel, and follow a job as server-sent events.
 *
 * Who may call them is in the policy table (src/modules/auth/policy.ts); which jobs a caller sees is decided here:
 * a job belongs to the account that started it, admins see all, and another account's job is `404` as if it did
 * not exist. With authentication off there are no accounts, so every caller sees every job (as with /users).
 */
import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { errors } from '../../platform/errors.ts';
import { DB_ERRORS, errorResponses } from '../../platform/http/error-schemas.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';
import type { Job } from '../../platform/jobs/store.ts';
import { createJobWatch, jobEvents } from './events.ts';
import { JobIdParams, JobList, JobListQuery, JobPublic, presentJob } from './job-schemas.ts';

const tags = ['jobs'];

/** The account whose jobs the caller sees; `undefined` for all of them (an admin, or authentication off). */
function ownerScope(request: FastifyRequest): string | undefined | null {
  const p = request.principal;
  if (p === undefined || p.scopes.has('admin')) return undefined;
  // A principal without an account (the metrics token) owns nothing.
  return 'accountId' in p ? p.accountId : null;
}

function idOf(raw: string): string {
  const id = parseUuid(raw);
  if (id === null) throw errors.invalidUuid();
  return id;
}

const visible = (job: Job | undefined, owner: string | undefined | null): job is Job =>
  job !== undefined && (owner === undefined || job.owner === owner);

const jobsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const store = () => app.jobs.store();
  const watch = createJobWatch(store);
  app.addHook('onClose', () => watch.close());

  /** The job if the caller may see it, else `404 Job not found`. */
  async function find(request: FastifyRequest, rawId: string): Promise<Job> {
    const id = idOf(rawId);
    const job = await store().get(id, request);
    if (!visible(job, ownerScope(request))) throw errors.jobNotFound();
    return job;
  }

  app.get('/jobs/:id', {
    schema: {
      tags, summary: 'Get a job', params: JobIdParams,
      response: { 200: JobPublic, ...errorResponses(400, 401, 403, 404, ...DB_ERRORS) },
    },
  }, async (request) => presentJob(await find(request, request.params.id)));

  app.get('/jobs', {
    schema: {
      tags, summary: 'List jobs, newest first, with keyset pagination',
      description: 'Your own jobs; all jobs for an admin. When more exist, `Link: <...>; rel="next"` and `X-Next-Cursor` carry the next cursor.',
      querystring: JobListQuery,
      response: { 200: JobList, ...errorResponses(400, 401, 403, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const owner = ownerScope(request);
    if (owner === null) return [];
    const { state, kind, limit, cursor } = request.query;
    const page = await store().list({ owner, state, kind, limit, cursor }, request);
    if (page.next !== undefined) {
      const q = new URLSearchParams({ ...(state && { state }), ...(kind && { kind }), limit: String(limit), cursor: page.next });
      reply.header('link', `</jobs?${q}>; rel="next"`).header('x-next-cursor', page.next);
    }
    return page.jobs.map(presentJob);
  });

  app.delete('/jobs/:id', {
    schema: {
      tags, summary: 'Cancel a queued or running job', params: JobIdParams,
      response: { 202: JobPublic, 409: { ...Type.Object({ detail: Type.String() }), description: 'Job already finished' },
        ...errorResponses(400, 401, 403, 404, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const job = await find(request, request.params.id);
    const out = await store().cancel(job.id, request);
    if (!out) throw errors.jobNotFound();
    if (!out.cancelled) throw errors.conflict('Job already finished');
    return reply.code(202).send(presentJob(out.job));
  });

  app.get('/jobs/:id/events', {
    schema: {
      tags, summary: 'Follow a job: a snapshot per change (`event: job`), ending after its terminal state', params: JobIdParams,
      response: {
        200: { description: 'Server-sent events', content: { 'text/event-stream': { schema: Type.String() } } },
        ...errorResponses(400, 401, 403, 404, ...DB_ERRORS),
      },
    },
  }, async (request, reply) => {
    const job = await find(request, request.params.id);
    const left = new AbortController();
    reply.raw.once('close', () => left.abort());
    const body = Readable.from(jobEvents(store(), watch, job.id, left.signal), { objectMode: false });
    body.once('close', () => left.abort());
    return reply
      .type('text/event-stream; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('x-accel-buffering', 'no')
      .send(body as never);
  });
};

export default jobsRoutes;
