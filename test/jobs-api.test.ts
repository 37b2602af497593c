/**
 * The job API (CONTRACT.md, "Jobs") on a real app and PostgreSQL with authentication on: a job belongs to the
 * account that started it, admins see all; listing, cancelling, the event stream over real HTTP, and the
 * refresh-token pruning as a cron job on the queue.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import { PRUNE_KIND } from '../src/modules/auth/prune.ts';
import type { JobsStore } from '../src/platform/jobs/store.ts';
import { testConfig } from './support/app.ts';
import { ADMIN, authEnv, bearer, createAccount, login } from './support/auth.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { waitFor } from './jobs-support.ts';

let db: TestDatabase;
let app: FastifyInstance;
let jobs: JobsStore;
let admin: string;
let alice: { id: string; token: string };
let bob: { id: string; token: string };
let viewer: { id: string; token: string };
/** Opens the gate of the `demo` job with this id. */
const gates = new Map<string, () => void>();

before(async () => {
  db = await createTestDatabase();
  app = await buildApp(testConfig(db.url, authEnv({ JOB_POLL_MS: '50' })), { logger: false });
  // A job kind of the test's own: reports progress twice, then waits for the test to let it finish.
  app.jobs.define({
    kind: 'demo',
    async run(_, ctx) {
      await ctx.progress(1, 2);
      await new Promise<void>((resolve) => gates.set(ctx.job.id, resolve));
      await ctx.progress(2, 2);
      return { ok: true };
    },
  });
  await app.ready();
  await waitFor(() => app.backend.probes.schemaReady(), 20_000);
  jobs = app.jobs.store();
  admin = (await login(app, ADMIN.email, ADMIN.password)).access_token;
  const a = await createAccount(app, admin, 'editor');
  const b = await createAccount(app, admin, 'editor');
  const v = await createAccount(app, admin, 'viewer');
  alice = { id: a.account.id, token: a.tokens.access_token };
  bob = { id: b.account.id, token: b.tokens.access_token };
  viewer = { id: v.account.id, token: v.tokens.access_token };
});
after(async () => {
  await app.close();
  await db.destroy();
});

const get = (url: string, token?: string) => app.inject({ method: 'GET', url, headers: token ? bearer(token) : {} });

describe('reading jobs', () => {
  test('the owner and admins see a job; another account gets 404 as for a missing one', async () => {
    const job = (await jobs.enqueue({ kind: 'idle', owner: alice.id, payload: { secret: 1 } }))!;
    const own = await get(`/jobs/${job.id.toUpperCase()}`, alice.token);
    assert.equal(own.statusCode, 200, own.body);
    assert.deepEqual(Object.keys(own.json()).sort(),
      ['attempts', 'created_at', 'error', 'finished_at', 'id', 'kind', 'max_attempts', 'progress', 'result', 'started_at', 'state']);
    assert.deepEqual(own.json().progress, { done: 0, total: null });
    assert.equal(own.json().state, 'queued');
    assert.match(own.json().created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal((await get(`/jobs/${job.id}`, admin)).statusCode, 200);
    const other = await get(`/jobs/${job.id}`, bob.token);
    assert.equal(other.statusCode, 404);
    assert.deepEqual(other.json(), { detail: 'Job not found' });
    assert.deepEqual((await get(`/jobs/${randomUUID()}`, alice.token)).json(), { detail: 'Job not found' });
    assert.deepEqual((await get('/jobs/not-a-uuid', alice.token)).json(), { detail: 'Invalid UUID' });
    assert.equal((await get(`/jobs/${job.id}`)).statusCode, 401);
  });

  test('lists are paginated, newest first, filtered by state and kind, own jobs only unless admin', async () => {
    const kind = `list-${Date.now()}`;
    const mine = [];
    for (let i = 0; i < 3; i++) mine.push((await jobs.enqueue({ kind, owner: alice.id }))!.id);
    await jobs.enqueue({ kind, owner: bob.id });
    const first = await get(`/jobs?kind=${kind}&limit=2`, alice.token);
    assert.equal(first.statusCode, 200);
    assert.deepEqual(first.json().map((j: { id: string }) => j.id), [mine[2], mine[1]]);
    const cursor = first.headers['x-next-cursor'] as string;
    assert.ok(cursor);
    assert.match(first.headers.link as string, /rel="next"/);
    const second = await get(`/jobs?kind=${kind}&limit=2&cursor=${cursor}`, alice.token);
    assert.deepEqual(second.json().map((j: { id: string }) => j.id), [mine[0]]);
    assert.equal(second.headers['x-next-cursor'], undefined);
    assert.equal((await get(`/jobs?kind=${kind}`, admin)).json().length, 4);
    assert.equal((await get(`/jobs?kind=${kind}&state=succeeded`, admin)).json().length, 0);
    assert.deepEqual((await get('/jobs?cursor=!!', alice.token)).json(), { detail: 'Invalid cursor' });
    const bad = await get('/jobs?state=done', alice.token);
    assert.equal(bad.statusCode, 422);
    assert.deepEqual(bad.json().detail[0].loc, ['query', 'state']);
  });
});

describe('cancelling', () => {
  test('202 with the cancelled job; a finished one is 409; another account\'s is 404; a viewer may not', async () => {
    const job = (await jobs.enqueue({ kind: 'idle', owner: alice.id }))!;
    const del = (token: string) => app.inject({ method: 'DELETE', url: `/jobs/${job.id}`, headers: bearer(token) });
    assert.equal((await del(bob.token)).statusCode, 404);
    assert.equal((await del(viewer.token)).statusCode, 403);
    assert.equal((await get(`/jobs/${job.id}`, alice.token)).json().state, 'queued');
    const ok = await del(alice.token);
    assert.equal(ok.statusCode, 202, ok.body);
    assert.equal(ok.json().state, 'cancelled');
    assert.ok(ok.json().finished_at);
    const again = await del(alice.token);
    assert.equal(again.statusCode, 409);
    assert.deepEqual(again.json(), { detail: 'Job already finished' });
  });
});

describe('events', () => {
  test('a snapshot per change over real HTTP, ending after the terminal state', async () => {
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    const job = (await jobs.enqueue({ kind: 'demo', owner: alice.id }))!;
    const res = await fetch(`${address}/jobs/${job.id}/events`, { headers: bearer(alice.token) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
    const reader = res.body!.getReader();
    const events: { state: string; progress: { done: number; total: number | null } }[] = [];
    let text = '';
    const readUntil = async (done: () => boolean) => {
      while (!done()) {
        const { value, done: end } = await reader.read();
        if (end) return;
        text += new TextDecoder().decode(value);
        const parts = text.split('\n\n');
        text = parts.pop()!;
        for (const p of parts) {
          const data = p.split('\n').find((l) => l.startsWith('data: '));
          if (p.startsWith('event: job') && data) events.push(JSON.parse(data.slice(6)));
        }
      }
    };
    await readUntil(() => events.some((e) => e.progress.done === 1));
    await waitFor(() => gates.has(job.id));
    gates.get(job.id)!();
    await readUntil(() => false);
    const last = events.at(-1)!;
    assert.equal(last.state, 'succeeded');
    assert.deepEqual(last.progress, { done: 2, total: 2 });
    assert.ok(events.some((e) => e.state === 'running' && e.progress.done === 1), JSON.stringify(events));
    // Each snapshot differs from the one before it.
    for (let i = 1; i < events.length; i++) assert.notDeepEqual(events[i], events[i - 1]);

    const other = await fetch(`${address}/jobs/${job.id}/events`, { headers: bearer(bob.token) });
    assert.equal(other.status, 404);
    await other.body?.cancel();
  });
});

describe('refresh-token pruning on the queue', () => {
  test('is a cron schedule, and its job deletes expired sessions', async () => {
    const rows = await app.backend.jobs!.list({ kind: PRUNE_KIND, limit: 10 });
    assert.equal(rows.jobs.length, 0);
    const session = await app.backend.accounts.createSession({ accountId: alice.id, tokenHash: randomUUID(), expiresAt: new Date(Date.now() - 1000) });
    const job = (await jobs.enqueue({ kind: PRUNE_KIND }))!;
    await waitFor(async () => (await jobs.get(job.id))!.state === 'succeeded');
    const done = (await jobs.get(job.id))!;
    assert.ok((done.result as { sessions: number }).sessions >= 1, JSON.stringify(done.result));
    assert.equal(await app.backend.accounts.getSession(session.id), null);
    const { default: postgres } = await import('postgres');
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    const schedules = await sql`SELECT name FROM job_schedules ORDER BY name`;
    await sql.end();
    // Every recurring job of the app is one schedule, fired by one instance at a time.
    assert.deepEqual(schedules.map((r) => r.name), ['auth.prune', 'bulk.cleanup', 'jobs.retention', 'uploads.expire']);
  });
});
