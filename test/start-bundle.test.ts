/**
 * `npm start` runs a bundle (scripts/start.mjs): it must be rebuilt whenever a source changes, and left alone
 * otherwise. Run on a copy of the tree, so the work tree's own bundle is never touched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const root = new URL('../', import.meta.url).pathname;

test('the start bundle is rebuilt when a source changes, and only then', async (t) => {
  const tree = mkdtempSync(join(tmpdir(), 'spate-bundle-'));
  t.after(() => rmSync(tree, { recursive: true, force: true }));
  cpSync(join(root, 'src'), join(tree, 'src'), { recursive: true });
  cpSync(join(root, 'scripts/start.mjs'), join(tree, 'scripts/start.mjs'));
  // Only what the build itself loads: esbuild, and the packages it bundles.
  mkdirSync(join(tree, 'node_modules'));
  for (const pkg of ['esbuild', 'typebox']) symlinkSync(join(root, 'node_modules', pkg), join(tree, 'node_modules', pkg));
  const bundle = join(tree, 'node_modules/.cache/spate/server.js');
  const build = () => promisify(execFile)(process.execPath, [join(tree, 'scripts/start.mjs'), '--build-only']);
  const bundleText = () => readFileSync(bundle, 'utf8');

  await build();
  assert.match(bundleText(), /starting embedded PostgreSQL/);
  const chunks = join(tree, 'node_modules/.cache/spate/chunks');
  const code = readdirSync(chunks).map((f) => readFileSync(join(chunks, f), 'utf8')).join('\n');
  const migrations = `new URL("./migrations/", "${pathToFileURL(join(tree, 'src/db/postgres/migrate.ts')).href}")`;
  assert.ok(code.includes(migrations), 'migrations are read from the source tree, not beside the bundle');
  const built = statSync(bundle).mtimeMs;

  await build();
  assert.equal(statSync(bundle).mtimeMs, built, 'unchanged sources: the bundle is not rewritten');

  const server = join(tree, 'src/process/server.ts');
  writeFileSync(server, readFileSync(server, 'utf8').replace("'starting embedded PostgreSQL'", "'starting the database'"));
  await build();
  assert.match(bundleText(), /starting the database/, 'a changed source is in the next bundle');
  assert.doesNotMatch(bundleText(), /starting embedded PostgreSQL/);
});
