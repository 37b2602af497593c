/**
 * The webhooks contract (docs/webhooks.md), run by every backend's file (test/webhooks.test.ts on PostgreSQL,
 * test/webhooks-cassandra.test.ts on Cassandra with Redis) with a real local HTTP receiver: registration, signed
 * deliveries verified with `standardwebhooks`, retries after a 500 and a timeout with the same webhook-id, a
 * terminal failure counted in the metrics, redirects refused, and changes that did not happen giving no event.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { userBody } from './support/app.ts';
import { waitFor } from './jobs-support.ts';
import { startReceiver, type Receiver } from './webhooks-support.ts';

/** The app under test, ready by the time the contract's tests run (its file builds it in a `before`). */
export interface WebhooksTarget {
  readonly app: FastifyInstance;
}

export interface WebhooksContract {
  /** The receiver, started in the contract's `before`: for the file's own tests. */
  readonly rx: () => Receiver;
  register(path: string, events?: string[]): Promise<{ id: string; url: string; events: string[]; secret: string; created_at: string }>;
}

export function webhooksContract(target: () => WebhooksTarget): WebhooksContract {
  let rx: Receiver;
  before(async () => { rx = await startReceiver(); });
  after(async () => rx.close());

  const inject = (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
    target().app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
  const ctx = { get app() { return target().app; } };

  async function register(path: string, events = ['user.created', 'user.updated', 'user.deleted']) {
    const res = await inject('POST', '/webhooks', { url: rx.url(path), events });
    assert.equal(res.statusCode, 201, res.body);
    return res.json<{ id: string; url: string; events: string[]; secret: string; created_at: string }>();
  }

  const at = (path: string) => rx.received.filter((r) => r.path === path);
  const deliveries = async (id: string) => (await inject('GET', `/webhooks/${id}/deliveries`)).json<
    { event_id: string; event_type: string; attempt: number; status_code: number | null; error: string | null; at: string }[]>();

  describe('registering endpoints', () => {
    test('the secret is shown once; the list never carries it; DELETE is idempotent', async () => {
      const hook = await register('/reg', ['user.created']);
      assert.match(hook.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
      assert.match(hook.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(hook.url, rx.url('/reg'));
      const list = await inject('GET', '/webhooks');
      assert.equal(list.statusCode, 200);
      const mine = list.json<Record<string, unknown>[]>().find((w) => w.id === hook.id);
      assert.deepEqual(mine, { id: hook.id, url: hook.url, events: ['user.created'], created_at: hook.created_at });
      assert.ok(!list.body.includes('whsec_'));
      assert.equal((await inject('DELETE', `/webhooks/${hook.id.toUpperCase()}`)).statusCode, 204);
      assert.equal((await inject('DELETE', `/webhooks/${hook.id}`)).statusCode, 204);
      assert.ok(!(await inject('GET', '/webhooks')).json<{ id: string }[]>().some((w) => w.id === hook.id));
      const gone = await inject('GET', `/webhooks/${hook.id}/deliveries`);
      assert.equal(gone.statusCode, 404);
      assert.deepEqual(gone.json(), { detail: 'Webhook not found' });
      assert.deepEqual((await inject('GET', '/webhooks/not-a-uuid/deliveries')).json(), { detail: 'Invalid UUID' });
    });

    test('bad input is a 422 naming the field, and stores nothing', async () => {
      const before = (await inject('GET', '/webhooks')).json<unknown[]>().length;
      const cases: [unknown, (string | number)[]][] = [
        [{ url: 'ftp://example.com/x', events: ['user.created'] }, ['body', 'url']],
        [{ url: 'not a url', events: ['user.created'] }, ['body', 'url']],
        [{ url: 'https://u:p@example.com/', events: ['user.created'] }, ['body', 'url']],
        [{ url: 'https://example.com/', events: [] }, ['body', 'events']],
        [{ url: 'https://example.com/', events: ['user.exploded'] }, ['body', 'events', 0]],
        [{ url: 'https://example.com/', events: ['user.created', 'user.created'] }, ['body', 'events']],
        [{ events: ['user.created'] }, ['body', 'url']],
      ];
      for (const [body, loc] of cases) {
        const res = await inject('POST', '/webhooks', body);
        assert.equal(res.statusCode, 422, `${JSON.stringify(body)}: ${res.body}`);
        const issues = res.json<{ detail: { loc: unknown[] }[] }>().detail;
        assert.ok(issues.some((i) => JSON.stringify(i.loc) === JSON.stringify(loc)), `${JSON.stringify(body)}: ${res.body}`);
      }
      assert.equal((await inject('GET', '/webhooks')).json<unknown[]>().length, before);
    });
  });

  describe('deliveries', () => {
    test('a create, an update and a delete each deliver one event, signed, with the API\'s own shapes', async () => {
      const hook = await register('/all');
      const created = await inject('POST', '/users', userBody());
      assert.equal(created.statusCode, 201);
      const user = created.json<{ id: string; updated_at: string }>();
      const updated = (await inject('PATCH', `/users/${user.id}`, { age: 41 })).json<{ updated_at: string }>();
      assert.equal((await inject('DELETE', `/users/${user.id}`)).statusCode, 204);
      // Deleting it again changes nothing, so it is no event.
      assert.equal((await inject('DELETE', `/users/${user.id}`)).statusCode, 204);
      await waitFor(() => at('/all').length >= 3, 15_000);
      await new Promise((r) => setTimeout(r, 300));
      const got = at('/all').map((r) => ({ r, body: rx.verify(r, hook.secret) }));
      assert.deepEqual(got.map((g) => g.body.type).sort(), ['user.created', 'user.deleted', 'user.updated']);
      const byType = Object.fromEntries(got.map((g) => [g.body.type, g]));
      assert.deepEqual(byType['user.created']!.body.data, created.json());
      assert.deepEqual(byType['user.updated']!.body.data, { ...created.json(), age: 41, updated_at: updated.updated_at });
      assert.deepEqual(byType['user.deleted']!.body.data, { id: user.id });
      assert.equal(byType['user.created']!.body.timestamp, created.json<{ created_at: string }>().created_at);
      assert.equal(byType['user.updated']!.body.timestamp, updated.updated_at);
      assert.equal(new Set(got.map((g) => g.r.id)).size, 3, 'three distinct event ids');
      // A signature made with another secret does not verify.
      assert.throws(() => rx.verify(got[0]!.r, `whsec_${Buffer.alloc(32, 7).toString('base64')}`));
      const list = await deliveries(hook.id);
      assert.equal(list.length, 3);
      for (const d of list) {
        assert.equal(d.attempt, 1);
        assert.equal(d.status_code, 200);
        assert.equal(d.error, null);
        assert.ok(got.some((g) => g.r.id === d.event_id && g.body.type === d.event_type));
      }
    });

    test('an endpoint receives only the event types it subscribed to', async () => {
      await register('/deletes-only', ['user.deleted']);
      const user = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      await inject('PATCH', `/users/${user.id}`, { age: 9 });
      await inject('DELETE', `/users/${user.id}`);
      await waitFor(() => at('/deletes-only').length >= 1, 15_000);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(at('/deletes-only').map((r) => JSON.parse(r.body).type), ['user.deleted']);
    });

    test('a create retried with its Idempotency-Key, and a batch, record one event per user', async () => {
      await register('/idem', ['user.created']);
      const body = userBody();
      const key = { 'idempotency-key': `idem-${Date.now()}` };
      const first = await ctx.app.inject({ method: 'POST', url: '/users', payload: body, headers: key });
      const again = await ctx.app.inject({ method: 'POST', url: '/users', payload: body, headers: key });
      assert.equal(first.statusCode, 201, first.body);
      assert.equal(again.json<{ id: string }>().id, first.json<{ id: string }>().id);
      const batch = (await inject('POST', '/users/batch', { users: [userBody(), userBody(), userBody()] })).json<{ created: { id: string }[] }>();
      const ids = [first.json<{ id: string }>().id, ...batch.created.map((u) => u.id)];
      const seen = () => at('/idem').map((r) => (JSON.parse(r.body) as { data: { id: string } }).data.id).filter((id) => ids.includes(id));
      await waitFor(() => seen().length >= 4, 15_000);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(seen().sort(), [...ids].sort());
    });

    test('retries after a 500 and after a timeout carry the same webhook-id, each signed anew', async () => {
      rx.script('/flaky', [500, 'hang', 200]);
      const hook = await register('/flaky', ['user.created']);
      const user = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      await waitFor(() => at('/flaky').length >= 3, 20_000);
      const tries = at('/flaky');
      assert.equal(new Set(tries.map((t) => t.id)).size, 1, 'one webhook-id on every attempt');
      for (const t of tries) assert.equal((rx.verify(t, hook.secret).data as { id: string }).id, user.id);
      assert.equal(new Set(tries.map((t) => t.body)).size, 1, 'the same body on every attempt');
      await waitFor(async () => (await deliveries(hook.id)).length === 3, 10_000);
      const list = await deliveries(hook.id);
      assert.deepEqual(list.map((d) => [d.attempt, d.status_code]), [[3, 200], [2, null], [1, 500]]);
      assert.match(list[1]!.error!, /no complete answer within 400 ms/);
      assert.equal(list[2]!.error, 'HTTP 500');
      assert.ok(list.every((d) => d.event_id === tries[0]!.id));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(at('/flaky').length, 3, 'no attempt after the success');
    });

    test('a redirect is not followed: it is a failed attempt', async () => {
      rx.script('/moved', [{ status: 302, headers: { location: rx.url('/elsewhere') } }]);
      const hook = await register('/moved', ['user.created']);
      await inject('POST', '/users', userBody());
      await waitFor(async () => (await deliveries(hook.id)).some((d) => d.status_code === 200), 20_000);
      const list = await deliveries(hook.id);
      assert.deepEqual(list.map((d) => [d.attempt, d.status_code]), [[2, 200], [1, 302]]);
      assert.equal(list[1]!.error, 'redirect not followed (HTTP 302)');
      assert.equal(at('/elsewhere').length, 0);
    });

    test('an endpoint that keeps failing: WEBHOOK_MAX_ATTEMPTS attempts, then the job fails; the metrics count both', async () => {
      rx.script('/down', [500, 500, 500, 500, 500]);
      const hook = await register('/down', ['user.created']);
      await inject('POST', '/users', userBody());
      // The only endpoint that fails every attempt: the one failed delivery job is its own.
      await waitFor(async () => (await inject('GET', '/jobs?kind=webhook.deliver&state=failed')).json<unknown[]>().length === 1, 20_000);
      assert.equal(at('/down').length, 4);
      assert.deepEqual((await deliveries(hook.id)).map((d) => d.attempt), [4, 3, 2, 1]);
      const text = (await inject('GET', '/metrics/prometheus')).body;
      assert.match(text, /^webhook_deliveries_total\{event_type="user.created",outcome="failed"\} 1$/m);
      assert.match(text, /^webhook_deliveries_total\{event_type="user.created",outcome="delivered"\} [1-9]\d*$/m);
      assert.match(text, /^webhook_delivery_attempts_total\{event_type="user.created",outcome="http_error"\} [1-9]\d*$/m);
      assert.match(text, /^webhook_delivery_attempts_total\{event_type="user.created",outcome="timeout"\} [1-9]\d*$/m);
      assert.match(text, /^webhook_delivery_attempts_total\{event_type="user.deleted",outcome="success"\} [1-9]\d*$/m);
    });

    test('a deleted endpoint gets nothing more', async () => {
      rx.script('/gone', ['hang', 'hang', 'hang', 'hang']);
      const hook = await register('/gone', ['user.created']);
      await inject('POST', '/users', userBody());
      await waitFor(() => at('/gone').length >= 1, 15_000);
      await inject('DELETE', `/webhooks/${hook.id}`);
      const seen = at('/gone').length;
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(at('/gone').length <= seen + 1, 'at most the attempt already under way');
    });
  });

  describe('a change that did not happen records no event', () => {
    test('a failed If-Match, and an update and a delete of a missing user: no event', async () => {
      await register('/nochange');
      const kept = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      const stale = await ctx.app.inject({ method: 'PATCH', url: `/users/${kept.id}`, payload: { age: 77 }, headers: { 'if-match': '"stale"' } });
      assert.equal(stale.statusCode, 412, stale.body);
      const staleDelete = await ctx.app.inject({ method: 'DELETE', url: `/users/${kept.id}`, headers: { 'if-match': '"stale"' } });
      assert.equal(staleDelete.statusCode, 412, staleDelete.body);
      const missing = '01890000-0000-7000-8000-000000000000';
      assert.equal((await inject('PATCH', `/users/${missing}`, { age: 5 })).statusCode, 404);
      assert.equal((await inject('DELETE', `/users/${missing}`)).statusCode, 204);
      // A later event delivered means the ones that did not happen would have been relayed too.
      const marker = (await inject('POST', '/users', userBody())).json<{ id: string }>();
      const bodies = () => at('/nochange').map((r) => JSON.parse(r.body) as { type: string; data: { id: string } });
      await waitFor(() => bodies().some((b) => b.data.id === marker.id), 15_000);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(bodies().filter((b) => [kept.id, missing].includes(b.data.id)).map((b) => b.type), ['user.created']);
    });
  });

  return { rx: () => rx, register };
}
