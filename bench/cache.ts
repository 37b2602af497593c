/**
 * `npx tsx bench/cache.ts [seconds] [connections]`: the users cache under load, on a PostgreSQL and a Redis of its
 * own (the test helpers': never the machine's services). One `npm start` of Spate per run, GET /users/{id}:
 *
 * - hot: ids drawn from a Zipf distribution (s = 1) over 100,000 rows, CACHE_MODE=off, memory, redis;
 * - miss: every read a different id (each once), CACHE_MODE=memory against off;
 * - redis down: CACHE_MODE=redis with Redis SIGSTOPped (hung) for the whole run, against off.
 *
 * The load generator runs in this process on the same cores as the server: compare runs with each other, not
 * with other machines. Prints requests per second, the slowest request, and the load average.
 */
import { loadavg } from 'node:os';
import { execFileSync } from 'node:child_process';
import postgres from 'postgres';
import { createTestDatabase } from '../test/support/postgres.ts';
import { startRedis } from '../test/support/redis.ts';
import { startServer } from '../test/support/server.ts';

const SECONDS = Number(process.argv[2] ?? 8);
const CONNECTIONS = Number(process.argv[3] ?? 32);
const ROWS = 100_000;

/** Ranks 0..n-1 drawn with probability proportional to 1/(rank+1). */
function zipf(n: number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1);
  return () => {
    const x = Math.random() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

async function drive(base: string, next: () => string): Promise<{ rps: number; maxMs: number; errors: number }> {
  const until = performance.now() + SECONDS * 1000;
  let done = 0;
  let errors = 0;
  let maxMs = 0;
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    while (performance.now() < until) {
      const started = performance.now();
      const res = await fetch(`${base}/users/${next()}`);
      await res.arrayBuffer();
      if (res.status !== 200) errors++;
      maxMs = Math.max(maxMs, performance.now() - started);
      done++;
    }
  }));
  return { rps: done / SECONDS, maxMs, errors };
}

const db = await createTestDatabase();
const redis = await startRedis();
const results: string[] = [];
try {
  const env = { DATABASE_URL: db.url, LOG_LEVEL: 'warn', CACHE_TTL_MS: '60000' };
  const boot = await startServer({ ...env, CACHE_MODE: 'off' });
  await boot.stop(); // migrated
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  await sql`INSERT INTO users (id, name, email, age, created_at, updated_at)
    SELECT gen_random_uuid(), 'User ' || i, 'u' || i || '@example.com', i % 150, now(), now() FROM generate_series(1, ${ROWS}) i`;
  const ids = (await sql<{ id: string }[]>`SELECT id FROM users`).map((r) => r.id);
  await sql.end();
  const rank = zipf(ids.length);
  const hot = () => ids[rank()]!;
  let cursor = 0;
  const everyOnce = () => ids[cursor++ % ids.length]!;

  // BENCH_ONLY=miss (a word of the labels) runs only the matching cases.
  const only = process.env.BENCH_ONLY;
  const run = async (label: string, extra: Record<string, string>, next: () => string, during?: (pid: number) => void) => {
    if (only && !label.includes(only)) return;
    const s = await startServer({ ...env, ...extra });
    try {
      await drive(s.baseUrl, next); // warm-up (JIT, pools)
      during?.(0);
      cursor = 0;
      const r = await drive(s.baseUrl, next);
      const line = `${label.padEnd(34)} ${r.rps.toFixed(0).padStart(7)} req/s  max ${r.maxMs.toFixed(0).padStart(5)} ms  `
        + `errors ${r.errors}  load ${loadavg()[0]!.toFixed(2)}`;
      console.log(line);
      results.push(line);
    } finally {
      await s.stop();
    }
  };

  await run('hot (zipf), CACHE_MODE=off', { CACHE_MODE: 'off' }, hot);
  await run('hot (zipf), CACHE_MODE=memory', { CACHE_MODE: 'memory' }, hot);
  await run('hot (zipf), CACHE_MODE=redis', { CACHE_MODE: 'redis', REDIS_URL: redis.url }, hot);
  await run('every read a miss, CACHE_MODE=off', { CACHE_MODE: 'off' }, everyOnce);
  await run('every read a miss, CACHE_MODE=memory', { CACHE_MODE: 'memory', CACHE_MAX_ENTRIES: '1000' }, everyOnce);
  const pid = Number(/pid=(\d+)/.exec(execFileSync('ss', ['-ltnpH', `sport = :${redis.port}`], { encoding: 'utf8' }))![1]);
  await run('hot, CACHE_MODE=redis, Redis hung', { CACHE_MODE: 'redis', REDIS_URL: redis.url }, hot, () => process.kill(pid, 'SIGSTOP'));
  process.kill(pid, 'SIGCONT');
} finally {
  await redis.stop();
  await db.destroy();
}
console.log(`\n${SECONDS} s per run, ${CONNECTIONS} connections, ${ROWS} rows\n${results.join('\n')}`);
