-- Login identities, refresh-token families and API keys (src/auth). Separate from the users resource, whose
-- email is not unique. Secrets are never stored: passwords as argon2id hashes, tokens and keys as SHA-256 digests.
CREATE TABLE IF NOT EXISTS accounts (
  id            uuid PRIMARY KEY,
  email         text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
  password_hash text NOT NULL,
  role          text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
  disabled      boolean NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL
);
-- Unique without regard to case, with no extension needed (citext).
CREATE UNIQUE INDEX IF NOT EXISTS accounts_email_lower_key ON accounts (lower(email));

-- One row per login: the family every rotated refresh token of that login belongs to.
CREATE TABLE IF NOT EXISTS auth_sessions (
  id         uuid PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS auth_sessions_account_idx ON auth_sessions (account_id);

CREATE TABLE IF NOT EXISTS refresh_tokens (
  token_hash text PRIMARY KEY,
  session_id uuid NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at    timestamptz
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_idx ON refresh_tokens (session_id);

CREATE TABLE IF NOT EXISTS api_keys (
  id         uuid PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
  prefix     text NOT NULL,
  key_hash   text NOT NULL UNIQUE,
  scopes     text[] NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz,
  revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_account_idx ON api_keys (account_id);
