/**
 * The per-request cost bound beyond load shedding (docs/reliability.md): a route declares what one request of it
 * costs (`config: { cost: (request) => rows }`, e.g. a page's `limit`), and the requests in flight of every such
 * route share one budget (PAGE_ROWS_IN_FLIGHT). Shedding reacts to an event loop already late; the budget keeps
 * a few expensive requests (10,000-row pages: rows to decode, JSON to build, gzip to run, megabytes to buffer)
 * from getting it there. A request that does not fit is answered `503` with `Retry-After` before any work.
 *
 * The cost is held until the work is over (the answer or the error reached onSend) and the connection is done
 * with the answer (sent or abandoned): the database read, serializing, compressing and buffering it are what a
 * large page costs, and a client that leaves early stops none of them by leaving.
 */
import type { FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { errors } from '../errors.ts';
import { Budget } from '../lib/budget.ts';
import { hookList } from './route-hooks.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What one request of this route costs against the budget (rows); routes without it are not counted. */
    cost?: (request: FastifyRequest) => number;
  }
  interface FastifyInstance {
    /** The shared cost budget; undefined when PAGE_ROWS_IN_FLIGHT=0. */
    costBudget: Budget | undefined;
  }
}

export interface CostBudgetOptions {
  /** Units (rows) the counted requests may hold at once; 0 turns the budget off. */
  capacity: number;
}

/** The "work is over" half of a counted request's release, called by the onSend hook. */
const workDone = new WeakMap<FastifyRequest, () => void>();

export default fp<CostBudgetOptions>(async (app, { capacity }) => {
  const budget = capacity > 0 ? new Budget(capacity) : undefined;
  app.decorate('costBudget', budget);
  if (budget === undefined) return;
  // The hooks go on the counted routes only: every other request (a read by id, a cache hit) pays nothing for them.
  app.addHook('onRoute', (route: RouteOptions) => {
    const cost = route.config?.cost;
    if (cost === undefined) return;
    // preHandler: after validation, so the cost is read from a valid query.
    route.preHandler = [...hookList(route.preHandler), async (request, reply) => {
      const rows = cost(request);
      if (rows <= 0) return;
      // A client already gone is not served (src/platform/http/security.ts); its 'close' has fired, so the rows
      // taken now would never come back.
      if (request.clientGone?.aborted || reply.raw.destroyed) throw errors.timeout();
      const release = budget.tryTake(rows);
      if (release === undefined) throw errors.tooMuchInFlight();
      // Given back once both are over: the work (the answer reached onSend, or the error did) and the connection's
      // hold on the answer. A client that leaves early does not end the work done for it (a shared page read goes
      // on for the others), so its leaving alone must not let the next page in.
      let pending = 2;
      const oneDone = () => { if (--pending === 0) release(); };
      reply.raw.once('close', oneDone);
      workDone.set(request, oneDone);
    }];
    route.onSend = [...hookList(route.onSend), async (request, _reply, payload) => {
      const done = workDone.get(request);
      if (done !== undefined) {
        workDone.delete(request);
        done();
      }
      return payload;
    }];
  });
}, { name: 'cost-budget' });
