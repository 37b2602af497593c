/**
 * `npm run bench -- --bulk --bulk-backend cassandra`: the bulk import and export on a Cassandra node of the test
 * harness's (tools/cassandra-harness/, as test/bulk-cassandra.test.ts starts it). The job handlers run in this
 * process on the Cassandra backend's stores, as a worker runs them: no HTTP and no queue (the queue of a Cassandra
 * deployment is Redis, docs/jobs.md), so these figures are the storage path's alone. Both import modes are timed:
 * skip_invalid writes as it reads; all_or_nothing reads the file twice (a checking pass first, Cassandra having
 * no transaction to roll back).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJob } from '../src/modules/bulk/export-job.ts';
import { importJob, type ImportMode } from '../src/modules/bulk/import-job.ts';
import { createSigner } from '../src/modules/bulk/signed-url.ts';
import type { JobContext } from '../src/platform/jobs/runner.ts';
import { csvOf } from '../test/bulk-support.ts';
import { startBackend } from '../test/support/backends.ts';

export interface CassandraBulkResult {
  rows: number;
  imports: { mode: ImportMode; seconds: number; rowsPerSecond: number }[];
  export: { rows: number; seconds: number; rowsPerSecond: number; mb: number };
}

/** What a worker hands a job: the job, its signal, a progress sink. */
function contextOf(kind: string): JobContext {
  const now = new Date().toISOString();
  return {
    job: {
      id: randomUUID(), kind, state: 'running', payload: {}, owner: null, progress: { done: 0, total: null }, attempts: 1,
      maxAttempts: 3, runAt: now, createdAt: now, startedAt: now, finishedAt: null, error: null, result: null, chainId: null,
      traceparent: null,
    },
    signal: new AbortController().signal,
    async progress() {},
  };
}

export async function measureBulkCassandra(rows: number, log: (m: string) => void): Promise<CassandraBulkResult> {
  const dir = mkdtempSync(join(tmpdir(), 'spate-bench-bulk-cassandra-'));
  log('bulk on Cassandra: starting a node of the test harness');
  const tb = await startBackend('cassandra');
  const b = await tb.openBackend();
  try {
    const handler = importJob({ store: () => b.bulk, spoolDir: dir, uploadsDir: join(dir, 'uploads'), maxErrors: 10 });
    const imports: CassandraBulkResult['imports'] = [];
    for (const mode of ['skip_invalid', 'all_or_nothing'] as const) {
      const spool = `${randomUUID()}.body`;
      writeFileSync(join(dir, spool), csvOf(rows, randomUUID().slice(0, 8)));
      log(`bulk on Cassandra: importing ${rows} rows, ${mode}`);
      const t0 = performance.now();
      const result = (await handler.run({ format: 'csv', mode, spool }, contextOf('bulk.import'))) as { imported: number };
      const seconds = (performance.now() - t0) / 1000;
      if (result.imported !== rows) throw new Error(`imported ${result.imported} of ${rows}`);
      imports.push({ mode, seconds, rowsPerSecond: rows / seconds });
    }
    log('bulk on Cassandra: exporting every user as CSV');
    const exporter = exportJob({ users: () => b.users, dir: join(dir, 'exports'), ttlS: 60, signer: createSigner(randomUUID() + randomUUID()) });
    const t0 = performance.now();
    const out = (await exporter.run({ format: 'csv' }, contextOf('bulk.export'))) as { rows: number; bytes: number };
    const seconds = (performance.now() - t0) / 1000;
    return { rows, imports, export: { rows: out.rows, seconds, rowsPerSecond: out.rows / seconds, mb: out.bytes / 1024 / 1024 } };
  } finally {
    await b.close();
    await tb.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatBulkCassandra(r: CassandraBulkResult): string {
  const f = (n: number) => Math.round(n).toLocaleString('en-US');
  return [
    ...r.imports.map((i) => `Cassandra import of ${f(r.rows)} CSV rows, ${i.mode}: ${i.seconds.toFixed(2)} s, ${f(i.rowsPerSecond)} rows/s`),
    `Cassandra export of ${f(r.export.rows)} rows as CSV (${r.export.mb.toFixed(1)} MB): ${r.export.seconds.toFixed(2)} s, ${f(r.export.rowsPerSecond)} rows/s`,
  ].join('\n');
}
