/**
 * The job queue of the Cassandra backend, at app level: a real Cassandra (tools/cassandra-harness) for the users
 * and accounts, a real Redis for the jobs (src/db/redis/jobs.ts, opened by src/db/backend.ts as `backend.jobs`).
 * The app's own workers run the jobs; the job API keeps its owner rules (a job belongs to the account that
 * started it, admins see all); cancelling, the refresh-token pruning as a cron job, and the job metrics per kind.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { buildApp } from '../src/app.ts';
import { PRUNE_KIND } from '../src/modules/auth/prune.ts';
import { loadConfig } from '../src/platform/config.ts';
import { UNSHED } from './support/app.ts';
import type { JobsStore } from '../src/platform/jobs/store.ts';
import { ADMIN, authEnv, bearer, createAccount, login } from './support/auth.ts';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { assertJobMetrics, finishedJobMetrics, waitFor } from './jobs-support.ts';

const skip = skipReason('cassandra');
exitWhenDone();

let b: TestBackend;
let app: FastifyInstance;
let jobs: JobsStore;
let admin: string;
let alice: { id: string; token: string };
let bob: { id: string; token: string };
const gates = new Map<string, () => void>();

before(async () => {
  if (skip) return;
  b = await startBackend('cassandra');
  app = await buildApp(loadConfig({ LOG_LEVEL: 'silent', ...UNSHED, ...b.env, ...authEnv({ JOB_POLL_MS: '50' }) }), { logger: false });
  app.jobs.define({ kind: 'demo', async run(_, ctx) { await ctx.progress(1, 2); await new Promise<void>((r) => gates.set(ctx.job.id, r)); return { ok: true }; } });
  app.jobs.define({ kind: 'm-ok', async run() {} });
  app.jobs.define({ kind: 'm-bad', backoff: { baseMs: 10, maxMs: 10 }, async run() { throw new Error('no'); } });
  await app.ready();
  await waitFor(() => app.backend.probes.schemaReady().catch(() => false), 120_000, 200);
  jobs = app.jobs.store();
  admin = (await login(app, ADMIN.email, ADMIN.password)).access_token;
  const a = await createAccount(app, admin, 'editor');
  const o = await createAccount(app, admin, 'editor');
  alice = { id: a.account.id, token: a.tokens.access_token };
  bob = { id: o.account.id, token: o.tokens.access_token };
});
after(async () => {
  if (skip) return;
  for (const open of gates.values()) open();
  await app?.close();
  await b?.destroy();
});

const get = (url: string, token?: string) => app.inject({ method: 'GET', url, headers: token ? bearer(token) : {} });

describe('jobs on Cassandra + Redis', { skip }, () => {
  test('the backend is Cassandra and its queue is the Redis one; the app\'s workers run a job', async () => {
    assert.equal(app.backend.name, 'cassandra');
    const job = (await jobs.enqueue({ kind: 'demo', owner: alice.id }))!;
    await waitFor(() => gates.has(job.id));
    const running = await get(`/jobs/${job.id}`, alice.token);
    assert.equal(running.statusCode, 200, running.body);
    assert.equal(running.json().state, 'running');
    await waitFor(async () => (await get(`/jobs/${job.id}`, alice.token)).json().progress.done === 1);
    gates.get(job.id)!();
    await waitFor(async () => (await get(`/jobs/${job.id}`, alice.token)).json().state === 'succeeded');
    assert.deepEqual((await get(`/jobs/${job.id}`, alice.token)).json().result, { ok: true });
  });

  test('owner rules: the owner and admins see a job, another account gets 404; lists are own jobs only', async () => {
    const job = (await jobs.enqueue({ kind: 'idle', owner: alice.id }))!;
    assert.equal((await get(`/jobs/${job.id}`, alice.token)).statusCode, 200);
    assert.equal((await get(`/jobs/${job.id}`, admin)).statusCode, 200);
    const other = await get(`/jobs/${job.id}`, bob.token);
    assert.equal(other.statusCode, 404);
    assert.deepEqual(other.json(), { detail: 'Job not found' });
    await jobs.enqueue({ kind: 'idle', owner: bob.id });
    const mine = (await get('/jobs?kind=idle', alice.token)).json() as { id: string }[];
    assert.deepEqual(mine.map((j) => j.id), [job.id]);
    assert.equal(((await get('/jobs?kind=idle', admin)).json() as unknown[]).length, 2);
    const first = await get('/jobs?kind=idle&limit=1', admin);
    const second = await get(`/jobs?kind=idle&limit=1&cursor=${first.headers['x-next-cursor'] as string}`, admin);
    assert.equal(second.json()[0].id, job.id);
    assert.deepEqual((await get('/jobs?cursor=!!', alice.token)).json(), { detail: 'Invalid cursor' });
  });

  test('DELETE cancels (202), then 409; another account\'s job is 404', async () => {
    const job = (await jobs.enqueue({ kind: 'idle', owner: alice.id }))!;
    const del = (token: string) => app.inject({ method: 'DELETE', url: `/jobs/${job.id}`, headers: bearer(token) });
    assert.equal((await del(bob.token)).statusCode, 404);
    const ok = await del(alice.token);
    assert.equal(ok.statusCode, 202, ok.body);
    assert.equal(ok.json().state, 'cancelled');
    assert.deepEqual((await del(alice.token)).json(), { detail: 'Job already finished' });
  });

  test('the refresh-token pruning is a cron schedule on the Redis queue', async () => {
    const raw = new Redis(b.env.REDIS_URL!);
    try {
      assert.ok(await raw.get('spate-jobs:schedule:auth.prune'), 'the schedule exists');
    } finally {
      raw.disconnect();
    }
    const job = (await jobs.enqueue({ kind: PRUNE_KIND }))!;
    await waitFor(async () => (await jobs.get(job.id))!.state === 'succeeded', 30_000);
  });

  test('metrics: outcomes per kind, queue latency and run time, queued gauge', async () => {
    const ok = (await jobs.enqueue({ kind: 'm-ok' }))!;
    const bad = (await jobs.enqueue({ kind: 'm-bad', maxAttempts: 2 }))!;
    await jobs.enqueue({ kind: 'm-nobody' });
    await waitFor(async () => (await jobs.get(ok.id))!.state === 'succeeded' && (await jobs.get(bad.id))!.state === 'failed');
    const text = await finishedJobMetrics(async () =>
      (await app.inject({ method: 'GET', url: '/metrics/prometheus', headers: bearer(admin) })).body);
    assertJobMetrics(text);
  });
});
