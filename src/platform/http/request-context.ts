/**
 * Per-request plumbing every route relies on: the request id, the request deadline, the JSON default for
 * bodies sent without a Content-Type.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import fp from 'fastify-plugin';
import { errors } from '../errors.ts';
import { NUMBER_TEXT } from './validation.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Absolute deadline (a `performance.now()` timestamp) from `X-Request-Timeout`, or undefined. Passed to
     * every storage call so the database work is cancelled when it passes.
     */
    deadline: number | undefined;
  }
}

const SANE_REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

/** Where `genReqId` leaves the id on the raw request, for answers written outside Fastify's reply. */
const REQUEST_ID = Symbol('spate.requestId');

/**
 * Fastify `genReqId`: the client's `X-Request-Id` when it is sane, else a fresh UUID. Also kept on the raw
 * request, so that an answer the HTTP parser forces on a started request (src/platform/http/refusals.ts)
 * carries the same id; a symbol property costs less than a raw `setHeader`, which would move every response
 * onto Node's slower header-merging path.
 */
export function genReqId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  const id = typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : randomUUID();
  (req as IncomingMessage & { [REQUEST_ID]?: string })[REQUEST_ID] = id;
  return id;
}

/** The id `genReqId` gave the raw request, if it got that far. */
export const requestIdOf = (req: IncomingMessage | undefined): string | undefined =>
  (req as (IncomingMessage & { [REQUEST_ID]?: string }) | undefined)?.[REQUEST_ID];

/** Upper bound for `X-Request-Timeout`, so a typo cannot pin a connection for days. */
const MAX_TIMEOUT_S = 3600;

/**
 * The deadline for a raw `X-Request-Timeout` value, or throws `invalidTimeout` (400). The value is a number in
 * the one grammar of numeric text (`NUMBER_TEXT`: `5`, `0.5`, `2.25`; not `5.`, `.5`, `1e3` or `0x10`), above 0
 * and at most an hour.
 */
export function parseDeadline(raw: string | string[] | undefined, now: number): number | undefined {
  if (raw === undefined) return undefined;
  const text = (Array.isArray(raw) ? raw[0] : raw)?.trim();
  if (text === undefined || !NUMBER_TEXT.test(text)) throw errors.invalidTimeout();
  const seconds = Number(text);
  if (!(seconds > 0) || seconds > MAX_TIMEOUT_S) throw errors.invalidTimeout();
  return now + seconds * 1000;
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
const hasBody = (h: IncomingMessage['headers']) =>
  h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');

export default fp(
  async (app) => {
    app.decorateRequest('deadline', undefined);

    // Callback-style: an async hook would allocate a promise per request.
    app.addHook('onRequest', (request, reply, done) => {
      reply.header('x-request-id', request.id);
      const headers = request.headers;
      // The original service parsed a body without Content-Type as JSON; Fastify would answer 415.
      if (headers['content-type'] === undefined && BODY_METHODS.has(request.method) && hasBody(headers)) {
        headers['content-type'] = 'application/json';
      }
      const timeout = headers['x-request-timeout'];
      if (timeout === undefined) return done();
      try {
        request.deadline = parseDeadline(timeout, performance.now());
      } catch (err) {
        return done(err as Error);
      }
      done();
    });
  },
  { name: 'request-context' },
);
