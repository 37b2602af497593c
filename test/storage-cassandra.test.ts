/**
 * The Cassandra backend against a real Cassandra 2.1 node started for this file (tools/cassandra-harness/): first
 * what is particular to this adapter (the replica check, the error mapping, page-by-page fetching, cursor
 * integrity, the keyspace, starting while Cassandra is down, the operations endpoints), then the shared storage
 * contract (test/storage.contract.ts), which stops and restarts the node last. Without Java everything here is
 * skipped with the reason, except under CI=true.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, errors as driverErrors, types } from 'cassandra-driver';
import { httpOf } from '../src/platform/http/status.ts';
import type { AppError } from '../src/platform/errors.ts';
import { satisfies, type Level } from '../src/db/cassandra/availability.ts';
import { toAppError } from '../src/db/cassandra/errors.ts';
import { openCassandra } from '../src/db/cassandra/index.ts';
import { CURSOR_TAG, encodeCursor } from '../src/db/cursor.ts';
import type { UsersStore } from '../src/db/users-store.ts';
import { storageContract } from './storage.contract.ts';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { LOCAL_DATA_CENTER, findFreePorts } from '../tools/cassandra-harness/index.ts';

exitWhenDone();

const skip = skipReason('cassandra');
let started: Promise<TestBackend> | undefined;
/** One node for the whole file: these tests and the contract share it; the contract stops it at the end. */
const backend = () => (started ??= startBackend('cassandra'));
const quiet = { info: () => {}, warn: () => {} };
const user = (n: number) => ({ name: `Specific ${n}`, email: `specific${n}@example.com`, age: n % 150 });

describe('replica check (availability.ts)', () => {
  const host = (datacenter: string, up: boolean) => ({ datacenter, isUp: () => up });
  const cases: [Level, boolean[], boolean][] = [
    ['QUORUM', [true, true, false], true],
    ['QUORUM', [true, false, false], false],
    ['ALL', [true, true, false], false],
    ['ONE', [false, false, true], true],
    ['TWO', [true, false, false], false],
    ['ANY', [false, false, false], true],
    ['SERIAL', [true, false, false], false],
  ];
  for (const [level, up, expected] of cases) {
    test(`${level} with ${up.filter(Boolean).length} of ${up.length} replicas up: ${expected}`, () => {
      assert.equal(satisfies(level, up.map((u) => host('dc1', u)), 'dc1'), expected);
    });
  }
  test('LOCAL_* levels count the local data center only; EACH_QUORUM needs a quorum in each', () => {
    const replicas = [host('dc1', true), host('dc1', false), host('dc1', false), host('dc2', true), host('dc2', true), host('dc2', true)];
    assert.equal(satisfies('QUORUM', replicas, 'dc1'), true);
    assert.equal(satisfies('LOCAL_QUORUM', replicas, 'dc1'), false);
    assert.equal(satisfies('LOCAL_QUORUM', replicas, 'dc2'), true);
    assert.equal(satisfies('LOCAL_ONE', replicas, 'dc1'), true);
    assert.equal(satisfies('EACH_QUORUM', replicas, 'dc2'), false);
  });
});

describe('error mapping (errors.ts)', () => {
  const codes = types.responseErrorCodes;
  const cases: [string, unknown, number][] = [
    ['NoHostAvailable, no host up', new driverErrors.NoHostAvailableError({}), 503],
    ['a driver error', new (driverErrors.DriverError as unknown as new (m: string) => Error)('Socket was closed'), 503],
    ['NoHostAvailable after Unavailable', new driverErrors.NoHostAvailableError({ a: new driverErrors.ResponseError(codes.unavailableException, 'x') }), 503],
    ['NoHostAvailable, every host timed out', new driverErrors.NoHostAvailableError({ a: new driverErrors.OperationTimedOutError('x'), b: new driverErrors.ResponseError(codes.readTimeout, 'x') }), 504],
    ['NoHostAvailable, a timeout and a refused connection', new driverErrors.NoHostAvailableError({ a: new driverErrors.OperationTimedOutError('x'), b: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) }), 503],
    ['Unavailable', new driverErrors.ResponseError(codes.unavailableException, 'x'), 503],
    ['Overloaded', new driverErrors.ResponseError(codes.overloaded, 'x'), 503],
    ['ReadTimeout', new driverErrors.ResponseError(codes.readTimeout, 'x'), 504],
    ['WriteTimeout', new driverErrors.ResponseError(codes.writeTimeout, 'x'), 504],
    ['OperationTimedOut', new driverErrors.OperationTimedOutError('x'), 504],
    ['Invalid (refused input)', new driverErrors.ResponseError(codes.invalid, 'x'), 400],
    ['Syntax error (our bug)', new driverErrors.ResponseError(codes.syntaxError, 'x'), 500],
    ['Server error', new driverErrors.ResponseError(codes.serverError, 'x'), 500],
    ['ECONNREFUSED', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 503],
    ['anything else', new TypeError('boom'), 500],
  ];
  for (const [label, err, status] of cases) {
    test(`${label} -> ${status}`, () => {
      const mapped = toAppError(err);
      const http = httpOf(mapped);
      assert.equal(http.status, status);
      assert.equal(mapped.cause, err, 'the original is kept for the log');
      if (status === 503) assert.equal(http.headers['retry-after'], '1');
      assert.doesNotMatch(String(mapped.detail), /x|boom|ECONN/);
    });
  }
});

describe('cassandra adapter on a real node', { skip }, () => {
  let b: TestBackend;
  let repo: UsersStore;
  let close: (() => Promise<void>) | undefined;
  let calls = 0;

  before(async () => {
    b = await backend();
    const opened = await b.openBackend({ onQuery: () => { calls++; } });
    repo = opened.users;
    close = () => opened.close();
    await repo.createMany(Array.from({ length: 45 }, (_, i) => user(i)));
  });
  after(async () => {
    await close?.();
  });

  test('a stream fetches one page per pull, never ahead, and nothing after the consumer stops', async () => {
    const pages = repo.stream({ limit: 1_000_000, fetchSize: 10 })[Symbol.asyncIterator]();
    const from = calls;
    assert.equal((await pages.next()).value.length, 10);
    assert.equal(calls - from, 1);
    await sleep(200);
    assert.equal(calls - from, 1, 'no read-ahead while the consumer waits');
    assert.equal((await pages.next()).value.length, 10);
    assert.equal(calls - from, 2);
    await pages.return!(undefined);
    await sleep(100);
    assert.equal(calls - from, 2, 'nothing after return()');
  });

  test('a cursor altered by one bit, or a forged paging state, is invalidCursor', async () => {
    const valid = (await repo.list({ limit: 3 })).nextCursor!;
    const raw = Buffer.from(valid, 'base64url');
    for (const i of [1, raw.length - 6, raw.length - 1]) {
      const bad = Buffer.from(raw);
      bad[i]! ^= 0x04;
      await assert.rejects(repo.list({ limit: 3, cursor: bad.toString('base64url') }), (e: AppError) => e.code === 'INVALID_CURSOR');
    }
    // A state with a valid checksum that the server cannot read (made by someone who knows the checksum).
    const keyspace = b.env.CASSANDRA_KEYSPACE!;
    for (const state of [Buffer.alloc(16), Buffer.from('deadbeef', 'hex')]) {
      const sum = createHash('sha256').update(keyspace).update('\0').update(state).digest().subarray(0, 4);
      const forged = encodeCursor(CURSOR_TAG.cassandra, Buffer.concat([state, sum]));
      await assert.rejects(repo.list({ limit: 3, cursor: forged }), (e: AppError) => e.code === 'INVALID_CURSOR');
    }
  });

  test('the keyspace keeps its replication and data when reopened with other settings; nothing is dropped', async () => {
    const keyspace = b.env.CASSANDRA_KEYSPACE!;
    const before = await b.countUsers();
    const other = await openCassandra({
      hosts: [b.env.CASSANDRA_HOSTS!], port: Number(b.env.CASSANDRA_PORT), keyspace, localDc: LOCAL_DATA_CENTER,
      protocolVersion: 3, replication: { strategy: 'SimpleStrategy', factor: 3 }, log: quiet,
    });
    try {
      assert.equal(await b.countUsers(), before);
      assert.equal((await other.users.list({ limit: 10_000 })).items.length, before);
    } finally {
      await other.close();
    }
    const client = new Client({ contactPoints: [`${b.env.CASSANDRA_HOSTS}:${b.env.CASSANDRA_PORT}`], localDataCenter: LOCAL_DATA_CENTER, protocolOptions: { port: Number(b.env.CASSANDRA_PORT), maxVersion: 3 } });
    try {
      await client.connect();
      const ks = (client.metadata.keyspaces as unknown as Record<string, { strategyOptions: Record<string, string> }>)[keyspace];
      assert.equal(ks?.strategyOptions.replication_factor, '1', 'created with the configured factor, never altered');
      // A table of the same name that is not ours: the start stops with the reason instead of misreading it.
      await client.execute("CREATE KEYSPACE IF NOT EXISTS foreign_ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
      await client.execute('CREATE TABLE IF NOT EXISTS foreign_ks.users (id uuid PRIMARY KEY, handle text)');
      await assert.rejects(
        openCassandra({ hosts: [b.env.CASSANDRA_HOSTS!], port: Number(b.env.CASSANDRA_PORT), keyspace: 'foreign_ks', localDc: LOCAL_DATA_CENTER, protocolVersion: 3, log: quiet }),
        /lacks columns name, email, age, created_at, updated_at/,
      );
    } finally {
      await client.shutdown();
    }
  });

  test('starts while Cassandra is unreachable: not ready, and 503 rather than an error', async () => {
    const [port] = await findFreePorts(['127.0.0.1'], 1);
    const t0 = performance.now();
    const down = await openCassandra({ hosts: ['127.0.0.1'], port: port!, keyspace: 'nowhere', localDc: LOCAL_DATA_CENTER, protocolVersion: 3, log: quiet });
    try {
      assert.ok(performance.now() - t0 < 5000);
      await assert.rejects(down.probes.ping(), (e: AppError) => e.kind === 'unavailable' || e.kind === 'timeout');
      assert.equal(await down.probes.schemaReady().catch(() => false), false);
      await assert.rejects(down.users.get('0190a3c4-0000-7000-8000-00000000abcd'), (e: AppError) => e.kind === 'unavailable');
      assert.equal(down.probes.pools().users.active, 0, 'pool figures work before the first connection');
    } finally {
      await down.close();
    }
  });

  test('HTTP: /health reports cassandra_connected; /metrics the driver figures; slow and stream endpoints', async () => {
    const app = await b.startApp();
    try {
      const health = (await app.inject('/health')).json();
      assert.deepEqual([health.status, health.backend, health.database_connected, health.cassandra_connected], ['healthy', 'cassandra', true, true]);
      assert.equal((await app.inject('/health/ready')).statusCode, 200);

      const perf = await app.inject('/performance/async?requests=20');
      assert.equal(perf.statusCode, 200, perf.body);
      assert.equal(perf.json().successful_requests, 20);

      const stream = await app.inject('/users/stream?limit=25&fetch_size=10');
      assert.equal(stream.statusCode, 200);
      assert.deepEqual([stream.json().users.length, stream.json().metadata.pages_fetched], [25, 3]);

      const metrics = (await app.inject('/metrics')).json();
      assert.equal(metrics.backend, 'cassandra');
      assert.equal(metrics.database_hosts.length, 1);
      assert.equal(metrics.database_hosts[0].up, true);
      assert.ok(metrics.database_hosts[0].open_connections >= 1);
      assert.ok(metrics.database_connections.max >= 1);
      const text = (await app.inject('/metrics/prometheus')).body;
      assert.match(text, /db_host_up\{host="127\.0\.0\.1:\d+"\} 1/);
      assert.match(text, /db_host_open_connections\{host=/);
      assert.match(text, /db_host_in_flight_requests\{host=/);

      const t0 = performance.now();
      const slow = await app.inject({ url: '/slow_query', headers: { 'x-request-timeout': '0.5' } });
      const took = performance.now() - t0;
      assert.deepEqual([slow.statusCode, slow.json()], [504, { detail: 'Gateway Timeout' }]);
      assert.ok(took >= 450 && took < 1500, `504 after ${took} ms`);
      const after = (await app.inject('/metrics')).json();
      assert.ok(after.database.errors_by_kind.timeout >= 1, 'the timeout is counted by kind');
    } finally {
      await app.close();
    }
  });

  test('HTTP: /slow_query is a real 5 s database operation', async () => {
    const app = await b.startApp();
    try {
      const before = (await app.inject('/metrics')).json().database.queries;
      const t0 = performance.now();
      const res = await app.inject('/slow_query');
      const took = performance.now() - t0;
      assert.deepEqual([res.statusCode, res.json()], [200, { message: 'Slow query completed' }]);
      assert.ok(took >= 5000 && took < 6500, `took ${took} ms`);
      const queries = (await app.inject('/metrics')).json().database.queries - before;
      assert.ok(queries > 50, `${queries} database reads during the 5 s`);
    } finally {
      await app.close();
    }
  });
});

storageContract('cassandra', async () => ({ backend: await backend() }), skip);
