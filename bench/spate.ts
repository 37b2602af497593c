/**
 * Spate as the benchmark runs it: production mode on a scratch PostgreSQL, with its schema, a million seeded
 * rows, and an API key of a bench account, so every measured request takes the authenticated path.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import postgres from 'postgres';
import { BenchError, REPO } from './kit.ts';

/** The bench's own account: deleted and made again at each run, since its password is not kept. */
export const BENCH_EMAIL = 'bench@spate.invalid';

/**
 * The production environment of every Spate process in the bench. Everything stays on; the general rate limit
 * is raised above the benchmark's request rate (one API key is one client, and the default of 1000 a minute
 * would turn the run into 429s), so it is still counted on every request.
 */
export function productionEnv(databaseUrl: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    NODE_ENV: 'production',
    LOG_LEVEL: 'info',
    DATABASE_URL: databaseUrl,
    JWT_SECRET: randomBytes(48).toString('base64url'),
    RATE_LIMIT_MAX: '10000000',
  };
}

/** `npm run migrate`, then rows with ids md5(n)::uuid for n in 1..rows (the ids compare.mjs reads), when missing. */
export async function prepareDatabase(url: string, rows: number, log: (m: string) => void): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`SELECT 1`;
  } catch (err) {
    await sql.end({ timeout: 1 });
    throw new BenchError(`PostgreSQL at ${redact(url)} does not answer (${(err as Error).message}); set DATABASE_URL to a scratch database`);
  }
  try {
    log('npm run migrate');
    execFileSync('npm', ['run', '--silent', 'migrate'], { cwd: REPO, env: { ...process.env, DATABASE_URL: url }, stdio: 'inherit' });
    const [last] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM users WHERE id = md5(${rows}::text)::uuid`;
    if (last?.n === 0) {
      log(`seeding ${rows} rows`);
      await sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
        SELECT md5(n::text)::uuid, 'User ' || n, 'user' || n || '@example.com', 18 + n % 60, now(), now()
        FROM generate_series(1, ${rows}::int) n ON CONFLICT (id) DO NOTHING`;
      await sql`ANALYZE users`;
    }
    await trim(sql, log);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * Deletes the rows earlier runs' load stages inserted (creates, events: any email but a seeded row's), so that every
 * run measures the same table. The stream reads the first million ids, which are spread over the whole heap (ids
 * are uuids): on a table grown by earlier runs each page read brings fewer of them (2026-12-07, embedded PostgreSQL,
 * shared_buffers 128 MB: 176,223 rows/s at fetch_size 1000 on a fresh seed, 136,454 with 4.6 million rows added).
 */
async function trim(sql: postgres.Sql, log: (m: string) => void): Promise<void> {
  const t0 = performance.now();
  const gone = await sql`DELETE FROM users WHERE email NOT LIKE 'user%@example.com'`;
  if (gone.count === 0) return;
  await sql`VACUUM (ANALYZE) users`;
  log(`removed ${gone.count} rows left by earlier runs, and vacuumed (${Math.round(performance.now() - t0)} ms)`);
}

/** `trim` on its own, between stages: the stream after the load stages reads the seeded table, not what they added. */
export async function trimToSeed(url: string, log: (m: string) => void): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await trim(sql, log);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

const redact = (url: string) => url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');

export interface Running {
  pid: number;
  port: number;
  baseUrl: string;
  child: ChildProcess;
  /** SIGTERM, then waits for the exit (SIGKILL after 15 s). */
  stop(): Promise<void>;
}

/** The node arguments of `npm start` (package.json), so the bench runs exactly what users run. */
function startArgs(): string[] {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const words = pkg.scripts.start.split(/\s+/).filter(Boolean);
  const at = words.indexOf('node');
  if (at < 0) throw new BenchError(`cannot read the node command from the start script: ${pkg.scripts.start}`);
  return words.slice(at + 1);
}

export function waitPort(port: number, ms = 60_000): Promise<void> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const once = () => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(); });
      s.once('error', () => {
        s.destroy();
        if (Date.now() - t0 > ms) reject(new BenchError(`port ${port} never opened`));
        else setTimeout(once, 100);
      });
    };
    once();
  });
}

/**
 * Starts the server the way `npm start` does (node directly, so `pid` is the server's own), logging to
 * `logFile`. `nodeFlags` go before the script (`--cpu-prof` for profiles).
 */
export async function startSpate(env: NodeJS.ProcessEnv, port: number, logFile: string, nodeFlags: string[] = []): Promise<Running> {
  const args = startArgs();
  const script = args.findIndex((a) => a.endsWith('.ts') || a.endsWith('.js'));
  const argv = [...args.slice(0, script), ...nodeFlags, ...args.slice(script)];
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, argv, { cwd: REPO, env: { ...env, PORT: String(port) }, stdio: ['ignore', out, out] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await Promise.race([waitPort(port), exited.then(() => { throw new BenchError(`Spate exited at start; see ${logFile}`); })]);
  return {
    pid: child.pid!,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    child,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(kill);
    },
  };
}

/** The bench account's credentials: an API key (kept in the database) and the password to log in with. */
export interface BenchAccount {
  apiKey: string;
  password: string;
}

/**
 * A fresh bench account (admin, made with `npm run create-admin`) and an API key with the users scopes, created
 * over HTTP by a logged-in session as docs/security.md describes. The key outlives this server: it is in the
 * database, and every Spate the bench starts accepts it.
 */
export async function provisionAccount(env: NodeJS.ProcessEnv, port: number, logFile: string, log: (m: string) => void): Promise<BenchAccount> {
  const sql = postgres(env.DATABASE_URL!, { max: 1, onnotice: () => {} });
  try {
    await sql`DELETE FROM accounts WHERE lower(email) = ${BENCH_EMAIL}`;
  } finally {
    await sql.end({ timeout: 5 });
  }
  const password = randomBytes(24).toString('base64url');
  log(`creating the bench account ${BENCH_EMAIL} (npm run create-admin)`);
  execFileSync('npm', ['run', '--silent', 'create-admin'], {
    cwd: REPO, env: { ...env, ADMIN_EMAIL: BENCH_EMAIL, ADMIN_PASSWORD: password }, stdio: ['ignore', 'inherit', 'inherit'],
  });
  const spate = await startSpate(env, port, logFile);
  try {
    const token = await login(spate.baseUrl, password);
    const created = await post(`${spate.baseUrl}/auth/api-keys`, { name: 'bench', scopes: ['users:read', 'users:write'] }, token);
    return { apiKey: (created as { key: string }).key, password };
  } finally {
    await spate.stop();
  }
}

/** `POST /auth/token` as the bench account: a fresh access token (a new session each time). */
export async function login(baseUrl: string, password: string): Promise<string> {
  const body = await post(`${baseUrl}/auth/token`, { email: BENCH_EMAIL, password });
  return (body as { access_token: string }).access_token;
}

/**
 * An access token for a load that Spate processes started by someone else (compare.mjs) will serve: logged in
 * through a Spate of our own, just before, since tokens live `ACCESS_TOKEN_TTL` (15 minutes) and a whole run
 * takes longer. The session is in the database, so any Spate with the same JWT_SECRET accepts the token.
 */
export async function freshAccessToken(env: NodeJS.ProcessEnv, port: number, logFile: string, password: string): Promise<string> {
  const spate = await startSpate(env, port, logFile);
  try {
    return await login(spate.baseUrl, password);
  } finally {
    await spate.stop();
  }
}

async function post(url: string, body: unknown, bearer?: string): Promise<unknown> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new BenchError(`POST ${new URL(url).pathname} answered ${res.status}: ${text}`);
  return JSON.parse(text);
}

/** Resident set size of a process in bytes (Linux /proc), or 0 once it is gone. */
export function rssOf(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}
