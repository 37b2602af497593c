/**
 * The machine a run happened on, and what else was running on it meanwhile: figures are only comparable when the
 * machine was quiet, so every stage records the load average and the processes outside the bench that used CPU.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { availableParallelism, cpus, release, totalmem } from 'node:os';

export interface MachineInfo {
  cores: number;
  cpu: string;
  memoryGb: number;
  kernel: string;
  node: string;
  postgres: string;
  wrk: string;
}

const tryRun = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    return String((err as { stdout?: string }).stdout ?? '').trim();
  }
};

export function machineInfo(postgresVersion: string): MachineInfo {
  return {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
    node: process.version,
    postgres: postgresVersion,
    wrk: tryRun('wrk', ['-v']).split('\n')[0] ?? 'wrk',
  };
}

interface ProcSample {
  ppid: number;
  comm: string;
  exe: string;
  ticks: number;
}

const HZ = 100;

function sampleProcs(): Map<number, ProcSample> {
  const out = new Map<number, ProcSample>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const f = stat.slice(close + 2).split(' ');
      let exe = '';
      try { exe = readlinkSync(`/proc/${name}/exe`); } catch { /* kernel thread or gone */ }
      out.set(Number(name), { ppid: Number(f[1]), comm, exe, ticks: Number(f[11]) + Number(f[12]) });
    } catch { /* gone */ }
  }
  return out;
}

/** What else ran during a stage: load averages and CPU used by processes outside the bench, by command. */
export interface LoadReport {
  loadBefore: string;
  loadAfter: string;
  /** Cores' worth of CPU used on average by processes that are not the bench's, nor the PostgreSQL it uses. */
  otherCores: number;
  /** The largest of those, e.g. `java 0.62, node 0.31`. */
  others: { comm: string; cores: number }[];
}

/**
 * Samples /proc every `everyMs` until `stop()`. The bench's processes are this one's descendants; the system
 * PostgreSQL serving the bench (its binary is not the bench's child) is told apart by `ourPostgres`.
 */
export function watchLoad(ourPostgres: (exe: string) => boolean, everyMs = 2000): { stop(): LoadReport } {
  const loadBefore = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const t0 = performance.now();
  let prev = sampleProcs();
  const used = new Map<string, number>();
  const tick = () => {
    const now = sampleProcs();
    const ours = new Set<number>([process.pid]);
    // Descendants: repeat until no new child is found (parents may be listed after children).
    for (let grew = true; grew;) {
      grew = false;
      for (const [pid, p] of now) if (!ours.has(pid) && ours.has(p.ppid)) { ours.add(pid); grew = true; }
    }
    for (const [pid, p] of now) {
      const before = prev.get(pid);
      if (!before || ours.has(pid) || ourPostgres(p.exe)) continue;
      const d = p.ticks - before.ticks;
      if (d > 0) used.set(p.comm, (used.get(p.comm) ?? 0) + d);
    }
    prev = now;
  };
  const timer = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      const seconds = (performance.now() - t0) / 1000;
      const others = [...used].map(([comm, ticks]) => ({ comm, cores: ticks / HZ / seconds }))
        .filter((o) => o.cores >= 0.01).sort((a, b) => b.cores - a.cores);
      return {
        loadBefore,
        loadAfter: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
        otherCores: others.reduce((s, o) => s + o.cores, 0),
        others: others.slice(0, 5),
      };
    },
  };
}

export const describeLoad = (l: LoadReport) =>
  `load ${l.loadBefore} -> ${l.loadAfter}; other processes used ${l.otherCores.toFixed(2)} cores`
  + (l.others.length ? ` (${l.others.map((o) => `${o.comm} ${o.cores.toFixed(2)}`).join(', ')})` : '');
