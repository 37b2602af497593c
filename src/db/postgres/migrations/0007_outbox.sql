-- Events that are never lost, and the webhooks they go to (docs/webhooks.md).

-- The outbox: one row per user.created / user.updated / user.deleted, written by the same statement as the change
-- (src/db/postgres/outbox.ts), so a change and its event commit together or not at all. The relay
-- (src/modules/webhooks/relay.ts) deletes rows in a transaction that commits only once their delivery jobs are
-- enqueued; a relay that dies rolls it back, and another takes them up (at-least-once).
CREATE TABLE IF NOT EXISTS outbox (
  -- Rows are claimed and deleted by this key: appended in order, so its index never splits pages at random.
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The event id: the `webhook-id` of every delivery of this event, on every retry. Never looked up, so not indexed.
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  type text NOT NULL,
  occurred_at timestamptz NOT NULL,
  -- json, not jsonb: written once and read once, as built (its key order kept, no parse into jsonb's form).
  data json NOT NULL,
  -- The W3C traceparent of the request that made the change (docs/tracing.md): its deliveries continue that trace.
  traceparent text
);

-- Registered endpoints. The secret signs deliveries, so it is kept as it was issued (shown to the admin once).
CREATE TABLE IF NOT EXISTS webhooks (
  id uuid PRIMARY KEY,
  url text NOT NULL,
  events text[] NOT NULL,
  secret text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Every delivery attempt, for GET /webhooks/{id}/deliveries.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  seq bigserial PRIMARY KEY,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  event_id uuid NOT NULL,
  event_type text NOT NULL,
  attempt integer NOT NULL,
  status_code integer,
  error text,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, seq);
