-- See SQLite's migration 0008. Here the version is the id of the last transaction that
-- changed it, so a bulk write (a role's users losing their role) moves it once rather than
-- once per row, and it never comes back to an earlier value.
ALTER TABLE tessera_counts ADD COLUMN version bigint NOT NULL DEFAULT 0;
CREATE OR REPLACE FUNCTION tessera_count_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE tessera_counts SET n = n + (SELECT count(*) FROM counted), version = txid_current()
            WHERE name = 'directus_users';
    ELSE
        UPDATE tessera_counts SET n = n - (SELECT count(*) FROM counted), version = txid_current()
            WHERE name = 'directus_users';
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION tessera_version_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tessera_counts SET version = txid_current()
        WHERE name = 'directus_users' AND version <> txid_current();
    RETURN NULL;
END
$$;
CREATE TRIGGER directus_users_versioned_update AFTER UPDATE ON directus_users FOR EACH ROW
    WHEN (
        OLD.id IS DISTINCT FROM NEW.id OR
        OLD.first_name IS DISTINCT FROM NEW.first_name OR
        OLD.last_name IS DISTINCT FROM NEW.last_name OR
        OLD.email IS DISTINCT FROM NEW.email OR
        OLD.password IS DISTINCT FROM NEW.password OR
        OLD.location IS DISTINCT FROM NEW.location OR
        OLD.title IS DISTINCT FROM NEW.title OR
        OLD.description IS DISTINCT FROM NEW.description OR
        OLD.tags IS DISTINCT FROM NEW.tags OR
        OLD.avatar IS DISTINCT FROM NEW.avatar OR
        OLD.language IS DISTINCT FROM NEW.language OR
        OLD.tfa_secret IS DISTINCT FROM NEW.tfa_secret OR
        OLD.status IS DISTINCT FROM NEW.status OR
        OLD.role IS DISTINCT FROM NEW.role OR
        OLD.token_hash IS DISTINCT FROM NEW.token_hash OR
        OLD.last_page IS DISTINCT FROM NEW.last_page OR
        OLD.provider IS DISTINCT FROM NEW.provider OR
        OLD.external_identifier IS DISTINCT FROM NEW.external_identifier OR
        OLD.auth_data IS DISTINCT FROM NEW.auth_data OR
        OLD.email_notifications IS DISTINCT FROM NEW.email_notifications OR
        OLD.appearance IS DISTINCT FROM NEW.appearance OR
        OLD.theme_dark IS DISTINCT FROM NEW.theme_dark OR
        OLD.theme_light IS DISTINCT FROM NEW.theme_light OR
        OLD.theme_light_overrides IS DISTINCT FROM NEW.theme_light_overrides OR
        OLD.theme_dark_overrides IS DISTINCT FROM NEW.theme_dark_overrides OR
        OLD.text_direction IS DISTINCT FROM NEW.text_direction
    )
    EXECUTE FUNCTION tessera_version_users();
