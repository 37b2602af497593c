/**
 * What the app serves for machines passes the standard linters: the OpenAPI document at `/openapi.json` under
 * `@redocly/cli lint` (its recommended rules: no errors and no warnings), with authentication off and on, and
 * the Prometheus exposition at `/metrics/prometheus` under `promtool check metrics` (Debian package
 * `prometheus`; without it the promtool test is skipped, except under CI=true where it fails).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { startApp, userBody } from './support/app.ts';
import { authEnv } from './support/auth.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { promtool } from './support/promtool.ts';

const run = promisify(execFile);
const REDOCLY = new URL('../node_modules/.bin/redocly', import.meta.url).pathname;
const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

interface LintReport {
  totals: { errors: number; warnings: number };
  problems: { ruleId: string; message: string; location?: { pointer?: string }[] }[];
}

let db: TestDatabase;
let dir: string;

before(async () => {
  db = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'spate-openapi-'));
});
after(async () => {
  await db?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Lints the document `app` serves; resolves with redocly's JSON report (it exits 1 when there are errors). */
async function lint(app: FastifyInstance, name: string): Promise<LintReport> {
  const res = await app.inject('/openapi.json');
  assert.equal(res.statusCode, 200);
  const file = join(dir, `${name}.json`);
  writeFileSync(file, res.body);
  // No telemetry and no update check: the lint reads the file and nothing else.
  const env = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_NOTIFICATIONS: 'true' };
  const out = await run(REDOCLY, ['lint', file, '--format=json', '--extends=recommended'], { maxBuffer: 16 << 20, env })
    .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  return JSON.parse(out.stdout) as LintReport;
}

const summary = (r: LintReport) =>
  r.problems.map((p) => `${p.ruleId}: ${p.message} at ${p.location?.[0]?.pointer ?? '?'}`).join('\n');

for (const [mode, env] of [['off', {}], ['on', authEnv()]] as const) {
  describe(`the OpenAPI document, authentication ${mode}`, () => {
    let app: FastifyInstance;
    before(async () => { app = await startApp(db.url, env); });
    after(async () => { await app?.close(); });

    test('lints clean under @redocly/cli (recommended rules): no errors, no warnings', async () => {
      const report = await lint(app, `auth-${mode}`);
      assert.deepEqual(report.totals, { ...report.totals, errors: 0, warnings: 0 }, summary(report));
    });

    test('describes what the server accepts and returns', async () => {
      const doc = (await app.inject('/openapi.json')).json();
      assert.equal(doc.openapi, '3.1.0');
      assert.ok(doc.servers.length > 0);
      const ids = new Set<string>();
      for (const [path, item] of Object.entries<Record<string, { operationId?: string; security?: unknown }>>(doc.paths)) {
        for (const [method, op] of Object.entries(item)) {
          assert.ok(op.operationId, `${method} ${path} has an operationId`);
          assert.ok(!ids.has(op.operationId), `operationId ${op.operationId} is unique`);
          ids.add(op.operationId);
          assert.ok(Array.isArray(op.security), `${method} ${path} declares its security`);
        }
      }
      // The batch body: the object or a bare array, both of which the server takes.
      const batch = doc.paths['/users/batch'].post.requestBody.content['application/json'].schema;
      assert.deepEqual(batch.anyOf.map((s: { type: string }) => s.type).sort(), ['array', 'object']);
      // NDJSON is a text of lines, not one object.
      const ndjson = doc.paths['/users/stream'].get.responses['200'].content['application/x-ndjson'].schema;
      assert.equal(ndjson.type, 'string');
      assert.equal(doc.paths['/users/stream'].get.responses['200'].content['text/csv'].schema.type, 'string');
    });
  });
}

describe('the Prometheus exposition', () => {
  let app: FastifyInstance;
  before(async () => { app = await startApp(db.url); });
  after(async () => { await app?.close(); });

  test('passes promtool check metrics', { skip: !hasPromtool && !process.env.CI && 'promtool not installed (apt-get install prometheus)' }, async () => {
    // Some traffic first, so every family has samples (histograms, the error counters, per-route series).
    await app.inject({ method: 'POST', url: '/users', payload: userBody() });
    await app.inject('/users/not-a-uuid');
    await app.inject('/nowhere');
    const text = (await app.inject('/metrics/prometheus')).body;
    assert.match(text, /^nodejs_active_handles\{/m, 'the per-type gauges stay');
    const { out, code } = await promtool(text);
    assert.equal(out, '', out);
    assert.equal(code, 0);
  });
});
