/**
 * The "done when" for events (docs/webhooks.md), run by each backend's file (test/webhooks-crash.test.ts,
 * test/webhooks-cassandra.test.ts): creates acknowledged by a real server process that is SIGKILLed in the
 * middle of the load (and of the deliveries), then restarted on the same database, each reach the receiver as a
 * `user.created` event, none missing. Every user the database holds (the acknowledged ones, and any committed whose
 * answer the kill swallowed) has exactly one event id; duplicates at the receiver carry the same id, so a receiver
 * deduplicates them. Every delivery's signature verifies.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer, type ServerProcess } from './support/server.ts';
import { waitFor } from './jobs-support.ts';
import { startReceiver, WEBHOOK_TEST_ENV, type Receiver } from './webhooks-support.ts';

const CLIENTS = 32;

export interface CrashTarget {
  /** Acknowledged creates in all (WEBHOOK_CRASH_CREATES overrides it). */
  total: number;
  /** Starts the database (in the file's `before`); `stop` in its `after`. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** What points the server at the database. */
  env(): Record<string, string>;
  /** The ids of every user stored, read beside the server. */
  storedIds(): Promise<Set<string>>;
}

/**
 * Creates users from CLIENTS concurrent clients until `acked` holds `total` ids or the server dies; `onAck` may
 * kill it. A create whose answer did not come is not acknowledged (it may or may not have committed).
 */
async function load(base: string, acked: Set<string>, total: number, onAck: () => void): Promise<{ failed: number; reason?: string }> {
  let inFlight = 0;
  let failed = 0;
  let reason: string | undefined;
  let dead = false;
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (let i = 0; !dead && acked.size + inFlight < total; i++) {
      inFlight++;
      try {
        const res = await fetch(`${base}/users`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: `crash ${c}.${i}`, email: `c${c}.${i}.${Date.now()}@example.com`, age: 30 }),
        });
        const body = await res.json() as { id: string };
        if (res.status !== 201) throw new Error(`${res.status} ${JSON.stringify(body)}`);
        acked.add(body.id);
        onAck();
      } catch (err) {
        reason ??= (err as Error).message;
        failed++;
        dead = true;
      } finally {
        inFlight--;
      }
    }
  }));
  return { failed, reason };
}

export function webhooksCrashContract(o: CrashTarget): void {
  const TOTAL = Number(process.env.WEBHOOK_CRASH_CREATES ?? o.total);
  let rx: Receiver;
  let server: ServerProcess | undefined;
  before(async () => {
    await o.start();
    rx = await startReceiver();
  });
  after(async () => {
    await server?.stop('SIGKILL');
    await rx.close();
    await o.stop();
  });

  const env = () => ({
    ...WEBHOOK_TEST_ENV, ...o.env(), LOG_LEVEL: 'warn',
    // A dead worker's jobs and a dead relay's events are taken up again after this.
    JOB_VISIBILITY_TIMEOUT_MS: '3000', JOB_CONCURRENCY: '32', WEBHOOK_TIMEOUT_MS: '10000', WEBHOOK_MAX_ATTEMPTS: '20',
  });

  test(`${TOTAL} acknowledged creates under a SIGKILL give ${TOTAL} user.created events at the receiver, none missing`, async () => {
    const t0 = Date.now();
    server = await startServer(env());
    const reg = await fetch(`${server.baseUrl}/webhooks`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: rx.url('/crash'), events: ['user.created'] }),
    });
    assert.equal(reg.status, 201);
    const { secret } = await reg.json() as { secret: string };

    const acked = new Set<string>();
    let killedAt: { acked: number; received: number } | undefined;
    const first = server;
    const { failed: lost } = await load(first.baseUrl, acked, TOTAL, () => {
      if (killedAt || acked.size < TOTAL / 2) return;
      killedAt = { acked: acked.size, received: rx.received.length };
      first.child.kill('SIGKILL');
    });
    assert.equal(await first.stop(), 'SIGKILL');
    assert.ok(killedAt, 'the server was killed mid-load');
    assert.ok(killedAt.received < TOTAL, 'deliveries were under way at the kill');

    server = await startServer(env());
    const after = await load(server.baseUrl, acked, TOTAL, () => {});
    assert.equal(acked.size, TOTAL, `the restarted server stopped acknowledging: ${after.reason}`);
    const loadDone = Date.now();

    {
      const stored = await o.storedIds();
      const users = new Map<string, Set<string>>();
      let verified = 0;
      const collect = () => {
        for (; verified < rx.received.length; verified++) {
          const r = rx.received[verified]!;
          const body = rx.verify(r, secret);
          assert.equal(body.type, 'user.created');
          const id = String(body.data.id);
          (users.get(id) ?? users.set(id, new Set()).get(id)!).add(r.id);
        }
        return users.size >= stored.size;
      };
      await waitFor(collect, 600_000, 200);
      await new Promise((r) => setTimeout(r, 1000));
      collect();

      for (const id of acked) assert.ok(users.has(id), `acknowledged user ${id} has its event`);
      assert.deepEqual([...users.keys()].filter((id) => !stored.has(id)), [], 'no event for a user that is not stored');
      assert.equal(users.size, stored.size, 'one event per stored user');
      const ids = new Set(rx.received.map((r) => r.id));
      assert.equal(ids.size, stored.size, 'exactly as many distinct event ids as users');
      for (const [id, events] of users) assert.equal(events.size, 1, `user ${id} has one event id`);
      console.log(`${TOTAL} acknowledged (killed at ${killedAt.acked} acknowledged, ${killedAt.received} delivered; ` +
        `${lost} answers lost at the kill, ${stored.size - TOTAL} of them committed); ${stored.size} distinct user.created ` +
        `event ids at the receiver, ${rx.received.length - ids.size} duplicate deliveries; load ${((loadDone - t0) / 1000).toFixed(1)} s, ` +
        `all delivered ${((Date.now() - t0) / 1000).toFixed(1)} s after the start`);
    }
  });
}
