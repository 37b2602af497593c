/**
 * A real PostgreSQL primary with real streaming replicas, for the read-replica tests.
 *
 * The embedded package ships only initdb, pg_ctl and postgres (no pg_basebackup), and Debian's pg_basebackup is
 * major version 15 against the embedded 18, which it refuses. So each replica is made by a low-level base backup,
 * as the PostgreSQL manual describes it ("Making a Base Backup Using the Low Level API"): a physical replication
 * slot so the primary keeps the WAL the replica needs, `pg_backup_start()`, a file copy of the data directory,
 * `pg_backup_stop()` and its `backup_label`, then `standby.signal` and `primary_conninfo`. The replica runs the
 * primary's own postgres binary (read from `postmaster.opts`), as the same system user.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync, lstatSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { freePort, startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded-postgres.ts';

export interface TestReplica {
  url: string;
  /** `host:port`, as health and metrics name it. */
  name: string;
  /** `pg_wal_replay_pause()`: the replica answers but applies no more WAL. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** Fast shutdown; `start` brings it back on the same port and data. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Resolves once the replica has replayed everything the primary has written so far. */
  caughtUp(): Promise<void>;
}

export interface ReplicatedDatabase {
  primaryUrl: string;
  replicas: TestReplica[];
  destroy(): Promise<void>;
}

/** Directories whose contents a base backup leaves out (the manual's list); the directories themselves stay. */
const EMPTIED = new Set(['pg_wal', 'pg_replslot', 'pg_stat_tmp', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans', 'pgsql_tmp']);
const SKIPPED = new Set(['postmaster.pid', 'postmaster.opts', 'backup_label', 'tablespace_map', 'standby.signal', 'recovery.signal']);

/** Copies a live data directory; a file the server removes while we copy (a temporary file) is no loss. */
function copyDataDir(from: string, to: string): void {
  mkdirSync(to, { recursive: true, mode: 0o700 });
  for (const entry of readdirSync(from)) {
    if (SKIPPED.has(entry)) continue;
    const src = join(from, entry);
    const dst = join(to, entry);
    try {
      if (lstatSync(src).isDirectory()) {
        if (EMPTIED.has(entry)) mkdirSync(dst, { recursive: true, mode: 0o700 });
        else copyDataDir(src, dst);
        if (entry === 'pg_wal') mkdirSync(join(dst, 'archive_status'), { recursive: true, mode: 0o700 });
      } else {
        copyFileSync(src, dst);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

/** The uid and gid the embedded server runs as (as root: the postgres user), or undefined when it is us. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

function chownTree(path: string, owner: { uid: number; gid: number }): void {
  chownSync(path, owner.uid, owner.gid);
  if (!lstatSync(path).isDirectory()) return;
  for (const entry of readdirSync(path)) chownTree(join(path, entry), owner);
}

async function waitFor(check: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Starts an embedded primary and makes `count` streaming replicas of it. */
export async function startReplicatedDatabase(count = 1): Promise<ReplicatedDatabase> {
  const root = mkdtempSync(join(tmpdir(), 'spate-repl-'));
  chmodSync(root, 0o755);
  const primaryDir = join(root, 'primary');
  const server: EmbeddedPostgres = await startEmbeddedPostgres(primaryDir, () => {});
  const primaryUrl = server.url;
  const admin = postgres(primaryUrl, { max: 1, onnotice: () => {} });
  const owner = serverUser();
  const replicas: (TestReplica & { destroy(): Promise<void> })[] = [];
  try {
    const dir = (await admin<{ dir: string }[]>`SELECT current_setting('data_directory') AS dir`)[0]!.dir;
    const binary = readFileSync(join(dir, 'postmaster.opts'), 'utf8').split(' ')[0]!.replace(/^"|"$/g, '');
    for (let i = 0; i < count; i++) replicas.push(await makeReplica(admin, primaryUrl, dir, binary, join(root, `replica${i}`), i, owner));
  } catch (err) {
    await Promise.all(replicas.map((r) => r.destroy()));
    await admin.end();
    await server.stop();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return {
    primaryUrl,
    replicas,
    async destroy() {
      await Promise.all(replicas.map((r) => r.destroy()));
      await admin.end();
      await server.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

async function makeReplica(
  admin: postgres.Sql,
  primaryUrl: string,
  primaryDir: string,
  binary: string,
  dir: string,
  index: number,
  owner: { uid: number; gid: number } | undefined,
): Promise<TestReplica & { destroy(): Promise<void> }> {
  const slot = `spate_test_replica_${index}`;
  await admin`SELECT pg_create_physical_replication_slot(${slot}, true)`;
  const conn = await admin.reserve();
  try {
    await conn`SELECT pg_backup_start(${slot}, true)`;
    copyDataDir(primaryDir, dir);
    const [stop] = await conn<{ labelfile: string; spcmapfile: string }[]>`SELECT labelfile, spcmapfile FROM pg_backup_stop(false)`;
    writeFileSync(join(dir, 'backup_label'), stop!.labelfile);
    if (stop!.spcmapfile) writeFileSync(join(dir, 'tablespace_map'), stop!.spcmapfile);
  } finally {
    conn.release();
  }
  const p = new URL(primaryUrl);
  const conninfo = `host=${p.hostname} port=${p.port} user=${decodeURIComponent(p.username)} password=${decodeURIComponent(p.password)} application_name=${slot}`;
  writeFileSync(join(dir, 'standby.signal'), '');
  appendFileSync(join(dir, 'postgresql.auto.conf'), `\nprimary_conninfo = '${conninfo.replace(/'/g, "''")}'\nprimary_slot_name = '${slot}'\n`);
  if (owner) chownTree(dir, owner);
  chmodSync(dir, 0o700);

  const port = await freePort();
  const url = new URL(primaryUrl);
  url.port = String(port);
  let child: ChildProcess | undefined;
  const log: string[] = [];

  async function start(): Promise<void> {
    if (child) return;
    const proc = spawn(binary, ['-D', dir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='], {
      ...(owner ?? {}), stdio: ['ignore', 'ignore', 'pipe'],
    });
    proc.stderr!.on('data', (chunk: Buffer) => {
      log.push(chunk.toString());
      if (log.length > 50) log.shift();
    });
    child = proc;
    proc.once('exit', () => { if (child === proc) child = undefined; });
    const sql = postgres(url.toString(), { max: 1, onnotice: () => {}, connect_timeout: 2 });
    try {
      await waitFor(async () => (await sql<{ r: boolean }[]>`SELECT pg_is_in_recovery() AS r`)[0]!.r, `replica ${index} to accept connections:\n${log.join('')}`);
    } finally {
      await sql.end();
    }
  }

  async function stop(): Promise<void> {
    const proc = child;
    if (!proc) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGINT');
    await exited;
  }

  const onReplica = async <T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> => {
    const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      return await fn(sql);
    } finally {
      await sql.end();
    }
  };

  await start();
  return {
    url: url.toString(),
    name: `127.0.0.1:${port}`,
    start,
    stop,
    pauseReplay: () => onReplica(async (sql) => { await sql`SELECT pg_wal_replay_pause()`; }),
    resumeReplay: () => onReplica(async (sql) => { await sql`SELECT pg_wal_replay_resume()`; }),
    async caughtUp() {
      const lsn = (await admin<{ lsn: string }[]>`SELECT pg_current_wal_lsn()::text AS lsn`)[0]!.lsn;
      await onReplica((sql) => waitFor(
        async () => (await sql<{ ok: boolean }[]>`SELECT pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn AS ok`)[0]!.ok,
        `replica ${index} to replay ${lsn}`,
      ));
    },
    async destroy() {
      await stop();
    },
  };
}
