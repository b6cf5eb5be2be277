-- The number of users, kept by triggers, so that `meta=total_count` on /users and anything
-- else asking "how many users" reads one row instead of counting a million.
CREATE TABLE tessera_counts (
    name text PRIMARY KEY NOT NULL,
    n integer NOT NULL
);
INSERT INTO tessera_counts (name, n) SELECT 'directus_users', count(*) FROM directus_users;
CREATE TRIGGER directus_users_counted_insert AFTER INSERT ON directus_users
BEGIN
    UPDATE tessera_counts SET n = n + 1 WHERE name = 'directus_users';
END;
CREATE TRIGGER directus_users_counted_delete AFTER DELETE ON directus_users
BEGIN
    UPDATE tessera_counts SET n = n - 1 WHERE name = 'directus_users';
END;
