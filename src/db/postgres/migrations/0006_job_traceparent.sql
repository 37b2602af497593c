-- The trace a job was enqueued in (docs/tracing.md): its W3C traceparent, so the job's span joins that trace
-- when a worker runs it, in whatever process. Null when tracing was off or nothing was traced.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS traceparent text;
