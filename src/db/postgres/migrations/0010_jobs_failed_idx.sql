-- The dashboard's recent failures (src/db/postgres/jobs.ts, `recentFailures`): failed jobs by the time they failed,
-- newest first. jobs_finished_idx covers every ended job, so on a queue of mostly succeeded jobs a walk of it for
-- the failed ones reads past all the rest; this one holds the failed jobs alone.
CREATE INDEX IF NOT EXISTS jobs_failed_idx ON jobs (finished_at) WHERE state = 'failed';
