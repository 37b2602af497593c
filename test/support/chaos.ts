/**
 * Tools of the fault scenarios (test/chaos-*.test.ts): seeding rows straight into PostgreSQL, timed HTTP calls,
 * a reader that stops reading, pool figures, and the pid of a test Redis (to SIGSTOP it).
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import postgres from 'postgres';
import { Redis } from 'ioredis';

/** Inserts `n` users with one statement, once the server has created the schema (poll /health/ready first). */
export async function seedUsers(databaseUrl: string, n: number): Promise<void> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
      SELECT gen_random_uuid(), 'Seeded ' || i, 'seeded' || i || '@example.com', 30, now(), now()
      FROM generate_series(1, ${n}) AS i`;
  } finally {
    await sql.end();
  }
}

/** Resolves once `GET /health/ready` answers 200, or throws after `timeoutMs`. */
export async function waitReady(baseUrl: string, timeoutMs = 30_000): Promise<void> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    const res = await fetch(`${baseUrl}/health/ready`).catch(() => undefined);
    if (res?.status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${baseUrl} not ready within ${timeoutMs} ms`);
}

export interface Timed {
  status: number;
  ms: number;
  headers: Headers;
  body: string;
}

/** A request with its duration; a network failure or `limitMs` passing gives status 0. */
export async function timed(url: string, init: RequestInit = {}, limitMs = 30_000): Promise<Timed> {
  const started = performance.now();
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(limitMs) });
    const body = await res.text();
    return { status: res.status, ms: performance.now() - started, headers: res.headers, body };
  } catch {
    return { status: 0, ms: performance.now() - started, headers: new Headers(), body: '' };
  }
}

/** The `database_connections` figures of `GET /metrics`. */
export async function pool(baseUrl: string): Promise<{ active: number; waiting: number; max: number }> {
  const res = await fetch(`${baseUrl}/metrics`, { headers: { accept: 'application/json' } });
  return ((await res.json()) as { database_connections: { active: number; waiting: number; max: number } }).database_connections;
}

/** Polls `check` every 50 ms until it is true; resolves with the time it took, or undefined after `limitMs`. */
export async function within(limitMs: number, check: () => Promise<boolean> | boolean): Promise<number | undefined> {
  const started = performance.now();
  while (performance.now() - started < limitMs) {
    if (await check()) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

export interface StalledReader {
  socket: Socket;
  /** Resolves with the ms from opening until the server closed the connection. */
  closed: Promise<number>;
}

/** Sends `GET path` over a raw connection and never reads the answer (the kernel buffers fill, then stall). */
export function stalledReader(port: number, path: string): StalledReader {
  const started = performance.now();
  const socket = connect({ port, host: '127.0.0.1' });
  socket.once('connect', () => {
    socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    socket.pause();
  });
  const closed = new Promise<number>((resolve) => {
    socket.once('close', () => resolve(performance.now() - started));
    socket.once('error', () => {});
  });
  return { socket, closed };
}

/** The process id of the Redis server at `url` (from INFO), so a test can SIGSTOP and SIGCONT it. */
export async function redisPid(url: string): Promise<number> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const info = await client.info('server');
    return Number(/process_id:(\d+)/.exec(info)?.[1]);
  } finally {
    client.disconnect();
  }
}

/** The q-quantile (0..1) of `values`. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

export interface FloodResult {
  /** Responses by status; 0 counts requests the client gave up on (`giveUpMs`) or that failed. */
  statuses: Record<string, number>;
  /** 503s without `Retry-After: 1` or without the contract's body. */
  bad503: string[];
}

/**
 * `concurrency` clients sending `GET url` back to back for `ms`, from a child process so the load does not slow
 * the test's own probes. Each client gives up on an answer after `giveUpMs` (an impatient client leaving).
 * `url` may be a function of the client's index (each client its own page), `headers` go on every request.
 */
export async function flood(
  url: string | ((client: number) => string), concurrency: number, ms: number, giveUpMs: number,
  headers: Record<string, string> = {},
): Promise<FloodResult> {
  const urls = Array.from({ length: concurrency }, (_, i) => (typeof url === 'string' ? url : url(i)));
  const script = `
    const http = require('node:http');
    const statuses = {}; const bad503 = []; const end = Date.now() + ${ms};
    const urls = ${JSON.stringify(urls)}; const headers = ${JSON.stringify(headers)};
    const one = (url) => new Promise((resolve) => {
      const req = http.get(url, { agent: false, timeout: ${giveUpMs}, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { if (body.length < 4096) body += d; });
        res.on('end', () => {
          statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
          if (res.statusCode === 503 && (res.headers['retry-after'] !== '1' || !/^\\{"detail":"Service temporarily unavailable/.test(body))) {
            bad503.push(String(res.headers['retry-after']) + ' ' + body.slice(0, 200));
          }
          resolve();
        });
        res.on('error', () => { statuses[0] = (statuses[0] || 0) + 1; resolve(); });
      });
      req.on('timeout', () => req.destroy(new Error('gave up')));
      req.on('error', () => { statuses[0] = (statuses[0] || 0) + 1; resolve(); });
    });
    const client = async (i) => { while (Date.now() < end) await one(urls[i]); };
    Promise.all(urls.map((_, i) => client(i))).then(() => {
      process.stdout.write(JSON.stringify({ statuses, bad503 }));
    });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await new Promise((resolve) => child.once('exit', resolve));
  return JSON.parse(out) as FloodResult;
}
