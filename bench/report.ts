/**
 * docs/benchmarks.md and its chart (docs/benchmarks.svg, drawn here: no plotting tools) from a run's results.
 *
 * The generated parts are rewritten on every run; the hand-written analysis between the `analysis` markers of
 * the existing file is kept as it is.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { WrkResult } from './kit.ts';
import { describeLoad, type LoadReport, type MachineInfo } from './machine.ts';
import type { Figure } from './micro.ts';
import type { StreamResult } from './stream.ts';

export type Scenario = 'get_by_id' | 'list' | 'create';

export interface Run<T> {
  results: T;
  load: LoadReport;
}

export interface BenchResults {
  date: string;
  machine: MachineInfo;
  duration: number;
  connections: number;
  rows: number;
  command: string;
  scenarios: { scenario: Scenario; runs: Run<WrkResult[]>[] }[];
  workers?: Run<WrkResult[]>[];
  /** `--also-node`: the scenarios again on another Node (Spate on both paths, and bare Fastify). */
  otherNode?: { version: string; scenarios: { scenario: Scenario; runs: Run<WrkResult[]>[] }[] };
  /** How the workers stage pinned its load generator. */
  workersPinning?: string;
  stream?: Run<StreamResult[]>;
  micro?: Run<Figure[]>;
}

const SCENARIO_TEXT: Record<Scenario, string> = {
  get_by_id: '`GET /users/{id}`, ids drawn at random from the first 20,000 seeded rows',
  list: '`GET /users?limit=100`, the first page of 100 users; then a mix of page sizes and cursors (bench/wrk/list-mixed.lua), and, for Spate, the first page with every request reading alone',
  create: '`POST /users` with a unique email per request (a committed insert each)',
};

/** The list scenario's extra subject: Spate with every request reading alone (no shared reads). */
export const LIST_ALONE = 'spate, each request alone';
/** Spate on the API-key path; plain `spate` is the access-token path (the headline, and the ratios' base). */
export const SPATE_KEY = 'spate, X-API-Key';
/** A subject's name in the list loads with mixed page sizes and cursors (bench/wrk/list-mixed.lua). */
export const mixedName = (name: string) => `${name}, mixed pages`;
const SPATE_TOKEN = 'spate';

/**
 * The issue's targets: `subject`'s req/s (default: Spate with an access token) over the peer's, at least; with
 * `p99`, the subject's p99 over the peer's, at most.
 */
const TARGETS: { scenario: Scenario; peer: string; ratio: number; subject?: string; p99?: number }[] = [
  { scenario: 'get_by_id', peer: 'fastapi', ratio: 4 },
  { scenario: 'get_by_id', peer: 'express', ratio: 2.5 },
  ...[SPATE_TOKEN, SPATE_KEY].flatMap((subject) => [
    { scenario: 'get_by_id' as const, peer: 'fastify-raw', ratio: 1.0, subject, p99: 1.5 },
    { scenario: 'create' as const, peer: 'fastify-raw', ratio: 1.0, subject },
    { scenario: 'list' as const, peer: mixedName('fastify-raw'), ratio: 1.0, subject: mixedName(subject) },
  ]),
  { scenario: 'create', peer: 'fastapi', ratio: 3 },
  { scenario: 'list', peer: 'fastify-raw', ratio: 1.0 },
  { scenario: 'list', peer: 'fastify-raw', ratio: 1.0, subject: LIST_ALONE },
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};
const fmt = (n: number | null | undefined, digits = 0) => (n === null || n === undefined || Number.isNaN(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));

/** Spate's req/s (the first subject's, or `subject`'s) over `peer`'s in one run. */
function ratioIn(results: WrkResult[], peer: string, subject?: string, measure: 'rps' | 'p99' = 'rps'): number {
  const spate = (subject === undefined ? results[0] : results.find((r) => r.name === subject))?.[measure] ?? 0;
  const other = results.find((r) => r.name === peer)?.[measure] ?? 0;
  return other > 0 ? spate / other : NaN;
}

function targetsTable(r: BenchResults): string {
  const lines = ['| Target | Runs | Median | Met |', '|---|---|---|---|'];
  for (const t of TARGETS) {
    const s = r.scenarios.find((x) => x.scenario === t.scenario);
    if (!s) continue;
    const ratios = s.runs.map((run) => ratioIn(run.results, t.peer, t.subject));
    const m = median(ratios);
    lines.push(`| ${t.scenario}: ${t.subject ?? SPATE_TOKEN} ≥ ${t.ratio}× ${t.peer} | ${ratios.map((x) => `${fmt(x, 2)}×`).join(', ')} | ${fmt(m, 2)}× | ${m >= t.ratio ? 'yes' : '**no**'} |`);
    if (t.p99 !== undefined) {
      const p99s = s.runs.map((run) => ratioIn(run.results, t.peer, t.subject, 'p99'));
      const mp = median(p99s);
      lines.push(`| ${t.scenario}: ${t.subject ?? SPATE_TOKEN} p99 ≤ ${t.p99}× ${t.peer}'s | ${p99s.map((x) => `${fmt(x, 2)}×`).join(', ')} | ${fmt(mp, 2)}× | ${mp <= t.p99 ? 'yes' : '**no**'} |`);
    }
  }
  if (r.stream) {
    for (const s of r.stream.results) {
      lines.push(`| stream (fetch_size ${s.fetchSize}): ≥ 100,000 rows/s | ${fmt(s.rowsPerSecond)} rows/s | | ${s.rowsPerSecond >= 100_000 ? 'yes' : '**no**'} |`);
      lines.push(`| stream (fetch_size ${s.fetchSize}): RSS growth < 50 MB for 1,000,000 rows | ${fmt(s.growthMb, 1)} MB | | ${s.growthMb < 50 ? 'yes' : '**no**'} |`);
    }
  }
  if (r.micro) {
    for (const f of r.micro.results.filter((x) => x.targetUs !== undefined)) {
      lines.push(`| ${f.name}: p50 < ${f.targetUs} µs | ${fmt(f.p50Us, 1)} µs (p99 ${fmt(f.p99Us, 1)}) | | ${f.p50Us < f.targetUs! ? 'yes' : '**no**'} |`);
    }
  }
  return lines.join('\n');
}

function scenarioTable(s: { scenario: Scenario; runs: Run<WrkResult[]>[] }): string {
  const names = s.runs[0]!.results.map((x) => x.name);
  const lines = [
    `| Subject | req/s | p50 ms | p99 ms | non-2xx | Spate ÷ subject |`,
    '|---|---:|---:|---:|---:|---:|',
  ];
  for (const name of names) {
    const of = s.runs.map((run) => run.results.find((x) => x.name === name)).filter((x): x is WrkResult => !!x);
    const rps = median(of.map((x) => x.rps));
    const ratio = median(s.runs.map((run) => ratioIn(run.results, name)));
    lines.push(`| ${name} | ${fmt(rps)} | ${fmt(median(of.map((x) => x.p50 ?? NaN)), 2)} | ${fmt(median(of.map((x) => x.p99 ?? NaN)), 2)} | ${of.reduce((n, x) => n + x.non2xx, 0)} | ${fmt(ratio, 2)} |`);
  }
  return lines.join('\n');
}

/** Horizontal bars, one panel per scenario, each bar scaled to the fastest subject of its panel. */
export function chart(r: BenchResults): string {
  const width = 760;
  const left = 170;
  const barMax = width - left - 150;
  const rowH = 24;
  const colors: Record<string, string> = { spate: '#1f6feb', 'fastify-raw': '#8c959f', express: '#bf8700', fastapi: '#2da44e' };
  let y = 40;
  const parts: string[] = [];
  for (const s of r.scenarios) {
    const subjects = s.runs[0]!.results.map((x) => x.name).filter((n) => !n.startsWith('pgbench'));
    const rps = new Map(subjects.map((n) => [n, median(s.runs.map((run) => run.results.find((x) => x.name === n)?.rps ?? 0))]));
    const top = Math.max(...rps.values(), 1);
    parts.push(`<text x="10" y="${y}" font-weight="bold">${s.scenario}</text>`);
    y += 10;
    for (const n of subjects) {
      const v = rps.get(n)!;
      const w = Math.max(1, (v / top) * barMax);
      const ratio = v > 0 ? (rps.get(subjects[0]!)! / v) : NaN;
      parts.push(`<text x="${left - 8}" y="${y + 16}" text-anchor="end">${n}</text>`);
      parts.push(`<rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${colors[n] ?? '#6e7781'}"/>`);
      parts.push(`<text x="${(left + w + 6).toFixed(1)}" y="${y + 16}">${fmt(v)} req/s${n === subjects[0] ? '' : ` (Spate ${fmt(ratio, 2)}×)`}</text>`);
      y += rowH;
    }
    y += 18;
  }
  const height = y;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="20" font-size="15" font-weight="bold">Requests per second, ${r.connections} connections, ${r.duration} s per subject (median of ${r.scenarios[0]?.runs.length ?? 1} run(s))</text>
${parts.join('\n')}
</svg>
`;
}

function machineSection(r: BenchResults): string {
  const m = r.machine;
  return [
    `- Machine: ${m.cores} cores (\`nproc\`), ${m.cpu}, ${m.memoryGb} GB memory, Linux ${m.kernel}`,
    `- Node.js ${m.node}; ${m.postgres}; ${m.wrk}`,
    `- Date: ${r.date}; command: \`${r.command}\``,
  ].join('\n');
}

function loadLines(r: BenchResults): string {
  const lines: string[] = [];
  for (const s of r.scenarios) s.runs.forEach((run, i) => lines.push(`- ${s.scenario} run ${i + 1}: ${describeLoad(run.load)}`));
  r.otherNode?.scenarios.forEach((s) => s.runs.forEach((run) => lines.push(`- ${s.scenario} on ${r.otherNode!.version}: ${describeLoad(run.load)}`)));
  r.workers?.forEach((run, i) => lines.push(`- workers run ${i + 1}: ${describeLoad(run.load)}`));
  if (r.stream) lines.push(`- stream: ${describeLoad(r.stream.load)}`);
  if (r.micro) lines.push(`- micro-benchmark: ${describeLoad(r.micro.load)}`);
  return lines.join('\n');
}

/** This run's Node beside `--also-node`'s, per scenario and subject (first runs' medians). */
function nodesTable(r: BenchResults): string {
  const other = r.otherNode!;
  const lines = [`| Scenario | Subject | ${r.machine.node} req/s | ${other.version} req/s | ${other.version} ÷ ${r.machine.node} | Spate ÷ fastify-raw on ${r.machine.node} | on ${other.version} |`,
    '|---|---|---:|---:|---:|---:|---:|'];
  const rpsOf = (runs: Run<WrkResult[]>[], name: string) => median(runs.map((run) => run.results.find((x) => x.name === name)?.rps ?? NaN));
  for (const o of other.scenarios) {
    const here = r.scenarios.find((x) => x.scenario === o.scenario);
    if (!here) continue;
    for (const name of [SPATE_TOKEN, SPATE_KEY, 'fastify-raw']) {
      const a = rpsOf(here.runs, name);
      const b = rpsOf(o.runs, name);
      const vs = (runs: Run<WrkResult[]>[]) => (name === 'fastify-raw' ? NaN : rpsOf(runs, name) / rpsOf(runs, 'fastify-raw'));
      lines.push(`| ${o.scenario} | ${name} | ${fmt(a)} | ${fmt(b)} | ${fmt(b / a, 2)} | ${fmt(vs(here.runs), 2)} | ${fmt(vs(o.runs), 2)} |`);
    }
  }
  return lines.join('\n');
}

function workersTable(runs: Run<WrkResult[]>[]): string {
  const names = runs[0]!.results.map((x) => x.name);
  const base = median(runs.map((run) => run.results[0]?.rps ?? 0));
  const lines = ['| Processes | req/s | p50 ms | p99 ms | non-2xx | vs WORKERS=1 |', '|---|---:|---:|---:|---:|---:|'];
  for (const n of names) {
    const of = runs.map((run) => run.results.find((x) => x.name === n)!).filter(Boolean);
    const rps = median(of.map((x) => x.rps));
    lines.push(`| ${n} | ${fmt(rps)} | ${fmt(median(of.map((x) => x.p50 ?? NaN)), 2)} | ${fmt(median(of.map((x) => x.p99 ?? NaN)), 2)} | ${of.reduce((s, x) => s + x.non2xx, 0)} | ${fmt(rps / base, 2)} |`);
  }
  return lines.join('\n');
}

function streamTable(results: StreamResult[]): string {
  const lines = ['| fetch_size | rows | seconds | rows/s | MB sent | RSS before | RSS peak | growth |', '|---:|---:|---:|---:|---:|---:|---:|---:|'];
  for (const s of results) {
    lines.push(`| ${s.fetchSize} | ${fmt(s.rows)} | ${fmt(s.seconds, 2)} | ${fmt(s.rowsPerSecond)} | ${fmt(s.megabytes, 1)} | ${fmt(s.baselineRssMb, 1)} MB | ${fmt(s.peakRssMb, 1)} MB | ${fmt(s.growthMb, 1)} MB |`);
  }
  return lines.join('\n');
}

function microTable(figures: Figure[]): string {
  const lines = ['| Measure | p50 µs | p99 µs | mean µs | rate | target |', '|---|---:|---:|---:|---:|---|'];
  for (const f of figures) {
    const target = f.targetUs === undefined ? '' : `p50 < ${f.targetUs} µs: ${f.p50Us < f.targetUs ? 'met' : '**missed**'}`;
    lines.push(`| ${f.name} | ${fmt(f.p50Us, 1)} | ${fmt(f.p99Us, 1)} | ${fmt(f.meanUs, 1)} | ${f.perSecond ? `${fmt(f.perSecond)}/s` : ''} | ${target} |`);
  }
  return lines.join('\n');
}

const ANALYSIS_START = '<!-- analysis:start -->';
const ANALYSIS_END = '<!-- analysis:end -->';

function keptAnalysis(path: string): string {
  if (!existsSync(path)) return `${ANALYSIS_START}\n${ANALYSIS_END}`;
  const text = readFileSync(path, 'utf8');
  const a = text.indexOf(ANALYSIS_START);
  const b = text.indexOf(ANALYSIS_END);
  return a >= 0 && b > a ? text.slice(a, b + ANALYSIS_END.length) : `${ANALYSIS_START}\n${ANALYSIS_END}`;
}

export function writeReport(r: BenchResults, mdPath: string, svgPath: string, svgRef: string, method: string): void {
  writeFileSync(svgPath, chart(r));
  const sections = [
    '# Benchmarks',
    '',
    '<!-- Generated by `npm run bench` (bench/run.ts), except the analysis section, which is kept across runs. -->',
    '',
    `Latest run: ${r.date}. Spate in production mode (authentication, logging at info, metrics, validation, rate`,
    'limits, security headers) against the peers a user would otherwise pick, one after the other on the same machine',
    'and database. `spate` is the access-token path (`Authorization: Bearer` from `/auth/token`, what browser and',
    'mobile clients send) and every "Spate ÷ subject" ratio is taken from it; `spate, X-API-Key` is the API-key path.',
    'Compare ratios, not absolute numbers: see [Method](#method) and "What else was running".',
    '',
    '## Targets',
    '',
    targetsTable(r),
    '',
    '## Throughput',
    '',
    `![Requests per second by scenario](${svgRef})`,
    '',
  ];
  for (const s of r.scenarios) {
    sections.push(`### ${s.scenario}: ${SCENARIO_TEXT[s.scenario]}`, '', scenarioTable(s), '');
  }
  if (r.otherNode) {
    sections.push(`### Node ${r.machine.node} and ${r.otherNode.version}`, '',
      `The same loads again with Spate and bare Fastify on ${r.otherNode.version} (\`--also-node\`), right after the scenarios above.`, '',
      nodesTable(r), '');
  }
  if (r.workers) sections.push('### get_by_id with WORKERS=1 and WORKERS=2 (src/process/cluster.ts)', '', `Access token; ${r.workersPinning ?? 'wrk not pinned'}.`, '', workersTable(r.workers), '');
  if (r.stream) {
    sections.push('### Stream: 1,000,000 users as NDJSON', '', streamTable(r.stream.results), '');
  }
  if (r.micro) sections.push('### Database layer (micro-benchmark, no HTTP)', '', microTable(r.micro.results), '');
  sections.push('### What else was running', '', 'CPU used by processes outside the bench (other than the PostgreSQL it uses) during each stage, in cores:', '', loadLines(r), '');
  sections.push('## Analysis', '', keptAnalysis(mdPath), '');
  sections.push('## Method', '', machineSection(r), '', method);
  writeFileSync(mdPath, `${sections.join('\n')}\n`);
}
