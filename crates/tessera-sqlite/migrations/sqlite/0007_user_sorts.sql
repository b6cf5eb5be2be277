-- Indexes for the sorts `/users` offers (email, first_name, last_name, status, last_access,
-- role), each ending in the id the SQL layer breaks ties with, so that a sorted page reads
-- its rows from the index in order (backwards for a descending sort) instead of sorting the
-- table on every request. The role index gains the id for the same reason.
CREATE INDEX directus_users_by_email ON directus_users (email, id);
CREATE INDEX directus_users_by_first_name ON directus_users (first_name, id);
CREATE INDEX directus_users_by_last_name ON directus_users (last_name, id);
CREATE INDEX directus_users_by_status ON directus_users (status, id);
CREATE INDEX directus_users_by_last_access ON directus_users (last_access, id);
DROP INDEX directus_users_role;
CREATE INDEX directus_users_role ON directus_users (role, id);
