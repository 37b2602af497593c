/**
 * Two builds of Spate side by side on this machine: both servers up at once, short `wrk` loads of GET /users/{id}
 * alternated between them many times, and each server's CPU time per request read from /proc. On a busy shared
 * machine this says more than sequential runs, whose load drifts between subjects (docs/tracing.md, "Cost").
 *
 *   SUBJECTS='[["before","/path/to/old/tree",8471,{}],["after","'$PWD'",8472,{}]]' ROUNDS=12 DURATION=5 \
 *     DATABASE_URL=postgres://... NODE_ENV=production JWT_SECRET=... AUTH_MODE=off node bench/side-by-side.mjs
 *
 * Each subject is `[name, package root, port, extra environment]`; the database must hold the users table with
 * the ids of ../shared/bench (compare.mjs seeds them) and BENCH_IDS (default /tmp/bench-ids.txt) lists them.
 */
/* global fetch */
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
const rounds = Number(process.env.ROUNDS ?? 10), duration = Number(process.env.DURATION ?? 5);
const subjects = JSON.parse(process.env.SUBJECTS); // [name, cwd, port, env]
const cpuOf = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const children = (pid) => { try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } };
const tree = (pid) => [pid, ...children(pid).flatMap(tree)];
const cpuTree = (pid) => tree(pid).reduce((s, p) => { try { return s + cpuOf(p); } catch { return s; } }, 0);
function wrk(port, sec) {
  const out = execFileSync('wrk', ['-t1', '-c50', `-d${sec}s`, '-s', '/work/shared/bench/wrk/get_by_id.lua', `http://127.0.0.1:${port}`],
    { encoding: 'utf8', env: { ...process.env, BENCH_WRK_DIR: '/work/shared/bench/wrk' } });
  return { n: Number(/(\d+) requests in/.exec(out)[1]), non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0), rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)[1]) };
}
async function waitPort(port) { for (let i = 0; i < 900; i++) { try { if ((await fetch(`http://127.0.0.1:${port}/health/live`)).ok) return; } catch { /* not listening yet */ } await sleep(100); } throw new Error('no port'); }
const kids = [];
process.on('exit', () => { for (const c of kids) try { process.kill(-c.pid, 'SIGKILL'); } catch { /* gone already */ } });
try {
  for (const [, cwd, port, extra] of subjects) {
    const child = spawn('bash', ['-c', 'exec npm start'], { cwd, env: { ...process.env, PORT: String(port), ...extra }, stdio: ['ignore', 'ignore', 'inherit'], detached: true });
    kids.push(child);
    await waitPort(port);
    wrk(port, 3);
  }
  const res = {};
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [...subjects.keys()].reverse() : [...subjects.keys()];
    for (const i of order) {
      const [name, , port] = subjects[i];
      const c0 = cpuTree(kids[i].pid); const w = wrk(port, duration); const c1 = cpuTree(kids[i].pid);
      const us = ((c1 - c0) / w.n) * 1e6;
      (res[name] ??= []).push({ us, rps: w.rps });
      console.log(`${name} round ${r}: ${w.rps} req/s, ${us.toFixed(1)} µs CPU/request, non2xx ${w.non2xx}`);
    }
  }
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const names = Object.keys(res);
  for (const n of names) console.log(`${n}: median ${med(res[n].map((x) => x.us)).toFixed(1)} µs CPU/request, median ${med(res[n].map((x) => x.rps)).toFixed(0)} req/s`);
  const base = names[0];
  for (const n of names.slice(1)) {
    const ratios = res[n].map((x, i) => x.rps / res[base][i].rps);
    const cpu = res[n].map((x, i) => x.us / res[base][i].us);
    console.log(`${n} / ${base}: median req/s ratio ${med(ratios).toFixed(3)} (${ratios.map((x) => x.toFixed(2)).join(' ')}), median CPU/request ratio ${med(cpu).toFixed(3)}`);
  }
} finally {
  for (const c of kids) { try { process.kill(-c.pid, 'SIGTERM'); } catch { /* gone already */ } }
  await sleep(1500);
}
