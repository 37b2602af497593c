/**
 * Per-request plumbing every route relies on: the request id, the request deadline, the JSON default for
 * bodies sent without a Content-Type.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import fp from 'fastify-plugin';
import { errors } from '../errors.ts';

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

/** Fastify `genReqId`: the client's `X-Request-Id` when it is sane, else a fresh UUID. */
export function genReqId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Upper bound for `X-Request-Timeout`, so a typo cannot pin a connection for days. */
const MAX_TIMEOUT_S = 3600;

/** The deadline for a raw `X-Request-Timeout` value, or throws `invalidTimeout` (400). */
export function parseDeadline(raw: string | string[] | undefined, now: number): number | undefined {
  if (raw === undefined) return undefined;
  const text = Array.isArray(raw) ? raw[0] : raw;
  if (text === undefined || !/^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(text)) throw errors.invalidTimeout();
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

    app.addHook('onRequest', async (request, reply) => {
      reply.header('x-request-id', request.id);
      const headers = request.headers;
      // The original service parsed a body without Content-Type as JSON; Fastify would answer 415.
      if (headers['content-type'] === undefined && BODY_METHODS.has(request.method) && hasBody(headers)) {
        headers['content-type'] = 'application/json';
      }
      const timeout = headers['x-request-timeout'];
      if (timeout !== undefined) request.deadline = parseDeadline(timeout, performance.now());
    });
  },
  { name: 'request-context' },
);
