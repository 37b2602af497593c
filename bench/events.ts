/**
 * Creates with events on against creates with events off (docs/webhooks.md; the target: at least 0.9x),
 * measured twice:
 * - over HTTP, as `npm run bench` measures creates: the app (buildApp, as the server runs it) listening, loaded by
 *   wrk with the shared kit's create.lua (50 connections), when wrk and the kit are there;
 * - through the users store itself, where the outbox's cost is not diluted by the HTTP layer: the storage path's
 *   own figure, the stricter one.
 * With events on, the relay runs beside the load (taking and deleting the outbox rows, as in production; no
 * endpoint is registered, so it enqueues nothing). Rounds alternate, off then on, back to back, and the ratio is
 * of the medians, because on a shared machine the load moves between rounds.
 *
 *   npx tsx bench/events.ts [seconds per round=5] [rounds=3] [clients=50]
 *
 * For diagnosis: STORE_ONLY=1 skips the HTTP rounds; NO_RELAY=1 measures the write path without the relay.
 *
 * Also run at the end of bench/jobs.ts. On an embedded PostgreSQL in a temporary directory (or BENCH_DATABASE_URL).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { buildApp } from '../src/app.ts';
import { openBackend, type Backend } from '../src/db/backend.ts';
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.ts';
import { startRelay } from '../src/modules/webhooks/relay.ts';
import { loadConfig } from '../src/platform/config.ts';
import { findKit } from './kit.ts';

const quiet = { info: () => {}, warn: () => {} };

async function createsPerSecond(b: Backend, seconds: number, clients: number): Promise<number> {
  let n = 0;
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    while (performance.now() < until) {
      await b.users.create({ name: `bench ${c}`, email: `bench${c}.${n}@example.com`, age: 30 });
      n++;
    }
  }));
  return n / ((performance.now() - t0) / 1000);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (xs: number[]) => xs.map((x) => Math.round(x)).join(', ');
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

/** wrk's requests/s of create.lua against `base` (in-process: so never a synchronous exec), or undefined without wrk or the kit. */
async function wrkCreates(base: string, seconds: number, connections: number): Promise<number | undefined> {
  let dir: string;
  try {
    dir = findKit();
  } catch {
    return undefined;
  }
  if (!existsSync(join(dir, 'wrk', 'create.lua'))) return undefined;
  try {
    const { stdout: out } = await promisify(execFile)('wrk', ['-t2', `-c${connections}`, `-d${seconds}s`, '-s', join(dir, 'wrk', 'create.lua'), base], {
      encoding: 'utf8', env: { ...process.env, BENCH_WRK_DIR: join(dir, 'wrk') },
    });
    return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  } catch {
    return undefined;
  }
}

/** Creates over HTTP with events off and on; prints both and the ratio. */
async function benchHttp(url: string, seconds: number, rounds: number, connections: number): Promise<number | undefined> {
  const start = async (events: 'on' | 'off') => {
    const app = await buildApp(loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'silent', EVENTS: events, PORT: '0' }), { logger: false });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    return { app, base };
  };
  const [off, on] = [await start('off'), await start('on')];
  try {
    if ((await wrkCreates(off.base, 1, connections)) === undefined) return undefined;
    await wrkCreates(on.base, 1, connections);
    const rates = { off: [] as number[], on: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      rates.off.push((await wrkCreates(off.base, seconds, connections))!);
      rates.on.push((await wrkCreates(on.base, seconds, connections))!);
    }
    const ratio = median(rates.on) / median(rates.off);
    console.log(`POST /users over HTTP (wrk, ${connections} connections), ${rounds} rounds of ${seconds} s: events off ${fmt(rates.off)}; ` +
      `events on ${fmt(rates.on)}; on/off (medians) ${ratio.toFixed(3)}x (target >= 0.9x); load ${load()}`);
    return ratio;
  } finally {
    await Promise.all([off.app.close(), on.app.close()]);
  }
}

/** Prints the rates and ratios over HTTP (when wrk is there) and through the store. */
export async function benchEvents(url: string, seconds = 5, rounds = 3, clients = 50): Promise<void> {
  if (!process.env.STORE_ONLY) await benchHttp(url, seconds, rounds, clients);
  await benchStore(url, seconds, rounds, clients);
}

async function benchStore(url: string, seconds: number, rounds: number, clients: number): Promise<number> {
  const open = (events: 'on' | 'off') => openBackend(loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'silent', EVENTS: events }), { log: quiet });
  const [off, on] = [await open('off'), await open('on')];
  while (!(await on.probes.schemaReady())) await sleep(50);
  const relay = process.env.NO_RELAY ? { stop: async () => {} } : startRelay({ outbox: on.outbox!, webhooks: on.webhooks!, jobs: on.jobs!, maxAttempts: 1, pollMs: 1000, log: quiet });
  try {
    await createsPerSecond(off, 1, clients); // warm both pools and the prepared statements
    await createsPerSecond(on, 1, clients);
    const rates = { off: [] as number[], on: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      rates.off.push(await createsPerSecond(off, seconds, clients));
      rates.on.push(await createsPerSecond(on, seconds, clients));
    }
    const ratio = median(rates.on) / median(rates.off);
    console.log(`creates/s through the users store, ${clients} clients, ${rounds} rounds of ${seconds} s: events off ${fmt(rates.off)}; ` +
      `events on ${fmt(rates.on)}; on/off (medians) ${ratio.toFixed(3)}x (target >= 0.9x); load ${load()}`);
    return ratio;
  } finally {
    await relay.stop();
    await Promise.all([off.close(), on.close()]);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = mkdtempSync(join(tmpdir(), 'spate-bench-events-'));
  chmodSync(dir, 0o755);
  const embedded = process.env.BENCH_DATABASE_URL ? undefined : await startEmbeddedPostgres(dir, () => {});
  try {
    await benchEvents(process.env.BENCH_DATABASE_URL ?? embedded!.url, ...process.argv.slice(2).map(Number));
  } finally {
    await embedded?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
