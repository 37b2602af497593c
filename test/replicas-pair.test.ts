/**
 * Two real streaming replicas of one primary (test/support/replica.ts): reads are spread over both, and when one
 * stops or lags the other takes its reads, so the primary serves only when neither may.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { startApp } from './support/app.ts';
import { startReplicatedDatabase, type ReplicatedDatabase } from './support/replica.ts';

interface Replica { name: string; state: string; reads: number }

let db: ReplicatedDatabase;
let app: FastifyInstance;

before(async () => {
  db = await startReplicatedDatabase(2);
  app = await startApp(db.primaryUrl, {
    DATABASE_REPLICA_URLS: db.replicas.map((r) => r.url).join(','), REPLICA_MAX_LAG_MS: '1500', REPLICA_POLL_MS: '100',
  });
  await Promise.all(db.replicas.map((r) => r.caughtUp()));
});

after(async () => {
  await app?.close();
  await db?.destroy();
});

async function replicas(): Promise<Replica[]> {
  return (await app.inject({ method: 'GET', url: '/metrics' })).json().database_replicas as Replica[];
}

async function states(want: string[]): Promise<Replica[]> {
  for (let end = Date.now() + 30_000; ; await sleep(50)) {
    const now = await replicas();
    if (now.map((r) => r.state).join() === want.join()) return now;
    if (Date.now() > end) throw new Error(`replicas ${now.map((r) => r.state).join()}, wanted ${want.join()}`);
  }
}

async function listTimes(n: number): Promise<void> {
  for (let i = 0; i < n; i++) assert.equal((await app.inject({ method: 'GET', url: '/users?limit=5' })).statusCode, 200);
}

test('reads are spread over both replicas', async () => {
  const before = await states(['up', 'up']);
  await listTimes(10);
  const afterReads = await replicas();
  assert.deepEqual(afterReads.map((r, i) => r.reads - before[i]!.reads), [5, 5]);
});

test('one replica stopped or paused: the other takes every read', async () => {
  const [first, second] = db.replicas as [typeof db.replicas[0], typeof db.replicas[0]];
  await first.stop();
  try {
    const before = await states(['down', 'up']);
    await listTimes(6);
    const now = await replicas();
    assert.deepEqual(now.map((r, i) => r.reads - before[i]!.reads), [0, 6]);
  } finally {
    await first.start();
  }
  await states(['up', 'up']);
  await second.pauseReplay();
  try {
    // Something for the paused replica to miss, so its lag grows past the bound.
    await app.inject({ method: 'POST', url: '/users', payload: { name: 'Lag', email: 'lag@example.com', age: 1 } });
    const before = await states(['up', 'lagging']);
    await listTimes(6);
    const now = await replicas();
    assert.deepEqual(now.map((r, i) => r.reads - before[i]!.reads), [6, 0]);
  } finally {
    await second.resumeReplay();
  }
  await states(['up', 'up']);
});
