/**
 * The crash contract (test/webhooks-crash.contract.ts) on a real Cassandra 2.1 node and a real Redis: 1,000
 * acknowledged creates under a SIGKILL of the server (CI-sized: Cassandra creates are Paxos rounds on one small
 * node; WEBHOOK_CRASH_CREATES sets the count), each delivered as its user.created event. The restarted server
 * takes the dead one's relay shards over once their leases expire. Skipped without Java, except under CI=true.
 */
import { describe } from 'node:test';
import { exitWhenDone, skipReason, startBackend, type TestBackend } from './support/backends.ts';
import { webhooksCrashContract } from './webhooks-crash.contract.ts';

exitWhenDone();

let backend: TestBackend;
describe('webhooks crash on Cassandra', { skip: skipReason('cassandra') }, () => {
  webhooksCrashContract({
    total: 1_000,
    start: async () => { backend = await startBackend('cassandra'); },
    stop: () => backend.destroy(),
    env: () => backend.env,
    storedIds: async () => new Set(await backend.allIds()),
  });
});
