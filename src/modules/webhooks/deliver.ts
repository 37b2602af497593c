/**
 * One delivery attempt: `POST <url>` of the event, signed per Standard Webhooks (the `standardwebhooks`
 * package, the specification's reference library), with the server-side request forgery guard (ssrf.ts), no
 * redirects followed, and one deadline for the whole exchange. A 2xx within the deadline is success; anything
 * else is a failed attempt that the job queue retries with backoff.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Webhook } from 'standardwebhooks';
import type { AllowedHost } from '../../platform/config.ts';
import { traceHeaders } from '../../platform/tracing/context.ts';
import { guardedLookup, isAllowed, RefusedDestination, refusedLiteral } from './ssrf.ts';

export type AttemptOutcome = 'success' | 'http_error' | 'timeout' | 'refused' | 'network_error';

export interface AttemptResult {
  outcome: AttemptOutcome;
  statusCode: number | null;
  error: string | null;
}

export interface Attempt {
  url: string;
  /** `whsec_...` */
  secret: string;
  /** The event id: `webhook-id`, the same on every attempt. */
  eventId: string;
  body: string;
  timeoutMs: number;
  allowed: readonly AllowedHost[];
  /** Aborted when the job is cancelled or given back. */
  signal: AbortSignal;
}

// Connections are kept for the next delivery to the same host; each was checked when it was opened.
const agents = { http: new HttpAgent({ keepAlive: true, maxSockets: 64 }), https: new HttpsAgent({ keepAlive: true, maxSockets: 64 }) };
/** What is read of a receiver's answer: enough to finish the exchange, never a body a receiver could inflate. */
const MAX_ANSWER_BYTES = 64 * 1024;

export async function attempt(a: Attempt): Promise<AttemptResult> {
  const url = new URL(a.url);
  const refused = refusedLiteral(a.allowed, url);
  if (refused) return { outcome: 'refused', statusCode: null, error: refused.message };
  const now = new Date();
  const headers = {
    'content-type': 'application/json',
    'user-agent': 'Spate-Webhooks/1',
    'webhook-id': a.eventId,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': new Webhook(a.secret).sign(a.eventId, now, a.body),
    // In the delivery job's span, which continues the trace of the change (docs/tracing.md).
    ...traceHeaders(),
  };
  const deadline = AbortSignal.timeout(a.timeoutMs);
  const https = url.protocol === 'https:';
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(url, {
        method: 'POST', headers, agent: https ? agents.https : agents.http,
        lookup: isAllowed(a.allowed, url) ? undefined : guardedLookup,
        signal: AbortSignal.any([a.signal, deadline]),
      }, (res: IncomingMessage) => {
        let read = 0;
        res.on('data', (chunk: Buffer) => { if ((read += chunk.length) > MAX_ANSWER_BYTES) res.destroy(); });
        res.once('end', () => resolve(res.statusCode ?? 0));
        res.once('close', () => resolve(res.statusCode ?? 0));
        res.once('error', reject);
      });
      req.once('error', reject);
      req.end(a.body);
    });
    if (status >= 200 && status < 300) return { outcome: 'success', statusCode: status, error: null };
    const error = status >= 300 && status < 400 ? `redirect not followed (HTTP ${status})` : `HTTP ${status}`;
    return { outcome: 'http_error', statusCode: status, error };
  } catch (err) {
    if (deadline.aborted) return { outcome: 'timeout', statusCode: null, error: `no complete answer within ${a.timeoutMs} ms` };
    if (err instanceof RefusedDestination) return { outcome: 'refused', statusCode: null, error: err.message };
    const e = err as NodeJS.ErrnoException;
    return { outcome: 'network_error', statusCode: null, error: (e.code ? `${e.code}: ${e.message}` : e.message).slice(0, 500) };
  }
}
