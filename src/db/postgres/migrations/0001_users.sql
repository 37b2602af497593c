-- The users resource. IF NOT EXISTS: the table may predate Spate (the original service, benchmark seeds);
-- a migration never drops or rewrites user data.
CREATE TABLE IF NOT EXISTS users (
  id         uuid PRIMARY KEY,
  name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
  email      text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
  age        integer NOT NULL CHECK (age BETWEEN 0 AND 150),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
