/**
 * `npm run bench -- --soak`: a steady mixed load on one Spate process (as `npm start` runs it, in production
 * mode, with an API key) for a set duration, sampled every interval: resident memory, open file descriptors,
 * event-loop delay (p99 over the interval, from prom-client's monitor), heap in use, the users pool, and the
 * load's own throughput, p99 and errors (by status and detail). It reports the drift from the first sample after
 * warm-up to the last, and fails when RSS grew more than the bound or more than 1% of the requests failed.
 *
 *   npm run bench -- --soak                                        10 minutes at 200 requests/s
 *   npm run bench -- --soak --soak-duration 90s --soak-rate 100 --rows 20000
 *
 * The mix, per request: 70% `GET /users/{id}` (ids of the seeded rows), 15% `GET /users?limit=20` at a random
 * cursor-free size, 15% `POST /users`. The load runs in a child process, at a fixed rate (open loop: a slow server
 * does not slow the arrivals down until every client is busy), so the figures over time are comparable.
 */
import { spawn } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BenchError } from './kit.ts';
import { rssOf, startSpate } from './spate.ts';

export interface SoakOptions {
  env: NodeJS.ProcessEnv;
  port: number;
  logDir: string;
  apiKey: string;
  /** Seeded rows (ids md5(n)::uuid for n in 1..rows). */
  rows: number;
  durationS: number;
  intervalS: number;
  /** Requests a second, across `connections` clients. */
  rate: number;
  connections: number;
  /** RSS may grow at most this much from the first sample after warm-up to the last. */
  rssGrowthMb: number;
  log: (m: string) => void;
}

export interface SoakSample {
  atS: number;
  rssMb: number;
  /** V8's heap in use: RSS growing with it is the program's memory, without it the allocator's or V8's reserve. */
  heapUsedMb: number;
  fds: number;
  eventLoopP99Ms: number;
  poolActive: number;
  poolWaiting: number;
  requests: number;
  errors: number;
  p99Ms: number;
}

/** "10m", "90s" or seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  if (!m) throw new BenchError(`not a duration: ${text} (say 90s, 10m or 1h)`);
  return Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1);
}

/** The load generator (plain Node, no dependencies): one JSON line of counts and p99 per interval on stdout. */
const generator = `
const http = require('node:http');
const { createHash } = require('node:crypto');
const [base, key, rows, rate, connections, intervalMs, durationMs] = JSON.parse(process.argv[1]);
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const idOf = (n) => { const h = createHash('md5').update(String(n)).digest('hex');
  return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20); };
let lat = []; let errors = 0; let seq = 0; let errorKinds = {};
const send = () => new Promise((resolve) => {
  const r = Math.random(); const t0 = performance.now();
  let method = 'GET', path, body;
  if (r < 0.7) path = '/users/' + idOf(1 + Math.floor(Math.random() * rows));
  else if (r < 0.85) path = '/users?limit=' + (5 + Math.floor(Math.random() * 45));
  else { method = 'POST'; path = '/users'; body = JSON.stringify({ name: 'Soak', email: 'soak.' + process.pid + '.' + (seq++) + '.' + Date.now() + '@example.com', age: 30 }); }
  const req = http.request(base + path, { method, agent, timeout: 10000,
    headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) } }, (res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { if (res.statusCode >= 400 && text.length < 200) text += d; });
    res.on('end', () => {
      lat.push(performance.now() - t0);
      if (res.statusCode >= 400) {
        errors++;
        let detail = ''; try { detail = JSON.parse(text).detail; } catch {}
        const kind = res.statusCode + ' ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)).slice(0, 100);
        errorKinds[kind] = (errorKinds[kind] || 0) + 1;
      }
      resolve();
    });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => { lat.push(performance.now() - t0); errors++; errorKinds[e.message] = (errorKinds[e.message] || 0) + 1; resolve(); });
  req.end(body);
});
const start = performance.now(); const end = start + durationMs; const gapMs = 1000 * connections / rate;
const client = async (i) => {
  let next = start + (i * gapMs) / connections;
  while (next < end) {
    const wait = next - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await send();
    next += gapMs;
  }
};
const report = () => {
  const sorted = lat.sort((a, b) => a - b);
  const p99 = sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))] : 0;
  process.stdout.write(JSON.stringify({ requests: sorted.length, errors, p99, errorKinds }) + '\\n');
  lat = []; errors = 0; errorKinds = {};
};
const timer = setInterval(report, intervalMs);
// The connections close a moment after the last report, so its sample still counts them among the fds.
Promise.all(Array.from({ length: connections }, (_, i) => client(i))).then(() => { clearInterval(timer); report(); setTimeout(() => agent.destroy(), 2000); });
`;

/** The share of failed requests above which the soak fails. */
const MAX_ERROR_SHARE = 0.01;

const fdsOf = (pid: number) => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
};

/** prom-client's `nodejs_eventloop_lag_p99_seconds` and the users pool, from the operator's endpoints. */
async function serverFigures(baseUrl: string): Promise<{ eventLoopP99Ms: number; heapUsedMb: number; poolActive: number; poolWaiting: number }> {
  const text = await (await fetch(`${baseUrl}/metrics/prometheus`)).text();
  const lag = Number(/^nodejs_eventloop_lag_p99_seconds\s+(\S+)/m.exec(text)?.[1] ?? NaN) * 1000;
  const heapUsedMb = Number(/^nodejs_heap_size_used_bytes\s+(\S+)/m.exec(text)?.[1] ?? NaN) / 2 ** 20;
  const json = await (await fetch(`${baseUrl}/metrics`, { headers: { accept: 'application/json' } })).json() as {
    database_connections?: { active: number; waiting: number };
  };
  return { eventLoopP99Ms: lag, heapUsedMb, poolActive: json.database_connections?.active ?? NaN, poolWaiting: json.database_connections?.waiting ?? NaN };
}

export function formatSoak(samples: SoakSample[], o: SoakOptions, verdict: string): string {
  const lines = [
    `Soak: ${o.rate} requests/s (70% reads by id, 15% pages, 15% creates) over ${o.connections} connections for ${o.durationS} s`,
    '',
    '| t (s) | RSS (MB) | heap used (MB) | fds | event loop p99 (ms) | pool active / waiting | requests | errors | p99 (ms) |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...samples.map((s) => `| ${s.atS} | ${s.rssMb.toFixed(1)} | ${s.heapUsedMb.toFixed(1)} | ${s.fds} | ${s.eventLoopP99Ms.toFixed(1)} | ${s.poolActive} / ${s.poolWaiting} `
      + `| ${s.requests} | ${s.errors} | ${s.p99Ms.toFixed(1)} |`),
    '',
    verdict,
  ];
  return lines.join('\n');
}

export async function runSoak(o: SoakOptions): Promise<SoakSample[]> {
  const logFile = join(o.logDir, 'spate-soak.log');
  const spate = await startSpate(o.env, o.port, logFile);
  const samples: SoakSample[] = [];
  const errorKinds: Record<string, number> = {};
  try {
    o.log(`soak: ${o.rate} req/s for ${o.durationS} s, a sample every ${o.intervalS} s; server log: ${logFile}`);
    const child = spawn(process.execPath, ['-e', generator, JSON.stringify([
      spate.baseUrl, o.apiKey, o.rows, o.rate, o.connections, o.intervalS * 1000, o.durationS * 1000,
    ])], { stdio: ['ignore', 'pipe', 'inherit'] });
    const started = performance.now();
    let buffered = '';
    const pending: Promise<void>[] = [];
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const load = JSON.parse(buffered.slice(0, nl)) as { requests: number; errors: number; p99: number; errorKinds: Record<string, number> };
        buffered = buffered.slice(nl + 1);
        for (const [k, n] of Object.entries(load.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
        pending.push(serverFigures(spate.baseUrl).then((server) => {
          const sample: SoakSample = {
            atS: Math.round((performance.now() - started) / 1000), rssMb: rssOf(spate.pid) / 2 ** 20, fds: fdsOf(spate.pid),
            ...server, requests: load.requests, errors: load.errors, p99Ms: load.p99,
          };
          samples.push(sample);
          o.log(`soak t=${sample.atS}s: RSS ${sample.rssMb.toFixed(1)} MB, heap ${sample.heapUsedMb.toFixed(1)} MB, ${sample.fds} fds, event loop p99 `
            + `${sample.eventLoopP99Ms.toFixed(1)} ms, pool ${sample.poolActive}/${sample.poolWaiting}, ${sample.requests} requests, `
            + `${sample.errors} errors, p99 ${sample.p99Ms.toFixed(1)} ms`);
        }));
      }
    });
    await new Promise((resolve) => child.once('exit', resolve));
    await Promise.all(pending);
  } finally {
    await spate.stop();
  }
  if (samples.length < 2) throw new BenchError('the soak took fewer than two samples: give it a longer --soak-duration');
  // The first interval is warm-up (JIT, pools, caches filling): drift is counted from the second sample.
  const first = samples[Math.min(1, samples.length - 2)]!;
  const last = samples.at(-1)!;
  const growth = last.rssMb - first.rssMb;
  const requests = samples.reduce((n, s) => n + s.requests, 0);
  const errors = samples.reduce((n, s) => n + s.errors, 0);
  const heapGrowth = last.heapUsedMb - first.heapUsedMb;
  const verdict = `Drift from t=${first.atS}s to t=${last.atS}s: RSS ${growth >= 0 ? '+' : ''}${growth.toFixed(1)} MB (bound ${o.rssGrowthMb} MB), `
    + `heap used ${heapGrowth >= 0 ? '+' : ''}${heapGrowth.toFixed(1)} MB, `
    + `fds ${first.fds} -> ${last.fds}, pool active / waiting ${first.poolActive}/${first.poolWaiting} -> ${last.poolActive}/${last.poolWaiting}, `
    + `event loop p99 ${first.eventLoopP99Ms.toFixed(1)} -> ${last.eventLoopP99Ms.toFixed(1)} ms, `
    + `p99 ${first.p99Ms.toFixed(1)} -> ${last.p99Ms.toFixed(1)} ms; ${requests} requests, ${errors} errors`
    + (errors ? ` (${JSON.stringify(errorKinds)})` : '');
  const report = formatSoak(samples, o, verdict);
  writeFileSync(join(o.logDir, 'soak.md'), `${report}\n`);
  writeFileSync(join(o.logDir, 'soak.json'), JSON.stringify({ options: { ...o, env: undefined, apiKey: undefined, log: undefined }, samples, errorKinds }, null, 2));
  console.log(report);
  if (growth > o.rssGrowthMb) throw new BenchError(`soak failed: RSS grew ${growth.toFixed(1)} MB, over the bound of ${o.rssGrowthMb} MB`);
  // Some refusals are the service working as designed (shedding when a busy machine delays the event loop):
  // reported, and a failure only above 1% of the requests.
  if (errors > requests * MAX_ERROR_SHARE) {
    throw new BenchError(`soak failed: ${errors} of ${requests} requests failed (${JSON.stringify(errorKinds)})`);
  }
  return samples;
}
