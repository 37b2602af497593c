/**
 * Answers given below the routes (issue 11, finding 3), against the real server process (`npm start`) over raw
 * sockets: what Node's HTTP parser and Fastify's router refuse is in the contract's shape, never repeats the
 * request, carries X-Request-Id and the security headers, gets one access line and counts in the metrics.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';

/** Short, so the body-shorter-than-Content-Length case is cut in about a second and a half. */
const REQUEST_TIMEOUT_MS = 1500;

let db: TestDatabase;
let server: ServerProcess;

before(async () => {
  db = await createTestDatabase();
  server = await startServer({
    DATABASE_URL: db.url, REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS), HEADERS_TIMEOUT_MS: '1000',
  });
});
after(async () => {
  await server?.stop();
  await db?.destroy();
});

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  ms: number;
}

/** Writes `data` on a fresh connection and reads one response (Content-Length framed, or until close). */
function raw(data: string): Promise<RawResponse> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1', () => socket.write(data));
    let buf = Buffer.alloc(0);
    const done = () => {
      socket.destroy();
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no response: ${JSON.stringify(text)}`));
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status: Number(statusLine!.split(' ')[1]), headers, body: buf.subarray(end + 4).toString('utf8'), ms: performance.now() - started });
    };
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
      if (end >= 0 && length && buf.length >= end + 4 + Number(length[1])) done();
    });
    socket.on('close', done);
    socket.on('error', () => {});
    setTimeout(() => reject(new Error('no answer within 10 s')), 10_000).unref();
  });
}

/** The access lines the server wrote for a request id. */
function accessLines(requestId: string): Record<string, unknown>[] {
  return server.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.reqId === requestId && l.msg === 'request completed');
}

async function waitForAccessLine(requestId: string): Promise<Record<string, unknown>[]> {
  for (let i = 0; i < 50 && accessLines(requestId).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  return accessLines(requestId);
}

const LONG_ID = 'a'.repeat(10_000);
const cases: { label: string; request: string; status: number; detail: string; echo?: string; route: string; method: string }[] = [
  {
    label: 'a 101-character path id', request: `GET /users/${'b'.repeat(101)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    status: 400, detail: 'Invalid UUID', echo: 'bbbbbbbbbb', route: 'unmatched', method: 'GET',
  },
  {
    label: 'a 10 KB path id', request: `GET /users/${LONG_ID} HTTP/1.1\r\nHost: x\r\n\r\n`,
    status: 400, detail: 'Invalid UUID', echo: 'aaaaaaaaaa', route: 'unmatched', method: 'GET',
  },
  {
    label: 'a bad percent-encoding', request: 'GET /%ZZ HTTP/1.1\r\nHost: x\r\n\r\n',
    status: 400, detail: 'Bad Request: invalid URL encoding', echo: '%ZZ', route: 'unmatched', method: 'GET',
  },
  {
    label: 'an unknown method', request: 'FOO /users HTTP/1.1\r\nHost: x\r\n\r\n',
    status: 400, detail: 'Bad Request: malformed HTTP request', echo: 'FOO', route: 'unmatched', method: 'unparsed',
  },
  {
    label: 'a bare LF in a header', request: 'GET /users HTTP/1.1\r\nHost: x\nX-Evil: 1\r\n\r\n',
    status: 400, detail: 'Bad Request: malformed HTTP request', echo: 'X-Evil', route: 'unmatched', method: 'unparsed',
  },
  {
    label: 'headers over the size limit', request: `GET /users HTTP/1.1\r\nHost: x\r\nX-Big: ${'c'.repeat(20_000)}\r\n\r\n`,
    status: 431, detail: 'Request Header Fields Too Large', echo: 'ccccc', route: 'unmatched', method: 'unparsed',
  },
  {
    label: 'a body shorter than its Content-Length',
    request: 'POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":"Trunc',
    status: 408, detail: 'Request Timeout: the request was not received in time', echo: 'Trunc', route: '/users', method: 'POST',
  },
];

describe('refusals below the routes', () => {
  const seen: RawResponse[] = [];

  for (const c of cases) {
    test(`${c.label}: ${c.status} in the contract shape, with id, security headers and an access line`, async () => {
      const res = await raw(c.request);
      seen.push(res);
      assert.equal(res.status, c.status, res.body);
      assert.deepEqual(JSON.parse(res.body), { detail: c.detail });
      if (c.echo) assert.ok(!res.body.includes(c.echo), 'the body never repeats the request');
      assert.match(res.headers['content-type'] ?? '', /^application\/json/);
      assert.match(res.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.match(res.headers['content-security-policy'] ?? '', /default-src 'self'/);
      const lines = await waitForAccessLine(res.headers['x-request-id']!);
      assert.equal(lines.length, 1, `one access line for ${res.headers['x-request-id']}`);
      assert.deepEqual({ route: lines[0]!.route, status: lines[0]!.status, method: lines[0]!.method }, { route: c.route, status: c.status, method: c.method });
      if (c.status === 408) assert.ok(res.ms < REQUEST_TIMEOUT_MS + 1500, `cut at the request timeout (${Math.round(res.ms)} ms)`);
    });
  }

  test('each is counted in the metrics', async () => {
    const text = await (await fetch(`${server.baseUrl}/metrics/prometheus`)).text();
    const count = (method: string, route: string, status: number) =>
      Number(new RegExp(`^http_request_duration_seconds_count\\{method="${method}",route="${route.replace('/', '\\/')}",status="${status}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    const expected = new Map<string, number>();
    for (const c of cases) expected.set(`${c.method} ${c.route} ${c.status}`, (expected.get(`${c.method} ${c.route} ${c.status}`) ?? 0) + 1);
    for (const [key, n] of expected) {
      const [method, route, status] = key.split(' ');
      assert.equal(count(method!, route!, Number(status)), n, key);
    }
    const json = await (await fetch(`${server.baseUrl}/metrics`)).json() as { total_requests: number; requests_by_status: { '4xx': number } };
    assert.ok(json.requests_by_status['4xx'] >= cases.length, JSON.stringify(json.requests_by_status));
    assert.ok(json.total_requests >= cases.length + 1);
  });

  test('the server still serves afterwards', async () => {
    assert.equal(seen.length, cases.length);
    assert.equal((await fetch(`${server.baseUrl}/health/live`)).status, 200);
  });
});
