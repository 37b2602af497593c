/**
 * For test/uploads.test.ts, in a process of its own (started with or without `--expose-gc`): the minor garbage
 * collections during two 64 MiB PATCHes over real HTTP, one plain and one with `Upload-Checksum`, printed as one
 * JSON line. The body goes through Node's HTTP parser in 64 KiB chunks, as a client's would.
 */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { startApp } from './support/app.ts';

const BODY_BYTES = 64 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 7);
const TUS = { 'tus-resumable': '1.0.0' };

const app = await startApp(process.env.DATABASE_URL!, { UPLOADS_DIR: process.env.UPLOADS_DIR!, AUTH_MODE: 'off', LOG_LEVEL: 'silent' });
const base = await app.listen({ port: 0, host: '127.0.0.1' });

function send(method: string, path: string, headers: Record<string, string>, chunks = 0): Promise<{ status: number; location?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, location: res.headers.location }));
    });
    req.on('error', reject);
    let sent = 0;
    const more = () => {
      while (sent < chunks) {
        sent++;
        if (!req.write(CHUNK)) return void req.once('drain', more);
      }
      req.end();
    };
    more();
  });
}

let minor = 0;
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries() as (PerformanceEntry & { detail: { kind: number } })[]) {
    if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
  }
});

async function upload(checksum: boolean): Promise<number> {
  const made = await send('POST', '/uploads', { ...TUS, 'upload-length': String(BODY_BYTES) });
  const digest = createHash('sha256');
  for (let i = 0; i < BODY_BYTES / CHUNK.length; i++) digest.update(CHUNK);
  const headers: Record<string, string> = {
    ...TUS, 'content-type': 'application/offset+octet-stream', 'upload-offset': '0', 'content-length': String(BODY_BYTES),
    ...(checksum ? { 'upload-checksum': `sha256 ${digest.digest('base64')}` } : {}),
  };
  return (await send('PATCH', new URL(made.location!, base).pathname, headers, BODY_BYTES / CHUNK.length)).status;
}

observer.observe({ entryTypes: ['gc'] });
const plainStatus = await upload(false);
await new Promise((r) => setTimeout(r, 100));
const plain = minor;
const checkedStatus = await upload(true);
await new Promise((r) => setTimeout(r, 300));
const checked = minor - plain;
observer.disconnect();
await app.close();
console.log(JSON.stringify({ plain, checked, statuses: [plainStatus, checkedStatus] }));
