/**
 * The database failing under a write load, against `npm start` on a real PostgreSQL: stopped, hung (SIGSTOP of
 * the postmaster and every backend) and its connections terminated (pg_terminate_backend). In each: every
 * acknowledged write (201) is in the database afterwards, checked by id; every answer is 201, 503 or 504 and
 * arrives within the request's deadline; writes come back within a stated time of the fault ending; and
 * `/health/live` answers throughout.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { waitReady, within } from './support/chaos.ts';
import { createTestDatabase, type TestDatabase } from './support/postgres.ts';
import { startServer, type ServerProcess } from './support/server.ts';
import { byStatus, missingUsers, probeLiveness, writeLoad, type WriteRecord } from './support/write-load.ts';

const embedded = !process.env.TEST_DATABASE_URL;
const why = 'stopping and freezing the server needs the embedded PostgreSQL (TEST_DATABASE_URL is set)';

/** Tunable, so CI can run it shorter or longer. */
const FAULT_MS = Number(process.env.CHAOS_FAULT_MS ?? 3000);
const ACQUIRE_MS = 1000;
const STATEMENT_MS = 3000;
/** The deadline of a request without `X-Request-Timeout`: acquire wait, then the statement timeout and its 1 s grace. */
const DEFAULT_BOUND_MS = ACQUIRE_MS + STATEMENT_MS + 1000;
/** What a loaded 2-core machine may add to a deadline: scheduling, the answer's trip back. */
const SLACK_MS = 750;
/** Writes are back this soon after the database returns. */
const RECOVERY_MS = 3000;

/** Requests that outlived their deadline (its own `X-Request-Timeout`, else the default bound), plus slack. */
function late(records: WriteRecord[]): string[] {
  return records
    .filter((r) => r.ms > (r.timeoutS === undefined ? DEFAULT_BOUND_MS : r.timeoutS * 1000) + SLACK_MS)
    .map((r) => `${r.status} after ${Math.round(r.ms)} ms (deadline ${r.timeoutS ?? 'default'})`);
}

const summarize = (records: WriteRecord[]) => {
  const max = (t: number | undefined) => Math.round(Math.max(0, ...records.filter((r) => r.timeoutS === t).map((r) => r.ms)));
  return `${records.length} writes ${JSON.stringify(byStatus(records))}, slowest ${max(2)} ms (2 s deadline) / ${max(undefined)} ms (default)`;
};

describe('the database failing under a write load', { skip: embedded ? false : why }, () => {
  let db: TestDatabase;
  let s: ServerProcess;
  before(async () => {
    db = await createTestDatabase();
    s = await startServer({
      DATABASE_URL: db.url, POOL_MAX: '4', POOL_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_MS), STATEMENT_TIMEOUT_MS: String(STATEMENT_MS),
    });
    await waitReady(s.baseUrl);
  });
  after(async () => {
    await s?.stop();
    await db?.destroy();
  });

  /**
   * Runs the write load (three clients with a 2 s deadline, one with none) and liveness probes around `fault`,
   * which returns once the fault has ended; then checks the answers, the recovery and the rows.
   */
  async function underWriteLoad(name: string, fault: () => Promise<void>): Promise<void> {
    const load = writeLoad(s.baseUrl, { concurrency: 4, timeouts: [2, 2, 2, undefined] });
    const live = probeLiveness(s.baseUrl, 200, 1000);
    await sleep(700);
    const before = load.acknowledged().length;
    await fault();
    const recoveredMs = await load.nextSuccess(RECOVERY_MS + 2000);
    await sleep(300);
    const records = await load.stop();
    const probes = await live.stop();
    const acknowledged = load.acknowledged();
    const missing = await missingUsers(db.url, acknowledged);
    const summary = `${summarize(records)}; writes back ${Math.round(recoveredMs ?? -1)} ms after the fault; liveness `
      + `${probes.ok.length} ok (max ${Math.round(Math.max(...probes.ok))} ms) / ${probes.failed.length} failed; `
      + `${acknowledged.length - missing.length} of ${acknowledged.length} acknowledged writes stored`;
    console.log(`# ${name}: ${summary}`);
    if (s.child.exitCode !== null || s.child.signalCode !== null) {
      console.log(`# the server exited (${s.child.exitCode ?? s.child.signalCode}):\n${s.output().split('\n').slice(-15).join('\n')}`);
    }

    assert.ok(before > 0, 'writes succeeded before the fault');
    assert.deepEqual(missing, [], `every acknowledged write is in the database (${summary})`);
    const unexpected = records.filter((r) => ![201, 503, 504].includes(r.status));
    assert.deepEqual(unexpected.map((r) => `${r.status} ${r.detail}`), [], 'every answer is 201, 503 or 504');
    for (const r of records.filter((x) => x.status === 503 || x.status === 504)) {
      assert.match(r.detail ?? '', /^\{"detail":"/, 'refusals in the contract shape');
    }
    assert.deepEqual(late(records), [], `no request outlived its deadline (${summary})`);
    assert.ok(recoveredMs !== undefined && recoveredMs < RECOVERY_MS, `writes back within ${RECOVERY_MS} ms (${summary})`);
    assert.deepEqual(probes.failed, [], `/health/live answered every probe within 1 s (${summary})`);
    assert.ok(records.some((r) => r.status !== 201), `the fault was seen (${summary})`);
  }

  test(`stopped for ${FAULT_MS} ms: only 201/503/504, each within its deadline, writes back within ${RECOVERY_MS} ms, none lost`, async () => {
    await underWriteLoad('database stopped', async () => {
      await db.stopServer();
      await sleep(FAULT_MS);
      await db.startServer();
    });
  });

  test(`hung (SIGSTOP) for ${FAULT_MS} ms: 504 at each deadline, nothing hangs, writes back within ${RECOVERY_MS} ms, none lost`, async () => {
    await underWriteLoad('database hung', async () => {
      const thaw = db.freezeServer();
      try {
        await sleep(FAULT_MS);
      } finally {
        thaw();
      }
    });
  });

  // postgres.js 3.4.9 (the latest) crashed the process here in 2 of 5 runs before patches/postgres+3.4.9.patch:
  // a write deferred by setImmediate met the socket closed() had nulled (TypeError at nextWrite, uncatchable;
  // porsager/postgres#1154, #1208), and once that was patched, in 2 of 4 runs of an unhandled rejection of the
  // array-types fetch of a terminated connection. The patch handles both; this test fails if the process exits.
  test(`connections terminated every 250 ms for ${FAULT_MS} ms: none lost, writes back within ${RECOVERY_MS} ms`, async () => {
    const admin = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      let terminated = 0;
      await underWriteLoad('connections terminated', async () => {
        const until = performance.now() + FAULT_MS;
        while (performance.now() < until) {
          const rows = await admin`SELECT pg_terminate_backend(pid) AS gone FROM pg_stat_activity
            WHERE application_name LIKE 'spate%' AND pid <> pg_backend_pid()`;
          terminated += rows.filter((r) => r.gone).length;
          await sleep(250);
        }
      });
      console.log(`# connections terminated: ${terminated} backends`);
      assert.ok(terminated > 0, 'backends were terminated');
      // The pool heals itself: every connection it opens again works.
      const healed = await within(3000, async () => (await fetch(`${s.baseUrl}/health/ready`)).status === 200);
      assert.ok(healed !== undefined, 'ready again');
    } finally {
      await admin.end();
    }
  });
});
