/**
 * The shared benchmark kit (../shared/bench: compare.mjs, its peers and wrk scripts): finding it, making sure
 * what it needs is installed, and running compare.mjs for one scenario.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is in bench/). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export class BenchError extends Error {
  override name = 'BenchError';
}

/** `SPATE_BENCH_KIT`, else `../shared/bench` beside the repository; it must hold compare.mjs. */
export function findKit(): string {
  const dir = resolve(process.env.SPATE_BENCH_KIT ?? join(REPO, '..', 'shared', 'bench'));
  if (!existsSync(join(dir, 'compare.mjs'))) {
    throw new BenchError(
      `The shared benchmark kit was not found: ${join(dir, 'compare.mjs')} does not exist.\n`
      + 'It is expected at ../shared/bench next to the repository (with compare.mjs, setup.sh, peers/ and wrk/). '
      + 'Set SPATE_BENCH_KIT=/path/to/shared/bench if it lives elsewhere.',
    );
  }
  return dir;
}

const onPath = (cmd: string) => {
  try {
    execFileSync('bash', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** What compare.mjs needs that is missing: wrk, pgbench, psql, the FastAPI peer's modules, the Node peers' modules. */
export function missingTools(kit: string): string[] {
  const missing = ['wrk', 'pgbench', 'psql'].filter((c) => !onPath(c));
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import fastapi, uvicorn, asyncpg'], { stdio: 'ignore' });
  } catch {
    missing.push('fastapi peer (python3-fastapi, python3-uvicorn, python3-asyncpg)');
  }
  for (const peer of ['express', 'fastify-raw']) {
    if (!existsSync(join(kit, 'peers', peer, 'node_modules'))) missing.push(`${peer} peer modules`);
  }
  return missing;
}

/** Runs the kit's setup.sh when something is missing, then checks again. */
export function ensureTools(kit: string, log: (msg: string) => void): void {
  const missing = missingTools(kit);
  if (missing.length === 0) return;
  log(`missing: ${missing.join(', ')}; running ${join(kit, 'setup.sh')}`);
  execFileSync(join(kit, 'setup.sh'), { stdio: 'inherit' });
  const still = missingTools(kit);
  if (still.length) throw new BenchError(`still missing after setup.sh: ${still.join(', ')}`);
}

export interface Subject {
  name: string;
  cwd: string;
  port: number;
  command: string;
}

export interface WrkResult {
  name: string;
  rps: number;
  p50: number | null;
  p99: number | null;
  non2xx: number;
  errors: string;
  /** The slowest request (ms), where the runner reads it (wrkScript). */
  max?: number | null;
}

export interface CompareOptions {
  scenario: 'get_by_id' | 'list' | 'create';
  duration: number;
  connections: number;
  subjects: Subject[];
  /** Peers of the kit to add after the subjects (compare.mjs names). */
  peers: string[];
  pgbench?: boolean;
  /** Another wrk script for the scenario (compare.mjs `--wrk-script`). */
  wrkScript?: string;
  /**
   * Cores (a `taskset -c` list) for compare.mjs and so for wrk, which it runs; subjects then need a command that
   * widens their own affinity again (`taskset -c 0-N ...`), since children inherit it.
   */
  loadCores?: string;
  env: NodeJS.ProcessEnv;
}

/** Runs compare.mjs once and returns its results (its last output line is JSON). Its table goes to stderr. */
export async function compare(kit: string, o: CompareOptions): Promise<WrkResult[]> {
  const args = [
    join(kit, 'compare.mjs'), '--scenario', o.scenario, '--duration', String(o.duration),
    '--connections', String(o.connections), '--peers', o.peers.join(','),
    ...o.subjects.flatMap((s) => ['--subject', `${s.name}|${s.cwd}|${s.port}|${s.command}`]),
    ...(o.pgbench ? ['--pgbench'] : []),
    ...(o.wrkScript ? ['--wrk-script', o.wrkScript] : []),
  ];
  const [cmd, argv] = o.loadCores ? ['taskset', ['-c', o.loadCores, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, argv, { env: o.env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
    process.stderr.write(d.split('\n').filter((l) => !l.startsWith('{')).join('\n'));
  });
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new BenchError(`compare.mjs --scenario ${o.scenario} failed (exit ${code})`);
  const json = out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!json) throw new BenchError(`compare.mjs --scenario ${o.scenario} printed no results`);
  const parsed = JSON.parse(json) as { results: WrkResult[] };
  // compare.mjs writes NaN latencies (pgbench) as null in JSON.
  return parsed.results.map((r) => ({ ...r, p50: r.p50 ?? null, p99: r.p99 ?? null }));
}

/**
 * One wrk load with a script of this repository (bench/wrk), parsed as compare.mjs parses its own: a 3 s
 * warm-up, then `duration` seconds, one thread, `connections` connections.
 */
export function wrkScript(script: string, baseUrl: string, o: { name: string; duration: number; connections: number; env: NodeJS.ProcessEnv }): WrkResult {
  const run = (seconds: number) => execFileSync('wrk', ['-t1', `-c${o.connections}`, `-d${seconds}s`, '--latency', '-s', join(REPO, 'bench', 'wrk', script), baseUrl],
    { encoding: 'utf8', env: o.env });
  run(3);
  const out = run(o.duration);
  const toMs = (text: string | undefined): number | null => {
    const m = /([\d.]+)(us|ms|s)\s*$/.exec(text ?? '');
    return m ? Number(m[1]) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[m[2]!]! : null;
  };
  const ms = (p: number): number | null => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1]);
  return {
    name: o.name,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    p50: ms(50),
    p99: ms(99),
    non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
    errors: /Socket errors:.*/.exec(out)?.[0] ?? '',
    max: toMs(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m.exec(out)?.[1]),
  };
}
