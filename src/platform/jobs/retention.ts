/**
 * The queue's own housekeeping: ended jobs stay readable for the retention period (JOB_RETENTION_DAYS), then an
 * hourly cron job deletes them, a batch per statement, so the table does not grow without bound.
 */
import type { Schedule } from './cron.ts';
import type { JobDefinition } from './runner.ts';
import type { JobsStore } from './store.ts';

export const RETENTION_KIND = 'jobs.retention';
export const RETENTION_SCHEDULE: Schedule = { name: 'jobs.retention', cron: '41 * * * *', job: { kind: RETENTION_KIND, maxAttempts: 3 } };

const BATCH = 1000;

/** Deletes jobs that ended more than `retentionMs` ago; its result is how many. */
export function retentionJob(store: () => JobsStore, retentionMs: number): JobDefinition {
  return {
    kind: RETENTION_KIND,
    async run(_, ctx) {
      const before = new Date(Date.now() - retentionMs);
      let deleted = 0;
      for (;;) {
        const n = await store().purgeFinished(before, BATCH);
        deleted += n;
        if (n < BATCH || ctx.signal.aborted) return { deleted };
      }
    },
  };
}
