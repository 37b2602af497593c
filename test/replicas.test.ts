/**
 * Read replicas (docs/operations.md, "Read replicas") against a real streaming replica made from the test's own
 * primary (test/support/replica.ts): list and stream reads go to the replica while its measured lag is within
 * REPLICA_MAX_LAG_MS; a paused replica is left once its lag passes the bound; a stopped one costs clients no
 * error; a write's X-Consistency-Token makes later reads see it; /health and /metrics show the replica's lag.
 *
 * Three apps share the one primary and replica, each configured for what it shows: `strict` (a bound of 1.5 s,
 * polled every 100 ms), `lenient` (a bound no test reaches, so its reads stay on the replica while it answers),
 * and two `unpolled` apps (probed once at start only, so a replica that stops is found out by a failed read: one
 * finds out by a list, the other by a stream).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import { loadConfig, ConfigError } from '../src/platform/config.ts';
import { startApp, userBody } from './support/app.ts';
import { startReplicatedDatabase, type ReplicatedDatabase, type TestReplica } from './support/replica.ts';
import { promtool } from './support/promtool.ts';
import { jobEnded } from './bulk-support.ts';

const STRICT_LAG_MS = 1500;
const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

interface ReplicaView { name: string; state: string; lag_ms: number | null; lag_bytes: number | null; replay_paused: boolean }

async function replicaHealth(app: FastifyInstance): Promise<ReplicaView> {
  const res = await app.inject({ method: 'GET', url: '/health' });
  assert.equal(res.statusCode, 200);
  const replicas = res.json().replicas as ReplicaView[];
  assert.equal(replicas.length, 1);
  assert.deepEqual(res.json().dependencies.replicas, replicas, 'dependencies lists the replicas as the field of old does');
  return replicas[0]!;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const stateIs = (app: FastifyInstance, state: string, ms?: number) =>
  until(`replica ${state}`, async () => { const r = await replicaHealth(app); return r.state === state ? r : undefined; }, ms);

/**
 * The unpolled apps' poll period: long enough that a stopped replica is found out by a failed read within a test.
 * Their one probe at start can fail on a loaded machine (CI at load 9); the next comes a period later.
 */
const UNPOLLED_POLL_MS = 60_000;

async function listedIds(app: FastifyInstance, headers: Record<string, string> = {}): Promise<string[]> {
  const res = await app.inject({ method: 'GET', url: '/users?limit=10000', headers });
  assert.equal(res.statusCode, 200, res.body);
  return (res.json() as { id: string }[]).map((u) => u.id);
}

async function replicaReads(app: FastifyInstance): Promise<number> {
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  return (res.json().database_replicas as { reads: number }[])[0]!.reads;
}

describe('configuration', () => {
  const base = { DATABASE_URL: 'postgres://u:p@127.0.0.1:5/db' };
  test('DATABASE_REPLICA_URLS is parsed with its defaults', () => {
    const c = loadConfig({ ...base, DATABASE_REPLICA_URLS: ' postgres://a:b@h1:5433/db , postgresql://a:b@h2/db ' });
    assert.deepEqual(c.replicas, { urls: ['postgres://a:b@h1:5433/db', 'postgresql://a:b@h2/db'], maxLagMs: 1000, pollMs: 200 });
    assert.equal(loadConfig(base).replicas, undefined);
  });
  test('bad values stop the start with a message naming the variable', () => {
    const bad: Record<string, string>[] = [
      { DATABASE_REPLICA_URLS: 'mysql://h/db' },
      { DATABASE_REPLICA_URLS: 'postgres://h/db,postgres://h/db' },
      { DATABASE_REPLICA_URLS: 'postgres://h/db', REPLICA_MAX_LAG_MS: '300', REPLICA_POLL_MS: '200' },
      { DATABASE_REPLICA_URLS: 'postgres://h/db', REPLICA_MAX_LAG_MS: '0' },
    ];
    for (const env of bad) {
      assert.throws(() => loadConfig({ ...base, ...env }), (err: unknown) =>
        err instanceof ConfigError && /DATABASE_REPLICA_URLS|REPLICA_/.test(err.message), JSON.stringify(env));
    }
    assert.throws(() => loadConfig({ CASSANDRA_HOSTS: 'h', DATABASE_REPLICA_URLS: 'postgres://h/db' }), ConfigError);
  });
});

describe('read replicas on a real streaming replica', () => {
  let db: ReplicatedDatabase;
  let replica: TestReplica;
  let direct: postgres.Sql;
  let strict: FastifyInstance;
  let lenient: FastifyInstance;
  let unpolled: FastifyInstance;
  let unpolledStream: FastifyInstance;
  const exportsDir = mkdtempSync(join(tmpdir(), 'spate-replica-exports-'));

  /** A row written on the primary beside the app. */
  async function insertDirect(): Promise<string> {
    const [row] = await direct<{ id: string }[]>`INSERT INTO users (id, name, email, age, created_at, updated_at)
      VALUES (gen_random_uuid(), 'Direct', 'direct@example.com', 40, now(), now()) RETURNING id::text`;
    return row!.id;
  }

  before(async () => {
    db = await startReplicatedDatabase(1);
    replica = db.replicas[0]!;
    direct = postgres(db.primaryUrl, { max: 1, onnotice: () => {} });
    const env = (lag: number, poll: number) => ({
      DATABASE_REPLICA_URLS: replica.url, REPLICA_MAX_LAG_MS: String(lag), REPLICA_POLL_MS: String(poll), EXPORTS_DIR: exportsDir,
    });
    strict = await startApp(db.primaryUrl, env(STRICT_LAG_MS, 100));
    lenient = await startApp(db.primaryUrl, env(3_600_000, 100));
    // The schema the apps created reaches the replica before any read there, and before the unpolled apps take
    // their one measurement.
    await replica.caughtUp();
    unpolled = await startApp(db.primaryUrl, env(3_600_000, UNPOLLED_POLL_MS));
    unpolledStream = await startApp(db.primaryUrl, env(3_600_000, UNPOLLED_POLL_MS));
  });

  after(async () => {
    await Promise.all([strict?.close(), lenient?.close(), unpolled?.close(), unpolledStream?.close()]);
    await direct?.end();
    await db?.destroy();
    rmSync(exportsDir, { recursive: true, force: true });
  });

  test('/health and /metrics show the replica with its measured lag; list reads go to it', async (t) => {
    const seen = await stateIs(strict, 'up');
    assert.equal(seen.name, replica.name);
    assert.ok(seen.lag_ms !== null && seen.lag_ms >= 0 && seen.lag_ms <= STRICT_LAG_MS, `lag ${seen.lag_ms}`);
    assert.equal(seen.replay_paused, false);

    const before = await replicaReads(strict);
    await listedIds(strict);
    assert.equal(await replicaReads(strict), before + 1, 'the list was read on the replica');

    const metrics = (await strict.inject({ method: 'GET', url: '/metrics' })).json();
    assert.equal(metrics.database_replicas[0].name, replica.name);
    assert.ok(`replica:${replica.name}` in metrics.database_pools, 'the replica pool is listed');
    const text = (await strict.inject({ method: 'GET', url: '/metrics/prometheus' })).body;
    assert.match(text, new RegExp(`^db_replica_up\\{replica="${replica.name}"\\} 1$`, 'm'));
    assert.match(text, new RegExp(`^db_replica_lag_seconds\\{replica="${replica.name}"\\} [\\d.e-]+$`, 'm'));
    assert.match(text, new RegExp(`^db_replica_reads_total\\{replica="${replica.name}"\\} [1-9]\\d*$`, 'm'));
    if (hasPromtool || process.env.CI) assert.deepEqual(await promtool(text), { out: '', code: 0 });
    else t.diagnostic('promtool not installed (apt-get install prometheus): exposition not linted');
    assert.equal((await strict.inject({ method: 'GET', url: '/openapi.json' })).statusCode, 200);
  });

  test('writes answer with a consistency token; a malformed token is refused and changes nothing', async () => {
    const created = await lenient.inject({ method: 'POST', url: '/users', payload: userBody() });
    assert.equal(created.statusCode, 201);
    assert.match(String(created.headers['x-consistency-token']), /^[0-9A-F]+\/[0-9A-F]+$/);
    const id = created.json().id as string;
    for (const method of ['PATCH', 'PUT'] as const) {
      const res = await lenient.inject({ method, url: `/users/${id}`, payload: { age: 41 } });
      assert.equal(res.statusCode, 200);
      assert.ok(res.headers['x-consistency-token'], `${method} answers with a token`);
    }
    assert.ok((await lenient.inject({ method: 'POST', url: '/users/batch', payload: [userBody()] })).headers['x-consistency-token']);
    assert.ok((await lenient.inject({ method: 'DELETE', url: `/users/${id}` })).headers['x-consistency-token']);

    const count = (await direct<{ n: number }[]>`SELECT count(*)::int AS n FROM users`)[0]!.n;
    for (const token of ['nonsense', '0/XYZ', '1/2/3', `${'F'.repeat(9)}/0`]) {
      const headers = { 'x-consistency-token': token };
      for (const url of ['/users', '/users/stream?limit=5']) {
        const res = await lenient.inject({ method: 'GET', url, headers });
        assert.equal(res.statusCode, 400, `${url} ${token}`);
        assert.deepEqual(res.json(), { detail: 'Invalid consistency token' });
      }
      const write = await lenient.inject({ method: 'POST', url: '/users', headers, payload: userBody() });
      assert.equal(write.statusCode, 400);
      assert.deepEqual(write.json(), { detail: 'Invalid consistency token' });
    }
    const later = (await direct<{ n: number }[]>`SELECT count(*)::int AS n FROM users`)[0]!.n;
    assert.equal(later, count, 'a refused write stored nothing');
  });

  test('paused replica: stale within the bound, left once lag passes it; a token reads its own write', async () => {
    await Promise.all([stateIs(strict, 'up'), stateIs(lenient, 'up')]);
    await replica.pauseReplay();
    try {
      const hidden = await insertDirect();
      const acked = Date.now();
      // The replica lacks a row acknowledged at `acked`, so an honest lag figure is at least the time since.
      for (let i = 0; i < 5; i++) {
        const asked = Date.now();
        const view = await replicaHealth(strict);
        assert.ok(view.lag_ms !== null && view.lag_ms >= asked - acked, `lag ${view.lag_ms} ms, the row is ${asked - acked} ms old`);
        await sleep(100);
      }
      // The lenient app's bound is far off: its list still comes from the paused replica, without the new row.
      assert.ok(!(await listedIds(lenient)).includes(hidden), 'a read within the bound was served by the replica');

      // Read your writes: the token of a write through the app makes the next read see it, replica paused or not.
      const created = await lenient.inject({ method: 'POST', url: '/users', payload: userBody() });
      const token = String(created.headers['x-consistency-token']);
      const mine = created.json().id as string;
      assert.ok(!(await listedIds(lenient)).includes(mine), 'without its token the write is not yet on the replica');
      const withToken = await listedIds(lenient, { 'x-consistency-token': token });
      assert.ok(withToken.includes(mine) && withToken.includes(hidden), 'with its token the read sees the write');
      const streamed = await lenient.inject({ method: 'GET', url: '/users/stream?format=ndjson&limit=100000', headers: { 'x-consistency-token': token } });
      assert.equal(streamed.statusCode, 200);
      assert.ok(streamed.body.includes(mine), 'a stream with the token sees the write');

      // The strict app measures the lag growing and, past 1.5 s, reads on the primary.
      const lagging = await stateIs(strict, 'lagging');
      assert.ok(lagging.lag_ms !== null && lagging.lag_ms > STRICT_LAG_MS, `lag ${lagging.lag_ms}`);
      assert.equal(lagging.replay_paused, true);
      const reads = await replicaReads(strict);
      assert.ok((await listedIds(strict)).includes(hidden), 'past the bound the list comes from the primary');
      assert.equal(await replicaReads(strict), reads, 'and not from the replica');
      const text = (await strict.inject({ method: 'GET', url: '/metrics/prometheus' })).body;
      assert.match(text, new RegExp(`^db_replica_up\\{replica="${replica.name}"\\} 0$`, 'm'));
    } finally {
      await replica.resumeReplay();
    }
    const back = await stateIs(strict, 'up');
    assert.ok(back.lag_ms !== null && back.lag_ms <= STRICT_LAG_MS);
  });

  test('stopped replica: reads fall back to the primary with no error, and it serves again once back', async () => {
    await replica.caughtUp();
    for (const app of [unpolled, unpolledStream]) {
      await stateIs(app, 'up', UNPOLLED_POLL_MS + 15_000);
      await listedIds(app); // its pool holds a connection to the replica now
    }
    await replica.stop();
    try {
      const fresh = await insertDirect();
      // The unpolled apps last saw the replica up: these reads are sent to it, fail there before anything was
      // sent, and are answered by the primary.
      assert.ok((await listedIds(unpolled)).includes(fresh), 'the list was answered by the primary');
      const streamed = await unpolledStream.inject({ method: 'GET', url: '/users/stream?format=ndjson&limit=100000' });
      assert.equal(streamed.statusCode, 200);
      assert.ok(streamed.body.includes(fresh), 'the stream was answered by the primary');
      for (const app of [unpolled, unpolledStream]) {
        assert.equal((await replicaHealth(app)).state, 'down', 'the failed read marked the replica down');
      }
      const down = await stateIs(strict, 'down');
      assert.equal(down.lag_ms === null || down.lag_ms >= 0, true);
      for (const app of [strict, lenient, unpolled]) {
        const res = await app.inject({ method: 'GET', url: '/users/stream?format=ndjson&limit=100000' });
        assert.equal(res.statusCode, 200);
        assert.ok(res.body.includes(fresh), 'streams come from the primary');
        assert.ok((await listedIds(app)).includes(fresh));
        assert.equal((await app.inject({ method: 'GET', url: '/health' })).json().status, 'healthy');
      }
      const text = (await strict.inject({ method: 'GET', url: '/metrics/prometheus' })).body;
      assert.match(text, new RegExp(`^db_replica_up\\{replica="${replica.name}"\\} 0$`, 'm'));
    } finally {
      await replica.start();
    }
    await stateIs(strict, 'up');
    const reads = await replicaReads(strict);
    await listedIds(strict);
    assert.equal(await replicaReads(strict), reads + 1, 'back up, the replica serves again');
  });
  test('export from a paused replica: the write\'s token goes with the job, so the file has the write', async () => {
    // Each app's workers read through its own router, and the strict one leaves a paused replica by itself: the
    // lenient app alone runs jobs now, so a read without the token is the replica's.
    await Promise.all([strict, unpolled, unpolledStream].map((app) => app.jobs.stopWorkers(0)));
    await replica.caughtUp();
    await stateIs(lenient, 'up');
    const exported = async (headers: Record<string, string>) => {
      const res = await lenient.inject({ method: 'POST', url: '/users/export', payload: { format: 'ndjson' }, headers });
      assert.equal(res.statusCode, 202, res.body);
      return jobEnded(lenient, res.json().job.id as string, 30_000);
    };
    const file = async (headers: Record<string, string>) => {
      const job = await exported(headers);
      assert.equal(job.state, 'succeeded', job.error ?? '');
      return (await lenient.inject({ method: 'GET', url: job.result.download_url as string })).body;
    };
    await replica.pauseReplay();
    try {
      const created = await lenient.inject({ method: 'POST', url: '/users', payload: userBody() });
      assert.equal(created.statusCode, 201);
      const token = String(created.headers['x-consistency-token']);
      const mine = created.json().id as string;
      assert.ok(!(await file({})).includes(mine), 'without the token the export was read on the paused replica');
      assert.ok((await file({ 'x-consistency-token': token })).includes(mine), 'with it the export has the write');
      const jobsBefore = ((await lenient.inject({ url: '/jobs?limit=100' })).json() as unknown[]).length;
      const bad = await lenient.inject({ method: 'POST', url: '/users/export', payload: { format: 'ndjson' }, headers: { 'x-consistency-token': 'nonsense' } });
      assert.equal(bad.statusCode, 400, bad.body);
      assert.deepEqual(bad.json(), { detail: 'Invalid consistency token' });
      assert.equal(((await lenient.inject({ url: '/jobs?limit=100' })).json() as unknown[]).length, jobsBefore, 'a bad token enqueues nothing');
    } finally {
      await replica.resumeReplay();
    }
  });
});
