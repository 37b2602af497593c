/**
 * The PostgreSQL outbox as the relay uses it (src/db/postgres/outbox.ts, docs/webhooks.md), on a real PostgreSQL:
 * events in the API's shape from the row as written, a row committed late below where the relay had got to still
 * taken, two relays at once never taking one event twice, a relay that fails leaving its events, rows written
 * before migration 0008 still relayed, and a committed write waking the listeners.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import postgres from 'postgres';
import { openBackend, type Backend } from '../src/db/backend.ts';
import type { OutboxEvent, OutboxStore } from '../src/db/events-store.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';

const quiet = { info: () => {}, warn: () => {} };

let db: TestDatabase;
let backend: Backend;
let sql: postgres.Sql;
let outbox: OutboxStore;

before(async () => {
  db = await createTestDatabase();
  backend = await openBackend(loadConfig({ DATABASE_URL: db.url, LOG_LEVEL: 'silent' }), { log: quiet });
  while (!(await backend.probes.schemaReady())) await new Promise((r) => setTimeout(r, 50));
  outbox = backend.outbox!;
  sql = postgres(db.url, { max: 4, onnotice: () => {} });
});
after(async () => {
  await backend?.close();
  await sql?.end();
  await db?.destroy();
});

/** Takes until a take comes back empty twice running; returns every event taken, in order. */
async function drain(store: OutboxStore, max = 100): Promise<OutboxEvent[]> {
  const all: OutboxEvent[] = [];
  for (let empty = 0; empty < 2;) {
    const n = await store.take(max, async (events) => { all.push(...events); });
    empty = n === 0 ? empty + 1 : 0;
  }
  return all;
}

/** An outbox row as a write records one, by SQL, for a user that need not exist. */
const recordDelete = (tx: postgres.Sql | postgres.TransactionSql, userId: string) =>
  tx`INSERT INTO outbox (type, occurred_at, user_id) VALUES ('user.deleted', now(), ${userId})`;

describe('the PostgreSQL outbox', () => {
  test('a create, an update and a delete give events in the API\'s shape, from the row as written', async () => {
    await drain(outbox);
    const created = await backend.users.create({ name: 'Ada', email: 'ada@example.com', age: 36 });
    const updated = (await backend.users.update(created.id, { age: 37 }))!;
    await backend.users.delete(created.id);
    const events = await drain(outbox);
    const iso = (d: Date) => d.toISOString();
    assert.deepEqual(events.map((e) => [e.type, e.occurredAt, e.data]), [
      ['user.created', iso(created.created_at), { id: created.id, name: 'Ada', email: 'ada@example.com', age: 36, created_at: iso(created.created_at), updated_at: iso(created.updated_at) }],
      ['user.updated', iso(updated.updated_at), { id: created.id, name: 'Ada', email: 'ada@example.com', age: 37, created_at: iso(created.created_at), updated_at: iso(updated.updated_at) }],
      ['user.deleted', events[2]!.occurredAt, { id: created.id }],
    ]);
    assert.equal(new Set(events.map((e) => e.id)).size, 3, 'each event its own id');
  });

  test('a row committed late, below where the relay had got to, is still taken', async () => {
    await drain(outbox);
    const late = '00000000-0000-4000-8000-000000000001';
    let commit!: () => void;
    const held = new Promise<void>((r) => (commit = r));
    let recorded!: () => void;
    const isRecorded = new Promise<void>((r) => (recorded = r));
    // The late row takes its seq first, then waits uncommitted while later rows commit and are taken past it.
    const open = sql.begin(async (tx) => {
      await recordDelete(tx, late);
      recorded();
      await held;
    });
    await isRecorded;
    for (let i = 0; i < 6; i++) await recordDelete(sql, `00000000-0000-4000-8000-00000000010${i}`);
    const seen: string[] = [];
    const takeOne = () => outbox.take(2, async (events) => { seen.push(...events.map((e) => (e.data as { id: string }).id)); });
    assert.equal(await takeOne(), 2);
    assert.equal(await takeOne(), 2);
    commit();
    await open;
    // Full takes go on from where they were; the late row is found once the relay looks back.
    for (let i = 0; i < 5 && !seen.includes(late); i++) await takeOne();
    assert.ok(seen.includes(late), `the late row was taken: ${JSON.stringify(seen)}`);
    assert.equal(seen.length, 7);
    assert.equal(new Set(seen).size, 7);
  });

  test('two relays at once: every event taken once', async () => {
    await drain(outbox);
    const other = await openBackend(loadConfig({ DATABASE_URL: db.url, LOG_LEVEL: 'silent' }), { log: quiet });
    try {
      const ids = Array.from({ length: 300 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
      await sql`INSERT INTO outbox (type, occurred_at, user_id) SELECT 'user.deleted', now(), unnest(${sql.array(ids)}::uuid[])`;
      const slowRelay = (seen: string[]) => async (events: OutboxEvent[]) => {
        await new Promise((r) => setTimeout(r, 5));
        seen.push(...events.map((e) => (e.data as { id: string }).id));
      };
      const [a, b] = [[] as string[], [] as string[]];
      // A relay that finds the other taking skips (its take is 0) and tries again, as the relay loop would.
      const until = Date.now() + 10_000;
      const run = async (store: OutboxStore, seen: string[]) => {
        while (a.length + b.length < ids.length && Date.now() < until) await store.take(10, slowRelay(seen));
      };
      await Promise.all([run(outbox, a), run(other.outbox!, b)]);
      assert.ok(a.length > 0 && b.length > 0, `both relays took some: ${a.length} and ${b.length}`);
      assert.deepEqual([...a, ...b].sort(), ids, 'every event exactly once');
    } finally {
      await other.close();
    }
  });

  test('a relay that fails leaves its events for the next one', async () => {
    await drain(outbox);
    await recordDelete(sql, '00000000-0000-4000-8000-000000000200');
    await assert.rejects(outbox.take(10, async () => { throw new Error('queue away'); }));
    const events = await drain(outbox);
    assert.deepEqual(events.map((e) => e.data), [{ id: '00000000-0000-4000-8000-000000000200' }]);
  });

  test('a row written before migration 0008 (its data as JSON) is relayed as it was written', async () => {
    await drain(outbox);
    const data = { id: '00000000-0000-4000-8000-000000000300', name: 'Old', email: 'old@example.com', age: 1, created_at: '2026-01-01T00:00:00.000Z', updated_at: '2026-01-01T00:00:00.000Z' };
    await sql`INSERT INTO outbox (type, occurred_at, data) VALUES ('user.created', '2026-01-01T00:00:00Z', ${sql.json(data)})`;
    const events = await drain(outbox);
    assert.deepEqual(events.map((e) => [e.type, e.data]), [['user.created', data]]);
  });

  test('a committed write wakes the listeners; a write that changed nothing does not', async () => {
    let wakes = 0;
    const stop = await outbox.listen(() => { wakes++; });
    try {
      await backend.users.update('00000000-0000-4000-8000-0000000004ff', { age: 3 });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(wakes, 0, 'an update of a missing user records and announces nothing');
      await backend.users.create({ name: 'Wake', email: 'wake@example.com', age: 5 });
      const until = Date.now() + 3000;
      while (wakes === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      assert.ok(wakes > 0, 'woken within 3 s of the commit');
    } finally {
      await stop();
    }
  });
});
