-- REST users and their sign-in tokens (SPEC §11).
-- Passwords are stored only as memory-hard hashes (engine/http/passwords.py);
-- tokens only as their SHA-256, so a copy of the database signs nobody in.

CREATE TABLE users (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$'),
    role text NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_tokens (
    token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX user_tokens_user ON user_tokens (user_name, issued_at);
CREATE INDEX user_tokens_expires ON user_tokens (expires_at);
