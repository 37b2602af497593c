/**
 * The fault scenarios that apply to Cassandra, against `npm start` on one real Cassandra 2.1 node (started once
 * for the file by tools/cassandra-harness): the node hung (SIGSTOP) and killed (SIGKILL, then restarted) under a
 * write load, and the server SIGKILLed under a write load. In each: every acknowledged write (201) is in the
 * table afterwards, checked by id; every answer is 201, 503 or 504 within the request's deadline; writes come
 * back within a stated time of the node answering again; `/health/live` answers throughout.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, types } from 'cassandra-driver';
import { LOCAL_DATA_CENTER, startCassandraNode, type CassandraNode } from '../tools/cassandra-harness/index.ts';
import { exitWhenDone, skipReason } from './support/backends.ts';
import { timed } from './support/chaos.ts';
import { startRedis, type TestRedis } from './support/redis.ts';
import { startServer, type ServerProcess } from './support/server.ts';
import { byStatus, probeLiveness, writeLoad, type WriteRecord } from './support/write-load.ts';

exitWhenDone();

const FAULT_MS = Number(process.env.CHAOS_FAULT_MS ?? 3000);
const REQUEST_TIMEOUT_MS = 3000;
/** What a loaded 2-core machine (with a JVM on it) may add to a deadline. */
const SLACK_MS = 1000;
/** Writes are back this soon after the node answers again (the driver's reconnection runs 200 ms .. 2 s). */
const RECOVERY_MS = 5000;

const late = (records: WriteRecord[]) => records
  .filter((r) => r.ms > (r.timeoutS === undefined ? REQUEST_TIMEOUT_MS : r.timeoutS * 1000) + SLACK_MS)
  .map((r) => `${r.status} after ${Math.round(r.ms)} ms (deadline ${r.timeoutS ?? 'default'})`);

describe('Cassandra failing under a write load', { skip: skipReason('cassandra') }, () => {
  let node: CassandraNode;
  let redis: TestRedis;
  let env: Record<string, string>;
  let s: ServerProcess;
  const keyspace = `spate_chaos_${process.pid}`;
  before(async () => {
    // The Cassandra backend keeps its job queue in Redis (docs/jobs.md).
    [node, redis] = await Promise.all([startCassandraNode(), startRedis()]);
    env = {
      REDIS_URL: redis.url,
      CASSANDRA_HOSTS: node.host, CASSANDRA_PORT: String(node.cqlPort), CASSANDRA_KEYSPACE: keyspace,
      CASSANDRA_LOCAL_DC: LOCAL_DATA_CENTER, CASSANDRA_PROTOCOL_VERSION: '3',
      CASSANDRA_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    };
    s = await startServer(env, { timeoutMs: 120_000 });
    await ready(s);
  }, { timeout: 300_000 }); // a JVM's start on a loaded CI machine, beyond test:chaos's per-test timeout
  after(async () => {
    await s?.stop();
    await node?.stop();
    await redis?.stop();
  });

  async function ready(server: ServerProcess): Promise<void> {
    const started = performance.now();
    while ((await timed(`${server.baseUrl}/health/ready`, {}, 2000)).status !== 200) {
      if (performance.now() - started > 120_000) throw new Error('the server never became ready on Cassandra');
      await sleep(200);
    }
  }

  /** Of `ids`, those not in the users table, read at ALL from a client of the test's own. */
  async function missing(ids: string[]): Promise<string[]> {
    const client = new Client({
      contactPoints: [node.contactPoint], localDataCenter: LOCAL_DATA_CENTER, protocolOptions: { port: node.cqlPort, maxVersion: 3 },
      queryOptions: { consistency: types.consistencies.all, prepare: true },
    });
    try {
      await client.connect();
      const gone: string[] = [];
      for (let i = 0; i < ids.length; i += 100) {
        const chunk = ids.slice(i, i + 100);
        const rs = await client.execute(`SELECT id FROM "${keyspace}".users WHERE id IN ?`, [chunk]);
        const found = new Set(rs.rows.map((r) => String(r.get('id'))));
        gone.push(...chunk.filter((id) => !found.has(id)));
      }
      return gone;
    } finally {
      await client.shutdown();
    }
  }

  /** The write load and liveness probes around `fault` (which returns once the node answers again), then the checks. */
  async function underWriteLoad(name: string, fault: () => Promise<void>): Promise<void> {
    const load = writeLoad(s.baseUrl, { concurrency: 4, timeouts: [2, 2, 2, undefined] });
    const live = probeLiveness(s.baseUrl, 200, 1000);
    await sleep(1000);
    const before = load.acknowledged().length;
    await fault();
    const recoveredMs = await load.nextSuccess(RECOVERY_MS + 5000);
    await sleep(300);
    const records = await load.stop();
    const probes = await live.stop();
    const acknowledged = load.acknowledged();
    const lost = await missing(acknowledged);
    const summary = `${records.length} writes ${JSON.stringify(byStatus(records))}, slowest ${Math.round(Math.max(...records.map((r) => r.ms)))} ms; `
      + `writes back ${Math.round(recoveredMs ?? -1)} ms after the node answered; liveness ${probes.ok.length} ok / ${probes.failed.length} failed; `
      + `${acknowledged.length - lost.length} of ${acknowledged.length} acknowledged writes stored`;
    console.log(`# ${name}: ${summary}`);

    assert.ok(before > 0, 'writes succeeded before the fault');
    assert.deepEqual(lost, [], `every acknowledged write is in the table (${summary})`);
    assert.deepEqual(records.filter((r) => ![201, 503, 504].includes(r.status)).map((r) => `${r.status} ${r.detail}`), [],
      'every answer is 201, 503 or 504');
    assert.deepEqual(late(records), [], `no request outlived its deadline (${summary})`);
    assert.ok(recoveredMs !== undefined && recoveredMs < RECOVERY_MS, `writes back within ${RECOVERY_MS} ms (${summary})`);
    assert.deepEqual(probes.failed, [], `/health/live answered every probe within 1 s (${summary})`);
    assert.ok(records.some((r) => r.status !== 201), `the fault was seen (${summary})`);
  }

  test(`the node hung (SIGSTOP) for ${FAULT_MS} ms: answers within their deadlines, writes back within ${RECOVERY_MS} ms, none lost`, async () => {
    await underWriteLoad('Cassandra hung', async () => {
      node.freeze();
      try {
        await sleep(FAULT_MS);
      } finally {
        node.thaw();
      }
    });
  });

  test(`the node killed (SIGKILL) and restarted: answers within their deadlines, writes back within ${RECOVERY_MS} ms of CQL, none lost`, { timeout: 300_000 }, async () => {
    await underWriteLoad('Cassandra killed', async () => {
      node.kill();
      await sleep(1000);
      await node.restart();
    });
  });

  test('the server SIGKILLed under a write load: every acknowledged write is stored, and a new process serves them', async () => {
    const load = writeLoad(s.baseUrl, { concurrency: 6, timeouts: [10] });
    await sleep(1500);
    await s.stop('SIGKILL');
    const records = await load.stop();
    const acknowledged = load.acknowledged();
    const lost = await missing(acknowledged);
    console.log(`# server SIGKILL on Cassandra: ${records.length} writes ${JSON.stringify(byStatus(records))}; `
      + `${acknowledged.length - lost.length} of ${acknowledged.length} acknowledged writes stored`);
    assert.ok(acknowledged.length > 10, 'writes were acknowledged before the kill');
    assert.deepEqual(lost, [], 'every acknowledged write is in the table');
    s = await startServer(env, { timeoutMs: 120_000 });
    await ready(s);
    for (const id of [acknowledged[0]!, acknowledged.at(-1)!]) {
      assert.equal((await timed(`${s.baseUrl}/users/${id}`)).status, 200, `the new process serves ${id}`);
    }
  });
});
