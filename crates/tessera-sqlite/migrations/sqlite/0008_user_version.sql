-- A version of what the users' rows say, for the SQL layer's deep pages: a page continued
-- from a remembered row (rather than walking its offset again) is correct only while the
-- version it was remembered at holds, and the paging statement checks that itself. Every
-- insert and delete moves it, and every update that changes a column the collection shows
-- except `last_access`, which each login and refresh writes (pages filtered or sorted on it
-- are never continued). Columns the collection does not show (failed logins, two-factor
-- bookkeeping) leave it alone too.
CREATE TABLE tessera_versions (
    name text PRIMARY KEY NOT NULL,
    version integer NOT NULL
);
INSERT INTO tessera_versions (name, version) VALUES ('directus_users', 0);
CREATE TRIGGER directus_users_versioned_insert AFTER INSERT ON directus_users
BEGIN
    UPDATE tessera_versions SET version = version + 1 WHERE name = 'directus_users';
END;
CREATE TRIGGER directus_users_versioned_delete AFTER DELETE ON directus_users
BEGIN
    UPDATE tessera_versions SET version = version + 1 WHERE name = 'directus_users';
END;
CREATE TRIGGER directus_users_versioned_update AFTER UPDATE ON directus_users
WHEN
    OLD.id IS NOT NEW.id OR
    OLD.first_name IS NOT NEW.first_name OR
    OLD.last_name IS NOT NEW.last_name OR
    OLD.email IS NOT NEW.email OR
    OLD.password IS NOT NEW.password OR
    OLD.location IS NOT NEW.location OR
    OLD.title IS NOT NEW.title OR
    OLD.description IS NOT NEW.description OR
    OLD.tags IS NOT NEW.tags OR
    OLD.avatar IS NOT NEW.avatar OR
    OLD.language IS NOT NEW.language OR
    OLD.tfa_secret IS NOT NEW.tfa_secret OR
    OLD.status IS NOT NEW.status OR
    OLD.role IS NOT NEW.role OR
    OLD.token_hash IS NOT NEW.token_hash OR
    OLD.last_page IS NOT NEW.last_page OR
    OLD.provider IS NOT NEW.provider OR
    OLD.external_identifier IS NOT NEW.external_identifier OR
    OLD.auth_data IS NOT NEW.auth_data OR
    OLD.email_notifications IS NOT NEW.email_notifications OR
    OLD.appearance IS NOT NEW.appearance OR
    OLD.theme_dark IS NOT NEW.theme_dark OR
    OLD.theme_light IS NOT NEW.theme_light OR
    OLD.theme_light_overrides IS NOT NEW.theme_light_overrides OR
    OLD.theme_dark_overrides IS NOT NEW.theme_dark_overrides OR
    OLD.text_direction IS NOT NEW.text_direction
BEGIN
    UPDATE tessera_versions SET version = version + 1 WHERE name = 'directus_users';
END;
