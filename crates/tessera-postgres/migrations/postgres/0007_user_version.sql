-- See SQLite's migration 0008. Here the version is the id of the last transaction that
-- changed the users, written as that transaction commits: the triggers are deferred, so the
-- version row is the last lock a writer takes, after every user row it locks. (Moved in the
-- middle of a transaction, it would be held while waiting for a user row that another writer
-- holds while waiting for the version row at its own commit: a deadlock.) Each transaction
-- writes it once, so a bulk write moves it once, and a transaction id never comes back.
CREATE TABLE tessera_versions (
    name text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL
);
INSERT INTO tessera_versions (name, version) VALUES ('directus_users', 0);
CREATE FUNCTION tessera_version_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tessera_versions SET version = txid_current()
        WHERE name = 'directus_users' AND version <> txid_current();
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER directus_users_versioned_write AFTER INSERT OR DELETE ON directus_users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tessera_version_users();
CREATE CONSTRAINT TRIGGER directus_users_versioned_update AFTER UPDATE ON directus_users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
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
