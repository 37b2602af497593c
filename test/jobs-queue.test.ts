/**
 * The job queue contract (test/jobs.contract.ts) on a real PostgreSQL: the `jobs` table of the service's own
 * database, through the PostgreSQL adapter (src/db/postgres/jobs.ts).
 */
import { jobsContract } from './jobs.contract.ts';
import { startJobsHarness } from './jobs-support.ts';

jobsContract(async () => {
  const h = await startJobsHarness();
  return {
    name: 'postgres',
    store: async () => (await h.backend()).jobs!,
    async stealLease(id) { await h.sql`UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = ${id}`; },
    async makeScheduleDue(name) { await h.sql`UPDATE job_schedules SET next_run_at = now() - interval '1 second' WHERE name = ${name}`; },
    async endedDaysAgo(id, days) { await h.sql`UPDATE jobs SET finished_at = now() - make_interval(days => ${days}) WHERE id = ${id}`; },
    destroy: () => h.destroy(),
  };
});
