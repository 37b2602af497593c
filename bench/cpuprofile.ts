/**
 * Summaries of V8 CPU profiles (`node --cpu-prof`): self time per function and per package, so a profile can be
 * read in a terminal and quoted in docs/benchmarks.md without a flame-graph viewer.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  name: string;
  where: string;
  /** Share of all samples, idle excluded, in percent. */
  percent: number;
}

export interface ProfileSummary {
  /** Sampled (non-idle) milliseconds. */
  busyMs: number;
  functions: SelfTime[];
  packages: SelfTime[];
  /** Inclusive (self + callees) time per function, each function counted once per stack. */
  inclusive: SelfTime[];
}

/** `node_modules/<pkg>`, `node:<module>`, `src/<file>` or `(native)`: where a frame's code lives. */
export function packageOf(url: string): string {
  if (url === '') return '(native/V8)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return url;
  const src = /\/(src|bench|test)\/(.*)$/.exec(url);
  if (src) return `${src[1]}/${src[2]}`;
  return url;
}

const IDLE = new Set(['(idle)', '(program)', '(root)']);

/**
 * Summarizes a profile. `lastMs` keeps only the samples of the final `lastMs` milliseconds before `skipEndMs`
 * (the load phase, without start-up and module loading, or the shutdown).
 */
export function summarize(path: string, top = 25, lastMs = Infinity, skipEndMs = 0): ProfileSummary {
  const p = JSON.parse(readFileSync(path, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  const until = p.endTime - skipEndMs * 1000;
  const from = until - lastMs * 1000;
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t < from || t > until) continue;
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const incl = new Map<string, SelfTime & { us: number }>();
  const keyOf = (f: ProfileNode['callFrame']) => {
    const name = f.functionName || '(anonymous)';
    const where = f.url ? `${packageOf(f.url)}:${f.lineNumber + 1}` : packageOf(f.url);
    return { key: `${name}@${where}`, name, where };
  };
  for (const [id, us] of selfUs) {
    if (IDLE.has(byId.get(id)!.callFrame.functionName)) continue;
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const k = keyOf(byId.get(n)!.callFrame);
      if (seen.has(k.key) || IDLE.has(k.name)) continue;
      seen.add(k.key);
      const e = incl.get(k.key) ?? { name: k.name, where: k.where, percent: 0, us: 0 };
      e.us += us;
      incl.set(k.key, e);
    }
  }
  let busy = 0;
  const fns = new Map<string, SelfTime & { us: number }>();
  const pkgs = new Map<string, SelfTime & { us: number }>();
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    const name = f.functionName || '(anonymous)';
    if (IDLE.has(name)) continue;
    busy += us;
    const pkg = name === '(garbage collector)' ? '(garbage collector)' : packageOf(f.url);
    const where = f.url ? `${pkg}:${f.lineNumber + 1}` : pkg;
    const key = `${name}@${where}`;
    const fe = fns.get(key) ?? { name, where, percent: 0, us: 0 };
    fe.us += us;
    fns.set(key, fe);
    const pe = pkgs.get(pkg) ?? { name: pkg, where: '', percent: 0, us: 0 };
    pe.us += us;
    pkgs.set(pkg, pe);
  }
  const rank = (m: Map<string, SelfTime & { us: number }>) =>
    [...m.values()].sort((a, b) => b.us - a.us).slice(0, top)
      .map(({ name, where, us }) => ({ name, where, percent: busy ? (100 * us) / busy : 0 }));
  return { busyMs: busy / 1000, functions: rank(fns), packages: rank(pkgs), inclusive: rank(incl) };
}

export function formatSummary(s: ProfileSummary, top = 20): string {
  const lines = [`busy ${s.busyMs.toFixed(0)} ms sampled`, '', 'self time by function:'];
  for (const f of s.functions.slice(0, top)) lines.push(`  ${f.percent.toFixed(1).padStart(5)}%  ${f.name}  ${f.where}`);
  lines.push('', 'self time by package:');
  for (const f of s.packages.slice(0, top)) lines.push(`  ${f.percent.toFixed(1).padStart(5)}%  ${f.name}`);
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, lastS, grep] = process.argv.slice(2);
  const s = summarize(file!, 100000, lastS ? Number(lastS) * 1000 : Infinity, 1500);
  console.log(formatSummary({ ...s, functions: s.functions.slice(0, 40), packages: s.packages.slice(0, 30) }, 40));
  const re = new RegExp(grep ?? '.');
  console.log('\ninclusive:');
  for (const f of s.inclusive.filter((f) => re.test(`${f.name} ${f.where}`)).slice(0, 60)) {
    console.log(`  ${f.percent.toFixed(1).padStart(5)}%  ${f.name}  ${f.where}`);
  }
}
