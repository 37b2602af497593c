/**
 * `Idempotency-Key` across real faults, against `npm start` on a real PostgreSQL: creates, each with a key of its
 * own, under a write load while the server is SIGKILLed (then restarted) or the database hung (SIGSTOP of the
 * postmaster and its backends, requests with `X-Request-Timeout: 1`). Afterwards every request is retried with its
 * key and body: each retry is answered 201, a retry of an acknowledged write gets the first answer, and the database
 * holds exactly one row per key (checked by querying), including for the writes that were committed but never
 * answered or answered 504.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { waitReady } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer } from './support/server.ts';

const embedded = !process.env.TEST_DATABASE_URL;
const why = 'freezing the database needs the embedded PostgreSQL (TEST_DATABASE_URL is set)';

const env = (url: string) => ({ DATABASE_URL: url, POOL_MAX: '4' });
/** What a loaded 2-core machine may add to a deadline (as in chaos-database). */
const SLACK_MS = 750;
/** How long a retry may keep meeting 409 (the first attempt's transaction still ending) or 503 before it must be 201. */
const RETRY_FOR_MS = 10_000;

interface Attempt {
  key: string;
  body: string;
  status: number;
  ms: number;
  /** The answer's body, for a 201. */
  answer?: unknown;
}

async function post(baseUrl: string, a: Pick<Attempt, 'key' | 'body'>, timeoutS?: number): Promise<Omit<Attempt, 'key' | 'body'>> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': a.key };
  if (timeoutS !== undefined) headers['x-request-timeout'] = String(timeoutS);
  const started = performance.now();
  try {
    const res = await fetch(`${baseUrl}/users`, { method: 'POST', headers, body: a.body, signal: AbortSignal.timeout(30_000) });
    const text = await res.text();
    const ms = performance.now() - started;
    return res.status === 201 ? { status: 201, ms, answer: JSON.parse(text) } : { status: res.status, ms };
  } catch {
    return { status: 0, ms: performance.now() - started };
  }
}

/** `concurrency` clients creating users back to back, each request with a fresh key and email, until stopped. */
function keyedLoad(baseUrl: string, concurrency: number, timeoutS?: number) {
  const attempts: Attempt[] = [];
  let running = true;
  const client = async () => {
    while (running) {
      const key = `chaos-${randomUUID()}`;
      const body = JSON.stringify({ name: 'Keyed', email: `${key}@example.com`, age: 30 });
      const r = await post(baseUrl, { key, body }, timeoutS);
      attempts.push({ key, body, ...r });
      if (r.status !== 201) await sleep(20);
    }
  };
  const clients = Array.from({ length: concurrency }, () => client());
  return {
    attempts,
    async stop(): Promise<Attempt[]> {
      running = false;
      await Promise.all(clients);
      return attempts;
    },
  };
}

/** Retries `a` with its key and body until it is 201 or RETRY_FOR_MS pass; the last answer. */
async function retry(baseUrl: string, a: Attempt): Promise<Omit<Attempt, 'key' | 'body'>> {
  const until = performance.now() + RETRY_FOR_MS;
  for (;;) {
    const r = await post(baseUrl, a);
    if (r.status === 201 || ![0, 409, 503, 504].includes(r.status) || performance.now() > until) return r;
    await sleep(100);
  }
}

/** Rows per key (each key's email is its own), straight from PostgreSQL. */
async function rowsPerKey(url: string, attempts: Attempt[]): Promise<Map<string, number>> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const emails = attempts.map((a) => `${a.key}@example.com`);
    const rows = await sql<{ email: string; n: number }[]>`
      SELECT email, count(*)::int AS n FROM users WHERE email = ANY(${emails}) GROUP BY email`;
    const counts = new Map(attempts.map((a) => [a.key, 0]));
    for (const r of rows) counts.set(r.email.replace(/@example\.com$/, ''), r.n);
    return counts;
  } finally {
    await sql.end();
  }
}

/** Retries every attempt; asserts each retry is 201, a retry of a 201 is the first answer, and one row per key. */
async function retryAll(name: string, baseUrl: string, url: string, attempts: Attempt[]): Promise<string> {
  const before = await rowsPerKey(url, attempts);
  const unanswered = attempts.filter((a) => a.status !== 201);
  const committedUnanswered = unanswered.filter((a) => before.get(a.key) === 1).length;
  const retries = [];
  // A few at a time: the retries are clients coming back, not a second load test.
  for (let i = 0; i < attempts.length; i += 8) {
    retries.push(...await Promise.all(attempts.slice(i, i + 8).map(async (a) => ({ a, r: await retry(baseUrl, a) }))));
  }
  const after = await rowsPerKey(url, attempts);
  const notOne = [...after].filter(([, n]) => n !== 1).map(([key, n]) => `${key}: ${n} rows`);
  const failed = retries.filter(({ r }) => r.status !== 201).map(({ a, r }) => `${a.key}: first ${a.status}, retry ${r.status}`);
  const changed = retries.filter(({ a, r }) => a.status === 201 && JSON.stringify(r.answer) !== JSON.stringify(a.answer));
  const summary = `${attempts.length} keyed writes (${attempts.length - unanswered.length} answered 201, `
    + `${unanswered.length} not: ${JSON.stringify(counts(unanswered))}), ${committedUnanswered} of the unanswered were `
    + `committed; after the retries ${[...after.values()].filter((n) => n === 1).length} of ${after.size} keys have one row`;
  console.log(`# ${name}: ${summary}`);
  assert.ok(attempts.length - unanswered.length > 50, `writes were acknowledged before the fault (${summary})`);
  assert.ok(unanswered.length > 0, `the fault left writes unanswered (${summary})`);
  assert.deepEqual(failed, [], 'every retry with the same key and body is answered 201');
  assert.deepEqual(changed.map(({ a }) => a.key), [], 'a retry of an acknowledged write gets the first answer');
  assert.deepEqual(notOne, [], `exactly one row per key (${summary})`);
  return summary;
}

const counts = (attempts: Attempt[]) => {
  const c: Record<string, number> = {};
  for (const a of attempts) c[a.status] = (c[a.status] ?? 0) + 1;
  return c;
};

describe('Idempotency-Key across faults', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db?.destroy();
  });

  test('server SIGKILLed under keyed writes, restarted: every retry 201 with the first answer, one row per key', async () => {
    const s = await startServer(env(db.url));
    await waitReady(s.baseUrl);
    const load = keyedLoad(s.baseUrl, 6);
    await sleep(1500);
    await s.stop('SIGKILL');
    const attempts = await load.stop();

    const restarted = await startServer(env(db.url));
    try {
      await waitReady(restarted.baseUrl);
      await retryAll('SIGKILL', restarted.baseUrl, db.url, attempts);
    } finally {
      await restarted.stop();
    }
  });

  test('database hung (SIGSTOP) under keyed writes with X-Request-Timeout: 1: 504s in time, retries after SIGCONT write no duplicate', { skip: embedded ? false : why }, async () => {
    const s = await startServer(env(db.url));
    try {
      await waitReady(s.baseUrl);
      const load = keyedLoad(s.baseUrl, 6, 1);
      await sleep(700);
      const thaw = db.freezeServer();
      try {
        await sleep(3000);
      } finally {
        thaw();
      }
      await sleep(500);
      const attempts = await load.stop();
      const late = attempts.filter((a) => a.ms > 1000 + SLACK_MS).map((a) => `${a.status} after ${Math.round(a.ms)} ms`);
      const unexpected = attempts.filter((a) => ![201, 503, 504].includes(a.status)).map((a) => a.status);
      assert.ok(attempts.some((a) => a.status === 504), `some writes answered 504 (${JSON.stringify(counts(attempts))})`);
      assert.deepEqual(unexpected, [], 'every answer is 201, 503 or 504');
      assert.deepEqual(late, [], `no request outlived its 1 s deadline by more than ${SLACK_MS} ms`);
      const slowest = Math.round(Math.max(...attempts.map((a) => a.ms)));
      console.log(`# database hung: slowest answer ${slowest} ms (deadline 1000 ms)`);
      await retryAll('database hung', s.baseUrl, db.url, attempts);
    } finally {
      await s.stop();
    }
  });
});
