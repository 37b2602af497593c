/**
 * The import and export core on a real Cassandra 2.1 node (tools/cassandra-harness/): the import job's handler
 * and the export job's handler run on the Cassandra backend's stores, as a worker runs them (the job queue
 * itself is PostgreSQL's; docs/jobs.md). Shown: all-or-nothing by a first checking pass (nothing written), skip-invalid,
 * a re-run of a finished import writing nothing twice and undoing no later update or delete (pinned write
 * timestamps), and the export of what was imported.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Backend } from '../src/db/backend.ts';
import { exportJob } from '../src/modules/bulk/export-job.ts';
import { importJob, type ImportPayload, type ImportResult } from '../src/modules/bulk/import-job.ts';
import { createSigner } from '../src/modules/bulk/signed-url.ts';
import type { Job } from '../src/platform/jobs/store.ts';
import type { JobContext } from '../src/platform/jobs/runner.ts';
import { csvOf } from './bulk-support.ts';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';

exitWhenDone();
const skip = skipReason('cassandra');
const dir = mkdtempSync(join(tmpdir(), 'spate-bulk-cassandra-'));
let tb: TestBackend;
let b: Backend;

before(async () => {
  if (skip) return;
  tb = await startBackend('cassandra');
  b = await tb.openBackend();
});
after(async () => {
  await b?.close();
  await tb?.destroy();
});

/** The context a worker gives a job: the claimed job, its signal, its progress reports. */
function contextOf(id: string, createdAt: Date, kind: string): JobContext & { reports: number[] } {
  const reports: number[] = [];
  const job: Job = {
    id, kind, state: 'running', payload: {}, owner: null, progress: { done: 0, total: null }, attempts: 1, maxAttempts: 3,
    runAt: createdAt.toISOString(), createdAt: createdAt.toISOString(), startedAt: createdAt.toISOString(), finishedAt: null,
    error: null, result: null, chainId: null, traceparent: null,
  };
  return { job, signal: new AbortController().signal, reports, async progress(done) { reports.push(done); } };
}

const handler = () => importJob({ store: () => b.bulk, spoolDir: dir, uploadsDir: join(dir, 'uploads'), maxErrors: 100 });

async function runImport(body: string, mode: ImportPayload['mode'], id = randomUUID(), createdAt = new Date()) {
  const spool = `${randomUUID()}.body`;
  await writeFile(join(dir, spool), body);
  const ctx = contextOf(id, createdAt, 'bulk.import');
  return { id, createdAt, ctx, run: async () => (await handler().run({ format: 'csv', mode, spool } satisfies ImportPayload, ctx)) as ImportResult };
}

describe('import and export on Cassandra', { skip }, () => {
  test('all_or_nothing: one invalid row and nothing is written (a checking pass before the first write)', async () => {
    const before = await tb.countUsers();
    const { run } = await runImport(`${csvOf(300, 'aon')}Bad,not-an-email,3\r\n`, 'all_or_nothing');
    await assert.rejects(run(), /Import refused, nothing was written: 1 of 301 rows are invalid/);
    assert.equal(await tb.countUsers(), before);
  });

  test('skip_invalid: the valid rows are written, the invalid one reported', async () => {
    const before = await tb.countUsers();
    const { run } = await runImport(`${csvOf(300, 'skip')}Bad,not-an-email,3\r\n`, 'skip_invalid');
    const result = await run();
    assert.deepEqual({ ...result, errors: undefined }, { imported: 300, rejected: 1, errors: undefined });
    assert.deepEqual(result.errors, [{ line: 302, loc: ['body', 'email'], msg: 'value is not a valid email address' }]);
    assert.equal(await tb.countUsers(), before + 300);
  });

  test('a re-run of a finished import (at-least-once) duplicates nothing and undoes no later update or delete', async () => {
    const before = await tb.countUsers();
    const first = await runImport(csvOf(2000, 'rerun'), 'all_or_nothing');
    assert.equal((await first.run()).imported, 2000);
    assert.equal(await tb.countUsers(), before + 2000);
    assert.ok(first.ctx.reports.length >= 1);
    const rows = await tb.direct('SELECT id, email FROM {ks}.users');
    const mine = rows.filter((r) => String(r.email).endsWith('.rerun@example.com'));
    const [changed, removed] = [String(mine[0]!.id), String(mine[1]!.id)];
    assert.ok(await b.users.update(changed, { name: 'Changed after import' }));
    await b.users.delete(removed);
    // The same job again, as the queue runs it when the worker died before recording its success.
    const again = await runImport(csvOf(2000, 'rerun'), 'all_or_nothing', first.id, first.createdAt);
    assert.equal((await again.run()).imported, 2000);
    assert.equal(await tb.countUsers(), before + 1999);
    assert.equal((await b.users.get(changed))?.name, 'Changed after import');
    assert.equal(await b.users.get(removed), null);
    const imported = await b.users.get(String(mine[2]!.id));
    assert.equal(imported?.created_at.toISOString(), first.createdAt.toISOString());
  });

  test('export: every user, in the stream endpoint\'s CSV', async () => {
    const n = await tb.countUsers();
    const ctx = contextOf(randomUUID(), new Date(), 'bulk.export');
    const job = exportJob({ users: () => b.users, dir: join(dir, 'exports'), ttlS: 60, signer: createSigner(undefined) });
    const result = await job.run({ format: 'csv' }, ctx) as { rows: number; bytes: number; download_url: string };
    assert.equal(result.rows, n);
    const name = result.download_url.slice('/exports/'.length).split('?')[0]!;
    const text = await readFile(join(dir, 'exports', name), 'utf8');
    assert.equal(Buffer.byteLength(text), result.bytes);
    const lines = text.trimEnd().split('\r\n');
    assert.equal(lines[0], 'id,name,email,age,created_at,updated_at');
    assert.equal(lines.length - 1, n);
  });
});
