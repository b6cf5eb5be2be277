-- See SQLite's migration 0005. Statement-level triggers: a bulk insert or delete updates the
-- count once.
CREATE TABLE tessera_counts (
    name text COLLATE "C" PRIMARY KEY,
    n bigint NOT NULL
);
INSERT INTO tessera_counts (name, n) SELECT 'directus_users', count(*) FROM directus_users;
CREATE FUNCTION tessera_count_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE tessera_counts SET n = n + (SELECT count(*) FROM counted) WHERE name = 'directus_users';
    ELSE
        UPDATE tessera_counts SET n = n - (SELECT count(*) FROM counted) WHERE name = 'directus_users';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER directus_users_counted_insert AFTER INSERT ON directus_users
    REFERENCING NEW TABLE AS counted FOR EACH STATEMENT EXECUTE FUNCTION tessera_count_users();
CREATE TRIGGER directus_users_counted_delete AFTER DELETE ON directus_users
    REFERENCING OLD TABLE AS counted FOR EACH STATEMENT EXECUTE FUNCTION tessera_count_users();
