/**
 * The supported Node versions: a clean install on the Node running this test (CI runs it on the machine's Node and on
 * Node 24) must not warn that this Node is refused, neither by our own `engines` nor by any locked package.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const root = new URL('../', import.meta.url).pathname;

test('npm ci on this Node warns no EBADENGINE, for the project or any locked package', async (t) => {
  // A copy of the manifest and lock alone: `npm ci` on the work tree would empty its node_modules first.
  const dir = mkdtempSync(join(tmpdir(), 'spate-engines-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync(join(root, 'package.json'), join(dir, 'package.json'));
  copyFileSync(join(root, 'package-lock.json'), join(dir, 'package-lock.json'));
  const { stdout, stderr } = await promisify(execFile)(
    'npm',
    ['ci', '--dry-run', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=warn'],
    { cwd: dir, env: { ...process.env, npm_config_engine_strict: 'false' } },
  );
  assert.match(stdout, /added \d+ packages/, 'the dry run resolved the lock');
  assert.doesNotMatch(stderr, /EBADENGINE/, `npm warned on Node ${process.version}:\n${stderr}`);
});
