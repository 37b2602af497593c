/**
 * The black-box harness itself (test/support/server.ts): the servers it starts see only the environment the test
 * gives them (not the developer's variables, not a `.env` in the repository root), run package.json's start
 * command, are the Node process itself, so that stopping or killing one leaves nothing running, and get another
 * port when the one chosen was taken before they could bind it.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { freePort } from '../src/db/embedded-postgres.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startCommand, startServer } from './support/server.ts';

const root = new URL('../', import.meta.url).pathname;
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.destroy();
});

function environOf(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('the start script becomes node and its arguments, and one a shell would have to read is refused', () => {
  assert.deepEqual(startCommand('exec node --heap-growing-percent=50 --import tsx src/process/server.ts'), {
    env: {}, args: ['--heap-growing-percent=50', '--import', 'tsx', 'src/process/server.ts'],
  });
  assert.deepEqual(startCommand('NODE_ENV=production node dist/server.js'), { env: { NODE_ENV: 'production' }, args: ['dist/server.js'] });
  assert.throws(() => startCommand('tsc && node dist/server.js'), /without a shell/);
  assert.throws(() => startCommand('tsx src/process/server.ts'), /does not run node/);
});

test('a server sees PATH, HOME, the harness defaults and what the test passes: not the shell\'s variables, not a .env in the repository', async (t) => {
  const leaked = { DATABASE_URL: 'postgres://leak.invalid/none', REDIS_URL: 'redis://leak.invalid:1', NODE_ENV: 'production', NODE_OPTIONS: '--max-old-space-size=16' };
  const saved = Object.fromEntries(Object.keys(leaked).map((k) => [k, process.env[k]]));
  Object.assign(process.env, leaked);
  // NODE_ENV=production without JWT_SECRET stops the server at start: a .env that leaked in cannot go unnoticed.
  const dotenv = join(root, '.env');
  const ours = !existsSync(dotenv);
  if (ours) writeFileSync(dotenv, 'NODE_ENV=production\nREDIS_URL=redis://leak.invalid:2\n', { flag: 'wx' });
  else t.diagnostic('the repository already has a .env; it is left as it is');
  const removeDotenv = () => { if (ours) rmSync(dotenv, { force: true }); };
  process.once('exit', removeDotenv);
  try {
    const server = await startServer({ DATABASE_URL: db.url, LOG_LEVEL: 'warn' });
    try {
      const env = environOf(server.pid);
      // OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: the harness's own default, load shedding off (test/support/unshed.ts).
      assert.deepEqual(Object.keys(env).sort(), ['DATABASE_URL', 'HOME', 'HOST', 'LOG_LEVEL', 'OVERLOAD_MAX_EVENT_LOOP_DELAY_MS', 'PATH', 'PORT']
        .filter((k) => k !== 'HOME' || process.env.HOME));
      assert.equal(env.DATABASE_URL, db.url);
      assert.equal(env.LOG_LEVEL, 'warn', 'what the test passes wins over the harness default');
      const health = (await (await fetch(`${server.baseUrl}/health`)).json()) as { status: string };
      assert.equal(health.status, 'healthy', 'the server uses the database the test gave it');
      assert.equal(existsSync(join(server.cwd, '.env')), false);
    } finally {
      assert.equal(await server.stop(), 0, server.output());
    }
  } finally {
    removeDotenv();
    process.removeListener('exit', removeDotenv);
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test('the server is the Node process itself: SIGKILL from stop() leaves nothing listening', async () => {
  const server = await startServer({ DATABASE_URL: db.url });
  assert.equal(server.pid, server.child.pid);
  const cmdline = readFileSync(`/proc/${server.pid}/cmdline`, 'utf8').split('\0');
  assert.equal(cmdline[0], process.execPath, 'node, not npm');
  assert.ok(cmdline.includes(startCommand(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.start).args.at(-1)!));
  assert.equal(await server.stop('SIGKILL'), 'SIGKILL');
  assert.equal(alive(server.pid), false);
  await assert.rejects(fetch(`${server.baseUrl}/health/live`), 'nothing listens on the port any more');
  assert.equal(existsSync(server.cwd), false, 'the temporary package root is removed');
});

test('a chosen port taken before the server binds it is replaced by another', async () => {
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  const taken = (squatter.address() as net.AddressInfo).port;
  const offered: number[] = [];
  try {
    const server = await startServer({ DATABASE_URL: db.url }, {
      choosePort: async () => { const port = offered.length === 0 ? taken : await freePort(); offered.push(port); return port; },
    });
    try {
      assert.equal(offered.length, 2);
      assert.notEqual(server.port, taken);
      assert.equal((await fetch(`${server.baseUrl}/health/live`)).status, 200);
    } finally {
      assert.equal(await server.stop(), 0, server.output());
    }
  } finally {
    squatter.close();
  }
});
