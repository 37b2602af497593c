/**
 * ROLE (all, api, worker) and the graceful stop of workers, on a real app and PostgreSQL; and the real server
 * process with ROLE=worker leaving cleanly on SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import type { JobDefinition } from '../src/platform/jobs/runner.ts';
import { testConfig } from './support/app.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { assertJobMetrics, finishedJobMetrics, waitFor } from './jobs-support.ts';

let db: TestDatabase;
const apps: FastifyInstance[] = [];

before(async () => { db = await createTestDatabase(); });
after(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await db.destroy();
});

async function appWith(role: string, defs: JobDefinition[]): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(db.url, { ROLE: role, JOB_POLL_MS: '50' }), { logger: false });
  apps.push(app);
  for (const d of defs) app.jobs.define(d);
  await app.ready();
  await waitFor(() => app.backend.probes.schemaReady(), 20_000);
  return app;
}

test('ROLE=api serves the API and runs no jobs; ROLE=worker runs them and serves no API', async () => {
  let ran = 0;
  const kind = { kind: 'role-job', async run() { ran++; } };
  const api = await appWith('api', [kind]);
  const job = (await api.jobs.store().enqueue({ kind: 'role-job' }))!;
  await sleep(300);
  assert.equal(ran, 0);
  assert.equal((await api.inject({ method: 'GET', url: `/jobs/${job.id}` })).json().state, 'queued');
  assert.equal((await api.inject({ method: 'GET', url: '/users' })).statusCode, 200);

  const worker = await appWith('worker', [kind]);
  await waitFor(async () => (await worker.jobs.store().get(job.id))!.state === 'succeeded');
  assert.equal(ran, 1);
  assert.equal((await worker.inject({ method: 'GET', url: '/users' })).statusCode, 404);
  assert.equal((await worker.inject({ method: 'GET', url: `/jobs/${job.id}` })).statusCode, 404);
  assert.equal((await worker.inject({ method: 'GET', url: '/health/live' })).statusCode, 200);
  await worker.close();
  await api.close();
});

test('stopping workers lets a running job finish within the budget and gives the other back', async () => {
  const app = await appWith('all', [
    { kind: 'quick', async run() { await sleep(100); } },
    { kind: 'slow', async run(_, ctx) { await sleep(60_000, undefined, { signal: ctx.signal }).catch(() => {}); } },
  ]);
  const store = app.jobs.store();
  const quick = (await store.enqueue({ kind: 'quick' }))!;
  const slow = (await store.enqueue({ kind: 'slow' }))!;
  await waitFor(async () => (await store.get(quick.id))!.state === 'running' && (await store.get(slow.id))!.state === 'running');
  assert.deepEqual(await app.jobs.stopWorkers(500), { finished: 1, returned: 1 });
  assert.equal((await store.get(quick.id))!.state, 'succeeded');
  assert.equal((await store.get(slow.id))!.state, 'queued');
  await app.close();
});

test('the server process with ROLE=worker stops on SIGTERM with exit code 0', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/process/server.ts'], {
    env: { ...process.env, DATABASE_URL: db.url, ROLE: 'worker', PORT: '0', LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT: '5' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  await waitFor(() => out.includes('Server listening'), 30_000);
  const t0 = Date.now();
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, out);
  assert.ok(Date.now() - t0 < 5000);
});

test('metrics: outcomes per kind, queue latency and run time, queued and running gauges', async () => {
  const app = await appWith('all', [
    { kind: 'm-ok', async run() {} },
    { kind: 'm-bad', backoff: { baseMs: 10, maxMs: 10 }, async run() { throw new Error('no'); } },
  ]);
  const store = app.jobs.store();
  const ok = (await store.enqueue({ kind: 'm-ok' }))!;
  const bad = (await store.enqueue({ kind: 'm-bad', maxAttempts: 2 }))!;
  await store.enqueue({ kind: 'm-nobody' });
  await waitFor(async () => (await store.get(ok.id))!.state === 'succeeded' && (await store.get(bad.id))!.state === 'failed');
  const text = await finishedJobMetrics(async () => (await app.inject({ method: 'GET', url: '/metrics/prometheus' })).body);
  assertJobMetrics(text);
  await app.close();
});
