/**
 * A worker process for test/jobs-crash.test.ts (PostgreSQL, DATABASE_URL) and test/jobs-crash-redis.test.ts
 * (Redis, REDIS_URL), killed with SIGKILL mid-flight. Its `effect` jobs record a run (every execution) and an
 * effect keyed by the job's id (idempotent, as the guarantee asks of handlers). Prints `ready` once it listens.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { openBackend } from '../src/db/backend.ts';
import { openRedisJobs } from '../src/db/redis/jobs.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createRunner, type JobDefinition } from '../src/platform/jobs/runner.ts';
import type { JobsStore } from '../src/platform/jobs/store.ts';
import { effectJob, redisEffectJob } from './jobs-effect.ts';

const quiet = { info: () => {}, warn: () => {} };
let store: JobsStore;
let effect: JobDefinition;
if (process.env.REDIS_URL) {
  store = openRedisJobs({ url: process.env.REDIS_URL, log: quiet });
  effect = redisEffectJob(new Redis(process.env.REDIS_URL));
} else {
  const url = process.env.DATABASE_URL!;
  const backend = await openBackend(loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'silent' }), { log: quiet });
  while (!(await backend.probes.schemaReady().catch(() => false))) await sleep(50);
  store = backend.jobs!;
  effect = effectJob(postgres(url, { max: 10, onnotice: () => {} }));
}
const runner = createRunner({ store, definitions: [effect], concurrency: 50, leaseMs: 1000, pollMs: 100, log: quiet });
await runner.start();
process.stdout.write('ready\n');
