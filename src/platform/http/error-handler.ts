/**
 * The one error handler: whatever was thrown becomes the contract's `{"detail": ...}` body.
 *
 * Catalogue errors pass through with their status and headers; Fastify's own client errors are mapped to the
 * contract's statuses (malformed JSON is 422, an oversize body 413); anything else is a 500 with a fixed text.
 * 5xx are logged as errors with the request id, 4xx at info, expected refusals (503, 504) as rate-limited warnings
 * (src/platform/http/refusal-log.ts). Unknown paths are 404 and known paths with another
 * method are 405 with `Allow`, both in the same shape.
 */
import FindMyWay from 'find-my-way';
import fp from 'fastify-plugin';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { type AppError, errors, isAppError } from '../errors.ts';
import { RefusalLog, isExpectedRefusal } from './refusal-log.ts';
import { httpOf } from './status.ts';

type HTTPMethod = FindMyWay.HTTPMethod;

/** Fastify's client-error codes, mapped onto the catalogue. */
function fromFastify(err: FastifyError): AppError | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge();
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      // FastAPI validates a non-JSON body as a raw value and answers 422; its clients rely on that.
      return errors.validation([
        { loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', type: 'model_attributes_type' },
      ]);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.validation([{ loc: ['body'], msg: 'Field required', type: 'missing' }]);
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return errors.validation([{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }]);
  }
  // JSON.parse failures surface as a SyntaxError with status 400.
  if (err instanceof SyntaxError && err.statusCode === 400) {
    return errors.validation([{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }]);
  }
  if (err.statusCode === 503 && err.code === 'FST_ERR_HTTP_SERVER_CLOSING') return errors.shuttingDown();
  return undefined;
}

let refusals: RefusalLog | undefined;

export function sendError(request: FastifyRequest, reply: FastifyReply, err: AppError): void {
  const { status, headers } = httpOf(err);
  // Expected refusals (an outage, a drain, a deadline) are a warn line each, rate-limited, never a stack trace.
  if (isExpectedRefusal(err)) {
    (refusals ??= new RefusalLog(request.server.log)).note(request.log, err, status);
    void reply.code(status).headers(headers).type('application/json').send({ detail: err.detail });
    return;
  }
  send(request, reply, status, headers, err.code, err.detail, err.cause ?? err);
}

function send(
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  headers: Record<string, string>,
  code: string,
  detail: AppError['detail'],
  cause: unknown,
): void {
  if (status >= 500) {
    request.log.error({ err: cause, code }, code);
  } else {
    request.log.info({ code, status }, 'client error');
  }
  void reply.code(status).headers(headers).type('application/json').send({ detail });
}

export interface ErrorHandlingOptions {
  /** Runs before the not-found handler: the rate limit, so probing unknown paths is throttled too. */
  notFoundPreHandler?: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
}

export default fp<ErrorHandlingOptions>(
  async (app, { notFoundPreHandler }) => {
    // A shadow router of every route, consulted only on a miss to tell 404 from 405. The CORS preflight
    // catch-all (OPTIONS *) is left out: it would make every unknown path a 405.
    const routes = FindMyWay();
    app.addHook('onRoute', (route) => {
      if (route.url === '*' || route.url === '/*') return;
      for (const m of [route.method].flat()) routes.on(m as HTTPMethod, route.url, () => {});
    });

    app.setErrorHandler((err: FastifyError | AppError, request, reply) => {
      if (isAppError(err)) return sendError(request, reply, err);
      const mapped = fromFastify(err);
      if (mapped) return sendError(request, reply, mapped);
      if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
        // A client error Fastify raised with no catalogue entry: it is HTTP already.
        return send(request, reply, err.statusCode, {}, err.code ?? 'CLIENT_ERROR', err.message, err);
      }
      return sendError(request, reply, errors.internal(err));
    });

    // The refusals of a drain's last moments are counted in a summary before the process exits.
    app.addHook('onClose', async () => { refusals?.flush(); });

    app.setNotFoundHandler(notFoundPreHandler ? { preHandler: notFoundPreHandler } : {}, (request, reply) => {
      const path = request.url.split('?', 1)[0]!;
      const allow = routesAllowing(routes, path);
      sendError(request, reply, allow.length ? errors.methodNotAllowed(allow) : errors.notFound());
    });
  },
  { name: 'errors' },
);

const METHODS: HTTPMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

function routesAllowing(routes: FindMyWay.Instance<FindMyWay.HTTPVersion.V1>, path: string): string[] {
  return METHODS.filter((m) => routes.find(m, path) !== null);
}
