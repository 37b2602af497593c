/**
 * Creates and deletes with events on against events off on Cassandra (docs/webhooks.md, "Cassandra"), through the
 * users store, on a Cassandra 2.1 node started for the run (tools/cassandra-harness/): the latency of one create
 * at a time (p50, p99) and the rate of `clients` concurrent creates, then the latency of one delete at a time.
 * With events on, the relay runs beside the load (taking the events and removing them; no endpoint is registered,
 * so it enqueues nothing). Rounds alternate, off then on.
 *
 *   npx tsx bench/events-cassandra.ts [creates per latency round=300] [seconds per rate round=5] [rounds=2] [clients=50]
 *
 * NO_RELAY=1 measures the write path alone (the events stay in the rows).
 */
import { loadavg } from 'node:os';
import { openCassandra } from '../src/db/cassandra/index.ts';
import type { Backend } from '../src/db/backend.ts';
import { startRelay } from '../src/modules/webhooks/relay.ts';
import type { JobsStore } from '../src/platform/jobs/store.ts';
import { LOCAL_DATA_CENTER, startCassandraNode } from '../tools/cassandra-harness/index.ts';

const [N = 300, SECONDS = 5, ROUNDS = 2, CLIENTS = 50] = process.argv.slice(2).map(Number);
const quiet = { info: () => {}, warn: () => {} };
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)]!;
let seq = 0;
const body = () => ({ name: 'bench', email: `bench${++seq}@example.com`, age: 30 });

async function latency(b: Backend, op: (b: Backend, i: number) => Promise<unknown>): Promise<string> {
  const ms: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await op(b, i);
    ms.push(performance.now() - t);
  }
  return `p50 ${pct(ms, 0.5).toFixed(2)} ms, p99 ${pct(ms, 0.99).toFixed(2)} ms`;
}

async function rate(b: Backend): Promise<number> {
  let n = 0;
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (performance.now() < until) {
      await b.users.create(body());
      n++;
    }
  }));
  return n / SECONDS;
}

const node = await startCassandraNode();
const open = (events: boolean) => openCassandra({
  hosts: [node.host], port: node.cqlPort, keyspace: `bench_events_${events ? 'on' : 'off'}`, localDc: LOCAL_DATA_CENTER,
  protocolVersion: 3, events, log: quiet,
});
const off = await open(false);
const on = await open(true);
const jobs = { enqueue: async () => {} } as unknown as JobsStore;
const relay = process.env.NO_RELAY ? { stop: async () => {} } : startRelay({ outbox: on.outbox, webhooks: on.webhooks, jobs, maxAttempts: 1, pollMs: 1000, log: quiet });
try {
  for (const b of [off, on]) await latency(b, (x) => x.users.create(body())); // warm-up: prepared statements, schema
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, b] of [['off', off], ['on', on]] as const) {
      const created = await Promise.all(Array.from({ length: N }, () => b.users.create(body())));
      console.log(`round ${r} events ${name}: create ${await latency(b, (x) => x.users.create(body()))}; `
        + `delete ${await latency(b, (x, i) => x.users.delete(created[i]!.id))}; `
        + `${Math.round(await rate(b))} creates/s with ${CLIENTS} clients (load ${loadavg().map((l) => l.toFixed(1)).join(' ')})`);
    }
  }
} finally {
  await relay.stop();
  await Promise.all([off.close(), on.close()]);
  await node.stop();
}
process.exit(0);
