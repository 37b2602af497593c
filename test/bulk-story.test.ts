/**
 * Issue 15's story end to end, as a user lives it, over real HTTP on a real app and PostgreSQL: a CSV of
 * BULK_STORY_ROWS users (default 200,000; the bench does 1,000,000) uploaded with tus-js-client in a process of
 * its own, cut half-way and resumed by a new process; imported from the finished upload, its progress (with the
 * rows read, written and rejected) followed through GET /jobs/{id}/events; exported as CSV and downloaded in two
 * Range requests; and the same users found in the download and in the database (count and a checksum of emails).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { csvOf, followEvents, type JobView } from './bulk-support.ts';
import { waitFor } from './jobs-support.ts';
import { startApp } from './support/app.ts';
import { ADMIN, authEnv, bearer, createAccount, login } from './support/auth.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { CUT_HALF_WAY, tusClient } from './support/tus-client.ts';

const ROWS = Number(process.env.BULK_STORY_ROWS ?? 200_000);
const TUS = { 'tus-resumable': '1.0.0' };
const dir = mkdtempSync(join(tmpdir(), 'spate-bulk-story-'));
let db: TestDatabase;
let app: FastifyInstance;
let base: string;
let editor: Record<string, string>;

before(async () => {
  db = await createTestDatabase();
  app = await startApp(db.url, authEnv({ DATA_DIR: dir, JOB_POLL_MS: '50', EXPORT_SIGNING_SECRET: randomBytes(32).toString('base64') }));
  await waitFor(() => app.backend.probes.schemaReady(), 20_000);
  base = await app.listen({ port: 0, host: '127.0.0.1' });
  const admin = await login(app, ADMIN.email, ADMIN.password);
  editor = bearer((await createAccount(app, admin.access_token, 'editor')).tokens.access_token);
});
after(async () => {
  await app?.close();
  await db?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** The checksum of a set of emails, whatever their order. */
const emailsSum = (emails: string[]) => createHash('sha256').update(emails.sort().join('\n')).digest('hex');

async function post(path: string, body: unknown): Promise<JobView> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { ...editor, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(res.status, 202, await res.clone().text());
  return ((await res.json()) as { job: JobView }).job;
}

test(`${ROWS} users: uploaded resumably, imported with its progress followed, exported, downloaded in two ranges, all found`, async (t) => {
  const tag = randomUUID().slice(0, 8);
  const csv = csvOf(ROWS, tag);
  const file = join(dir, 'users.csv');
  writeFileSync(file, csv);
  const size = statSync(file).size;

  // Upload: the first client process dies half-way; a new one resumes from the server's offset.
  const first = await tusClient({ endpoint: `${base}/uploads`, file, headers: editor, ...CUT_HALF_WAY(size) });
  assert.equal(first.signal, 'SIGKILL', JSON.stringify(first.events));
  const url = first.events.find((e) => e.url)?.url as string;
  assert.ok(url, 'the upload was created before the client died');
  const head = await fetch(url, { method: 'HEAD', headers: { ...TUS, ...editor } });
  const offset = Number(head.headers.get('upload-offset'));
  assert.ok(offset > 0 && offset < size, `cut mid-way (offset ${offset} of ${size})`);
  const second = await tusClient({ uploadUrl: url, file, headers: editor });
  assert.equal(second.code, 0, JSON.stringify(second.events));

  // Import from the finished upload, followed through its events.
  const imported = await post('/users/import', { upload_id: new URL(url).pathname.split('/').pop() });
  const events = await followEvents(base, imported.id, editor);
  const last = events.at(-1)!;
  assert.equal(last.state, 'succeeded', last.error ?? '');
  assert.deepEqual(last.result, { imported: ROWS, rejected: 0, errors: [] });
  assert.deepEqual(last.progress, { done: ROWS, total: ROWS, detail: { read: ROWS, written: ROWS, rejected: 0 } });
  // Reports while the file streams in have no total yet; the one just before the end has it.
  const running = events.filter((e) => e.state === 'running' && e.progress.total === null && e.progress.done > 0);
  assert.ok(running.length >= 1, `progress while it ran: ${JSON.stringify(events.map((e) => [e.state, e.progress]))}`);
  for (const e of running) {
    const d = e.progress.detail as { read: number; written: number; rejected: number };
    assert.deepEqual(Object.keys(d ?? {}).sort(), ['read', 'rejected', 'written'], JSON.stringify(e.progress));
    assert.ok(d.read > 0 && d.read <= ROWS && d.written <= d.read && d.rejected === 0, JSON.stringify(d));
    assert.equal(e.progress.done, d.read);
  }

  // Export, then download it in two halves.
  const exported = await post('/users/export', { format: 'csv' });
  const done = (await followEvents(base, exported.id, editor)).at(-1)!;
  assert.equal(done.state, 'succeeded', done.error ?? '');
  assert.equal(done.result.rows, ROWS);
  const half = Math.floor(done.result.bytes / 2);
  const a = await fetch(`${base}${done.result.download_url}`, { headers: { range: `bytes=0-${half - 1}` } });
  const b = await fetch(`${base}${done.result.download_url}`, { headers: { range: `bytes=${half}-` } });
  assert.equal(a.status, 206);
  assert.equal(b.status, 206);
  assert.equal(b.headers.get('content-range'), `bytes ${half}-${done.result.bytes - 1}/${done.result.bytes}`);
  const download = Buffer.concat([Buffer.from(await a.arrayBuffer()), Buffer.from(await b.arrayBuffer())]);
  const whole = Buffer.from(await (await fetch(`${base}${done.result.download_url}`)).arrayBuffer());
  assert.ok(download.equals(whole), 'the two ranges make the whole file');

  // The same users: in the download and in the database, count and emails.
  const sent = csv.trimEnd().split('\r\n').slice(1).map((l) => l.split(',')[1]!);
  const lines = download.toString('utf8').trimEnd().split('\r\n');
  assert.equal(lines[0], 'id,name,email,age,created_at,updated_at');
  const got = lines.slice(1).map((l) => l.split(',')[2]!);
  assert.equal(got.length, ROWS);
  assert.equal(emailsSum(got), emailsSum(sent));
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  t.after(() => sql.end());
  const stored = await sql<{ n: number; sum: string }[]>`
    SELECT count(*)::int AS n, encode(sha256(convert_to(string_agg(email, E'\\n' ORDER BY email COLLATE "C"), 'UTF8')), 'hex') AS sum FROM users`;
  assert.deepEqual(stored[0], { n: ROWS, sum: emailsSum(sent) });
});
