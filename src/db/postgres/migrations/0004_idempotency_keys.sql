-- Idempotency keys of creates (the Idempotency-Key header), written in the same transaction as the users they
-- created, so a retry after a timeout or a crash finds the first write instead of making a second one.
CREATE TABLE idempotency_keys (
  scope       text        NOT NULL,
  key         text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
  fingerprint text        NOT NULL,
  -- What the first request answered: the users it created, replayed as they were then.
  response    jsonb       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
