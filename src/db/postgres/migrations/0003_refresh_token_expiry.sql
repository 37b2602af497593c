-- Expired refresh tokens are pruned in the background (src/modules/auth/prune.ts): find them without a scan.
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_idx ON refresh_tokens (expires_at);
