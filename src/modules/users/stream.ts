/**
 * Streaming routes: `GET /users/stream` writes users to the client page by page as the database cursor yields
 * them, and `GET /users/stream/pages` reports on the pages of that same stream.
 *
 * Backpressure is end to end: the body is a Readable pulled by the socket, each pull asks the cursor for one
 * page, so a slow client slows the cursor and memory stays flat whatever `limit` is. A client that goes away
 * destroys the body, which closes the cursor and hands its connection back at once.
 *
 * Two bounds keep streams from taking the service down: a stream whose reader stops reading is aborted after
 * STREAM_STALL_TIMEOUT_MS, and open streams hold at most STREAM_POOL_SHARE of the pool (a stream over that is
 * refused at once with 503), so the rest of the pool serves everything else.
 */
import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../../platform/config.ts';
import { errors, isAppError } from '../../platform/errors.ts';
import type { User } from '../../db/users-store.ts';
import { DB_ERRORS, errorResponses } from '../../platform/http/error-schemas.ts';
import { isExpectedRefusal } from '../../platform/http/refusal-log.ts';
import { StreamPages, StreamPagesQuery, StreamQuery, UserPublic } from './user-schemas.ts';
import { CSV_HEADER, createEncoder, pickFormat, type StreamEncoder } from './stream-encoders.ts';
import { consistencyTokens } from './consistency-token.ts';

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
    // Not one object: a text of lines, each a User (OpenAPI 3.1 has no item schema for sequential media types).
    'application/x-ndjson': {
      schema: Type.String({
        description: 'format=ndjson or Accept: application/x-ndjson: one User (JSON, as in the json format) per line, each line ending in \\n',
        examples: ['{"id":"0190c6f4-8b1e-7cc1-9f0e-2d3c4b5a6978","name":"Ada Lovelace","email":"ada@example.com","age":36,"created_at":"2024-01-10T12:34:56.789Z","updated_at":"2024-01-10T12:34:56.789Z"}\n'],
      }),
    },
    'text/csv': { schema: Type.String({ description: `format=csv: RFC 4180, the header \`${CSV_HEADER}\` then one row per User` }) },
  },
};

export interface StreamRoutesOptions {
  config: Config;
}

const streamRoutes: FastifyPluginAsyncTypebox<StreamRoutesOptions> = async (app, { config }) => {
  const repository = app.backend.users;
  const { streamStallTimeoutMs, streamPoolShare } = config.resilience;
  const maxStreams = Math.max(1, Math.floor(app.backend.probes.pools().users.max * streamPoolShare));
  let openStreams = 0;

  /**
   * Takes a stream slot, or refuses at once with 503 when every slot is taken: a stream lasts as long as its
   * reader, so waiting for one to end would only move the queue. `release` gives the slot back (once).
   */
  function takeSlot(): () => void {
    if (openStreams >= maxStreams) throw errors.unavailable(`all ${maxStreams} stream slots are busy`);
    openStreams++;
    let held = true;
    return () => {
      if (held) openStreams--;
      held = false;
    };
  }
  consistencyTokens(app);

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

    const release = takeSlot();
    const pages = repository.stream({
      limit, fetchSize, deadline: request.deadline, signal: request.clientGone, readYourWrites: request.readYourWrites,
    })[Symbol.asyncIterator]();
    // The first page is read before the status line goes out, so a failure to start (bad deadline, database
    // down, no connection free) still takes the normal error path with its status and body.
    let first: IteratorResult<User[]>;
    try {
      first = await pages.next();
    } catch (err) {
      release();
      throw err;
    }
    const stalled = () => body.destroy(errors.streamStalled(streamStallTimeoutMs));
    const body = Readable.from(
      encode(encoder, first, pages, fetchSize, request.log, stallWatch(streamStallTimeoutMs, stalled)),
      { highWaterMark: 1 },
    );
    // If the body is destroyed before it is ever read (client gone already), the generator never ran and its
    // `finally` cannot close the cursor: do it here. Closing twice is harmless.
    body.once('close', () => {
      void Promise.resolve(pages.return?.(undefined)).finally(release);
    });
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
  }, async (request) => {
    const { limit, fetch_size: fetchSize, max_pages: maxPages } = request.query;
    const pagesInfo = [];
    let total = 0;
    if (maxPages > 0) {
      const release = takeSlot();
      try {
        const pages = repository.stream({
          limit: Math.min(limit, maxPages * fetchSize),
          fetchSize,
          deadline: request.deadline,
          signal: request.clientGone,
          readYourWrites: request.readYourWrites,
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
      } finally {
        release();
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

/**
 * Arms a timer while the body waits for its reader (between handing over a page and being asked for the next),
 * calling `onStall` when the reader has not asked within `ms`; 0 arms nothing. Database time is not counted.
 */
function stallWatch(ms: number, onStall: () => void): { waiting(): void; resumed(): void } {
  let timer: NodeJS.Timeout | undefined;
  return {
    waiting: () => { if (ms > 0) timer = setTimeout(onStall, ms); },
    resumed: () => clearTimeout(timer),
  };
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
  stall: ReturnType<typeof stallWatch>,
): AsyncGenerator<string> {
  let rows = 0;
  let pages = 0;
  let head = encoder.head();
  try {
    for (let page = first; !page.done; page = await rest.next()) {
      rows += page.value.length;
      pages += 1;
      stall.waiting();
      yield head + encoder.page(page.value);
      stall.resumed();
      head = '';
    }
  } catch (err) {
    // An expected end (a deadline, a stalled reader, the database gone) is one line at warn; anything else is a bug.
    if (isAppError(err) && isExpectedRefusal(err)) {
      log.warn({ code: err.code, rows }, `stream aborted after the response started: ${err.message}`);
    } else {
      log.error({ err: isAppError(err) ? err.cause ?? err : err, code: isAppError(err) ? err.code : undefined, rows },
        'stream failed after the response started; aborting the connection');
    }
    throw err;
  } finally {
    stall.resumed();
    await rest.return?.(undefined);
  }
  yield head + encoder.tail({ rows, pages, fetchSize });
}
