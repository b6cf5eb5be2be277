-- Counters of the request limits and the login throttle when RATE_LIMITER_STORE names the
-- database: per key, the hits of a fixed window (or 0 for a hold) and when it ends. A row
-- whose end has passed is dead: the next hit starts it over, and housekeeping deletes it.
CREATE TABLE tessera_limits (
    key text PRIMARY KEY NOT NULL,
    hits integer NOT NULL,
    until_ms integer NOT NULL
);
CREATE INDEX tessera_limits_until ON tessera_limits (until_ms);
