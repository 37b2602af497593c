/**
 * Streaming routes: `GET /users/stream` writes users to the client page by page as the database cursor yields
 * them, and `GET /users/stream/pages` reports on the pages of that same stream.
 *
 * Backpressure is end to end: the body is a Readable pulled by the socket, each pull asks the cursor for one
 * page, so a slow client slows the cursor and memory stays flat whatever `limit` is. A client that goes away
 * destroys the body, which closes the cursor and hands its connection back at once.
 */
import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import { Type } from 'typebox';
import { errors, isAppError } from '../errors.ts';
import type { User } from '../storage/repository.ts';
import { DB_ERRORS, errorResponses } from '../schemas.ts';
import { StreamPages, StreamPagesQuery, StreamQuery, UserPublic } from './schemas.ts';
import { CSV_HEADER, createEncoder, pickFormat, type StreamEncoder } from './stream-encoders.ts';

const tags = ['streaming'];

const StreamBody = Type.Object(
  {
    users: Type.Array(UserPublic),
    metadata: Type.Object({
      total_returned: Type.Integer(),
      pages_fetched: Type.Integer(),
      fetch_size: Type.Integer(),
      streaming_enabled: Type.Literal(true),
    }),
  },
  { title: 'UserStream' },
);

/** The 200 of `/users/stream`, one schema per format, for the OpenAPI document (a stream is never serialized). */
const streamOk = {
  description: 'Users in primary-key order, streamed (chunked) as the database yields them. An error after the '
    + 'first byte aborts the connection, so a truncated body is never mistaken for a complete one.',
  content: {
    'application/json': { schema: StreamBody },
    'application/x-ndjson': { schema: { ...UserPublic, description: 'One User per line (format=ndjson or Accept: application/x-ndjson)' } },
    'text/csv': { schema: Type.String({ description: `format=csv: RFC 4180, the header \`${CSV_HEADER}\` then one row per User` }) },
  },
};

const streamRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { repository } = app;

  app.get('/users/stream', {
    schema: {
      tags, summary: 'Stream users (JSON, NDJSON or CSV), read from a database cursor fetch_size rows at a time',
      querystring: StreamQuery,
      response: { 200: streamOk, ...errorResponses(...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const { limit, fetch_size: fetchSize } = request.query;
    const encoder = createEncoder(pickFormat(request.query.format, request.headers.accept));
    // Fastify answers HEAD by draining the GET body: never run a cursor only to discard it.
    if (request.method === 'HEAD') return reply.type(encoder.contentType).send('');

    const signal = disconnectSignal(reply);
    const pages = repository.stream({ limit, fetchSize, deadline: request.deadline, signal })[Symbol.asyncIterator]();
    // The first page is read before the status line goes out, so a failure to start (bad deadline, database
    // down, no connection free) still takes the normal error path with its status and body.
    const first = await pages.next();
    const body = Readable.from(encode(encoder, first, pages, fetchSize, request.log), { highWaterMark: 1 });
    // If the body is destroyed before it is ever read (client gone already), the generator never ran and its
    // `finally` cannot close the cursor: do it here. Closing twice is harmless.
    body.once('close', () => void pages.return?.(undefined));
    abortAtDeadline(body, request.deadline);
    // A stream bypasses the serializer; the 200 schema documents what it carries, so the typed `send` does not fit.
    // `X-Accel-Buffering: no` keeps a buffering reverse proxy (nginx) from holding the stream back.
    return reply.type(encoder.contentType).header('x-accel-buffering', 'no').send(body as never);
  });

  app.get('/users/stream/pages', {
    schema: {
      tags, summary: 'Read users page by page and report on each page',
      description: 'Stops after `max_pages` pages or `limit` rows, whichever comes first.',
      querystring: StreamPagesQuery,
      response: { 200: StreamPages, ...errorResponses(...DB_ERRORS) },
    },
  }, async (request, reply) => {
    const { limit, fetch_size: fetchSize, max_pages: maxPages } = request.query;
    const pagesInfo = [];
    let total = 0;
    if (maxPages > 0) {
      const pages = repository.stream({
        limit: Math.min(limit, maxPages * fetchSize),
        fetchSize,
        deadline: request.deadline,
        signal: disconnectSignal(reply),
      });
      for await (const users of pages) {
        total += users.length;
        const sample = users[0];
        pagesInfo.push({
          page_number: pagesInfo.length + 1,
          rows_in_page: users.length,
          sample_user: sample ? { id: sample.id, name: sample.name, email: sample.email } : null,
        });
        if (pagesInfo.length >= maxPages) break;
      }
    }
    return {
      total_rows_processed: total,
      pages_info: pagesInfo,
      metadata: { fetch_size: fetchSize, max_pages_limit: maxPages, streaming_mode: 'page_by_page' as const },
    };
  });
};

export default streamRoutes;

/** Aborts when the connection closes before the response finished (the client went away). */
function disconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}

/**
 * A client that stops reading stalls the cursor between pages, where no deadline check can run: the request
 * deadline destroys the body instead, which closes the cursor and aborts the response.
 */
function abortAtDeadline(body: Readable, deadline: number | undefined): void {
  if (deadline === undefined) return;
  const timer = setTimeout(() => body.destroy(errors.timeout()), Math.max(0, deadline - performance.now()));
  body.once('close', () => clearTimeout(timer));
}

/**
 * The body: one chunk per page (the head rides with the first one, the tail comes last). An error mid-stream is
 * logged and rethrown, which destroys the body and with it the socket: the client sees a truncated response.
 */
async function* encode(
  encoder: StreamEncoder,
  first: IteratorResult<User[]>,
  rest: AsyncIterator<User[]>,
  fetchSize: number,
  log: FastifyBaseLogger,
): AsyncGenerator<string> {
  let rows = 0;
  let pages = 0;
  let head = encoder.head();
  try {
    for (let page = first; !page.done; page = await rest.next()) {
      rows += page.value.length;
      pages += 1;
      yield head + encoder.page(page.value);
      head = '';
    }
  } catch (err) {
    log.error({ err: isAppError(err) ? err.cause ?? err : err, code: isAppError(err) ? err.code : undefined, rows },
      'stream failed after the response started; aborting the connection');
    throw err;
  } finally {
    await rest.return?.(undefined);
  }
  yield head + encoder.tail({ rows, pages, fetchSize });
}
