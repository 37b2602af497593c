/**
 * Bulk import and export (docs/bulk.md) on a real app and PostgreSQL: every rule of the import (the rules of
 * POST /users, both modes, bad input of every kind, uploads, retries, the porsager/postgres#1173 guard), the
 * export and its signed download (Range, 403, 410, cleanup), and the whole story over real HTTP at
 * BULK_E2E_ROWS rows (default 100,000): import a CSV, follow its events, export, download in two ranges, compare.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { appOnNewDatabase } from './support/app.ts';
import { createTestDatabase } from './support/postgres.ts';
import { startServer } from './support/server.ts';
import postgres from 'postgres';
import { csvOf, followEvents, jobEnded, type JobView } from './bulk-support.ts';
import { importIdPrefix, importUserId } from '../src/db/bulk-store.ts';
import type { User } from '../src/db/users-store.ts';
import { cleanUp } from '../src/modules/bulk/cleanup.ts';
import { createSigner, exportName } from '../src/modules/bulk/signed-url.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'spate-bulk-'));
const SECRET = randomBytes(32).toString('base64');
const ctx = appOnNewDatabase({
  DATA_DIR: dataDir, JOB_POLL_MS: '50', EXPORT_SIGNING_SECRET: SECRET, IMPORT_MAX_BYTES: String(32 * 1024 * 1024),
  IMPORT_MAX_ERRORS: '50',
});
const E2E_ROWS = Number(process.env.BULK_E2E_ROWS ?? 100_000);

const countUsers = async () => Number((await ctx.sql`SELECT count(*)::int AS n FROM users`)[0]!.n);

async function importBody(body: string | Buffer, query = '', type = 'text/csv'): Promise<JobView> {
  const res = await ctx.app.inject({ method: 'POST', url: `/users/import${query}`, headers: { 'content-type': type }, payload: body });
  assert.equal(res.statusCode, 202, res.body);
  const { job } = res.json() as { job: JobView };
  assert.equal(res.headers.location, `/jobs/${job.id}`);
  return jobEnded(ctx.app, job.id);
}

/** The errors listed in a refused import's job error. */
const listed = (error: string | null) => JSON.parse(error!.slice(error!.indexOf('Errors: ') + 8)) as { line: number; loc: unknown[]; msg: string }[];

describe('import', () => {
  test('a valid CSV is imported: every row, names trimmed, created at the job\'s creation', async () => {
    const before = await countUsers();
    const job = await importBody('name,email,age\r\n  Ada  ,ada@example.com,36\r\n"Lovelace, Ada","a@b.co",0\r\n"Multi\nLine ""q""",m@example.com,150\r\n');
    assert.equal(job.state, 'succeeded', job.error ?? '');
    assert.deepEqual(job.result, { imported: 3, rejected: 0, errors: [] });
    assert.equal(job.progress.done, 3);
    assert.equal(await countUsers(), before + 3);
    const rows = await ctx.sql<{ name: string; age: number; created_at: Date }[]>`SELECT name, age, created_at FROM users WHERE email IN ('ada@example.com', 'a@b.co', 'm@example.com') ORDER BY age`;
    assert.deepEqual(rows.map((r) => r.name), ['Lovelace, Ada', 'Ada', 'Multi\nLine "q"']);
  });

  test('NDJSON, chosen by its Content-Type, is imported', async () => {
    const job = await importBody('{"name":"N1","email":"n1@example.com","age":1}\n{"name":"N2","email":"n2@example.com","age":2,"extra":true}\n', '', 'application/x-ndjson');
    assert.equal(job.state, 'succeeded', job.error ?? '');
    assert.equal(job.result.imported, 2);
  });

  const badRows: [string, Record<string, unknown>][] = [
    ['Bad Email,not-an-email,30', { name: 'Bad Email', email: 'not-an-email', age: 30 }],
    ['Old,old@example.com,151', { name: 'Old', email: 'old@example.com', age: 151 }],
    ['   ,blank@example.com,3', { name: '   ', email: 'blank@example.com', age: 3 }],
  ];
  const mixed = () => Buffer.concat([
    Buffer.from('name,email,age\n'),
    Buffer.from('Good One,good1@example.com,20\n'), // line 2
    Buffer.from(`${badRows.map((r) => r[0]).join('\n')}\n`), // lines 3-5
    Buffer.from('Wrong Type,wt@example.com,abc\n'), // 6
    Buffer.from('Missing Column,mc@example.com\n'), // 7
    Buffer.from('Bad '), Buffer.from([0xc3, 0x28]), Buffer.from(',utf@example.com,5\n'), // 8: invalid UTF-8
    Buffer.from(`Long,${'x'.repeat(10 * 1024 * 1024)}@example.com,5\n`), // 9: a 10 MB line
    Buffer.from('Good Two,good2@example.com,21\n'), // 10
  ]);

  test('all_or_nothing (the default): invalid rows of every kind fail the job, each listed with its line; nothing is written', async () => {
    const before = await countUsers();
    const job = await importBody(mixed());
    assert.equal(job.state, 'failed');
    assert.match(job.error!, /^Import refused, nothing was written: 7 of 9 rows are invalid/);
    const errs = listed(job.error);
    assert.deepEqual(errs.map((e) => e.line), [3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(errs[3], { line: 6, loc: ['body', 'age'], msg: 'Input should be a valid integer' });
    assert.deepEqual(errs[4], { line: 7, loc: ['body', 'age'], msg: 'Field required' });
    assert.match(errs[5]!.msg, /UTF-8/);
    assert.match(errs[6]!.msg, /longer than 65536 bytes/);
    // The same rules as POST /users: the API's own 422 for each bad row names the same loc and msg.
    for (const [i, [, body]] of badRows.entries()) {
      const res = await ctx.app.inject({ method: 'POST', url: '/users', payload: body });
      assert.equal(res.statusCode, 422);
      const api = (res.json() as { detail: { loc: unknown[]; msg: string }[] }).detail.map(({ loc, msg }) => ({ loc, msg }));
      assert.deepEqual(errs.filter((e) => e.line === i + 3).map(({ loc, msg }) => ({ loc, msg })), api);
    }
    assert.equal(await countUsers(), before);
    assert.equal((await ctx.sql`SELECT 1 FROM users WHERE email = 'good1@example.com'`).length, 0);
  });

  test('skip_invalid: the valid rows are written, the invalid ones reported', async () => {
    const before = await countUsers();
    const job = await importBody(mixed(), '?mode=skip_invalid');
    assert.equal(job.state, 'succeeded', job.error ?? '');
    assert.equal(job.result.imported, 2);
    assert.equal(job.result.rejected, 7);
    assert.deepEqual(job.result.errors.map((e: { line: number }) => e.line), [3, 4, 5, 6, 7, 8, 9]);
    assert.equal(await countUsers(), before + 2);
  });

  test('a NUL in a name (valid JSON, refused by the store) and a lone surrogate are refused rows', async () => {
    const job = await importBody('{"name":"a\\u0000b","email":"nul@example.com","age":1}\n{"name":"\\ud800","email":"s@example.com","age":1}\n[1]\n{bad\n', '?format=ndjson', 'application/x-ndjson');
    assert.equal(job.state, 'failed');
    assert.deepEqual(listed(job.error).map((e) => [e.line, e.loc.join('.')]), [[1, 'body.name'], [2, 'body.name'], [3, 'body'], [4, 'body']]);
  });

  test('a header without a column, and an empty file: the job fails with the reason, nothing written', async () => {
    const before = await countUsers();
    const missing = await importBody('name,email\nA,a@example.com\n', '?mode=skip_invalid');
    assert.equal(missing.state, 'failed');
    assert.match(missing.error!, /header must name the columns name, email, age; missing: age/);
    const empty = await importBody('');
    assert.equal(empty.state, 'failed');
    assert.match(empty.error!, /empty/);
    assert.equal(await countUsers(), before);
  });

  test('bad requests: an unknown Content-Type 422 (as on every route), body over IMPORT_MAX_BYTES 413 (nothing spooled), no upload_id 422, bad mode 422', async () => {
    const post = (headers: Record<string, string>, payload: string | Buffer, url = '/users/import') =>
      ctx.app.inject({ method: 'POST', url, headers, payload });
    assert.equal((await post({ 'content-type': 'application/xml' }, '<a/>')).statusCode, 422);
    const big = await post({ 'content-type': 'text/csv' }, Buffer.alloc(33 * 1024 * 1024, 'a'));
    assert.equal(big.statusCode, 413, big.body);
    assert.deepEqual((await readdir(join(dataDir, 'imports'))).filter((f) => f.endsWith('.part')), []);
    const none = await post({ 'content-type': 'application/json' }, '{}');
    assert.equal(none.statusCode, 422);
    assert.deepEqual(none.json().detail[0].loc, ['body', 'upload_id']);
    assert.equal((await post({ 'content-type': 'text/csv' }, 'name,email,age\n', '/users/import?mode=sometimes')).statusCode, 422);
  });

  test('from a finished upload; an unknown or unfinished upload is 404', async () => {
    const body = csvOf(5, 'upload');
    // Through the app's own tus endpoint (creation-with-upload): one upload complete, one short of its length.
    const upload = async (length: number) => {
      const r = await ctx.app.inject({
        method: 'POST', url: '/uploads', payload: body,
        headers: { 'tus-resumable': '1.0.0', 'upload-length': String(length), 'content-type': 'application/offset+octet-stream' },
      });
      assert.equal(r.statusCode, 201, r.body);
      return String(r.headers.location).split('/').pop()!;
    };
    const finished = await upload(Buffer.byteLength(body));
    const unfinished = await upload(Buffer.byteLength(body) + 10);
    const res = await ctx.app.inject({ method: 'POST', url: '/users/import', payload: { upload_id: finished } });
    assert.equal(res.statusCode, 202, res.body);
    const job = await jobEnded(ctx.app, res.json().job.id);
    assert.equal(job.state, 'succeeded', job.error ?? '');
    assert.equal(job.result.imported, 5);
    for (const id of [unfinished, randomUUID(), 'nope', '../etc']) {
      const r = await ctx.app.inject({ method: 'POST', url: '/users/import', payload: { upload_id: id } });
      assert.equal(r.statusCode, 404);
      assert.deepEqual(r.json(), { detail: 'Upload not found' });
    }
  });

  test('a job run again after it committed (at-least-once) writes nothing twice and reports the same rows', async () => {
    const before = await countUsers();
    const first = await importBody(csvOf(50, 'again'));
    assert.equal(first.result.imported, 50);
    // As if the worker died after the commit and before recording the success: the queue runs it again.
    await writeFile(join(dataDir, 'imports', 'again.body'), csvOf(50, 'again'));
    await ctx.sql`UPDATE jobs SET state = 'queued', run_at = now(), finished_at = NULL, payload = jsonb_set(payload, '{spool}', '"again.body"') WHERE id = ${first.id}`;
    const second = await jobEnded(ctx.app, first.id);
    assert.equal(second.state, 'succeeded', second.error ?? '');
    assert.equal(second.attempts, 2);
    assert.deepEqual(second.result, first.result);
    assert.equal(await countUsers(), before + 50);
  });

  test('a job cancelled while it copies writes nothing', async () => {
    const before = await countUsers();
    const res = await ctx.app.inject({ method: 'POST', url: '/users/import', headers: { 'content-type': 'text/csv' }, payload: csvOf(300_000, 'cancel') });
    const { job } = res.json() as { job: JobView };
    for (;;) {
      const now = (await ctx.app.inject({ method: 'GET', url: `/jobs/${job.id}` })).json() as JobView;
      if (now.progress.done > 0) break;
      assert.equal(now.state === 'succeeded', false, 'finished before it could be cancelled: make the file larger');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await ctx.app.inject({ method: 'DELETE', url: `/jobs/${job.id}` })).statusCode, 202);
    assert.equal((await jobEnded(ctx.app, job.id)).state, 'cancelled');
    // The worker's rollback is asynchronous to the cancel: wait for the import's connection to go.
    for (let i = 0; i < 200 && (await ctx.sql`SELECT 1 FROM pg_stat_activity WHERE application_name = 'spate-bulk'`).length > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await countUsers(), before);
  });

  test('the store: two runs of one import write once; a COPY the server refuses fails at once and leaves no connection in a transaction (porsager/postgres#1173)', async () => {
    const bulk = ctx.app.backend.bulk;
    const key = { jobId: randomUUID(), createdAt: new Date() };
    const rows = (ages: number[]) => (async function* () { yield ages.map((age, i) => ({ line: i + 2, name: `S${i}`, email: `s${i}@example.com`, age })); })();
    const before = await countUsers();
    assert.deepEqual(await bulk.importUsers(key, rows([1, 2, 3])), { written: 3, alreadyDone: false });
    assert.deepEqual(await bulk.importUsers(key, rows([1, 2, 3])), { written: 3, alreadyDone: true });
    assert.equal(await countUsers(), before + 3);
    const id = importUserId(importIdPrefix(key), 2);
    assert.equal((await ctx.sql`SELECT 1 FROM users WHERE id = ${id}`).length, 1);

    // Age 999 passes nothing of ours (the store trusts its caller) but breaks the table's CHECK: the server refuses the COPY.
    const t0 = performance.now();
    await assert.rejects(bulk.importUsers({ jobId: randomUUID(), createdAt: new Date() }, rows([1, 999])));
    assert.ok(performance.now() - t0 < 10_000);
    assert.equal(await countUsers(), before + 3);
    const stuck = await ctx.sql`SELECT state FROM pg_stat_activity WHERE application_name = 'spate-bulk'`;
    assert.equal(stuck.length, 0);
  });
});

describe('export', () => {
  let exported: { rows: number; bytes: number; download_url: string; expires_at: string };

  test('csv: the file is the stream endpoint\'s CSV, with a signed URL that expires', async () => {
    const res = await ctx.app.inject({ method: 'POST', url: '/users/export', payload: { format: 'csv' } });
    assert.equal(res.statusCode, 202, res.body);
    const job = await jobEnded(ctx.app, res.json().job.id);
    assert.equal(job.state, 'succeeded', job.error ?? '');
    exported = job.result;
    const n = await countUsers();
    assert.equal(exported.rows, n);
    assert.ok(Date.parse(exported.expires_at) > Date.now() + 3_600_000);
    const file = await ctx.app.inject({ method: 'GET', url: exported.download_url });
    assert.equal(file.statusCode, 200);
    assert.match(String(file.headers['content-disposition']), /^attachment; filename="users\.csv"/);
    assert.match(String(file.headers['content-type']), /^text\/csv/);
    assert.equal(file.rawPayload.length, exported.bytes);
    const stream = await ctx.app.inject({ method: 'GET', url: `/users/stream?format=csv&limit=${n}&fetch_size=1000` });
    assert.equal(file.body, stream.body);
  });

  test('the bulk read (binary COPY) gives the cursor\'s users, stops at its limit and leaves no connection behind', async () => {
    const read = async (bulk: boolean) => {
      const pages: User[][] = [];
      for await (const page of ctx.app.backend.users.stream({ limit: 7, fetchSize: 3, bulk })) pages.push(page);
      return pages;
    };
    assert.ok((await countUsers()) > 7);
    const copied = await read(true);
    assert.deepEqual(copied.map((p) => p.length), [3, 3, 1]);
    // Compared as text: the COPY path shares one Date between equal timestamps, which deepEqual would tell apart.
    const plain = (pages: User[][]) => JSON.stringify(pages.flat());
    assert.equal(plain(copied), plain(await read(false)));
    // The COPY was abandoned half-way through the table: its connection must be closed, not left busy.
    let left = 1;
    for (let i = 0; i < 100 && left > 0; i++) {
      left = (await ctx.sql`SELECT 1 FROM pg_stat_activity WHERE application_name = 'spate-bulk-read'`).length;
      if (left > 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(left, 0);
  });

  test('Range: a part of the file, 206; a resumed download completes it', async () => {
    const a = await ctx.app.inject({ method: 'GET', url: exported.download_url, headers: { range: 'bytes=0-99' } });
    assert.equal(a.statusCode, 206);
    assert.equal(a.rawPayload.length, 100);
    const b = await ctx.app.inject({ method: 'GET', url: exported.download_url, headers: { range: 'bytes=100-' } });
    assert.equal(b.statusCode, 206);
    assert.equal(b.headers['content-range'], `bytes 100-${exported.bytes - 1}/${exported.bytes}`);
    const whole = await ctx.app.inject({ method: 'GET', url: exported.download_url });
    assert.deepEqual(Buffer.concat([a.rawPayload, b.rawPayload]), whole.rawPayload);
  });

  test('403 with a bad or missing signature or a changed name; 410 once expired; the cleanup deletes expired files only', async () => {
    const [path, query] = exported.download_url.split('?');
    assert.equal((await ctx.app.inject({ method: 'GET', url: path! })).statusCode, 403);
    assert.equal((await ctx.app.inject({ method: 'GET', url: `${path}?signature=AAAA` })).statusCode, 403);
    const stretched = path!.replace(/-(\d+)\.csv$/, (_, s: string) => `-${Number(s) + 1000}.csv`);
    assert.equal((await ctx.app.inject({ method: 'GET', url: `${stretched}?${query}` })).json().detail, 'Invalid download signature');
    const signer = createSigner(SECRET);
    const old = exportName(randomUUID(), Math.floor(Date.now() / 1000) - 1, 'csv');
    await writeFile(join(dataDir, 'exports', old), 'x');
    const gone = await ctx.app.inject({ method: 'GET', url: `/exports/${old}?signature=${signer.sign(old)}` });
    assert.equal(gone.statusCode, 410);
    assert.deepEqual(gone.json(), { detail: 'This export has expired' });
    const removed = await cleanUp({ exportsDir: join(dataDir, 'exports'), spoolDir: join(dataDir, 'imports'), leftoverMs: 86_400_000 });
    assert.equal(removed.exports, 1);
    const left = await readdir(join(dataDir, 'exports'));
    assert.ok(!left.includes(old));
    assert.ok(left.includes(path!.slice('/exports/'.length)));
    const schedules = await ctx.sql`SELECT name FROM job_schedules WHERE name = 'bulk.cleanup'`;
    assert.equal(schedules.length, 1);
  });

  test('ndjson and json exports parse, one user per row', async () => {
    for (const format of ['ndjson', 'json'] as const) {
      const res = await ctx.app.inject({ method: 'POST', url: '/users/export', payload: { format } });
      const job = await jobEnded(ctx.app, res.json().job.id);
      assert.equal(job.state, 'succeeded', job.error ?? '');
      const body = (await ctx.app.inject({ method: 'GET', url: job.result.download_url })).body;
      const users = format === 'json' ? JSON.parse(body).users : body.split('\n').filter(Boolean).map((l) => JSON.parse(l));
      assert.equal(users.length, job.result.rows);
    }
    assert.equal((await ctx.app.inject({ method: 'POST', url: '/users/export', payload: { format: 'xml' } })).statusCode, 422);
  });
});

describe('a worker killed mid-import', () => {
  test('SIGKILLed while it copies: after a restart the job runs again and every row is there exactly once', async () => {
    const db = await createTestDatabase();
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    const dir = mkdtempSync(join(tmpdir(), 'spate-bulk-crash-'));
    const env = { DATABASE_URL: db.url, DATA_DIR: dir, JOB_VISIBILITY_TIMEOUT_MS: '2000', JOB_POLL_MS: '100', LOG_LEVEL: 'warn' };
    const rows = 300_000;
    let server = await startServer(env);
    try {
      const res = await fetch(`${server.baseUrl}/users/import`, { method: 'POST', headers: { 'content-type': 'text/csv' }, body: csvOf(rows, 'crash') });
      assert.equal(res.status, 202);
      const { job } = (await res.json()) as { job: JobView };
      const read = async () => (await (await fetch(`${server.baseUrl}/jobs/${job.id}`)).json()) as JobView;
      for (let now = await read(); now.progress.done === 0; now = await read()) {
        assert.notEqual(now.state, 'succeeded', 'finished before the kill: make the file larger');
        await new Promise((r) => setTimeout(r, 20));
      }
      await server.stop('SIGKILL');
      server = await startServer(env);
      // The killed worker's lease runs out (2 s), the new process's poll puts the job back and runs it.
      let last = await read();
      for (let i = 0; i < 1200 && last.state !== 'succeeded' && last.state !== 'failed'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        last = await read();
      }
      assert.equal(last.state, 'succeeded', last.error ?? '');
      assert.equal(last.attempts, 2);
      assert.equal(last.result.imported, rows);
      const [counted] = await sql<{ n: number; emails: number }[]>`SELECT count(*)::int AS n, count(DISTINCT email)::int AS emails FROM users`;
      assert.deepEqual(counted, { n: rows, emails: rows });
    } finally {
      await server.stop().catch(() => {});
      await sql.end();
      await db.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the whole story over HTTP', () => {
  test(`import ${E2E_ROWS} CSV rows streamed, follow the events, export, download in two ranges, find the same users`, async () => {
    await ctx.sql`DELETE FROM users`;
    const address = await ctx.app.listen({ port: 0, host: '127.0.0.1' });
    const tag = randomUUID().slice(0, 8);
    const csv = Buffer.from(csvOf(E2E_ROWS, tag));
    // Streamed in 64 KiB pieces, as a client uploading a file does.
    const body = new ReadableStream({
      start(c) {
        for (let i = 0; i < csv.length; i += 65_536) c.enqueue(csv.subarray(i, i + 65_536));
        c.close();
      },
    });
    const res = await fetch(`${address}/users/import`, { method: 'POST', headers: { 'content-type': 'text/csv' }, body, duplex: 'half' } as RequestInit);
    assert.equal(res.status, 202);
    const { job } = (await res.json()) as { job: JobView };
    const events = await followEvents(address, job.id);
    const last = events.at(-1)!;
    assert.equal(last.state, 'succeeded', last.error ?? '');
    assert.equal(last.result.imported, E2E_ROWS);
    assert.ok(events.length >= 2);

    const exp = await fetch(`${address}/users/export`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"format":"csv"}' });
    const exportJob = (await exp.json()) as { job: JobView };
    const done = (await followEvents(address, exportJob.job.id)).at(-1)!;
    assert.equal(done.state, 'succeeded', done.error ?? '');
    assert.equal(done.result.rows, E2E_ROWS);
    const half = Math.floor(done.result.bytes / 2);
    const a = await fetch(`${address}${done.result.download_url}`, { headers: { range: `bytes=0-${half - 1}` } });
    assert.equal(a.status, 206);
    const b = await fetch(`${address}${done.result.download_url}`, { headers: { range: `bytes=${half}-` } });
    assert.equal(b.status, 206);
    const file = Buffer.concat([Buffer.from(await a.arrayBuffer()), Buffer.from(await b.arrayBuffer())]);
    assert.equal(file.length, done.result.bytes);
    const lines = file.toString('utf8').trimEnd().split('\r\n');
    assert.equal(lines[0], 'id,name,email,age,created_at,updated_at');
    const got = lines.slice(1).map((l) => l.split(',').slice(1, 4).join(',')).sort();
    const want = csv.toString('utf8').trimEnd().split('\r\n').slice(1).sort();
    assert.equal(got.length, E2E_ROWS);
    assert.deepEqual(got, want);
  });
});

process.on('exit', () => { void rm(dataDir, { recursive: true, force: true }); });
