-- See SQLite's migration 0004.
CREATE TABLE tessera_limits (
    key text COLLATE "C" PRIMARY KEY,
    hits bigint NOT NULL,
    until_ms bigint NOT NULL
);
CREATE INDEX tessera_limits_until ON tessera_limits (until_ms);
