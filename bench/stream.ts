/**
 * The stream scenario: one client reads `rows` users as NDJSON from `GET /users/stream` as fast as it can, while
 * the server's resident memory (/proc/<pid>/status VmRSS) is sampled every 10 ms. Reports rows/s and the peak
 * RSS above the figure just before the request.
 */
import { request } from 'node:http';
import { rssOf, startSpate } from './spate.ts';

export interface StreamResult {
  rows: number;
  fetchSize: number;
  seconds: number;
  rowsPerSecond: number;
  megabytes: number;
  baselineRssMb: number;
  peakRssMb: number;
  growthMb: number;
}

/** Reads the whole body, counting lines, without keeping it. */
function readLines(url: string, apiKey: string): Promise<{ lines: number; bytes: number; status: number }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { 'x-api-key': apiKey, accept: 'application/x-ndjson' } }, (res) => {
      let lines = 0;
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
      });
      res.on('end', () => resolve({ lines, bytes, status: res.statusCode ?? 0 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export async function measureStream(
  env: NodeJS.ProcessEnv,
  apiKey: string,
  o: { port: number; rows: number; fetchSize: number; logFile: string },
): Promise<StreamResult> {
  const spate = await startSpate(env, o.port, o.logFile);
  try {
    const path = (limit: number) => `${spate.baseUrl}/users/stream?limit=${limit}&fetch_size=${o.fetchSize}&format=ndjson`;
    // Warm-up: compile the path once, as any long-running server has.
    const warm = await readLines(path(20_000), apiKey);
    if (warm.status !== 200) throw new Error(`GET /users/stream answered ${warm.status}`);
    await new Promise((r) => setTimeout(r, 500));
    const baseline = rssOf(spate.pid);
    let peak = baseline;
    const sampler = setInterval(() => { peak = Math.max(peak, rssOf(spate.pid)); }, 10);
    const t0 = performance.now();
    const got = await readLines(path(o.rows), apiKey);
    const seconds = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    peak = Math.max(peak, rssOf(spate.pid));
    if (got.status !== 200 || got.lines !== o.rows) throw new Error(`stream returned ${got.lines} rows (status ${got.status}), wanted ${o.rows}`);
    const mb = (b: number) => b / 1024 / 1024;
    return {
      rows: got.lines,
      fetchSize: o.fetchSize,
      seconds,
      rowsPerSecond: got.lines / seconds,
      megabytes: mb(got.bytes),
      baselineRssMb: mb(baseline),
      peakRssMb: mb(peak),
      growthMb: mb(peak - baseline),
    };
  } finally {
    await spate.stop();
  }
}
