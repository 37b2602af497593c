/**
 * Streaming (`GET /users/stream`, `GET /users/stream/pages`) against a real PostgreSQL: every format row by row,
 * the pages report, validation, errors before and after the first byte, and, with the real server process,
 * 200,000 rows per format at flat memory. Backpressure and disconnects are checked over raw sockets.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { openPostgres } from '../src/db/postgres/index.ts';
import type { Backend } from '../src/db/backend.ts';
import { startApp } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';

let db: TestDatabase;
let app: FastifyInstance;
let sql: postgres.Sql;

before(async () => {
  db = await createTestDatabase();
  // ROLE=api: no job workers polling in the background, so /metrics counts this file's statements alone.
  app = await startApp(db.url, { ROLE: 'api' });
  sql = postgres(db.url, { max: 2, onnotice: () => {} });
});
after(async () => {
  await app?.close();
  await sql?.end();
  await db?.destroy();
});

interface PublicUser { id: string; name: string; email: string; age: number; created_at: string; updated_at: string }

const ISO_MS_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const FIELDS = ['id', 'name', 'email', 'age', 'created_at', 'updated_at'];
const BIG = 200_000;

/** Names and emails that need CSV quoting or JSON escaping. */
const TRICKY: [string, string][] = [
  ['Comma, Name', 'comma@example.com'],
  ['Quote "Q" Name', 'quote@example.com'],
  ['Line\nBreak', 'lf@example.com'],
  ['Carriage\r\nReturn', 'crlf@example.com'],
  ['"', 'only-quote@example.com'],
  ['=1+2', 'formula@example.com'],
  ['Ünïcødé ✓ 日本', 'odd,"email"@example.com'],
];

/** Replaces the table's rows: the tricky ones plus `n` generated ones, in one statement each. */
async function seed(n: number, tricky = true): Promise<void> {
  await sql`TRUNCATE users`;
  if (tricky) {
    await sql`INSERT INTO users SELECT gen_random_uuid(), t.name, t.email, 42, '2024-01-10T12:34:56.789Z', now()
      FROM unnest(${sql.array(TRICKY.map((t) => t[0]))}::text[], ${sql.array(TRICKY.map((t) => t[1]))}::text[]) AS t(name, email)`;
  }
  await sql`INSERT INTO users SELECT gen_random_uuid(), 'User ' || i, 'user' || i || '@example.com', i % 151, now(), now()
    FROM generate_series(1, ${n}) AS i`;
}

/** Every row as the API must show it, in the API's order. */
async function expected(): Promise<PublicUser[]> {
  const rows = await sql<{ id: string; name: string; email: string; age: number; created_at: Date; updated_at: Date }[]>`
    SELECT id, name, email, age, created_at, updated_at FROM users ORDER BY id`;
  return rows.map((r) => ({ ...r, created_at: r.created_at.toISOString(), updated_at: r.updated_at.toISOString() }));
}

/** A strict RFC 4180 parser: CRLF after every record, quotes only around a whole field, `""` inside quotes. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  const plainEnd = /[,\r\n"]/g;
  let row: string[] = [];
  let i = 0;
  while (i < text.length) {
    let field = '';
    if (text[i] === '"') {
      for (let j = i + 1; ;) {
        const quote = text.indexOf('"', j);
        assert.ok(quote >= 0, 'unterminated quoted field');
        field += text.slice(j, quote);
        if (text[quote + 1] !== '"') { i = quote + 1; break; }
        field += '"';
        j = quote + 2;
      }
    } else {
      plainEnd.lastIndex = i;
      const stop = plainEnd.exec(text);
      assert.ok(stop === null || stop[0] === ',' || stop[0] === '\r', `${JSON.stringify(stop?.[0])} in an unquoted field at ${stop?.index}`);
      field = text.slice(i, stop?.index ?? text.length);
      i = stop?.index ?? text.length;
    }
    row.push(field);
    if (text[i] === ',') { i += 1; continue; }
    assert.ok(text.startsWith('\r\n', i), `a record must end with CRLF (at ${i})`);
    rows.push(row);
    row = [];
    i += 2;
  }
  return rows;
}

function fromCsv(text: string): PublicUser[] {
  const [header, ...rows] = parseCsv(text);
  assert.deepEqual(header, FIELDS);
  return rows.map((r) => {
    assert.equal(r.length, 6);
    return { id: r[0]!, name: r[1]!, email: r[2]!, age: Number(r[3]), created_at: r[4]!, updated_at: r[5]! };
  });
}

const fromNdjson = (text: string): PublicUser[] => {
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), 'every line ends with LF');
  return text.slice(0, -1).split('\n').map((line) => JSON.parse(line));
};

/** The users of a body in any format; for JSON also checks the metadata. */
function usersOf(format: string, text: string, fetchSize = 100): PublicUser[] {
  if (format === 'csv') return fromCsv(text);
  if (format === 'ndjson') return fromNdjson(text);
  const body = JSON.parse(text);
  assert.deepEqual(Object.keys(body), ['users', 'metadata']);
  assert.deepEqual(body.metadata, {
    total_returned: body.users.length,
    pages_fetched: Math.ceil(body.users.length / fetchSize),
    fetch_size: fetchSize,
    streaming_enabled: true,
  });
  return body.users;
}

/** Field by field, for bodies too large to compare with deepEqual cheaply. */
function checkAll(users: PublicUser[], count: number): void {
  assert.equal(users.length, count);
  assert.equal(new Set(users.map((u) => u.id)).size, count, 'ids are unique');
  let previous = '';
  for (const u of users) {
    assert.deepEqual(Object.keys(u), FIELDS);
    assert.ok(UUID.test(u.id) && u.id > previous, `id ${u.id} in order`);
    assert.ok(typeof u.name === 'string' && typeof u.email === 'string' && Number.isInteger(u.age));
    assert.ok(ISO_MS_Z.test(u.created_at) && ISO_MS_Z.test(u.updated_at));
    previous = u.id;
  }
}

const CONTENT_TYPE = { json: /^application\/json/, ndjson: /^application\/x-ndjson/, csv: /^text\/csv/ };
const FORMATS = ['json', 'ndjson', 'csv'] as const;

describe('GET /users/stream formats', () => {
  let all: PublicUser[];
  before(async () => {
    await seed(250);
    all = await expected();
  });

  for (const format of FORMATS) {
    test(`${format}: every row, every field, in order, across pages`, async () => {
      const res = await app.inject(`/users/stream?format=${format}&fetch_size=100`);
      assert.equal(res.statusCode, 200);
      assert.match(res.headers['content-type'] as string, CONTENT_TYPE[format]);
      assert.ok(res.headers['x-request-id']);
      assert.deepEqual(usersOf(format, res.body), all);
    });

    test(`${format}: limit below the row count`, async () => {
      const res = await app.inject(`/users/stream?format=${format}&limit=15&fetch_size=10`);
      assert.equal(res.statusCode, 200);
      assert.deepEqual(usersOf(format, res.body, 10), all.slice(0, 15));
    });

    test(`${format}: limit=0 is a valid empty body`, async () => {
      const res = await app.inject(`/users/stream?format=${format}&limit=0`);
      assert.equal(res.statusCode, 200);
      if (format !== 'json') assert.equal(res.body, { ndjson: '', csv: 'id,name,email,age,created_at,updated_at\r\n' }[format]);
      assert.deepEqual(usersOf(format, res.body), []);
    });
  }

  test('json: the exact empty document', async () => {
    const res = await app.inject('/users/stream?limit=0&fetch_size=50');
    assert.equal(res.body, '{"users":[],"metadata":{"total_returned":0,"pages_fetched":0,"fetch_size":50,"streaming_enabled":true}}');
  });

  test('the defaults: JSON, limit 1000, fetch_size 100', async () => {
    const res = await app.inject('/users/stream');
    assert.match(res.headers['content-type'] as string, CONTENT_TYPE.json);
    const body = res.json();
    assert.equal(body.users.length, all.length);
    assert.equal(body.metadata.fetch_size, 100);
    assert.equal(body.metadata.pages_fetched, 3);
  });

  test('Accept: application/x-ndjson selects NDJSON; format= wins over Accept', async () => {
    const nd = await app.inject({ url: '/users/stream?limit=5', headers: { accept: 'application/x-ndjson' } });
    assert.match(nd.headers['content-type'] as string, CONTENT_TYPE.ndjson);
    assert.deepEqual(fromNdjson(nd.body), all.slice(0, 5));
    const csv = await app.inject({ url: '/users/stream?limit=5&format=csv', headers: { accept: 'application/x-ndjson' } });
    assert.match(csv.headers['content-type'] as string, CONTENT_TYPE.csv);
  });

  test('Accept is ranked by q-values, not by its order; q=0 refuses a type; none acceptable gives JSON', async () => {
    const typeOf = async (accept: string) =>
      (await app.inject({ url: '/users/stream?limit=2', headers: { accept } })).headers['content-type'] as string;
    assert.match(await typeOf('text/csv;q=0.5, application/x-ndjson'), CONTENT_TYPE.ndjson);
    assert.match(await typeOf('application/json;q=0.1, text/csv;q=0.9'), CONTENT_TYPE.csv);
    assert.match(await typeOf('application/json;q=0, text/*;q=0.2'), CONTENT_TYPE.csv);
    assert.match(await typeOf('image/png'), CONTENT_TYPE.json);
  });

  test('HEAD answers with the headers and runs no query', async () => {
    // Statements, transactions and cursors the app has run, as /metrics counts them.
    const queries = async () => ((await app.inject('/metrics')).json() as { database: { queries: number } }).database.queries;
    // A scrape may itself run a statement (the job queue's counts): measure that first, and count it out.
    const first = await queries();
    const before = await queries();
    const perScrape = before - first;
    const res = await app.inject({ method: 'HEAD', url: '/users/stream?format=csv&limit=1000000' });
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, CONTENT_TYPE.csv);
    assert.equal(res.body, '');
    const afterHead = await queries();
    assert.equal(afterHead, before + perScrape, 'HEAD ran nothing on the database');
    // The count does see a stream: the same request as GET moves it.
    assert.equal((await app.inject('/users/stream?format=csv&limit=1')).statusCode, 200);
    assert.equal(await queries(), afterHead + perScrape + 1, 'GET ran its cursor');
  });

  test('CSV quotes exactly the fields that need it', async () => {
    const res = await app.inject('/users/stream?format=csv');
    for (const line of ['"Comma, Name"', '"Quote ""Q"" Name"', '"Line\nBreak"', '"Carriage\r\nReturn"', '""""', ',=1+2,', '"odd,""email""@example.com"']) {
      assert.ok(res.body.includes(line), `${JSON.stringify(line)} in the CSV`);
    }
  });

  test('an empty table is valid in every format', async () => {
    await sql`TRUNCATE users`;
    for (const format of FORMATS) {
      const res = await app.inject(`/users/stream?format=${format}`);
      assert.deepEqual(usersOf(format, res.body), []);
    }
    await seed(250);
    all = await expected();
  });
});

describe('GET /users/stream/pages', () => {
  let all: PublicUser[];
  before(async () => {
    await seed(250);
    all = await expected();
  });

  const pages = async (query: string) => {
    const res = await app.inject(`/users/stream/pages?${query}`);
    assert.equal(res.statusCode, 200, res.body);
    return res.json();
  };
  const sample = (u: PublicUser) => ({ id: u.id, name: u.name, email: u.email });

  test('reports each page with its first user; limit is honoured', async () => {
    const body = await pages('limit=250&fetch_size=100&max_pages=10');
    assert.deepEqual(body, {
      total_rows_processed: 250,
      pages_info: [
        { page_number: 1, rows_in_page: 100, sample_user: sample(all[0]!) },
        { page_number: 2, rows_in_page: 100, sample_user: sample(all[100]!) },
        { page_number: 3, rows_in_page: 50, sample_user: sample(all[200]!) },
      ],
      metadata: { fetch_size: 100, max_pages_limit: 10, streaming_mode: 'page_by_page' },
    });
  });

  test('stops after max_pages', async () => {
    const body = await pages('limit=1000&fetch_size=20&max_pages=3');
    assert.equal(body.total_rows_processed, 60);
    assert.deepEqual(body.pages_info.map((p: { rows_in_page: number }) => p.rows_in_page), [20, 20, 20]);
    assert.deepEqual(body.pages_info[2].sample_user, sample(all[40]!));
  });

  test('the defaults: limit 1000, fetch_size 100, max_pages 10 (all 257 rows here)', async () => {
    const body = await pages('');
    assert.equal(body.total_rows_processed, all.length);
    assert.deepEqual(body.pages_info.map((p: { rows_in_page: number }) => p.rows_in_page), [100, 100, 57]);
    assert.deepEqual(body.metadata, { fetch_size: 100, max_pages_limit: 10, streaming_mode: 'page_by_page' });
  });

  test('max_pages=0 and limit=0 read nothing', async () => {
    for (const query of ['max_pages=0', 'limit=0']) {
      const body = await pages(query);
      assert.equal(body.total_rows_processed, 0);
      assert.deepEqual(body.pages_info, []);
    }
  });
});

describe('validation and errors before the first byte', () => {
  const invalid: [string, string, string][] = [
    ['/users/stream?limit=-1', 'limit', 'greater_than_equal'],
    ['/users/stream?limit=1000001', 'limit', 'less_than_equal'],
    ['/users/stream?limit=ten', 'limit', 'int_parsing'],
    ['/users/stream?fetch_size=9', 'fetch_size', 'greater_than_equal'],
    ['/users/stream?fetch_size=1001', 'fetch_size', 'less_than_equal'],
    ['/users/stream?format=xml', 'format', ''],
    ['/users/stream/pages?max_pages=101', 'max_pages', 'less_than_equal'],
    ['/users/stream/pages?max_pages=-1', 'max_pages', 'greater_than_equal'],
    ['/users/stream/pages?limit=1000001', 'limit', 'less_than_equal'],
    ['/users/stream/pages?fetch_size=5', 'fetch_size', 'greater_than_equal'],
  ];
  for (const [url, field, type] of invalid) {
    test(`422 for ${url}`, async () => {
      const res = await app.inject(url);
      assert.equal(res.statusCode, 422, res.body);
      assert.match(res.headers['content-type'] as string, /^application\/json/);
      const [issue] = res.json().detail;
      assert.deepEqual(issue.loc, ['query', field]);
      if (type) assert.equal(issue.type, type);
    });
  }

  test('a deadline that expires before the first row: 504 in the contract shape, query cancelled', async () => {
    await sql.begin(async (tx) => {
      await tx`LOCK TABLE users IN ACCESS EXCLUSIVE MODE`;
      const started = performance.now();
      const res = await app.inject({ url: '/users/stream?format=csv', headers: { 'x-request-timeout': '0.3' } });
      assert.equal(res.statusCode, 504);
      assert.match(res.headers['content-type'] as string, /^application\/json/);
      assert.deepEqual(res.json(), { detail: 'Gateway Timeout' });
      assert.ok(performance.now() - started < 1500);
    });
    await waitUntilIdle(app.backend);
  });

  test('documented in /openapi.json with the streaming tag, three content types and the error responses', async () => {
    const doc = (await app.inject('/openapi.json')).json();
    const stream = doc.paths['/users/stream'].get;
    assert.deepEqual(stream.tags, ['streaming']);
    assert.deepEqual(Object.keys(stream.responses[200].content).sort(), ['application/json', 'application/x-ndjson', 'text/csv']);
    const pagesOp = doc.paths['/users/stream/pages'].get;
    assert.deepEqual(pagesOp.tags, ['streaming']);
    for (const op of [stream, pagesOp]) {
      for (const status of ['200', '422', '503', '504']) assert.ok(op.responses[status], `${status} documented`);
    }
    assert.deepEqual(stream.parameters.map((p: { name: string }) => p.name).sort(), ['fetch_size', 'format', 'limit']);
  });
});

/** Non-idle connections of the app's pool, as PostgreSQL sees them. */
async function busySpateConnections(): Promise<number> {
  const [row] = await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'spate' AND state <> 'idle'`;
  return row!.n as number;
}

/** Resolves with the milliseconds it took for the pool and the server to go idle; fails after `ms`. */
async function waitUntilIdle(backend: Backend, ms = 1000): Promise<number> {
  const started = performance.now();
  for (;;) {
    const busy = await busySpateConnections();
    const pool = backend.probes.pools().users;
    if (pool.active === 0 && busy === 0) return performance.now() - started;
    assert.ok(performance.now() - started < ms, `still busy after ${ms} ms: pool ${JSON.stringify(pool)}, ${busy} non-idle`);
    await sleep(20);
  }
}

describe(`${BIG} rows through the real server process`, () => {
  let server: ServerProcess;
  before(async () => {
    await seed(BIG, false);
    server = await startServer({ DATABASE_URL: db.url });
    // Warm up (JIT, pools, buffers) so the baseline is the steady state, not a cold process.
    for (const format of FORMATS) await (await fetch(`${server.baseUrl}/users/stream?format=${format}&limit=20000`)).text();
  });
  after(async () => {
    if (server) assert.equal(await server.stop(), 0);
  });

  for (const format of FORMATS) {
    test(`${format}: every row valid, RSS growth under 50 MB`, async () => {
      await sleep(100);
      const baseline = server.rss();
      const samples: number[] = [];
      const sampler = setInterval(() => samples.push(server.rss()), 50);
      const started = performance.now();
      let text: string;
      try {
        const res = await fetch(`${server.baseUrl}/users/stream?format=${format}&limit=${BIG}&fetch_size=100`);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('transfer-encoding'), 'chunked');
        text = await res.text();
      } finally {
        clearInterval(sampler);
      }
      const seconds = (performance.now() - started) / 1000;
      samples.push(server.rss());
      const growthMb = (Math.max(...samples) - baseline) / 2 ** 20;
      console.log(`stream ${format}: ${BIG} rows in ${seconds.toFixed(2)} s = ${Math.round(BIG / seconds)} rows/s, `
        + `${(text.length / 2 ** 20).toFixed(1)} MB body, RSS baseline ${(baseline / 2 ** 20).toFixed(0)} MB, `
        + `growth ${growthMb.toFixed(1)} MB (${samples.length} samples)`);
      checkAll(usersOf(format, text), BIG);
      assert.ok(growthMb < 50, `RSS grew by ${growthMb.toFixed(1)} MB`);
    });
  }
});

/** A raw HTTP/1.1 client on a socket, so a test can stop reading or drop the connection at will. */
function rawGet(t: TestContext, port: number, path: string, headers: Record<string, string> = {}) {
  const socket = net.connect(port, '127.0.0.1');
  t.after(() => socket.destroy()); // a failed assertion must not leave a stalled stream behind
  let received = '';
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (received += d));
  socket.on('error', () => {});
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`);
  return {
    socket,
    closed,
    text: () => received,
    async waitFor(predicate: (text: string) => boolean, ms = 5000) {
      const started = performance.now();
      while (!predicate(received)) {
        assert.ok(performance.now() - started < ms, `timed out waiting; got ${received.slice(0, 300)}`);
        await sleep(5);
      }
    },
  };
}

const rowsIn = (text: string) => text.split('"id":').length - 1;

describe('backpressure, disconnects and deadlines mid-stream (in-process, raw sockets)', () => {
  let probe: FastifyInstance;
  let backend: Backend;
  let pulled = 0;
  let port: number;

  before(async () => {
    // The real repository, counting the pages the route pulls from it; one connection so leaks cannot hide.
    const real = await openPostgres({
      url: db.url, max: 1, accountsPoolMax: 1, acquireTimeoutMs: 300, statementTimeoutMs: 30_000, log: { info() {}, warn() {} },
    });
    backend = { ...real, users: { ...real.users, stream: (opts) => counted(real.users.stream(opts)) } };
    probe = await startApp(db.url, {}, { backend });
    await probe.listen({ port: 0, host: '127.0.0.1' });
    port = (probe.server.address() as net.AddressInfo).port;
  });
  after(async () => {
    await probe?.close();
    await backend?.close();
  });

  async function* counted(pages: AsyncIterable<unknown[]>) {
    for await (const page of pages) {
      pulled += 1;
      yield page as never;
    }
  }

  test('a client that stops reading stalls the cursor; when it disconnects the cursor closes at once', async (t) => {
    pulled = 0;
    const client = rawGet(t, port, `/users/stream?format=ndjson&limit=${BIG}&fetch_size=100`);
    await client.waitFor((text) => rowsIn(text) >= 10);
    client.socket.pause();
    // Pages flow until the socket buffers fill, then the cursor stalls; wait for that, then check it stays put.
    let stalledAt = -1;
    for (let waited = 0; pulled !== stalledAt; waited += 300) {
      assert.ok(waited < 5000, `still pulling pages (${pulled}) 5 s after the client stopped reading`);
      stalledAt = pulled;
      await sleep(300);
    }
    await sleep(500);
    assert.equal(pulled, stalledAt, 'no page is read while the client is not reading');
    assert.ok(stalledAt < BIG / 100 / 2, `only socket buffers' worth of pages read (${stalledAt} of ${BIG / 100})`);
    assert.equal(backend.probes.pools().users.active, 1, 'the cursor holds its connection meanwhile');
    assert.equal(await busySpateConnections(), 1);

    client.socket.destroy();
    const ms = await waitUntilIdle(backend);
    console.log(`disconnect: ${stalledAt} pages read before the stall; cursor closed ${ms.toFixed(0)} ms after the client left`);
  });

  test('a client that reads 10 rows then disconnects leaves no active query and an idle pool', async (t) => {
    const client = rawGet(t, port, `/users/stream?format=json&limit=${BIG}&fetch_size=100`);
    await client.waitFor((text) => rowsIn(text) >= 10);
    client.socket.destroy();
    await waitUntilIdle(backend);
    // The single connection is free again: the next stream gets it at once.
    const res = await probe.inject('/users/stream?limit=10&format=ndjson');
    assert.equal(fromNdjson(res.body).length, 10);
  });

  test('a deadline that passes mid-stream aborts the response (a stalled client)', async (t) => {
    const started = performance.now();
    const client = rawGet(t, port, `/users/stream?format=ndjson&limit=${BIG}`, { 'x-request-timeout': '1' });
    await client.waitFor((text) => rowsIn(text) >= 10);
    client.socket.pause();
    assert.equal(backend.probes.pools().users.active, 1, 'streaming, stalled by the client');
    // Nothing is read from the cursor while the client stalls, yet the deadline closes it.
    await waitUntilIdle(backend, 2000);
    const closedAfter = performance.now() - started;
    assert.ok(closedAfter >= 900 && closedAfter < 2000, `cursor closed ${closedAfter.toFixed(0)} ms after the request`);
    client.socket.resume();
    await Promise.race([client.closed, sleep(2000)]);
    assert.ok(client.socket.destroyed, 'the server dropped the connection');
    assert.ok(!client.text().endsWith('\r\n0\r\n\r\n'), 'no terminating chunk: the body is visibly truncated');
  });

  test('a deadline that passes mid-stream aborts the response (a fast client)', async () => {
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/users/stream?format=csv&limit=${BIG}`, { headers: { 'x-request-timeout': '0.5' } });
    assert.equal(res.status, 200);
    await assert.rejects(res.text(), 'reading the body fails instead of returning a valid-looking prefix');
    assert.ok(performance.now() - started < 2000);
    await waitUntilIdle(backend);
  });

  test('no connection free within the acquire deadline: 503 with Retry-After before the first byte', async () => {
    let holder: Promise<{ json(): { users: unknown[] } }> | undefined;
    await sql.begin(async (tx) => {
      // A connection left inside a transaction by an earlier stream would hold its lock: fail, do not hang.
      await tx`SET LOCAL lock_timeout = '5s'`;
      await tx`LOCK TABLE users IN ACCESS EXCLUSIVE MODE`;
      holder = probe.inject('/users/stream?limit=5'); // takes the only connection and waits for the lock
      await sleep(100);
      const started = performance.now();
      const res = await probe.inject('/users/stream?limit=5&format=csv');
      assert.equal(res.statusCode, 503, res.body);
      assert.ok(performance.now() - started < 1000);
      assert.ok(res.headers['retry-after']);
      assert.match(res.json().detail, /^Service temporarily unavailable/);
    });
    const held = await holder!;
    assert.equal(held.json().users.length, 5, 'the holder completes once the lock is gone');
    await waitUntilIdle(backend);
  });
});
