/**
 * The bulk scenario (`npm run bench -- --bulk`): against one Spate process on the bench database,
 *
 * 1. upload the CSV of `rows` rows with tus-js-client (timed: MB/s over loopback);
 * 2. import it from the finished upload, timed from the POST to the job's success: reading, validation by the
 *    rules of POST /users, and the binary COPY;
 * 3. export every user as CSV, timed from the POST to the job's success;
 * 4. a bare binary COPY of the same rows from this process (no HTTP, no validation, the import's own encoder),
 *    into a copy of `users` with its primary key (a logged table, as `users` is), rolled back: what the
 *    database alone takes, in MB/s of COPY data.
 *
 * The server's RSS (/proc/<pid>/status) is sampled every 10 ms during 2 and 3; growth is the peak over the figure
 * just before. The imported rows are deleted afterwards, so the bench database keeps its seed.
 */
import { mkdirSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { COPY_HEADER, COPY_TRAILER, ImportRowEncoder } from '../src/db/postgres/copy-binary.ts';
import { rssOf, startSpate } from './spate.ts';
import { tusUpload } from './uploads.ts';

export interface BulkResult {
  rows: number;
  csvMb: number;
  upload: { seconds: number; mbPerSecond: number };
  import: { seconds: number; rowsPerSecond: number; mbPerSecond: number; growthMb: number };
  export: { rows: number; seconds: number; rowsPerSecond: number; mb: number; growthMb: number };
  copy: { seconds: number; rowsPerSecond: number; mbPerSecond: number };
}

const TAG = 'bulk.bench';
const mb = (b: number) => b / 1024 / 1024;

function csvFile(path: string, rows: number): number {
  const parts: string[] = ['name,email,age\r\n'];
  for (let i = 0; i < rows; i++) parts.push(`Bench User ${i},b${i}@${TAG},${i % 151}\r\n`);
  writeFileSync(path, parts.join(''));
  return statSync(path).size;
}

/** Samples the RSS of `pid` while `work` runs; returns its value, the seconds it took and the growth in MB. */
async function watched<T>(pid: number, work: () => Promise<T>): Promise<{ value: T; seconds: number; growthMb: number }> {
  await sleep(300);
  const baseline = rssOf(pid);
  let peak = baseline;
  const sampler = setInterval(() => { peak = Math.max(peak, rssOf(pid)); }, 10);
  const t0 = performance.now();
  try {
    const value = await work();
    return { value, seconds: (performance.now() - t0) / 1000, growthMb: mb(Math.max(peak, rssOf(pid)) - baseline) };
  } finally {
    clearInterval(sampler);
  }
}

async function copyAlone(url: string, rows: number): Promise<BulkResult['copy']> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const encoder = new ImportRowEncoder('00000000-0000-7000-8000-00', new Date(), 256 * 1024);
  const chunks: Buffer[] = [COPY_HEADER];
  for (let i = 0; i < rows; i++) {
    const name = `Bench User ${i}`;
    const email = `b${i}@${TAG}`;
    if (!encoder.fits(name, email)) chunks.push(encoder.take());
    encoder.row(i, name, email, i % 151);
  }
  chunks.push(encoder.take(), COPY_TRAILER);
  const bytes = chunks.reduce((n, c) => n + c.length, 0);
  try {
    let seconds = 0;
    const rollBack = new Error('roll back');
    await sql.begin(async (tx) => {
      // A logged table, as `users` is (a temporary one writes no WAL and would flatter the figure); rolled back.
      await tx`CREATE TABLE bulk_bench (LIKE users INCLUDING ALL)`;
      const t0 = performance.now();
      const w = await tx`COPY bulk_bench (id, name, email, age, created_at, updated_at) FROM STDIN (FORMAT binary)`.writable();
      for (const c of chunks) if (!w.write(c)) await new Promise((r) => w.once('drain', r));
      await new Promise<void>((resolve, reject) => { w.once('finish', resolve); w.once('error', reject); w.end(); });
      seconds = (performance.now() - t0) / 1000;
      throw rollBack;
    }).catch((err: unknown) => { if (err !== rollBack) throw err; });
    return { seconds, rowsPerSecond: rows / seconds, mbPerSecond: mb(bytes) / seconds };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function measureBulk(
  env: NodeJS.ProcessEnv,
  apiKey: string,
  o: { port: number; rows: number; dataDir: string; databaseUrl: string; logFile: string; log: (m: string) => void },
): Promise<BulkResult> {
  mkdirSync(o.dataDir, { recursive: true });
  const spate = await startSpate({ ...env, DATA_DIR: o.dataDir }, o.port, o.logFile);
  const sql = postgres(o.databaseUrl, { max: 1, onnotice: () => {} });
  const headers = { 'x-api-key': apiKey, 'content-type': 'application/json' };
  const call = async (method: string, path: string, body?: unknown) => {
    let res = await fetch(`${spate.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    // Load shedding (production's OVERLOAD_MAX_EVENT_LOOP_DELAY_MS) on a busy machine: a poll is simply repeated.
    while (res.status === 503 && method === 'GET') {
      await sleep(200);
      res = await fetch(`${spate.baseUrl}${path}`, { method, headers });
    }
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<{ state: string; error: string | null; result: { imported: number; rows: number; bytes: number }; job: { id: string }; account: { id: string } }>;
  };
  const finished = async (id: string) => {
    for (;;) {
      const job = await call('GET', `/jobs/${id}`);
      if (job.state === 'succeeded') return job;
      if (job.state === 'failed' || job.state === 'cancelled') throw new Error(`job ${id} ${job.state}: ${job.error}`);
      await sleep(20);
    }
  };
  try {
    await sql`DELETE FROM users WHERE email LIKE ${`%@${TAG}`}`;
    const file = join(o.dataDir, 'bench-import.csv');
    const bytes = csvFile(file, o.rows);
    o.log(`bulk: uploading ${mb(bytes).toFixed(1)} MB of CSV with tus-js-client`);
    const t0 = performance.now();
    const uploadId = new URL(await tusUpload(spate.baseUrl, apiKey, file, bytes)).pathname.split('/').pop()!;
    const upload = { seconds: (performance.now() - t0) / 1000, mbPerSecond: 0 };
    upload.mbPerSecond = bytes / 1e6 / upload.seconds;
    o.log(`bulk: importing ${o.rows} rows from the finished upload`);
    const imp = await watched(spate.pid, async () => finished((await call('POST', '/users/import', { upload_id: uploadId })).job.id));
    if (imp.value.result.imported !== o.rows) throw new Error(`imported ${imp.value.result.imported} of ${o.rows}`);
    o.log(`bulk: exporting every user as CSV`);
    const exp = await watched(spate.pid, async () => finished((await call('POST', '/users/export', { format: 'csv' })).job.id));
    o.log('bulk: a bare COPY of the same rows');
    const copy = await copyAlone(o.databaseUrl, o.rows);
    return {
      rows: o.rows,
      csvMb: mb(bytes),
      upload,
      import: { seconds: imp.seconds, rowsPerSecond: o.rows / imp.seconds, mbPerSecond: mb(bytes) / imp.seconds, growthMb: imp.growthMb },
      export: {
        rows: exp.value.result.rows, seconds: exp.seconds, rowsPerSecond: exp.value.result.rows / exp.seconds,
        mb: mb(exp.value.result.bytes), growthMb: exp.growthMb,
      },
      copy,
    };
  } finally {
    await sql`DELETE FROM users WHERE email LIKE ${`%@${TAG}`}`.catch(() => {});
    await sql.end({ timeout: 5 });
    await spate.stop();
  }
}

export function formatBulk(r: BulkResult): string {
  const f = (n: number) => Math.round(n).toLocaleString('en-US');
  return [
    `tus upload of the CSV (${r.csvMb.toFixed(1)} MB, tus-js-client over loopback): ${r.upload.seconds.toFixed(2)} s, ${r.upload.mbPerSecond.toFixed(0)} MB/s`,
    `import of ${f(r.rows)} CSV rows (${r.csvMb.toFixed(1)} MB, from a finished upload, validation included): ${r.import.seconds.toFixed(2)} s, `
      + `${f(r.import.rowsPerSecond)} rows/s, ${r.import.mbPerSecond.toFixed(1)} MB/s, RSS +${r.import.growthMb.toFixed(1)} MB`,
    `export of ${f(r.export.rows)} rows as CSV (${r.export.mb.toFixed(1)} MB): ${r.export.seconds.toFixed(2)} s, ${f(r.export.rowsPerSecond)} rows/s, `
      + `RSS +${r.export.growthMb.toFixed(1)} MB`,
    `bare binary COPY of ${f(r.rows)} rows (no HTTP, no validation, into a logged copy of users with its key): ${r.copy.seconds.toFixed(2)} s, `
      + `${f(r.copy.rowsPerSecond)} rows/s, ${r.copy.mbPerSecond.toFixed(1)} MB/s`,
  ].join('\n');
}
