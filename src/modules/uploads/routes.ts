/**
 * `/uploads`: the tus 1.0 endpoint (CONTRACT.md, "Uploads"; docs/uploads.md) on @tus/server with its file store.
 *
 * Fastify owns the request (hooks, auth, access log, the error shape) and hands the raw body to tus: a
 * pass-through content-type parser leaves the stream unread, and the tus server is called as a fetch-style
 * handler (`handleWeb`) whose Response is copied onto Fastify's reply. Before tus sees a request the route has
 * checked what is ours to check: the id (400), the checksum header (400, before a byte is read), and that the
 * upload belongs to the caller (else 404, the same answer as for a missing one).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Metadata, Server, type Locker } from '@tus/server';
import { NodeRequest } from 'srvx/node';
import { Type } from 'typebox';
import type { UploadsConfig } from '../../platform/config.ts';
import { errors, isAppError } from '../../platform/errors.ts';
import { ErrorBody, errorResponses } from '../../platform/http/error-schemas.ts';
import { parseUuid } from '../../platform/lib/uuid.ts';
import {
  CHECKSUM_ALGORITHMS, ChecksumFileStore, parseChecksum, requestFacts, withRequest, type RequestFacts,
} from './checksum.ts';
import { OWNER_KEY, ownerOf, readInfo } from './files.ts';
import { fromTus } from './tus-errors.ts';

export interface UploadsRoutesOptions {
  config: UploadsConfig;
  /** The per-upload lock; @tus/server's in-process one when undefined (one instance). */
  locker: Locker | undefined;
}

const tags = ['uploads'];
const TusHeaders = Type.Object({
  'tus-resumable': Type.Optional(Type.String({ description: 'Must be 1.0.0 (not on OPTIONS)' })),
  'upload-length': Type.Optional(Type.String({ description: 'POST: the size of the whole upload in bytes' })),
  'upload-metadata': Type.Optional(Type.String({ description: 'POST: comma-separated "key base64value" pairs' })),
  'upload-offset': Type.Optional(Type.String({ description: 'PATCH: the offset this body starts at' })),
  'upload-checksum': Type.Optional(Type.String({ description: 'POST with a body, PATCH: "sha1 <base64>" or "sha256 <base64>"' })),
});
const IdParams = Type.Object({ id: Type.String({ description: 'Upload id (UUID, any case)' }) });
const Empty = Type.Null({ description: 'No body; the tus headers say the rest' });
const tooLarge = { 413: { ...ErrorBody, description: 'Upload-Length over UPLOAD_MAX_BYTES, or a body past the upload\'s end' } };
const gone = { 410: { ...ErrorBody, description: 'The unfinished upload expired' } };
const mismatch = { 460: { ...ErrorBody, description: 'Checksum Mismatch: the body does not match Upload-Checksum; nothing was appended' } };
const versionRequired = { 412: { ...ErrorBody, description: 'Tus-Resumable: 1.0.0 missing' } };

/** Headers of tus's CORS answer that Spate's own CORS policy decides instead (src/platform/http/security.ts). */
const CORS_DECIDED_ELSEWHERE = new Set(['access-control-allow-origin', 'access-control-allow-credentials']);
/** Headers of the tus Response that describe its (empty) body: Fastify writes its own. */
const BODY_HEADERS = new Set(['content-length', 'content-type']);

/**
 * The request as @tus/server reads it (srvx's view of Node's request), with the body as a web stream over the
 * socket's own chunks: srvx's `Readable.toWeb` copies every chunk to detach it from Buffer's shared pool, which
 * socket reads never use, so each uploaded byte would be copied once more for nothing.
 */
function webRequest(request: FastifyRequest, reply: FastifyReply): InstanceType<typeof NodeRequest> {
  const web = new NodeRequest({ req: request.raw, res: reply.raw });
  if (request.method === 'POST' || request.method === 'PATCH') {
    Object.defineProperty(web, 'body', { value: ReadableStream.from(request.raw) });
  }
  return web;
}

/** The account a request acts for; null for an anonymous caller (AUTH_MODE=off). */
const callerOf = (request: FastifyRequest): string | null => {
  const p = request.principal;
  return p !== undefined && 'accountId' in p ? p.accountId : null;
};

/** Client metadata with the owner set by the server (a client-sent OWNER_KEY is dropped). */
function withOwner(metadata: Record<string, string | null> | undefined, owner: string | null): Record<string, string | null> {
  const out = { ...metadata };
  delete out[OWNER_KEY];
  if (owner !== null) out[OWNER_KEY] = owner;
  return out;
}

/** HEAD gives the metadata as the client sent it: the owner key is ours. */
function clientMetadata(header: string): string | undefined {
  if (header.trim() === '') return undefined;
  const metadata = Metadata.parse(header);
  delete metadata[OWNER_KEY];
  return Object.keys(metadata).length ? Metadata.stringify(metadata) : undefined;
}

const uploadsRoutes: FastifyPluginAsyncTypebox<UploadsRoutesOptions> = async (app, { config, locker }) => {
  // The store's constructor creates the directory without awaiting (an error there would be uncaught): here a
  // directory that cannot be made stops the start with its reason.
  mkdirSync(config.dir, { recursive: true });
  const tus = new Server({
    path: '/uploads',
    datastore: new ChecksumFileStore({ directory: config.dir, expirationPeriodInMilliseconds: config.expiryMs }),
    locker,
    maxSize: config.maxBytes,
    // `Location: /uploads/<id>`, as `/users/{id}`: no Host header is trusted to build it.
    relativeLocation: true,
    namingFunction: () => randomUUID(),
    getFileIdFromRequest: (_req, last) => (last === undefined ? undefined : parseUuid(last) ?? undefined),
    onUploadCreate: async (_req, upload) => ({ metadata: withOwner(upload.metadata, requestFacts().owner) }),
    onResponseError: (_req, err) => {
      if (isAppError(err)) requestFacts().error = err;
      return undefined;
    },
  });

  // The body is tus's to read, as a stream: no parser may buffer it, whatever its Content-Type.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  /** The upload `raw` names if it is the caller's, else 404 as for one that does not exist. */
  async function ownId(raw: string, owner: string | null): Promise<string> {
    const id = parseUuid(raw);
    if (id === null) throw errors.invalidUuid();
    const info = await readInfo(config.dir, id);
    if (info === null || ownerOf(info) !== owner) throw errors.uploadNotFound();
    return id;
  }

  async function serve(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const facts: RequestFacts = { owner: callerOf(request), checksum: parseChecksum(request.headers['upload-checksum']) };
    const { id } = request.params as { id?: string };
    // OPTIONS describes the server, not the upload: public, like every OPTIONS.
    if (id !== undefined && request.method !== 'OPTIONS') await ownId(id, facts.owner);
    const res = await withRequest(facts, () => tus.handleWeb(webRequest(request, reply)));
    for (const [name, value] of res.headers) {
      if (!CORS_DECIDED_ELSEWHERE.has(name) && !BODY_HEADERS.has(name)) void reply.header(name, value);
    }
    if (request.method === 'OPTIONS') void reply.header('tus-checksum-algorithm', CHECKSUM_ALGORITHMS.join(','));
    const metadata = res.headers.get('upload-metadata');
    if (metadata !== null) {
      const own = clientMetadata(metadata);
      if (own === undefined) void reply.removeHeader('upload-metadata');
      else void reply.header('upload-metadata', own);
    }
    if (res.status >= 400) {
      throw facts.error ?? fromTus(res.status, await res.text(), { maxBytes: config.maxBytes, interrupted: request.raw.readableAborted });
    }
    await reply.code(res.status).send();
  }

  app.options('/uploads', {
    schema: { tags, summary: 'tus capabilities: version, extensions, maximum size, checksum algorithms', response: { 204: Empty } },
  }, serve);
  app.options('/uploads/:id', { schema: { tags, summary: 'tus capabilities', params: IdParams, response: { 204: Empty } } }, serve);
  app.post('/uploads', {
    schema: {
      tags, summary: 'Create an upload (tus creation, creation-with-upload)',
      description: 'Headers `Tus-Resumable: 1.0.0` and `Upload-Length`; optionally a first body as `application/offset+octet-stream`. '
        + 'Answers `201` with `Location: /uploads/{id}`.',
      headers: TusHeaders,
      response: { 201: Empty, ...errorResponses(400, 401, 403, 429), ...versionRequired, ...tooLarge, ...mismatch },
    },
  }, serve);
  app.route({
    method: 'HEAD', url: '/uploads/:id',
    schema: {
      tags, summary: 'The offset of an upload (tus core)', headers: TusHeaders, params: IdParams,
      response: { 200: Empty, ...errorResponses(400, 401, 403, 404, 429), ...versionRequired, ...gone },
    },
    handler: serve,
  });
  app.patch('/uploads/:id', {
    schema: {
      tags, summary: 'Append to an upload (tus core, checksum)',
      description: 'Body `application/offset+octet-stream` starting at `Upload-Offset`; `409` when that is not the current offset.',
      headers: TusHeaders, params: IdParams,
      response: { 204: Empty, ...errorResponses(400, 401, 403, 404, 409, 429, 503), ...versionRequired, ...gone, ...tooLarge, ...mismatch },
    },
  }, serve);
  app.delete('/uploads/:id', {
    schema: {
      tags, summary: 'Terminate an upload (tus termination)', headers: TusHeaders, params: IdParams,
      response: { 204: Empty, ...errorResponses(400, 401, 403, 404, 429), ...versionRequired },
    },
  }, serve);
};

export default uploadsRoutes;
