/**
 * `npm run bench`: Spate side by side with FastAPI, Express and bare Fastify on this machine's PostgreSQL, plus
 * the stream scenario, WORKERS=1 against WORKERS=2, and the database micro-benchmark; writes docs/benchmarks.md.
 *
 *   npm run bench                                   everything (about 10 minutes per --repeat)
 *   npm run bench -- --micro                        the database micro-benchmark only
 *   npm run bench -- --profile get_by_id            CPU profile of Spate under load: top self-time functions
 *   npm run bench -- --scenarios get_by_id --repeat 3 --no-stream --no-workers --no-micro --no-write
 *
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) must be a scratch database: the bench
 * migrates it, seeds a million users, inserts more in the create scenario, and recreates a bench account.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { formatSummary, summarize } from './cpuprofile.ts';
import { BenchError, compare, ensureTools, findKit, REPO, wrkScript, type Subject, type WrkResult } from './kit.ts';
import { machineInfo, watchLoad, describeLoad } from './machine.ts';
import { formatMicro, runMicro } from './micro.ts';
import { LIST_ALONE, writeReport, type BenchResults, type Run, type Scenario } from './report.ts';
import { prepareDatabase, productionEnv, provisionApiKey, startSpate } from './spate.ts';
import { measureStream } from './stream.ts';

const { values: opt } = parseArgs({
  options: {
    micro: { type: 'boolean', default: false },
    profile: { type: 'string' },
    scenarios: { type: 'string', default: 'get_by_id,list,create' },
    duration: { type: 'string', default: '15' },
    connections: { type: 'string', default: '50' },
    repeat: { type: 'string', default: '1' },
    rows: { type: 'string', default: '1000000' },
    'no-stream': { type: 'boolean', default: false },
    'no-workers': { type: 'boolean', default: false },
    'no-micro': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
  },
});

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PORT = 8000;
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

/** `--profile <scenario>`: Spate under wrk with --cpu-prof; prints where the main thread's time went. */
async function profile(kit: string, scenario: Scenario, env: NodeJS.ProcessEnv, duration: number): Promise<void> {
  const dir = join(logDir, `profile-${scenario}`);
  mkdirSync(dir, { recursive: true });
  await writeIds();
  const spate = await startSpate(env, PORT, join(logDir, 'spate-profile.log'), ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
  const wrk = (s: number) => execFileSync('wrk', ['-t1', `-c${opt.connections}`, `-d${s}s`, '--latency', '-s', join(kit, 'wrk', `${scenario}.lua`), spate.baseUrl],
    { encoding: 'utf8', env: { ...env, BENCH_IDS: '/tmp/bench-ids.txt', BENCH_WRK_DIR: join(kit, 'wrk') } });
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

async function main(): Promise<void> {
  const duration = Number(opt.duration);
  const repeat = Math.max(1, Number(opt.repeat));
  const rows = Number(opt.rows);

  if (opt.micro) {
    await prepareDatabase(DATABASE_URL, rows, log);
    console.log(formatMicro(await runMicro(DATABASE_URL, log)));
    return;
  }

  const kit = findKit();
  mkdirSync(logDir, { recursive: true });
  ensureTools(kit, log);
  await prepareDatabase(DATABASE_URL, rows, log);
  const env = productionEnv(DATABASE_URL);
  log(`logs of every Spate process: ${logDir}`);
  const apiKey = await provisionApiKey(env, PORT, join(logDir, 'spate-provision.log'), log);
  const benchEnv = { ...env, BENCH_HEADER: `X-API-Key: ${apiKey}` };

  if (opt.profile) {
    await profile(kit, opt.profile as Scenario, benchEnv, duration);
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

  const scenarios = opt.scenarios.split(',').filter(Boolean) as Scenario[];
  for (const scenario of scenarios) {
    const runs: Run<WrkResult[]>[] = [];
    for (let i = 0; i < repeat; i++) {
      log(`${scenario}, run ${i + 1} of ${repeat}`);
      runs.push(await staged(scenario, isOurs, async () => {
        const measured = await compare(kit, {
          scenario, duration, connections: results.connections, env: benchEnv,
          subjects: [spate('spate')], peers: ['fastapi', 'express', 'fastify-raw'], pgbench: scenario === 'get_by_id',
        });
        // Identical pages asked for together are read and serialized once (src/lib/coalesce.ts), which the
        // list scenario (one page, asked for by everyone) favours: also measure every request reading alone.
        if (scenario === 'list') measured.push(await listAlone(benchEnv, results.connections, duration));
        return measured;
      }));
    }
    results.scenarios.push({ scenario, runs });
  }

  if (!opt['no-workers']) {
    results.workers = [];
    for (let i = 0; i < repeat; i++) {
      log(`get_by_id with WORKERS=1 and WORKERS=2, run ${i + 1} of ${repeat}`);
      results.workers.push(await staged('workers', isOurs, () => compare(kit, {
        scenario: 'get_by_id', duration, connections: results.connections, env: benchEnv, peers: [],
        subjects: [spate('spate WORKERS=1', 'WORKERS=1'), spate('spate WORKERS=2', 'WORKERS=2')],
      })));
    }
  }

  if (!opt['no-stream']) {
    log(`stream of ${rows} rows`);
    results.stream = await staged('stream', isOurs, async () => [
      await measureStream(env, apiKey, { port: PORT, rows, fetchSize: 1000, logFile: join(logDir, 'spate-stream.log') }),
      await measureStream(env, apiKey, { port: PORT, rows, fetchSize: 100, logFile: join(logDir, 'spate-stream.log') }),
    ]);
    for (const s of results.stream.results) {
      log(`stream fetch_size=${s.fetchSize}: ${Math.round(s.rowsPerSecond)} rows/s, RSS +${s.growthMb.toFixed(1)} MB`);
    }
  }

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
