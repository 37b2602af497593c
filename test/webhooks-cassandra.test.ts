/**
 * Webhooks on a real Cassandra 2.1 node and a real Redis (the job queue), with a real local HTTP receiver
 * (docs/webhooks.md, "Cassandra"): the webhooks contract (test/webhooks.contract.ts), then what is particular to
 * Cassandra's events: a deleted user's row leaves once its event is relayed, a pointer whose write never applied
 * is dropped after the grace period, and every pointer of a relayed event is gone; then the crash contract
 * (test/webhooks-crash.contract.ts) on a node and a Redis of its own: 1,000 acknowledged creates under a SIGKILL of
 * the server (CI-sized: Cassandra creates are Paxos rounds on one small node; WEBHOOK_CRASH_CREATES sets the
 * count), each delivered as its user.created event, the restarted server taking the dead one's relay shards over
 * once their leases expire. Skipped without Java, except under CI=true.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { types } from 'cassandra-driver';
import type { FastifyInstance } from 'fastify';
import { dayOf, OUTBOX_SHARDS, shardOf } from '../src/db/cassandra/user-events.ts';
import { uuidv7 } from '../src/platform/lib/uuid.ts';
import { userBody } from './support/app.ts';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { waitFor } from './jobs-support.ts';
import { webhooksContract } from './webhooks.contract.ts';
import { webhooksCrashContract } from './webhooks-crash.contract.ts';
import { WEBHOOK_TEST_ENV } from './webhooks-support.ts';

exitWhenDone();

const skip = skipReason('cassandra');
const ctx = {} as { backend: TestBackend; app: FastifyInstance };
/** A request timeout of 1 s makes the grace period of a pointer without its event 2 s. */
const ENV = { ...WEBHOOK_TEST_ENV, CASSANDRA_REQUEST_TIMEOUT_MS: '1000' };

describe('webhooks on Cassandra', { skip }, () => {
  before(async () => {
    ctx.backend = await startBackend('cassandra');
    ctx.app = await ctx.backend.startApp(ENV);
  });
  after(async () => {
    await ctx.app?.close();
    await ctx.backend?.destroy();
  });

  const { rx, register } = webhooksContract(() => ctx);
  const inject = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
    ctx.app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
  const pointers = async () => ctx.backend.direct('SELECT shard, day, event_id, user_id FROM {ks}.outbox_pending');
  const row = async (id: string) => (await ctx.backend.direct('SELECT id, deleted_at, events FROM {ks}.users WHERE id = ?', [id]))[0];

  describe('events in the row', () => {
    test('a deleted user reads as absent at once, and its row leaves once its user.deleted is relayed', async () => {
      await register('/rows', ['user.deleted']);
      const user = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      assert.equal((await inject('DELETE', `/users/${user.id}`)).statusCode, 204);
      assert.equal((await inject('GET', `/users/${user.id}`)).statusCode, 404);
      assert.ok(!(await inject('GET', '/users?limit=1000')).json<{ id: string }[]>().some((u) => u.id === user.id));
      await waitFor(() => rx().received.some((r) => r.path === '/rows' && JSON.parse(r.body).data.id === user.id), 15_000);
      await waitFor(async () => (await row(user.id)) === undefined, 10_000);
      await waitFor(async () => !(await pointers()).some((p) => String(p.user_id) === user.id), 10_000);
    });

    test('a relayed event leaves its row and its pointer; the user stays as written', async () => {
      const user = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      await inject('PATCH', `/users/${user.id}`, { age: 44 });
      await waitFor(async () => (await row(user.id))?.events == null, 10_000);
      assert.equal((await row(user.id))?.deleted_at, null);
      assert.equal((await inject('GET', `/users/${user.id}`)).json<{ age: number }>().age, 44);
      await waitFor(async () => !(await pointers()).some((p) => String(p.user_id) === user.id), 10_000);
    });

    test('a pointer whose write never applied is dropped after the grace period, and relays nothing', async () => {
      await register('/orphans');
      const kept = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      await waitFor(async () => (await row(kept.id))?.events == null, 10_000);
      const absent = uuidv7();
      // Written as users.ts writes a pointer, just before a write that then does not apply.
      const now = new Date();
      const orphans = [absent, kept.id].map((userId) => ({ userId, eventId: types.TimeUuid.fromDate(now) }));
      for (const o of orphans) {
        await ctx.backend.direct('INSERT INTO {ks}.outbox_pending (shard, day, event_id, user_id) VALUES (?, ?, ?, ?)',
          [shardOf(o.userId), dayOf(now.getTime()), o.eventId, o.userId]);
      }
      // Within the grace period (2 s here) the write may still apply: the pointers stay.
      await new Promise((r) => setTimeout(r, 1000));
      const left = (await pointers()).filter((p) => orphans.some((o) => o.eventId.equals(p.event_id as types.TimeUuid)));
      assert.equal(left.length, 2, 'kept during the grace period');
      await waitFor(async () => !(await pointers()).some((p) => orphans.some((o) => o.eventId.equals(p.event_id as types.TimeUuid))), 15_000);
      assert.equal(await row(absent), undefined, 'no row made for the missing user');
      assert.equal((await inject('GET', `/users/${kept.id}`)).statusCode, 200);
      assert.ok(!rx().received.some((r) => orphans.some((o) => o.eventId.toString() === r.id)), 'nothing delivered for them');
    });
  });

  test('a pointer that lands late, below where the relay had read, is still taken within the grace period', async () => {
    await register('/late', ['user.created']);
    const first = (await inject('POST', '/users', userBody())).json<{ id: string }>();
    // Relayed: the relay has read that shard's day past it.
    await waitFor(() => rx().received.some((r) => r.path === '/late' && JSON.parse(r.body).data.id === first.id), 15_000);
    await new Promise((r) => setTimeout(r, 500));
    // A write whose pointer and row land now with an event id a second old (a slow writer): as users.ts writes them.
    const at = new Date(Date.now() - 1000);
    const id = uuidv7();
    const eventId = types.TimeUuid.fromDate(at);
    const data = { id, name: 'late', email: 'late@example.com', age: 3, created_at: at.toISOString(), updated_at: at.toISOString() };
    await ctx.backend.direct('INSERT INTO {ks}.outbox_pending (shard, day, event_id, user_id) VALUES (?, ?, ?, ?)',
      [shardOf(id), dayOf(at.getTime()), eventId, id]);
    await ctx.backend.direct('INSERT INTO {ks}.users (id, name, email, age, created_at, updated_at, events) VALUES (?, ?, ?, ?, ?, ?, ?)',
      [id, 'late', 'late@example.com', 3, at, at, { [eventId.toString()]: JSON.stringify({ type: 'user.created', occurredAt: at.toISOString(), data, traceparent: null }) }]);
    await waitFor(() => rx().received.some((r) => r.path === '/late' && r.id === eventId.toString()), 15_000);
  });

  test('every pointer is gone once its event is relayed', async () => {
    await waitFor(async () => (await pointers()).length === 0, 20_000);
  });

  test('a write on an instance that relays nothing wakes the relay of another through Redis, not at its poll; that relay keeps its shards', async () => {
    // Their relays look every minute (this file's app: every 200 ms), so only a wake-up delivers within seconds.
    const slow = { ...ENV, OUTBOX_POLL_MS: '60000' };
    await ctx.app.close(); // its relay hands its shards back
    const worker = await ctx.backend.startApp({ ...slow, ROLE: 'worker' });
    ctx.app = worker; // closed by after()
    const api = await ctx.backend.startApp({ ...slow, ROLE: 'api' });
    try {
      const owners = async () => (await ctx.backend.direct('SELECT owner FROM {ks}.outbox_shards')).filter((r) => r.owner != null);
      await waitFor(async () => (await owners()).length === OUTBOX_SHARDS, 20_000);
      const hook = await api.inject({ method: 'POST', url: '/webhooks', payload: { url: rx().url('/wake'), events: ['user.created'] } });
      assert.equal(hook.statusCode, 201, hook.body);
      const t0 = performance.now();
      const user = (await api.inject({ method: 'POST', url: '/users', payload: userBody() })).json<{ id: string }>();
      await waitFor(() => rx().received.some((r) => r.path === '/wake' && JSON.parse(r.body).data.id === user.id), 15_000);
      assert.ok(performance.now() - t0 < 15_000);
      // Past a lease's 10 s life with no write and a poll of a minute: the relay's takes still renewed its shards.
      const holder = String((await owners())[0]!.owner);
      await new Promise((r) => setTimeout(r, 12_000));
      const held = await owners();
      assert.deepEqual([held.length, new Set(held.map((r) => String(r.owner))).size, String(held[0]?.owner)], [OUTBOX_SHARDS, 1, holder]);
    } finally {
      await api.close();
    }
  });
});

let crashBackend: TestBackend;
describe('webhooks crash on Cassandra', { skip }, () => {
  webhooksCrashContract({
    total: 1_000,
    start: async () => { crashBackend = await startBackend('cassandra'); },
    stop: () => crashBackend.destroy(),
    env: () => crashBackend.env,
    storedIds: async () => new Set(await crashBackend.allIds()),
  });
});
