/**
 * A real Redis for a test: `redis-server` on a free loopback port, no persistence, owned by the test alone.
 * `kill()` ends it with SIGKILL (a crash, not a clean shutdown); `restart()` brings it back on the same port.
 *
 * When the binary is missing the suite is skipped with a message, except under CI=true, where a missing Redis
 * must fail the run rather than pass it silently.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from '../../src/db/embedded-postgres.ts';

export interface TestRedis {
  url: string;
  port: number;
  /** SIGKILL: the server vanishes mid-conversation. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const BINARY = process.env.REDIS_SERVER_BIN ?? 'redis-server';

/** Why Redis tests cannot run here, or undefined when they can. Throws under CI=true. */
export function redisUnavailable(): string | undefined {
  const probe = spawnSync(BINARY, ['--version'], { encoding: 'utf8' });
  if (probe.status === 0) return undefined;
  const why = `${BINARY} not found (install the redis-server package to run the Redis tests)`;
  if (process.env.CI === 'true') throw new Error(`${why}; CI=true, so this is a failure, not a skip`);
  return why;
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.setTimeout(500);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (d) => { socket.destroy(); resolve(d.toString().startsWith('+PONG')); });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
  });
}

async function launch(port: number): Promise<ChildProcess> {
  const child = spawn(BINARY, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], {
    stdio: 'ignore',
  });
  const started = Date.now();
  while (!(await ping(port))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    if (Date.now() - started > 10_000) {
      child.kill('SIGKILL');
      throw new Error('redis-server did not answer within 10 s');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

function ended(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined = await launch(port);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async kill() {
      if (child) await ended(child, 'SIGKILL');
      child = undefined;
    },
    async restart() {
      child ??= await launch(port);
    },
    async stop() {
      if (child) await ended(child, 'SIGTERM');
      child = undefined;
    },
  };
}
