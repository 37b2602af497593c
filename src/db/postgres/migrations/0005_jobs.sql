-- The durable job queue (docs/jobs.md, src/db/postgres/jobs.ts): one row per job, kept after it ends.
CREATE TABLE IF NOT EXISTS jobs (
  id uuid PRIMARY KEY,
  kind text NOT NULL,
  payload jsonb NOT NULL DEFAULT '{}'::jsonb,
  state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  -- The account that started it; null for the service's own jobs (cron).
  owner text,
  attempts integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL CHECK (max_attempts >= 1),
  run_at timestamptz NOT NULL DEFAULT now(),
  -- Held by the worker running it: a fresh token per claim, valid until lease_until (the visibility timeout).
  lease_token uuid,
  lease_until timestamptz,
  progress_done bigint NOT NULL DEFAULT 0,
  progress_total bigint,
  error text,
  result jsonb,
  -- The steps of a chain still to come, each enqueued when the one before it succeeds.
  next_steps jsonb,
  chain_id uuid,
  -- At most one queued or running job per key (a cron schedule's runs never overlap).
  singleton_key text,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS jobs_ready_idx ON jobs (run_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_lease_idx ON jobs (lease_until) WHERE state = 'running';
-- Ids are UUIDv7, so newest first is id DESC; lists walk the primary key, or this index for one account.
CREATE INDEX IF NOT EXISTS jobs_owner_idx ON jobs (owner, id);
-- The retention job deletes ended jobs by age.
CREATE INDEX IF NOT EXISTS jobs_finished_idx ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE UNIQUE INDEX IF NOT EXISTS jobs_singleton_idx ON jobs (singleton_key) WHERE state IN ('queued', 'running');

-- Cron schedules: the next due time of each; the instance whose UPDATE moves it on enqueues that run.
CREATE TABLE IF NOT EXISTS job_schedules (
  name text PRIMARY KEY,
  next_run_at timestamptz NOT NULL
);
