/**
 * Answers given before a request reaches a route: refusals of Node's HTTP parser (Fastify's
 * `clientErrorHandler`: an unknown method, a malformed header, headers too large, a request not received
 * within REQUEST_TIMEOUT_MS) and of Fastify's router (`frameworkErrors`: a bad percent-encoding, a path
 * parameter over the router's length limit).
 *
 * They keep every convention of a routed answer: the contract's `{"detail": ...}` body that never repeats the
 * request, `X-Request-Id`, the security headers, one access line and a count in the metrics (route
 * `unmatched`, as for a 404). Both are Fastify constructor options, set in src/app.ts.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errors, type AppError } from '../errors.ts';
import { sendError } from './error-handler.ts';
import { requestIdOf } from './request-context.ts';
import { httpOf } from './status.ts';
import { HELMET_OPTIONS, helmetHeaders } from './security-headers.ts';

/** The route label of answers given outside any route, in access lines and metrics. */
const UNMATCHED = 'unmatched';

const SECURITY_HEADERS = helmetHeaders(HELMET_OPTIONS);

/** Connections already answered by `clientErrorHandler`, while their answer flushes. */
const refused = new WeakSet<Socket>();

/** How long a refused connection may take to flush its answer before it is destroyed anyway. */
const FLUSH_WAIT_MS = 1000;

/** The catalogue error for a refusal of Node's HTTP parser, by its code. */
export function parserRefusal(code: string | undefined): AppError {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return errors.requestTimeout();
    case 'HPE_HEADER_OVERFLOW':
      return errors.headersTooLarge();
    default:
      return errors.malformedRequest();
  }
}

/** The catalogue error for a refusal of Fastify's router. */
function routerRefusal(err: FastifyError): AppError {
  switch (err.code) {
    // Every path parameter is an id (a UUID); one too long for the router is not one.
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return errors.invalidUuid();
    case 'FST_ERR_BAD_URL':
      return errors.badUrl();
    default:
      return errors.internal(err);
  }
}

/** The response bytes of `err`, whole, for a socket that has no response object (or one never started). */
function rawResponse(err: AppError, requestId: string): string {
  const body = JSON.stringify({ detail: err.detail });
  const http = httpOf(err);
  const headers: Record<string, string | number> = {
    ...SECURITY_HEADERS,
    ...http.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
    connection: 'close',
  };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n');
  return `HTTP/1.1 ${http.status} ${STATUS_CODES[http.status] ?? ''}\r\n${lines}\r\n\r\n${body}`;
}

/**
 * Fastify `clientErrorHandler` (bound to the instance). When the parser gave up on a request that a route had
 * already started (a body shorter than its Content-Length, cut at REQUEST_TIMEOUT_MS), the answer goes out
 * through that request's response, which keeps its request id, and Fastify's hooks log and count it as they do
 * any response. Otherwise there is no request: the answer is written to the socket whole, logged and counted here.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed || refused.has(socket)) return;
  // One answer per connection: it is closing, and what else it sends is not read (the parser would refuse it again).
  refused.add(socket);
  socket.pause();
  const refusal = parserRefusal(err.code);
  const http = httpOf(refusal);
  const started = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
  // Close once the answer is flushed (a response is corked until the next tick), or after a second at most.
  const close = (): void => void socket.destroy();
  setTimeout(close, FLUSH_WAIT_MS).unref();
  if (started) {
    if (started.headersSent) {
      close();
      return;
    }
    const body = JSON.stringify({ detail: refusal.detail });
    const requestId = requestIdOf(started.req) ?? randomUUID();
    started.writeHead(http.status, {
      ...SECURITY_HEADERS, ...http.headers, 'x-request-id': requestId,
      'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close',
    });
    started.end(body, close);
  } else {
    const requestId = randomUUID();
    if (socket.writable) socket.write(rawResponse(refusal, requestId), close);
    else close();
    this.log.info(
      { reqId: requestId, method: 'unparsed', route: UNMATCHED, status: http.status, ms: 0, code: err.code },
      'request completed',
    );
    this.metrics?.observeRefusal('unparsed', http.status, true);
  }
}

/**
 * Fastify `frameworkErrors`: the router refused the URL before any hook ran, so what the hooks would have done
 * (request id, security headers, the access line, the count) is done here.
 */
export function frameworkErrors(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  reply.header('x-request-id', request.id).headers(SECURITY_HEADERS);
  const refusal = routerRefusal(err);
  const { status } = httpOf(refusal);
  request.server.metrics?.observeRefusal(request.method, status, true);
  sendError(request, reply, refusal);
  request.log.info(
    { method: request.method, route: UNMATCHED, status, ms: Math.round(reply.elapsedTime * 100) / 100 },
    'request completed',
  );
}
