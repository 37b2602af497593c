/**
 * The Cassandra outbox as the relay uses it (src/db/cassandra/outbox-take.ts, docs/webhooks.md "Cassandra"), on
 * a real Cassandra 2.1 node: events in the API's shape from the rows as written; two relays at once, one holding
 * the shards' leases and the other taking nothing while it lives, every event taken exactly once; a relay that
 * fails leaving its events; a dead relay's shards taken over once its leases expire, and a stopping relay's at
 * once. Skipped without Java, except under CI=true.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Backend } from '../src/db/backend.ts';
import type { OutboxEvent, OutboxStore } from '../src/db/events-store.ts';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { waitFor } from './jobs-support.ts';

exitWhenDone();

const user = (n: number) => ({ name: `Outbox ${n}`, email: `outbox${n}@example.com`, age: n % 100 });

describe('the Cassandra outbox', { skip: skipReason('cassandra') }, () => {
  let backend: TestBackend;
  let a: Backend;
  let b: Backend;
  before(async () => {
    backend = await startBackend('cassandra');
    // One after the other: two instances creating one table at once can disagree on its schema (docs/cassandra.md).
    a = await backend.openBackend();
    while (!(await a.probes.schemaReady())) await new Promise((r) => setTimeout(r, 50));
    b = await backend.openBackend();
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await backend?.destroy();
  });

  /** Takes until a take comes back empty twice running; returns every event taken. */
  async function drain(store: OutboxStore, into: OutboxEvent[] = []): Promise<OutboxEvent[]> {
    for (let empty = 0; empty < 2;) {
      const n = await store.take(100, async (events) => { into.push(...events); });
      empty = n === 0 ? empty + 1 : 0;
    }
    return into;
  }

  test('a create, an update and a delete: events in the API\'s shape, then the deleted row gone', async () => {
    const u = await a.users.create(user(1));
    const updated = (await a.users.update(u.id, { age: 77 }))!;
    await a.users.delete(u.id);
    const events = await drain(a.outbox);
    assert.deepEqual(events.map((e) => [e.type, e.occurredAt]), [
      ['user.created', u.created_at.toISOString()], ['user.updated', updated.updated_at.toISOString()], ['user.deleted', events[2]!.occurredAt],
    ]);
    assert.deepEqual(events[0]!.data, { ...u, created_at: u.created_at.toISOString(), updated_at: u.updated_at.toISOString() });
    assert.deepEqual(events[1]!.data, { ...u, age: 77, created_at: u.created_at.toISOString(), updated_at: updated.updated_at.toISOString() });
    assert.deepEqual(events[2]!.data, { id: u.id });
    assert.equal(new Set(events.map((e) => e.id)).size, 3);
    assert.deepEqual(await backend.direct('SELECT id FROM {ks}.users WHERE id = ?', [u.id]), []);
    assert.deepEqual(await drain(a.outbox), [], 'nothing left');
  });

  test('two relays at once: one holds the leases, the other takes nothing; every event exactly once', async () => {
    const ids = (await Promise.all(Array.from({ length: 300 }, (_, i) => a.users.create(user(100 + i))))).map((u) => u.id);
    const [byA, byB] = [[] as OutboxEvent[], [] as OutboxEvent[]];
    await Promise.all([drain(a.outbox, byA), drain(b.outbox, byB)]);
    assert.equal(byB.length, 0, 'the second relay found every shard leased');
    assert.deepEqual(byA.map((e) => (e.data as { id: string }).id).sort(), [...ids].sort(), 'every event exactly once');
  });

  test('a relay that fails leaves its events for the next take', async () => {
    const u = await a.users.create(user(500));
    await assert.rejects(a.outbox.take(100, async () => { throw new Error('queue away'); }));
    assert.deepEqual((await drain(a.outbox)).map((e) => (e.data as { id: string }).id), [u.id]);
  });

  test('a dead relay\'s shards are taken over once its leases expire; a stopping relay hands them back at once', async () => {
    // `a` stops taking without a word (as a killed process): its leases run out, and `b` takes its events.
    const u = await a.users.create(user(600));
    const byB: OutboxEvent[] = [];
    const t0 = Date.now();
    await waitFor(async () => { await b.outbox.take(100, async (events) => { byB.push(...events); }); return byB.length > 0; }, 30_000, 200);
    assert.deepEqual(byB.map((e) => (e.data as { id: string }).id), [u.id]);
    const tookOver = Date.now() - t0;
    assert.ok(tookOver > 2000, `not before the leases expired (${tookOver} ms)`);
    // `b` stops as the relay stops (its listener's stop): `a` takes over at its next try of the free shards.
    await (await b.outbox.listen(() => {}))();
    const v = await b.users.create(user(601));
    const byA: OutboxEvent[] = [];
    await waitFor(async () => { await a.outbox.take(100, async (events) => { byA.push(...events); }); return byA.length > 0; }, 8_000, 200);
    assert.deepEqual(byA.map((e) => (e.data as { id: string }).id), [v.id]);
  });
});
