/**
 * The real server process for black-box tests: `npm start` (exactly what users run) on a free port, with the
 * environment the test gives, talked to over real HTTP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { freePort } from '../../src/storage/postgres/embedded.ts';

export interface ServerProcess {
  baseUrl: string;
  port: number;
  child: ChildProcess;
  /** The Node server process (npm's child). */
  pid: number;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resident set size of the server process in bytes (Linux /proc). */
  rss(): number;
  /** Sends `signal` and resolves with the exit code (or signal name) once the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

const root = new URL('../../', import.meta.url).pathname;

/** Starts `npm start` (JSON logs, so stdout must not be a TTY) and resolves once `/health/live` answers. */
export async function startServer(env: Record<string, string>, timeoutMs = 60_000): Promise<ServerProcess> {
  const port = Number(env.PORT ?? (await freePort()));
  let out = '';
  const child = spawn('npm', ['start', '--silent'], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'info', ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  // A failed assertion must not leave a server behind, nor keep the test process alive waiting for it.
  child.unref();
  (child.stdout as unknown as { unref(): void }).unref();
  (child.stderr as unknown as { unref(): void }).unref();
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.removeListener('exit', killOnExit));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  const baseUrl = `http://127.0.0.1:${port}`;
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}):\n${out}`);
    try {
      const res = await fetch(`${baseUrl}/health/live`);
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() - started > timeoutMs) {
      child.kill('SIGKILL');
      throw new Error(`server did not start within ${timeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // npm runs the server as a child; its own pid is in every JSON log line.
  const pid = Number(/"pid":(\d+)/.exec(out)?.[1] ?? child.pid);
  return {
    baseUrl,
    pid,
    port,
    child,
    output: () => out,
    rss: () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024,
    async stop(signal = 'SIGTERM') {
      child.ref(); // waiting for the exit must keep this process alive
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
