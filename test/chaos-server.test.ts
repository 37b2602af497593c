/**
 * The server process stopped under a write load, against `npm start` on a real PostgreSQL. SIGTERM: the writes in
 * flight (held behind a table lock at the signal, so there are some) finish with 201, every request sent before
 * the signal gets an answer, the process exits 0, and every acknowledged write is stored. SIGKILL: nothing is
 * finished, but every acknowledged write is stored, and a new process on the same database serves them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { pool, timed, waitReady, within } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer } from './support/server.ts';
import { byStatus, missingUsers, writeLoad } from './support/write-load.ts';

const env = (url: string) => ({ DATABASE_URL: url, POOL_MAX: '4', SHUTDOWN_TIMEOUT: '10' });
/** How long the writes are held behind the lock after SIGTERM: the drain must wait for them. */
const HELD_MS = 800;

/** The refusal log's bound (src/platform/http/refusal-log.ts): 5 lines per code per 1 s window. */
const REFUSALS_LOGGED_PER_SECOND = 5;

interface LogLine { level: number; time: number; msg: string; code?: string; suppressed?: Record<string, number> }

/** The server's JSON log lines in `text`: error-level ones, those with a stack, the refusal lines and summaries. */
function drainLog(text: string) {
  const lines = text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  const warns = lines.filter((l) => l.level === 40 && l.msg.startsWith('request refused'));
  // Counted per calendar second of the log's own clock, so a window straddling two seconds may show up to 2 x 5;
  // per code, as the refusal log counts them (the drain has one: SHUTTING_DOWN).
  const perSecond = new Map<string, number>();
  for (const w of warns) {
    const k = `${w.code} ${Math.floor(w.time / 1000)}`;
    perSecond.set(k, (perSecond.get(k) ?? 0) + 1);
  }
  return {
    errors: lines.filter((l) => l.level >= 50).map((l) => l.msg),
    stacked: lines.filter((l) => JSON.stringify(l).includes('"stack"')).map((l) => l.msg),
    warns,
    maxWarnsPerSecond: Math.max(0, ...perSecond.values()),
    summaries: lines.filter((l) => l.msg.startsWith('more requests refused than logged')).length,
    /** Refusals the summaries counted and left out. */
    suppressed: lines.reduce((n, l) => n + Object.values(l.suppressed ?? {}).reduce((a, b) => a + b, 0), 0),
  };
}

describe('the server stopped under a write load', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db?.destroy();
  });

  test(`SIGTERM: writes in flight finish with 201 (held ${HELD_MS} ms past the signal), every request sent before it is answered, exit 0, none lost`, async () => {
    const s = await startServer(env(db.url));
    const locker = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await waitReady(s.baseUrl);
      const load = writeLoad(s.baseUrl, { concurrency: 6, timeouts: [10] });
      await sleep(700);
      // Every writer's next insert waits behind the lock: those are the requests in flight at the signal.
      const unlock = await new Promise<() => void>((locked) => {
        void locker.begin(async (sql) => {
          await sql`LOCK TABLE users IN ACCESS EXCLUSIVE MODE`;
          await new Promise<void>((release) => locked(release));
        });
      });
      const held = await within(3000, async () => (await pool(s.baseUrl)).active === 4);
      assert.ok(held !== undefined, 'the writes hold the pool behind the lock');
      const mark = s.output().length;
      const signalledAt = performance.now();
      const exited = s.stop('SIGTERM');
      // Clients arriving during the drain: each is refused with 503 (the drain's expected refusal), which must not
      // flood the log. A path that needs no database, so they are answered while the writes hold the lock.
      let draining = true;
      const drainRefusals: number[] = [];
      const arrivals = Array.from({ length: 4 }, async () => {
        while (draining) {
          const r = await timed(`${s.baseUrl}/users/not-a-uuid`, {}, 2000);
          if (r.status === 503) drainRefusals.push(r.status);
          else if (r.status === 0) await sleep(20);
        }
      });
      await sleep(HELD_MS);
      unlock();
      const code = await exited;
      const exitedMs = performance.now() - signalledAt;
      draining = false;
      await Promise.all(arrivals);
      const log = drainLog(s.output().slice(mark));
      const records = await load.stop();
      const sentBefore = records.filter((r) => r.sentAt < signalledAt);
      const inFlight = sentBefore.filter((r) => r.sentAt + r.ms > signalledAt);
      const sentAfter = records.filter((r) => r.sentAt >= signalledAt);
      const acknowledged = load.acknowledged();
      const missing = await missingUsers(db.url, acknowledged);
      const summary = `${records.length} writes ${JSON.stringify(byStatus(records))}; in flight at SIGTERM `
        + `${JSON.stringify(byStatus(inFlight))}; after it ${JSON.stringify(byStatus(sentAfter))}; exit ${code} after `
        + `${Math.round(exitedMs)} ms; ${acknowledged.length - missing.length} of ${acknowledged.length} acknowledged writes stored`;
      console.log(`# SIGTERM: ${summary}`);
      console.log(`# SIGTERM drain log: ${drainRefusals.length} arrivals refused 503 -> ${log.errors.length} error lines, `
        + `${log.warns.length} refusal warn lines (at most ${log.maxWarnsPerSecond} in a second), ${log.summaries} summaries `
        + `counting ${log.suppressed} more`);

      assert.equal(code, 0, `a clean exit (${summary})`);
      assert.ok(exitedMs >= HELD_MS, 'the process waited for the writes in flight');
      assert.ok(inFlight.length >= 4, `writes were in flight at the signal (${summary})`);
      assert.deepEqual(sentBefore.filter((r) => r.status !== 201).map((r) => `${r.status} ${r.detail}`), [],
        'every write sent before the signal finished with 201');
      // After the signal: the drain's 503 while the port is open, then no connection at all (status 0).
      assert.deepEqual(sentAfter.filter((r) => r.status !== 503 && r.status !== 0).map((r) => r.status), [],
        'a write sent during the drain is refused with 503, never half done');
      assert.deepEqual(missing, [], `every acknowledged write is in the database (${summary})`);
      // Finding 11: the drain's refusals are one warn line each at most, rate-limited, never an error or a stack.
      assert.ok(drainRefusals.length >= 50, `clients were refused during the drain (${drainRefusals.length})`);
      assert.deepEqual(log.errors, [], 'no error-level line during the drain');
      assert.deepEqual(log.stacked, [], 'no stack trace during the drain');
      assert.ok(log.maxWarnsPerSecond <= 2 * REFUSALS_LOGGED_PER_SECOND,
        `at most ${REFUSALS_LOGGED_PER_SECOND} refusal lines per 1 s window (${log.maxWarnsPerSecond} in a calendar second for ${drainRefusals.length} refusals)`);
      // Every refusal is in the log, as a line or in a summary, the last window's too (written at close).
      assert.ok(log.warns.length + log.suppressed >= drainRefusals.length,
        `${log.warns.length} lines + ${log.suppressed} in summaries account for the ${drainRefusals.length} refusals clients saw`);
    } finally {
      await locker.end();
      await s.stop('SIGKILL');
    }
  });

  test('SIGKILL: every acknowledged write is stored, and a new process serves them', async () => {
    const s = await startServer(env(db.url));
    await waitReady(s.baseUrl);
    const load = writeLoad(s.baseUrl, { concurrency: 6, timeouts: [10] });
    await sleep(1500);
    await s.stop('SIGKILL');
    const records = await load.stop();
    const acknowledged = load.acknowledged();
    const missing = await missingUsers(db.url, acknowledged);
    console.log(`# SIGKILL: ${records.length} writes ${JSON.stringify(byStatus(records))}; `
      + `${acknowledged.length - missing.length} of ${acknowledged.length} acknowledged writes stored`);
    assert.ok(acknowledged.length > 50, 'writes were acknowledged before the kill');
    assert.deepEqual(missing, [], 'every acknowledged write is in the database');

    const restarted = await startServer(env(db.url));
    try {
      await waitReady(restarted.baseUrl);
      for (const id of [acknowledged[0]!, acknowledged.at(-1)!]) {
        assert.equal((await timed(`${restarted.baseUrl}/users/${id}`)).status, 200, `the new process serves ${id}`);
      }
    } finally {
      await restarted.stop();
    }
  });
});
