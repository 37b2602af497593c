/**
 * `npm run create-admin`: creates an admin account (idempotent: an existing account is left as it is).
 *
 *   ADMIN_EMAIL=ops@example.com ADMIN_PASSWORD=... npm run create-admin
 *   npm run create-admin -- --email ops@example.com --role admin < password-file   (password on stdin)
 *
 * The password comes from ADMIN_PASSWORD or standard input, never from an argument (arguments are visible to
 * every user of the machine). On a terminal with no password given it asks for one without echoing it; with no
 * terminal it asks nothing. The database is DATABASE_URL's; without it, the embedded PostgreSQL under DATA_DIR:
 * the running server's when there is one, else started for the occasion. Migrations are applied first.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { ensureAccount } from '../modules/auth/service.ts';
import { ROLES, type Role } from '../modules/auth/scopes.ts';
import { ConfigError, loadConfig, type Config } from '../platform/config.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../db/embedded-postgres.ts';
import { openBackend } from '../db/backend.ts';

function fail(message: string): never {
  console.error(`create-admin: ${message}`);
  process.exit(1);
}

async function readPassword(): Promise<string | undefined> {
  if (process.env.ADMIN_PASSWORD) return process.env.ADMIN_PASSWORD;
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '') || undefined;
  }
  // Interactive: ask, without echoing what is typed.
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true });
  const out = rl as unknown as { _writeToOutput: (s: string) => void };
  let muted = false;
  out._writeToOutput = (s) => { if (!muted) process.stdout.write(s); };
  const answer = await new Promise<string>((ok) => {
    rl.question('Password: ', ok);
    muted = true;
  });
  rl.close();
  process.stdout.write('\n');
  return answer || undefined;
}

/** The running embedded server's URL, from its postmaster.pid (line 4 is the port) and the saved credentials. */
function runningEmbeddedUrl(dataDir: string): string | undefined {
  const dir = resolve(dataDir);
  const pidFile = join(dir, 'pg', 'postmaster.pid');
  const credsFile = join(dir, 'embedded-postgres.json');
  if (!existsSync(pidFile) || !existsSync(credsFile)) return undefined;
  const [pid, , , port] = readFileSync(pidFile, 'utf8').split('\n');
  try {
    process.kill(Number(pid), 0);
  } catch {
    return undefined;
  }
  const creds = JSON.parse(readFileSync(credsFile, 'utf8')) as { user: string; password: string };
  return `postgres://${creds.user}:${encodeURIComponent(creds.password)}@127.0.0.1:${Number(port)}/postgres`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { email: { type: 'string' }, role: { type: 'string', default: 'admin' } } });
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const email = (values.email ?? process.env.ADMIN_EMAIL ?? '').trim();
  if (!/^[^@\s]+@[^@\s]+$/.test(email) || email.length > 254) fail('give an email with --email or ADMIN_EMAIL');
  const role = values.role as Role;
  if (!ROLES.includes(role)) fail(`--role must be one of ${ROLES.join(', ')}`);
  const password = await readPassword();
  if (password === undefined) fail('give a password in ADMIN_PASSWORD or on standard input');
  if (password.length < 8 || password.length > 1024) fail('the password must be 8 to 1024 characters');

  let embedded: EmbeddedPostgres | undefined;
  if (!config.cassandra && !config.databaseUrl) {
    let url = runningEmbeddedUrl(config.dataDir);
    if (!url) {
      embedded = await startEmbeddedPostgres(config.dataDir, () => {});
      url = embedded.url;
    }
    config = { ...config, databaseUrl: url };
  }
  // The backend the service itself opens (schema or migrations included), so the account lands where it reads.
  const backend = await openBackend(config, { log: { info: () => {}, warn: (_o, msg) => console.error(msg) } });
  try {
    const outcome = await ensureAccount(backend.accounts, { email, password, role });
    console.log(outcome === 'created' ? `created ${role} account ${email}` : `account ${email} exists; left unchanged`);
  } finally {
    await backend.close();
    await embedded?.stop();
  }
}

main().catch((err: unknown) => fail((err as Error).message));
