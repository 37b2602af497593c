-- The outbox keeps a users event as the row's own typed columns rather than as JSON built by the write: building
-- the JSON (json_build_object, to_char of the timestamps) cost the database more than the outbox INSERT itself, and
-- creates with events on fell to 0.7x of creates without. The relay shapes the event's data from these columns
-- (src/db/postgres/outbox.ts). `data` stays for rows written before this migration, and is null in the others.
ALTER TABLE outbox
  ALTER COLUMN data DROP NOT NULL,
  ADD COLUMN IF NOT EXISTS user_id uuid,
  ADD COLUMN IF NOT EXISTS name text,
  ADD COLUMN IF NOT EXISTS email text,
  ADD COLUMN IF NOT EXISTS age integer,
  ADD COLUMN IF NOT EXISTS created_at timestamptz,
  ADD COLUMN IF NOT EXISTS updated_at timestamptz;
