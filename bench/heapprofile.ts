/**
 * Summaries of V8 sampling heap profiles (bench/alloc-sampler.mjs): bytes allocated per function and per
 * package, to read where a load's garbage comes from in a terminal.
 */
import { readFileSync } from 'node:fs';
import { packageOf } from './cpuprofile.ts';

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

export interface Allocation {
  name: string;
  where: string;
  /** Share of all sampled bytes, in percent. */
  percent: number;
}

/** Self bytes by function and by package, largest first. */
export function summarizeHeap(path: string, top = 25): { totalMb: number; functions: Allocation[]; packages: Allocation[] } {
  const { head } = JSON.parse(readFileSync(path, 'utf8')) as { head: HeapNode };
  const fns = new Map<string, { name: string; where: string; bytes: number }>();
  const pkgs = new Map<string, number>();
  let total = 0;
  const walk = (n: HeapNode) => {
    if (n.selfSize > 0) {
      const { functionName, url, lineNumber } = n.callFrame;
      const where = `${packageOf(url)}:${lineNumber + 1}`;
      const key = `${functionName}@${where}`;
      const f = fns.get(key) ?? { name: functionName || '(anonymous)', where, bytes: 0 };
      f.bytes += n.selfSize;
      fns.set(key, f);
      pkgs.set(packageOf(url), (pkgs.get(packageOf(url)) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    for (const c of n.children) walk(c);
  };
  walk(head);
  const pct = (b: number) => (total > 0 ? (100 * b) / total : 0);
  return {
    totalMb: total / 1e6,
    functions: [...fns.values()].sort((a, b) => b.bytes - a.bytes).slice(0, top).map((f) => ({ name: f.name, where: f.where, percent: pct(f.bytes) })),
    packages: [...pkgs].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, b]) => ({ name, where: '', percent: pct(b) })),
  };
}

export function formatHeap(s: ReturnType<typeof summarizeHeap>): string {
  const line = (a: Allocation) => `${a.percent.toFixed(1).padStart(7)}%  ${a.name}  ${a.where}`.trimEnd();
  return [`${s.totalMb.toFixed(0)} MB sampled (allocated, including what the GC collected)`, '', 'allocated by function:',
    ...s.functions.map(line), '', 'allocated by package:', ...s.packages.map(line)].join('\n');
}
