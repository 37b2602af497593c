/**
 * Webhooks on real PostgreSQL with a real local HTTP receiver (docs/webhooks.md): the webhooks contract
 * (test/webhooks.contract.ts), then what only PostgreSQL can show: writes the database refused inside their
 * transaction (a trigger) giving no event.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { appOnNewDatabase, userBody } from './support/app.ts';
import { waitFor } from './jobs-support.ts';
import { webhooksContract } from './webhooks.contract.ts';
import { WEBHOOK_TEST_ENV } from './webhooks-support.ts';

const ctx = appOnNewDatabase(WEBHOOK_TEST_ENV);
const { rx, register } = webhooksContract(() => ctx);

const inject = (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
  ctx.app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
const at = (path: string) => rx().received.filter((r) => r.path === path);

describe('a write the database refused records no event', () => {
  before(async () => {
    // A refusal only the database can make: the real failure of a real statement, inside its transaction.
    await ctx.sql.unsafe(`
      CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.name = 'refuse me' THEN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_marked BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse_marked();`);
  });

  test('a failing batch, create and update, and a failed If-Match: no user, no change, no event', async () => {
    await register('/rollback');
    const tag = `rb${Date.now()}`;
    const batch = await inject('POST', '/users/batch', { users: [userBody({ email: `${tag}.1@example.com` }), userBody({ name: 'refuse me', email: `${tag}.2@example.com` })] });
    assert.ok(batch.statusCode >= 400, batch.body);
    assert.ok('detail' in batch.json());
    const single = await inject('POST', '/users', userBody({ name: 'refuse me', email: `${tag}.3@example.com` }));
    assert.ok(single.statusCode >= 400, single.body);
    const kept = (await inject('POST', '/users', userBody({ email: `${tag}.4@example.com` }))).json<{ id: string }>();
    const upd = await inject('PATCH', `/users/${kept.id}`, { name: 'refuse me' });
    assert.ok(upd.statusCode >= 400, upd.body);
    // A precondition that does not hold changes nothing, so it is no event either.
    const stale = await ctx.app.inject({ method: 'PATCH', url: `/users/${kept.id}`, payload: { age: 77 }, headers: { 'if-match': '"stale"' } });
    assert.equal(stale.statusCode, 412, stale.body);
    const staleDelete = await ctx.app.inject({ method: 'DELETE', url: `/users/${kept.id}`, headers: { 'if-match': '"stale"' } });
    assert.equal(staleDelete.statusCode, 412, staleDelete.body);
    // A later event delivered means the refused ones would have been relayed too.
    const marker = (await inject('POST', '/users', userBody({ email: `${tag}.5@example.com` }))).json<{ id: string }>();
    const bodies = () => at('/rollback').map((r) => JSON.parse(r.body) as { type: string; data: { id: string; email?: string } });
    await waitFor(() => bodies().some((b) => b.data.id === marker.id), 15_000);
    await new Promise((r) => setTimeout(r, 500));
    const mine = bodies().filter((b) => b.data.email?.startsWith(tag) || b.data.id === kept.id);
    assert.deepEqual(mine.map((b) => `${b.type} ${b.data.email}`).sort(),
      [`user.created ${tag}.4@example.com`, `user.created ${tag}.5@example.com`]);
    const [n] = await ctx.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM users WHERE email LIKE ${`${tag}.%`}`;
    assert.equal(n!.n, 2);
    const [jobs] = await ctx.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM jobs WHERE kind = 'webhook.deliver' AND payload->'event'->'data'->>'name' = 'refuse me'`;
    assert.equal(jobs!.n, 0);
  });
});
