/**
 * WORKERS=N: the real `npm start` with a primary and worker processes sharing the port. Requests are spread over
 * the workers, a killed worker is replaced, SIGTERM drains every worker (requests in flight complete) and exits 0,
 * and with the embedded default the primary starts PostgreSQL once and POST /shutdown in a worker stops it all.
 *
 * Which process served a request is read from the access log lines (each JSON line carries its `pid`), so
 * nothing is added to responses for the test's sake.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import postgres from 'postgres';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { userBody } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { sendAlone as send, startServer, type ServerProcess } from './support/server.ts';

interface LogLine {
  pid: number;
  msg: string;
  route?: string;
  workerPid?: number;
  [key: string]: unknown;
}

/** The JSON log lines written so far (stdout of the primary and of every worker). */
function logLines(server: ServerProcess): LogLine[] {
  return server.output().split('\n').flatMap((line) => {
    if (!line.startsWith('{')) return [];
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });
}


async function waitFor<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 30_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Pids of the workers that have announced they listen, in order, per the primary's log lines. */
const listeningWorkers = (server: ServerProcess) =>
  logLines(server).filter((l) => l.pid === server.pid && l.msg === 'worker listening').map((l) => l.workerPid!);

/** Waits until `n` workers listen (the server helper returns as soon as the first one answers). */
const allListening = (server: ServerProcess, n: number) =>
  waitFor(() => listeningWorkers(server).length >= n && listeningWorkers(server), `${n} workers listening`);

/** Pids that wrote an access line for `route` after the first `skip` log lines. */
function servingPids(server: ServerProcess, route: string, skip = 0): Set<number> {
  return new Set(logLines(server).slice(skip).filter((l) => l.msg === 'request completed' && l.route === route).map((l) => l.pid));
}

/**
 * Reads `/users/{id}` 20 times, each on a connection of its own, and returns the pids that served them once the
 * access lines of at least two processes are in. Those lines leave through an asynchronous destination, so a
 * response can reach us before its line does.
 */
async function readsServedBy(server: ServerProcess, id: string, what: string, timeoutMs?: number): Promise<Set<number>> {
  const skip = logLines(server).length;
  const answers = await Promise.all(Array.from({ length: 20 }, () => send(server.baseUrl, 'GET', `/users/${id}`)));
  assert.deepEqual(answers.map((a) => a.status), Array(20).fill(200));
  return waitFor(() => {
    const p = servingPids(server, '/users/:id', skip);
    return p.size >= 2 && p;
  }, what, timeoutMs);
}

describe('WORKERS configuration', () => {
  test('defaults to 1; auto is one per core; anything else is refused with a message naming WORKERS', () => {
    assert.equal(loadConfig({}).workers, 1);
    assert.equal(loadConfig({ WORKERS: '3' }).workers, 3);
    assert.equal(loadConfig({ WORKERS: 'auto' }).workers, availableParallelism());
    for (const bad of ['0', '-1', '1.5', 'two', '257', '']) {
      assert.throws(() => loadConfig({ WORKERS: bad }), (err: Error) => err instanceof ConfigError && /WORKERS/.test(err.message), bad);
    }
  });
});

describe('WORKERS=2 on a configured database', () => {
  let db: TestDatabase;
  let sql: postgres.Sql;
  let server: ServerProcess;
  let userId: string;

  before(async () => {
    db = await createTestDatabase();
    sql = postgres(db.url, { max: 2, onnotice: () => {} });
    // A pool as large as the requests the SIGTERM test holds, so each of them waits inside the database however
    // the primary spreads them (round robin hands a connection to the next free worker, not strictly in turn).
    server = await startServer({ DATABASE_URL: db.url, WORKERS: '2', SHUTDOWN_TIMEOUT: '20', POOL_MAX: '20' });
    await allListening(server, 2);
    const created = await send(server.baseUrl, 'POST', '/users', userBody());
    assert.equal(created.status, 201, created.body);
    userId = (JSON.parse(created.body) as { id: string }).id;
  });
  after(async () => {
    await server?.stop('SIGKILL');
    await sql?.end();
    await db?.destroy();
  });

  test('the primary logs first and serves nothing; two worker processes serve the requests', async () => {
    const lines = logLines(server);
    assert.equal(lines[0]!.pid, server.pid, 'the first line is the primary\'s');
    assert.ok(lines.some((l) => l.pid === server.pid && l.msg === 'starting workers' && l.workers === 2));
    const workers = listeningWorkers(server);
    assert.equal(new Set(workers).size, 2);
    assert.ok(!workers.includes(server.pid));

    const pids = await readsServedBy(server, userId, 'access lines from two workers');
    assert.deepEqual([...pids].sort(), [...workers].sort());
  });

  test('a killed worker is replaced and the service keeps answering meanwhile', async () => {
    const [victim, survivor] = listeningWorkers(server);
    process.kill(victim!, 'SIGKILL');
    await waitFor(() => logLines(server).some((l) => l.msg === 'worker exited unexpectedly; restarting it' && l.workerPid === victim), 'the primary noticing');
    // The survivor answers while the replacement starts.
    assert.equal((await send(server.baseUrl, 'GET', `/users/${userId}`)).status, 200);
    const replacement = await waitFor(() => listeningWorkers(server).find((p) => p !== victim && p !== survivor), 'a replacement worker');

    const pids = await readsServedBy(server, userId, 'access lines from the survivor and the replacement');
    assert.deepEqual([...pids].sort(), [survivor!, replacement].sort());
  });

  test('SIGTERM with 20 requests in flight on both workers: all complete with 200, then every process exits 0', async () => {
    // Updates of a row locked by another transaction wait inside the database: real work in flight.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const tx = sql.begin(async (t) => {
      await t`SELECT id FROM users WHERE id = ${userId} FOR UPDATE`;
      locked();
      await held;
    });
    await isLocked;
    const skip = logLines(server).length;
    const inflight = Array.from({ length: 20 }, (_, i) => send(server.baseUrl, 'PATCH', `/users/${userId}`, { age: i }));
    await waitFor(async () => Number((await sql`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = 'spate' AND wait_event_type = 'Lock'`)[0]!.n) === 20, 'every update waiting on the lock');

    const exit = server.stop('SIGTERM');
    await waitFor(() => logLines(server).filter((l) => l.msg === 'shutting down').length >= 3, 'primary and workers shutting down');
    release();
    await tx;
    const answers = await Promise.all(inflight);
    assert.deepEqual(answers.map((a) => a.status), Array(20).fill(200));
    assert.equal(await exit, 0, server.output());

    const lines = logLines(server);
    assert.ok(servingPids(server, '/users/:id', skip).size >= 2, 'the requests in flight were on both workers');
    const workers = new Set(lines.filter((l) => l.msg === 'worker stopped').map((l) => { assert.equal(l.code, 0); return l.workerPid; }));
    assert.equal(workers.size, 2);
    assert.ok(lines.some((l) => l.pid === server.pid && l.msg === 'stopped' && l.exitCode === 0));
  });
});

describe('WORKERS=2 with the embedded default', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'spate-data-'));
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  test('the primary starts PostgreSQL once for all workers; POST /shutdown in one worker stops the whole service', async () => {
    const server = await startServer({ DATA_DIR: dataDir, WORKERS: '2' });
    let requested = false;
    try {
      await allListening(server, 2);
      const starts = logLines(server).filter((l) => l.msg === 'starting embedded PostgreSQL');
      assert.deepEqual(starts.map((l) => l.pid), [server.pid]);
      assert.ok(existsSync(join(dataDir, 'pg', 'postmaster.pid')));

      // Both workers share one database: what one writes, the other reads.
      const created = await send(server.baseUrl, 'POST', '/users', userBody({ name: 'Shared' }));
      assert.equal(created.status, 201, created.body);
      const { id } = JSON.parse(created.body) as { id: string };
      assert.equal((await readsServedBy(server, id, 'access lines from both workers', 5000)).size, 2);

      const res = await send(server.baseUrl, 'POST', '/shutdown');
      assert.equal(res.status, 200, res.body);
      requested = true;
    } finally {
      // After POST /shutdown, SIGCONT is a no-op that only waits for the exit; after a failure, stop it for real.
      assert.equal(await server.stop(requested ? 'SIGCONT' : 'SIGTERM'), 0, server.output());
    }
    const lines = logLines(server);
    assert.ok(lines.some((l) => l.pid === server.pid && l.msg === 'shutting down' && l.reason === 'POST /shutdown'));
    assert.equal(lines.filter((l) => l.msg === 'worker stopped' && l.code === 0).length, 2);
    assert.ok(!existsSync(join(dataDir, 'pg', 'postmaster.pid')), 'the embedded PostgreSQL was stopped');
  });
});
