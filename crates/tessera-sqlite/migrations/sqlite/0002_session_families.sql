-- Sessions become one row per family (one login). A refresh token names its family and
-- generation under a MAC, so spent tokens need no rows: a refresh updates the row in place,
-- and only the digest of the live token is stored. Sessions of the old shape cannot be carried over
-- (their tokens name no family), so they end with this migration: users log in again.
DROP INDEX directus_sessions_family;
DROP INDEX directus_sessions_user;
DROP INDEX directus_sessions_expires;
DROP TABLE directus_sessions;

CREATE TABLE directus_sessions (
    family           TEXT PRIMARY KEY NOT NULL,
    user             TEXT NOT NULL REFERENCES directus_users(id) ON DELETE CASCADE,
    generation       INTEGER NOT NULL DEFAULT 0,
    token_hash       TEXT NOT NULL,
    created          INTEGER NOT NULL,
    expires          INTEGER NOT NULL,
    rotated_at       INTEGER,
    prev_rotated_at  INTEGER,
    ip               TEXT,
    user_agent       TEXT,
    origin           TEXT
);
CREATE INDEX directus_sessions_user ON directus_sessions(user);
CREATE INDEX directus_sessions_expires ON directus_sessions(expires);

-- Password logins of an admin past the attempt limit are refused until this time (Unix ms).
ALTER TABLE directus_users ADD COLUMN login_locked_until INTEGER;
