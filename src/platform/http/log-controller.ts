/**
 * Every log line Fastify writes about a request goes through here (as in Fastify core's log controller): one
 * access line per request when it completes, with method, route pattern, status and duration. The route
 * pattern (`/users/:id`), not the URL, so no query string or path value reaches the log.
 */
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import { isAppError } from '../errors.ts';
import { isExpectedRefusal } from './refusal-log.ts';

export class AccessLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const line = {
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 100) / 100,
    };
    if (error) reply.log.error({ ...line, err: error }, 'request errored');
    else reply.log.info(line, 'request completed');
  }

  /** A stream the route ended on purpose (a deadline, a stalled reader) was already logged by the route, once. */
  override streamError(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    if (isAppError(error) && isExpectedRefusal(error)) return;
    super.streamError(error, request, reply);
  }
}
