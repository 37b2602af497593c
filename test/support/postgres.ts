/**
 * A real PostgreSQL for a test file: a fresh database on the server at TEST_DATABASE_URL when that is set, else
 * an embedded server in a temporary directory. Either way the test owns it alone and it is removed afterwards.
 * Only the embedded server can be stopped or frozen (`embedded` says which one this is).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { startEmbeddedPostgres, freePort, type EmbeddedPostgres } from '../../src/db/embedded-postgres.ts';

export interface TestDatabase {
  url: string;
  /** True for the embedded server, which the test may stop, start and freeze; false on TEST_DATABASE_URL. */
  embedded: boolean;
  /** Stops the server (embedded only): for database-failure tests. */
  stopServer(): Promise<void>;
  /** Starts it again on the same port and data. */
  startServer(): Promise<void>;
  /**
   * Freezes the server (embedded only): SIGSTOP to the postmaster and every process under it, so connections stay
   * open and nothing answers, as with a hung host. Returns the thaw (SIGCONT), which also runs if the test process
   * exits first; call it in a `finally`.
   */
  freezeServer(): () => void;
  /** Drops everything this helper created. */
  destroy(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const shared = process.env.TEST_DATABASE_URL;
  if (shared) {
    const name = `spate_test_${process.pid}_${Date.now().toString(36)}`;
    const admin = postgres(shared, { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = new URL(shared);
    url.pathname = `/${name}`;
    const unsupported = () => { throw new Error('stopping or freezing the server needs the embedded server (unset TEST_DATABASE_URL)'); };
    return {
      url: url.toString(),
      embedded: false,
      stopServer: async () => unsupported(),
      startServer: async () => unsupported(),
      freezeServer: unsupported,
      async destroy() {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await admin.end();
      },
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'spate-pg-'));
  chmodSync(dir, 0o755); // as root the server runs as the postgres user, which must reach the directory
  const port = await freePort();
  let server: EmbeddedPostgres | undefined = await startEmbeddedPostgres(dir, () => {}, { port });
  const url = server.url;
  return {
    url,
    embedded: true,
    freezeServer: () => freeze(join(dir, 'pg')),
    async stopServer() {
      await server?.stop();
      server = undefined;
    },
    async startServer() {
      server ??= await startEmbeddedPostgres(dir, () => {}, { port });
    },
    async destroy() {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The pids of `pid` and everything below it, parents first (from /proc, Linux). */
function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const tree: number[] = [];
  const visit = (p: number) => { tree.push(p); for (const c of children.get(p) ?? []) visit(c); };
  visit(pid);
  return tree;
}

/** SIGSTOP to the postmaster of `databaseDir` (stopped first, so it forks no one new) and its processes. */
function freeze(databaseDir: string): () => void {
  const postmaster = Number(readFileSync(join(databaseDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  process.kill(postmaster, 'SIGSTOP');
  const frozen = processTree(postmaster);
  for (const pid of frozen.slice(1)) process.kill(pid, 'SIGSTOP');
  let thawed = false;
  const thaw = () => {
    if (thawed) return;
    thawed = true;
    process.removeListener('exit', thaw);
    for (const pid of frozen.reverse()) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch { /* already gone */ }
    }
  };
  process.once('exit', thaw);
  return thaw;
}
