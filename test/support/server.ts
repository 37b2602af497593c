/**
 * The real server process for black-box tests: what `npm start` runs, on a free port, with an environment of the
 * test's making only, talked to over real HTTP.
 *
 * Three things keep the developer's machine out of it:
 * - the environment is PATH, HOME and what the test passes (never `DATABASE_URL`, `REDIS_URL`, `NODE_ENV` or
 *   `NODE_OPTIONS` from the shell that runs the tests);
 * - the process runs in a package root of its own: a temporary directory linking every entry of the repository
 *   except `.env*` files and `data/`, so the `.env` that the config reads from the working directory cannot leak in
 *   and the default `./data` is never the developer's;
 * - the command is package.json's `start` script run as npm would run it, but without npm in between, so that
 *   `stop()` and `kill` reach the Node process itself and a failed test cannot leave a server behind.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from '../../src/db/embedded-postgres.ts';
import { UNSHED } from './unshed.ts';

export interface ServerProcess {
  baseUrl: string;
  port: number;
  child: ChildProcess;
  /** The Node server process (the child itself: no npm in between). */
  pid: number;
  /** The package root the process runs in (links to the repository, without `.env*` and `data/`). */
  cwd: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resident set size of the server process in bytes (Linux /proc). */
  rss(): number;
  /** Sends `signal` and resolves with the exit code (or signal name) once the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

const root = new URL('../../', import.meta.url).pathname;

/** Entries of the repository a server must not see: the developer's dotenv files and default data directory. */
const PRIVATE_ENTRY = /^\.env(\..*)?$|^data$/;

/**
 * package.json's `start` script as an argv for `node`: `[exec] [VAR=value ...] node <args>`. Anything a shell
 * would have to interpret is refused with a message, so a changed script fails loudly here instead of running
 * differently from `npm start`.
 */
export function startCommand(script: string): { env: Record<string, string>; args: string[] } {
  if (/[;&|<>$`'"\\*?(){}\n]/.test(script)) {
    throw new Error(`test/support/server.ts runs the start script without a shell and cannot run this one: ${script}`);
  }
  const words = script.trim().split(/\s+/);
  if (words[0] === 'exec') words.shift();
  const env: Record<string, string> = {};
  while (words[0] !== undefined && /^[A-Za-z_]\w*=/.test(words[0])) {
    const [name, ...value] = words.shift()!.split('=');
    env[name!] = value.join('=');
  }
  if (words.shift() !== 'node') throw new Error(`the start script does not run node: ${script}`);
  return { env, args: words };
}

interface PackageJson { scripts?: Record<string, string> }
const scripts = (): Record<string, string> =>
  (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson).scripts ?? {};

/** A temporary package root linking every repository entry but the private ones. */
function isolatedRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), 'spate-root-'));
  for (const entry of readdirSync(root)) {
    if (!PRIVATE_ENTRY.test(entry)) symlinkSync(join(root, entry), join(dir, entry));
  }
  return dir;
}

/**
 * The environment a server gets: PATH (with the package's bin first, as npm puts it), HOME, load shedding off
 * unless the test sets it (UNSHED), and `env`.
 */
function cleanEnv(cwd: string, env: Record<string, string>): Record<string, string> {
  const path = [join(cwd, 'node_modules', '.bin'), process.env.PATH ?? '/usr/bin:/bin'].join(delimiter);
  return { PATH: path, ...(process.env.HOME ? { HOME: process.env.HOME } : {}), LOG_LEVEL: 'info', ...UNSHED, ...env };
}

let prestartDone = false;
/** `prestart`, when the package has one, runs once per test process, as `npm start` would run it first. */
function runPrestart(env: Record<string, string>): void {
  if (prestartDone || scripts().prestart === undefined) return;
  // In the repository itself: what it builds is for every server this process starts.
  execFileSync('npm', ['run', '--silent', 'prestart'], { cwd: root, env, stdio: 'inherit' });
  prestartDone = true;
}

/** Servers still running; killed if this test process ends or is interrupted first. */
const live = new Set<ChildProcess>();
const killAll = () => { for (const child of live) child.kill('SIGKILL'); };
process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killAll();
    // Re-raised with the default action, unless someone else handles it.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

export interface StartOptions {
  /** How long the server may take to answer `/health/live`. Default 60 s. */
  timeoutMs?: number;
  /** Where the port comes from when `env` gives none (the harness's own test replaces it). Default: a free one. */
  choosePort?: () => Promise<number>;
}

/** The port chosen for a server was free when chosen, and taken before the server could bind it. */
class PortTaken extends Error {}

/**
 * Starts the server (JSON logs, so stdout must not be a TTY) and resolves once `/health/live` answers. A port
 * the harness chose that another process took meanwhile (on a shared machine, or the embedded PostgreSQL of a
 * WORKERS run, which picks its own free port after this one was picked) is replaced by another, twice at most.
 */
export async function startServer(env: Record<string, string>, opts: StartOptions = {}): Promise<ServerProcess> {
  const { timeoutMs = 60_000, choosePort = freePort } = opts;
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(env, Number(env.PORT ?? (await choosePort())), timeoutMs);
    } catch (err) {
      if (!(err instanceof PortTaken) || env.PORT !== undefined || attempt >= 3) throw err;
    }
  }
}

async function launch(env: Record<string, string>, port: number, timeoutMs: number): Promise<ServerProcess> {
  const cwd = isolatedRoot();
  const start = scripts().start;
  if (start === undefined) throw new Error('package.json has no start script');
  const command = startCommand(start);
  const childEnv = cleanEnv(cwd, { ...command.env, ...env, PORT: String(port), HOST: '127.0.0.1' });
  runPrestart(childEnv);
  let out = '';
  const child = spawn(process.execPath, command.args, { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  // A failed assertion must not keep the test process alive waiting for the server.
  child.unref();
  (child.stdout as unknown as { unref(): void }).unref();
  (child.stderr as unknown as { unref(): void }).unref();
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => {
    live.delete(child);
    rmSync(cwd, { recursive: true, force: true });
    resolve(code ?? sig ?? -1);
  }));
  const baseUrl = `http://127.0.0.1:${port}`;
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const message = `server exited early (${child.exitCode ?? child.signalCode}):\n${out}`;
      throw new RegExp(`EADDRINUSE\\b.*\\b127\\.0\\.0\\.1:${port}\\b`).test(out) ? new PortTaken(message) : new Error(message);
    }
    try {
      // Bounded: whatever else may hold the port must not keep this loop from seeing the server exit.
      const res = await fetch(`${baseUrl}/health/live`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() - started > timeoutMs) {
      child.kill('SIGKILL');
      throw new Error(`server did not start within ${timeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const pid = child.pid!;
  return {
    baseUrl,
    pid,
    port,
    child,
    cwd,
    output: () => out,
    rss: () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024,
    async stop(signal = 'SIGTERM') {
      child.ref(); // waiting for the exit must keep this process alive
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** One request on a connection of its own, so a cluster hands each to the next worker in turn. */
export function sendAlone(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, {
      method,
      agent: false,
      headers: { connection: 'close', ...(payload ? { 'content-type': 'application/json' } : {}) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}
