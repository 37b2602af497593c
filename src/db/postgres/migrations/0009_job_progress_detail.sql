-- A job's progress beyond {done, total}: named counts the job reports while it runs (an import's rows read,
-- written and rejected; docs/jobs.md), shown as `progress.detail`. Null for a job that reports none.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS progress_detail jsonb;
