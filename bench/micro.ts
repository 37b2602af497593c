/**
 * Micro-benchmark of the database layer, in process and without HTTP: a primary-key read through the users
 * repository (createDb + createPostgresUsersStore, as the app wires them), and the pool acquire (the Gate in
 * front of the postgres.js pool), against the targets p50 < 200 µs for the read and < 100 µs for the acquire.
 *
 *   npm run bench -- --micro          (DATABASE_URL: a PostgreSQL holding the seeded users table)
 */
import type { Sql } from 'postgres';
import { Gate } from '../src/platform/lib/gate.ts';
import { createDb } from '../src/db/postgres/db.ts';
import { createPostgresUsersStore } from '../src/db/postgres/users.ts';

export interface Figure {
  name: string;
  samples: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  /** For the concurrent figures: operations per second. */
  perSecond?: number;
  targetUs?: number;
}

function figure(name: string, us: number[], extra: Partial<Figure> = {}): Figure {
  const sorted = Float64Array.from(us).sort();
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
  let sum = 0;
  for (const v of sorted) sum += v;
  return { name, samples: sorted.length, p50Us: at(0.5), p99Us: at(0.99), meanUs: sum / sorted.length, ...extra };
}

/** Ids seeded by the bench (md5(n)::uuid), as compare.mjs seeds them. */
async function seededIds(sql: Sql, n: number): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`SELECT md5(n::text)::uuid::text AS id FROM generate_series(1, ${n}::int) n`;
  return rows.map((r) => r.id);
}

export async function runMicro(url: string, log: (m: string) => void = () => {}): Promise<Figure[]> {
  const db = createDb({ url, max: 10, acquireTimeoutMs: 2000, statementTimeoutMs: 30_000 });
  const repo = createPostgresUsersStore(db, { idempotencyTtlS: 86_400 });
  const out: Figure[] = [];
  try {
    const ids = await seededIds(db.sql, 20_000);
    const pick = () => ids[Math.floor(Math.random() * ids.length)]!;
    const far = () => ({ deadline: performance.now() + 60_000 });

    async function sequential(name: string, op: () => Promise<unknown>, n: number, targetUs?: number) {
      for (let i = 0; i < 2000; i++) await op();
      const us: number[] = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await op();
        us.push((performance.now() - t0) * 1000);
      }
      out.push(figure(name, us, targetUs === undefined ? {} : { targetUs }));
    }

    log('micro: primary-key reads, one at a time');
    await sequential('repository get(id), one caller', async () => { if (!(await repo.get(pick()))) throw new Error('seeded row missing'); }, 20_000, 200);
    await sequential('repository get(id) with a deadline (never coalesced)', () => repo.get(pick(), far()), 20_000, 200);

    log('micro: pool acquire');
    // Through the db layer: from calling db.query to its builder running, which happens once the permit is held.
    let acquired = 0;
    const acquireUs: number[] = [];
    for (let i = 0; i < 7000; i++) {
      const t0 = performance.now();
      await db.query((sql) => { acquired = performance.now() - t0; return sql`SELECT 1`; });
      if (i >= 2000) acquireUs.push(acquired * 1000);
    }
    out.push(figure('pool acquire through db.query, uncontended', acquireUs, { targetUs: 100 }));
    out.push(gateFastPath());
    out.push(await gateHandoff());

    log('micro: 50 concurrent readers for 5 s');
    out.push(await concurrent('50 concurrent readers: get(id), coalesced', () => repo.get(pick())));
    out.push(await concurrent('50 concurrent readers: get(id) with deadlines, one statement each', () => repo.get(pick(), far())));
  } finally {
    await db.close();
  }
  return out;
}

/** The Gate's uncontended acquire, alone (no database): the cost every statement pays. */
function gateFastPath(): Figure {
  const gate = new Gate(10);
  const us: number[] = [];
  for (let i = 0; i < 200_000; i++) {
    const t0 = performance.now();
    gate.acquire(1000);
    const t1 = performance.now();
    gate.release();
    if (i >= 10_000) us.push((t1 - t0) * 1000);
  }
  return figure('Gate.acquire, free permit (no database)', us, { targetUs: 100 });
}

/** A waiter's latency from the release of a permit to its resumption: the acquire under contention. */
async function gateHandoff(): Promise<Figure> {
  const gate = new Gate(1);
  gate.acquire(1000);
  const us: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    const waiting = gate.acquire(1000)!;
    const t0 = performance.now();
    gate.release();
    await waiting;
    us.push((performance.now() - t0) * 1000);
  }
  gate.release();
  return figure('Gate handoff: release to waiter resumed (contended)', us.slice(1000), { targetUs: 100 });
}

async function concurrent(name: string, op: () => Promise<unknown>, callers = 50, ms = 5000): Promise<Figure> {
  const us: number[] = [];
  const end = performance.now() + ms;
  const warmEnd = performance.now() + 1000;
  let done = 0;
  await Promise.all(Array.from({ length: callers }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await op();
      if (t0 > warmEnd) {
        us.push((performance.now() - t0) * 1000);
        done++;
      }
    }
  }));
  return figure(name, us, { perSecond: done / ((ms - 1000) / 1000) });
}

export function formatMicro(figures: Figure[]): string {
  const rows = figures.map((f) => {
    const target = f.targetUs === undefined ? '' : `${f.p50Us < f.targetUs ? 'met' : 'MISSED'} (< ${f.targetUs} µs)`;
    const rate = f.perSecond === undefined ? '' : `${Math.round(f.perSecond)}/s`;
    return `${f.name.padEnd(68)} ${f.p50Us.toFixed(1).padStart(9)} ${f.p99Us.toFixed(1).padStart(9)} ${rate.padStart(9)}  ${target}`;
  });
  return [`${'database layer'.padEnd(68)} ${'p50 µs'.padStart(9)} ${'p99 µs'.padStart(9)} ${'rate'.padStart(9)}  target (p50)`, ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  console.log(formatMicro(await runMicro(url, (m) => console.error(m))));
}
