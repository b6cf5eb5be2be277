-- See SQLite's migration 0007. Nulls come first in each index as they do in an ascending
-- sort here; a descending sort (nulls last) reads the index backwards.
CREATE INDEX directus_users_by_email ON directus_users (email NULLS FIRST, id);
CREATE INDEX directus_users_by_first_name ON directus_users (first_name NULLS FIRST, id);
CREATE INDEX directus_users_by_last_name ON directus_users (last_name NULLS FIRST, id);
CREATE INDEX directus_users_by_status ON directus_users (status NULLS FIRST, id);
CREATE INDEX directus_users_by_last_access ON directus_users (last_access NULLS FIRST, id);
DROP INDEX directus_users_role;
CREATE INDEX directus_users_role ON directus_users (role NULLS FIRST, id);
