/**
 * A real local HTTP receiver of webhooks for the tests: it records every delivery (headers and raw body) and
 * verifies its signature with the `standardwebhooks` package, as a receiver would. What it answers is scripted
 * per path: a status, or `hang` (never answer, for timeouts); unscripted requests get 200.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface Received {
  path: string;
  id: string;
  timestamp: string;
  signature: string;
  body: string;
}

export type Answer = number | 'hang' | { status: number; headers: Record<string, string> };

export interface Receiver {
  readonly port: number;
  url(path?: string): string;
  readonly received: Received[];
  /** The answers for the next requests to `path`, in order; after them, 200. */
  script(path: string, answers: Answer[]): void;
  /** The parsed body, after verifying the signature with `secret` (throws when it does not verify). */
  verify(r: Received, secret: string): { type: string; timestamp: string; data: Record<string, unknown> };
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const scripts = new Map<string, Answer[]>();
  const hanging = new Set<ServerResponse>();
  const server: Server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({
        path, body,
        id: String(req.headers['webhook-id']), timestamp: String(req.headers['webhook-timestamp']),
        signature: String(req.headers['webhook-signature']),
      });
      const answer = scripts.get(path)?.shift() ?? 200;
      if (answer === 'hang') { hanging.add(res); return; }
      const { status, headers } = typeof answer === 'number' ? { status: answer, headers: {} } : answer;
      res.writeHead(status, headers).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (path = '/hook') => `http://127.0.0.1:${port}${path}`,
    received,
    script: (path, answers) => { scripts.set(path, [...answers]); },
    verify(r, secret) {
      const headers = { 'webhook-id': r.id, 'webhook-timestamp': r.timestamp, 'webhook-signature': r.signature };
      return new Webhook(secret).verify(r.body, headers) as ReturnType<Receiver['verify']>;
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The environment of an app whose webhooks may reach the test receiver on loopback, with quick retries. */
export const WEBHOOK_TEST_ENV: Record<string, string> = {
  WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
  WEBHOOK_TIMEOUT_MS: '400',
  WEBHOOK_RETRY_BASE_MS: '50',
  WEBHOOK_RETRY_MAX_MS: '200',
  WEBHOOK_MAX_ATTEMPTS: '4',
  JOB_POLL_MS: '50',
  OUTBOX_POLL_MS: '200',
};
