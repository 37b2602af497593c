/**
 * The upload scenario (docs/uploads.md): 1 GB (10^9 bytes) sent to a production Spate over loopback with
 * tus-js-client streaming a file from disk, as users upload; then by a plain HTTP client in 256 MiB PATCHes
 * (the server's share without the client library's), the same with `Upload-Checksum: sha256` on each (the
 * checksum extension's cost: hashing and staging before the append), and by curl in one PATCH (a client that
 * is not Node, when curl is installed: what the server takes when the client costs least), back to back. Reports MB/s
 * (10^6 bytes) against the 200 MB/s target and the server's RSS growth (VmRSS sampled every 10 ms).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync, type ReadStream } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { Upload } from 'tus-js-client';
import { rssOf, startSpate } from './spate.ts';

export const UPLOAD_TARGET_MB_S = 200;

export interface UploadResult {
  client: string;
  bytes: number;
  seconds: number;
  mbPerSecond: number;
  growthMb: number;
}

/** `bytes` of incompressible data on disk (1 MiB of random bytes, repeated with a counter). */
async function sourceFile(path: string, bytes: number): Promise<void> {
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24;
  let left = bytes;
  let n = 0;
  await pipeline(Readable.from((function* () {
    while (left > 0) {
      const chunk = Buffer.from(block.subarray(0, Math.min(left, block.length)));
      chunk.writeUInt32LE(n++, 0);
      left -= chunk.length;
      yield chunk;
    }
  })()), createWriteStream(path));
}

/**
 * tus-js-client's `fileReader` option, reading a file's chunks 1 MiB at a time. Its own reader slices a file with
 * `fs.createReadStream` at the default 64 KiB, sixteen times the reads and socket writes, which on this machine's
 * two cores the client pays beside the server (the same library otherwise: its HTTP stack, its protocol).
 */
const MIB_READS = {
  openFile(input: ReadStream) {
    const path = String(input.path);
    const size = statSync(path).size;
    return Promise.resolve({
      size,
      slice(start: number, end: number) {
        const value = Object.assign(createReadStream(path, { start, end: end - 1, highWaterMark: 1024 * 1024 }), { size: Math.min(end - start, size) });
        // As the library's own file source says it: done once a slice holds the whole file.
        return Promise.resolve({ value, done: value.size >= size });
      },
      close() {},
    });
  },
};

/** Uploads `file` with tus-js-client (`mibReads`: through MIB_READS); resolves with the upload's URL. */
export function tusUpload(baseUrl: string, apiKey: string, file: string, bytes: number, mibReads = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const upload = new Upload(createReadStream(file), {
      endpoint: `${baseUrl}/uploads`, headers: { 'x-api-key': apiKey }, uploadSize: bytes, retryDelays: null,
      ...(mibReads ? { fileReader: MIB_READS } : {}),
      // 256 MiB PATCHes: each stays well inside REQUEST_TIMEOUT_MS on a slow link, and a cut costs one chunk.
      chunkSize: 256 * 1024 * 1024,
      onSuccess: () => resolve(upload.url!), onError: reject,
    });
    upload.start();
  });
}

function call(
  url: string, method: string, headers: Record<string, string>, body?: { file: string; start: number; end: number },
): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else void pipeline(createReadStream(body.file, { start: body.start, end: body.end - 1, highWaterMark: 1024 * 1024 }), req).catch(reject);
  });
}

const CHUNK = 256 * 1024 * 1024;

/** sha256 of bytes [start, end) of `file`, base64. */
async function digestOf(file: string, start: number, end: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { start, end: end - 1, highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('base64');
}

/** The tus requests by hand: POST, then PATCHes of CHUNK bytes, each with its sha256 when `digests` are given. */
async function rawUpload(baseUrl: string, apiKey: string, file: string, bytes: number, digests?: string[]): Promise<void> {
  const tus = { 'tus-resumable': '1.0.0', 'x-api-key': apiKey };
  const made = await call(`${baseUrl}/uploads`, 'POST', { ...tus, 'upload-length': String(bytes) });
  if (made.status !== 201) throw new Error(`POST /uploads answered ${made.status}`);
  for (let offset = 0, i = 0; offset < bytes; offset += CHUNK, i++) {
    const end = Math.min(bytes, offset + CHUNK);
    const done = await call(`${baseUrl}${String(made.headers.location)}`, 'PATCH', {
      ...tus, 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream', 'content-length': String(end - offset),
      ...(digests ? { 'upload-checksum': `sha256 ${digests[i]}` } : {}),
    }, { file, start: offset, end });
    if (done.status !== 204) throw new Error(`PATCH at ${offset} answered ${done.status}`);
  }
}

/** POST, then the whole file in one PATCH streamed by `curl -T`. */
async function curlUpload(baseUrl: string, apiKey: string, file: string, bytes: number): Promise<void> {
  const tus = { 'tus-resumable': '1.0.0', 'x-api-key': apiKey };
  const made = await call(`${baseUrl}/uploads`, 'POST', { ...tus, 'upload-length': String(bytes) });
  if (made.status !== 201) throw new Error(`POST /uploads answered ${made.status}`);
  const headers = { ...tus, 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' };
  // `Expect:` with no value: curl would otherwise wait for a 100 Continue before sending the body.
  const args = ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'expect:', '-X', 'PATCH', '-T', file];
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  args.push(`${baseUrl}${String(made.headers.location)}`);
  const curl = spawn('curl', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let status = '';
  curl.stdout.on('data', (d) => (status += d));
  const code = await new Promise<number | null>((resolve, reject) => { curl.once('error', reject); curl.once('exit', resolve); });
  if (code !== 0 || status !== '204') throw new Error(`curl PATCH answered ${status} (exit ${code})`);
}

const hasCurl = () => spawnSync('curl', ['--version'], { stdio: 'ignore' }).status === 0;

export async function measureUploads(
  env: NodeJS.ProcessEnv,
  apiKey: string,
  o: { port: number; bytes: number; logFile: string; log: (m: string) => void },
): Promise<UploadResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'spate-bench-uploads-'));
  const file = join(dir, 'source.bin');
  o.log(`writing a ${o.bytes} byte source file`);
  await sourceFile(file, o.bytes);
  const digests: string[] = [];
  for (let offset = 0; offset < o.bytes; offset += CHUNK) digests.push(await digestOf(file, offset, Math.min(o.bytes, offset + CHUNK)));
  const spate = await startSpate({ ...env, UPLOADS_DIR: join(dir, 'uploads'), UPLOAD_MAX_BYTES: String(2 * o.bytes) }, o.port, o.logFile);
  const runs: [string, () => Promise<void>][] = [
    ['tus-js-client, 256 MiB chunks', async () => { await tusUpload(spate.baseUrl, apiKey, file, o.bytes); }],
    ['tus-js-client, 256 MiB chunks read 1 MiB at a time', async () => { await tusUpload(spate.baseUrl, apiKey, file, o.bytes, true); }],
    ['plain HTTP client, 256 MiB PATCHes', () => rawUpload(spate.baseUrl, apiKey, file, o.bytes)],
    ['plain HTTP client, 256 MiB PATCHes with Upload-Checksum: sha256', () => rawUpload(spate.baseUrl, apiKey, file, o.bytes, digests)],
  ];
  if (hasCurl()) runs.push(['curl -T, one PATCH', () => curlUpload(spate.baseUrl, apiKey, file, o.bytes)]);
  else o.log('curl not found: the upload by curl is skipped');
  const results: UploadResult[] = [];
  try {
    // Warm-up: the route compiled and the page cache holding the source file.
    await tusUpload(spate.baseUrl, apiKey, file, Math.min(o.bytes, 64 * 1024 * 1024));
    for (const [client, run] of runs) {
      // The previous case (or the source file) left up to a gigabyte of dirty pages: written back to disk during the
      // next case, they would be measured as its slowness. Each case starts with them on disk.
      spawnSync('sync');
      const baseline = rssOf(spate.pid);
      let peak = baseline;
      const sampler = setInterval(() => { peak = Math.max(peak, rssOf(spate.pid)); }, 10);
      const t0 = performance.now();
      await run();
      const seconds = (performance.now() - t0) / 1000;
      clearInterval(sampler);
      const result = { client, bytes: o.bytes, seconds, mbPerSecond: o.bytes / 1e6 / seconds, growthMb: (peak - baseline) / 1024 / 1024 };
      o.log(`upload, ${client}: ${result.mbPerSecond.toFixed(0)} MB/s (target ${UPLOAD_TARGET_MB_S}), ${seconds.toFixed(2)} s, RSS +${result.growthMb.toFixed(1)} MB`);
      results.push(result);
    }
    return results;
  } finally {
    await spate.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
