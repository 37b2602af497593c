/** The `effect` job of the crash tests: every run is recorded, and its effect once per job id (idempotent). */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type postgres from 'postgres';
import type { JobDefinition } from '../src/platform/jobs/runner.ts';

export const EFFECT_TABLES = `
  CREATE TABLE IF NOT EXISTS job_runs (job_id uuid NOT NULL);
  CREATE TABLE IF NOT EXISTS job_effects (job_id uuid PRIMARY KEY)`;

export const effectJob = (sql: postgres.Sql): JobDefinition => ({
  kind: 'effect',
  async run(_, ctx) {
    await sql`INSERT INTO job_runs (job_id) VALUES (${ctx.job.id})`;
    await sql`INSERT INTO job_effects (job_id) VALUES (${ctx.job.id}) ON CONFLICT DO NOTHING`;
    await sleep(10 + Math.random() * 40);
  },
});

/** The same on Redis: runs in a list, effects in a set (adding a member twice is one member). */
export const EFFECT_KEYS = { runs: 'test:job_runs', effects: 'test:job_effects' };
export const redisEffectJob = (redis: Redis): JobDefinition => ({
  kind: 'effect',
  async run(_, ctx) {
    await redis.rpush(EFFECT_KEYS.runs, ctx.job.id);
    await redis.sadd(EFFECT_KEYS.effects, ctx.job.id);
    await sleep(10 + Math.random() * 40);
  },
});
