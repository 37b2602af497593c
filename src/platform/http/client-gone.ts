/**
 * `request.clientGone`, made only for the requests that ask for it.
 *
 * A signal that aborts when the connection closes before the response finished costs an AbortController, its
 * AbortSignal and a 'close' listener: about 4% of the main thread of `GET /users/{id}` under load when every
 * request made one (docs/benchmarks.md, Analysis). Most requests never read it: a coalesced read by id has its
 * batch's own signal, a cache hit reads nothing. So the signal is a getter, made the first time a store call
 * asks for it; a client that had already left by then gets a signal aborted at once, so a late reader is told the
 * same as an early one. The checks in the request's life that need no signal (before the handler, before the
 * answer is written) ask the response itself (`hasLeft`).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Aborts when the connection closes before the response finished: the client went away, so the work done
     * for it is wasted. Routes pass the request as storage options, so this reaches the database calls.
     */
    readonly clientGone: AbortSignal;
  }
}

/** Slots on the request (declared, so every request keeps one shape): its response, and the signal once made. */
const RESPONSE = Symbol('spate.response');
const SIGNAL = Symbol('spate.clientGone');

interface Slots {
  [RESPONSE]: ServerResponse | undefined;
  [SIGNAL]: AbortSignal | undefined;
}

/**
 * True when the connection closed before this response finished. Node marks the response destroyed when its
 * socket closes, and also once it finished, which `writableFinished` tells apart.
 */
export const hasLeft = (res: ServerResponse): boolean => res.destroyed && !res.writableFinished;

/** Declares `request.clientGone`. Call `rememberResponse` from an onRequest hook of the same app. */
export function declareClientGone(app: FastifyInstance): void {
  app.decorateRequest(RESPONSE as unknown as string, undefined);
  app.decorateRequest(SIGNAL as unknown as string, undefined);
  app.decorateRequest('clientGone', {
    getter(this: FastifyRequest): AbortSignal {
      const slots = this as unknown as Slots;
      const made = slots[SIGNAL];
      if (made !== undefined) return made;
      const res = slots[RESPONSE];
      const controller = new AbortController();
      if (res === undefined || hasLeft(res)) {
        // Not yet remembered (a request refused before the hook) or already gone: nobody is waiting.
        if (res !== undefined) controller.abort();
      } else if (!res.writableFinished) {
        res.once('close', () => {
          if (!res.writableFinished) controller.abort();
        });
      }
      return (slots[SIGNAL] = controller.signal);
    },
  });
}

/** Keeps the request's response, for `clientGone` (one property write: no signal, no listener). */
export function rememberResponse(request: FastifyRequest, reply: FastifyReply): void {
  (request as unknown as Slots)[RESPONSE] = reply.raw;
}
