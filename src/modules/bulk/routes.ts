/**
 * The bulk routes (CONTRACT.md, "Bulk import and export"): start an import or an export as a job (`202` with the
 * job), and download a finished export through its signed URL.
 *
 * An import body in CSV or NDJSON is not parsed here: a content-type parser of this plugin's own hands the raw
 * stream to the handler, which spools it to disk (spool.ts) before enqueueing. The download route is public in
 * the policy table: the signature is the credential, so a URL can be handed to a tool without a token.
 */
import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import send from '@fastify/send';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BulkConfig } from '../../platform/config.ts';
import { errors } from '../../platform/errors.ts';
import { DB_ERRORS, errorResponses } from '../../platform/http/error-schemas.ts';
import { presentJob } from '../jobs/job-schemas.ts';
import { consistencyTokens } from '../users/consistency-token.ts';
import { finishedUpload } from '../uploads/files.ts';
import { EXPORT_KIND, type ExportPayload } from './export-job.ts';
import { IMPORT_KIND, type ImportPayload } from './import-job.ts';
import type { ImportFormat } from './records.ts';
import { ExportBody, ExportParams, ExportQuery, ImportQuery, JobAccepted, UploadRef, importBodyDocumented } from './bulk-schemas.ts';
import { parseExportName, type Signer } from './signed-url.ts';
import { spoolBody } from './spool.ts';

const tags = ['bulk'];

/** Media types taken as an import file; the format follows from the type unless `format=` says otherwise. */
const FILE_TYPES: Record<string, ImportFormat> = {
  'text/csv': 'csv', 'application/csv': 'csv', 'text/plain': 'csv', 'application/x-ndjson': 'ndjson', 'application/jsonl': 'ndjson',
};
const mediaType = (ct: string | undefined) => (ct ?? '').split(';')[0]!.trim().toLowerCase();

const DOWNLOAD_TYPES = { csv: 'text/csv; charset=utf-8', ndjson: 'application/x-ndjson; charset=utf-8', json: 'application/json; charset=utf-8' };

/** Jobs belong to the caller's account; without one (authentication off) to nobody. */
function ownerOf(request: FastifyRequest): string | null {
  const p = request.principal;
  return p !== undefined && 'accountId' in p ? p.accountId : null;
}

/** Attempts of a bulk job: a worker that dies, or a database that goes away, gets two more. */
const MAX_ATTEMPTS = 3;

export interface BulkRoutesOptions {
  bulk: BulkConfig;
  uploadsDir: string;
  signer: Signer;
}

const bulkRoutes: FastifyPluginAsyncTypebox<BulkRoutesOptions> = async (app, { bulk, uploadsDir, signer }) => {
  // An export reads through the replica router: the token of the caller's last write goes with the job.
  consistencyTokens(app);
  const bodies = new WeakMap<FastifyRequest, Readable>();
  app.addContentTypeParser(Object.keys(FILE_TYPES), (request, payload, done) => {
    bodies.set(request, payload as Readable);
    done(null, {});
  });

  app.post('/users/import', {
    schema: {
      tags, summary: 'Import users from CSV or NDJSON, as a job',
      description: 'Answers 202 with the job at once; its `result` is `{"imported", "rejected", "errors"}` (errors capped at '
        + 'IMPORT_MAX_ERRORS). In all_or_nothing mode one invalid row fails the job, its `error` listing the invalid rows, and nothing is written.',
      querystring: ImportQuery, body: UploadRef, documentedBody: importBodyDocumented,
      response: { 202: JobAccepted, ...errorResponses(400, 404, 413, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const { mode } = request.query;
    const owner = ownerOf(request);
    const raw = bodies.get(request);
    let payload: ImportPayload;
    if (raw === undefined) {
      const id = request.body.upload_id;
      if (id === undefined) throw errors.validation([{ loc: ['body', 'upload_id'], msg: 'Field required', type: 'missing' }]);
      if (!(await finishedUpload(uploadsDir, id, owner))) throw errors.uploadNotFound();
      payload = { format: request.query.format ?? 'csv', mode, upload: id };
    } else {
      if (Number(request.headers['content-length'] ?? 0) > bulk.importMaxBytes) throw errors.payloadTooLarge();
      const format = request.query.format ?? FILE_TYPES[mediaType(request.headers['content-type'])] ?? 'csv';
      payload = { format, mode, spool: await spoolBody(raw, bulk.spoolDir, bulk.importMaxBytes) };
    }
    let job;
    try {
      job = await app.jobs.store().enqueue({ kind: IMPORT_KIND, owner, payload, maxAttempts: MAX_ATTEMPTS }, request);
    } catch (err) {
      if (payload.spool !== undefined) await rm(join(bulk.spoolDir, payload.spool), { force: true });
      throw err;
    }
    if (!job) throw errors.internal(new Error('import job not enqueued'));
    return reply.code(202).header('location', `/jobs/${job.id}`).send({ job: presentJob(job) });
  });

  app.post('/users/export', {
    schema: {
      tags, summary: 'Export every user to a file, as a job',
      description: 'Answers 202 with the job; its `result` is `{"rows", "bytes", "download_url", "expires_at"}`. The CSV is '
        + 'RFC 4180, the same as GET /users/stream?format=csv. With read replicas, send the `X-Consistency-Token` of your last '
        + 'write and the export includes it; a token that is not one is refused (400 `Invalid consistency token`).',
      body: ExportBody,
      response: { 202: JobAccepted, ...errorResponses(400, 413, ...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const after = request.readYourWrites?.after;
    // Refused here, with nothing enqueued, as a read with it would be refused.
    if (after !== undefined) app.backend.checkConsistencyToken?.(after);
    const payload: ExportPayload = { format: request.body.format, ...(after === undefined ? {} : { after }) };
    const job = await app.jobs.store().enqueue({ kind: EXPORT_KIND, owner: ownerOf(request), payload, maxAttempts: MAX_ATTEMPTS }, request);
    if (!job) throw errors.internal(new Error('export job not enqueued'));
    return reply.code(202).header('location', `/jobs/${job.id}`).send({ job: presentJob(job) });
  });

  app.get('/exports/:file', {
    schema: {
      tags, summary: 'Download a finished export (its signed URL)',
      description: 'Supports Range requests (resuming a download); 403 with a bad signature, 410 once the export expired.',
      params: ExportParams, querystring: ExportQuery,
      response: {
        200: { description: 'The file', content: { 'text/csv': { schema: { type: 'string' } }, 'application/x-ndjson': { schema: { type: 'string' } }, 'application/json': { schema: { type: 'string' } } } },
        206: { description: 'The requested range of the file', content: { 'application/octet-stream': { schema: { type: 'string' } } } },
        ...errorResponses(403, 410),
      },
    },
  }, async (request, reply) => {
    const { file } = request.params;
    const parsed = parseExportName(file);
    if (!parsed || !signer.verify(file, request.query.signature)) throw errors.badSignature();
    if (parsed.expiresS * 1000 <= Date.now()) throw errors.exportGone();
    const sent = await send(request.raw, file, { root: bulk.exportsDir, dotfiles: 'deny', cacheControl: false, index: false, extensions: false });
    // Deleted already (expired between two instances' clocks, or by hand).
    if (sent.type !== 'file' && sent.statusCode === 404) throw errors.exportGone();
    reply.code(sent.statusCode as 200).headers(sent.headers);
    if (sent.type === 'file') {
      if (sent.statusCode === 200) reply.header('content-type', DOWNLOAD_TYPES[parsed.format]);
      reply.header('content-disposition', `attachment; filename="users.${parsed.format}"`);
    }
    return reply.send(sent.stream as never);
  });
};

export default bulkRoutes;
