/**
 * The users cache's stage of `npm run bench` (`--cache`; docs/caching.md, "Performance"): the targets of issue 13 on
 * the access-token path, a fresh Spate per case, a Redis of the stage's own (test/support/redis.ts):
 *
 * - hot: GET /users/{id}, ids drawn from a Zipf distribution over 100,000 rows (bench/wrk/cache-zipf.lua), the cache
 *   on: at least 2x the bare Fastify + postgres.js peer, which reads the database each time;
 * - every read a miss (bench/wrk/cache-miss.lua), the cache on: at least 0.95x the same load with CACHE_MODE=off;
 * - Redis stopped (killed, then hung with SIGSTOP), CACHE_MODE=redis, the hot load: at least 0.9x CACHE_MODE=off
 *   on the same Redis, no request failed, the slowest one reported;
 * - a mix (90% reads by id, 8% list pages, 2% PATCHes), cache on against off: no target, what a client sees.
 *
 * Each ratio is between runs made one right after the other, since the machine's load moves between minutes.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { startRedis, type TestRedis } from '../test/support/redis.ts';
import { compare, REPO, wrkScript, type WrkResult } from './kit.ts';
import { startSpate } from './spate.ts';

export interface CacheTarget {
  target: string;
  ratio: number;
  bound: number;
  met: boolean;
}

export interface CacheResults {
  runs: WrkResult[];
  targets: CacheTarget[];
}

export interface CacheStageOptions {
  kit: string;
  env: NodeJS.ProcessEnv;
  duration: number;
  connections: number;
  port: number;
  logDir: string;
  /** A fresh `Authorization: Bearer ...` header value's token, logged in by the bench account. */
  token: () => Promise<string>;
  log: (m: string) => void;
  /** Only the hot case with CACHE_MODE=memory and its peer (`--cache-hot`): the hit path's A/B. */
  hotOnly?: boolean;
}

const IDS_FILE = '/tmp/bench-cache-ids.txt';
/** Distinct ids for the miss load: more than it can ask for in a run at this machine's rates. */
const MISS_IDS = 300_000;

async function writeIds(databaseUrl: string): Promise<void> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    // The seeded rows' ids (bench/spate.ts prepareDatabase), those that exist.
    const rows = await sql<{ id: string }[]>`SELECT u.id::text FROM generate_series(1, ${MISS_IDS}::int) n
      JOIN users u ON u.id = md5(n::text)::uuid ORDER BY n`;
    writeFileSync(IDS_FILE, `${rows.map((r) => r.id).join('\n')}\n`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function redisPid(port: number): number {
  const out = execFileSync('ss', ['-ltnpH', `sport = :${port}`], { encoding: 'utf8' });
  return Number(/pid=(\d+)/.exec(out)?.[1]);
}

export async function measureCache(o: CacheStageOptions): Promise<CacheResults> {
  await writeIds(o.env.DATABASE_URL!);
  const redis: TestRedis = await startRedis();
  const runs: WrkResult[] = [];
  const targets: CacheTarget[] = [];
  let header = '';
  const fresh = async () => { header = `Authorization: Bearer ${await o.token()}`; };
  const loadEnv = (extra: Record<string, string> = {}) => ({ ...o.env, BENCH_HEADER: header, BENCH_CACHE_IDS: IDS_FILE, ...extra });
  const mode = (m: 'off' | 'memory' | 'redis'): Record<string, string> => (m === 'redis' ? { CACHE_MODE: m, REDIS_URL: redis.url } : { CACHE_MODE: m });

  async function spate(name: string, extra: Record<string, string>, script: string, load: Record<string, string> = {}): Promise<WrkResult> {
    const s = await startSpate({ ...o.env, ...extra }, o.port, join(o.logDir, `cache-${name.replace(/\W+/g, '-')}.log`));
    try {
      const r = wrkScript(script, s.baseUrl, { name, duration: o.duration, connections: o.connections, env: loadEnv(load) });
      o.log(`cache: ${name}: ${Math.round(r.rps)} req/s, p99 ${r.p99?.toFixed(1)} ms, max ${r.max?.toFixed(0)} ms, non-2xx ${r.non2xx}`);
      runs.push(r);
      return r;
    } finally {
      await s.stop();
    }
  }
  const target = (text: string, a: WrkResult, b: WrkResult, bound: number) => {
    const ratio = a.rps / b.rps;
    targets.push({ target: text, ratio, bound, met: ratio >= bound && a.non2xx === 0 });
  };

  try {
    await fresh();
    const hotRedis = o.hotOnly ? undefined : await spate('hot, CACHE_MODE=redis', mode('redis'), 'cache-zipf.lua');
    const hotMemory = await spate('hot, CACHE_MODE=memory', mode('memory'), 'cache-zipf.lua');
    const [peer] = await compare(o.kit, {
      scenario: 'get_by_id', duration: o.duration, connections: o.connections, subjects: [], peers: ['fastify-raw'],
      wrkScript: join(REPO, 'bench', 'wrk', 'cache-zipf.lua'), env: loadEnv(),
    });
    runs.push({ ...peer!, name: 'hot, fastify-raw (reads the database each time)' });
    if (hotRedis) target('hot (Zipf), CACHE_MODE=redis >= 2x fastify-raw', hotRedis, peer!, 2);
    target('hot (Zipf), CACHE_MODE=memory >= 2x fastify-raw', hotMemory, peer!, 2);
    if (o.hotOnly) return { runs, targets };

    // REDIS_URL serves more than the cache (below): the Redis layer's own cost on misses is its ratio to off on the
    // same deployment, REDIS_URL set; the ratio to off without Redis is printed beside it.
    const offWithRedis = { ...mode('off'), REDIS_URL: redis.url };
    await fresh();
    const missOff = await spate('every read a miss, CACHE_MODE=off', mode('off'), 'cache-miss.lua');
    const missOffRedis = await spate('every read a miss, CACHE_MODE=off, same REDIS_URL', offWithRedis, 'cache-miss.lua');
    const missRedis = await spate('every read a miss, CACHE_MODE=redis', mode('redis'), 'cache-miss.lua');
    const missMemory = await spate('every read a miss, CACHE_MODE=memory', mode('memory'), 'cache-miss.lua');
    target('every read a miss, CACHE_MODE=redis >= 0.95x off (same REDIS_URL)', missRedis, missOffRedis, 0.95);
    target('every read a miss, CACHE_MODE=redis, against off without Redis (rate limits in Redis too)', missRedis, missOff, 0.95);
    target('every read a miss, CACHE_MODE=memory >= 0.95x off', missMemory, missOff, 0.95);

    // Redis stopped. REDIS_URL also serves auth (its revocation bus: with Redis unusable every credential check
    // reads the database) and the rate limits, so the cache's own cost is the ratio to CACHE_MODE=off with the same
    // REDIS_URL and the same dead Redis; the ratio to off without any Redis is printed too.
    await fresh();
    const hotOff = await spate('hot, CACHE_MODE=off, no REDIS_URL', mode('off'), 'cache-zipf.lua');
    await redis.kill();
    const downOff = await spate('hot, CACHE_MODE=off, Redis down', offWithRedis, 'cache-zipf.lua');
    const down = await spate('hot, CACHE_MODE=redis, Redis down', mode('redis'), 'cache-zipf.lua');
    await redis.restart();
    const pid = redisPid(redis.port);
    process.kill(pid, 'SIGSTOP');
    let hung: WrkResult;
    let hungOff: WrkResult;
    try {
      hungOff = await spate('hot, CACHE_MODE=off, Redis hung (SIGSTOP)', offWithRedis, 'cache-zipf.lua');
      hung = await spate('hot, CACHE_MODE=redis, Redis hung (SIGSTOP)', mode('redis'), 'cache-zipf.lua');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    target('Redis down, CACHE_MODE=redis >= 0.9x off (same REDIS_URL, Redis down)', down, downOff, 0.9);
    target('Redis hung, CACHE_MODE=redis >= 0.9x off (same REDIS_URL, Redis hung)', hung, hungOff, 0.9);
    target('Redis down, CACHE_MODE=redis, against off without Redis (auth bypassed too)', down, hotOff, 0.9);

    await fresh();
    const mixOff = await spate('mix, CACHE_MODE=off', mode('off'), 'cache-zipf.lua', { BENCH_MIX: '1' });
    const mixRedis = await spate('mix, CACHE_MODE=redis', mode('redis'), 'cache-zipf.lua', { BENCH_MIX: '1' });
    targets.push({ target: 'mix (90% get, 8% list, 2% PATCH), redis ÷ off (no target)', ratio: mixRedis.rps / mixOff.rps, bound: 0, met: mixRedis.non2xx === 0 });
  } finally {
    await redis.stop();
  }
  return { runs, targets };
}

/** The stage's figures as the bench prints them. */
export function formatCache(r: CacheResults): string {
  const ms = (v: number | null | undefined) => (v == null ? '–' : v.toFixed(1));
  const lines = ['| Case | req/s | p50 ms | p99 ms | max ms | non-2xx |', '|---|---:|---:|---:|---:|---:|'];
  for (const x of r.runs) lines.push(`| ${x.name} | ${Math.round(x.rps)} | ${ms(x.p50)} | ${ms(x.p99)} | ${ms(x.max)} | ${x.non2xx} |`);
  lines.push('', '| Target | Ratio | Met |', '|---|---:|---|');
  for (const t of r.targets) lines.push(`| ${t.target} | ${t.ratio.toFixed(2)}x | ${t.bound === 0 ? '–' : t.met ? 'yes' : '**no**'} |`);
  return lines.join('\n');
}
