-- See SQLite's migration 0003.
ALTER TABLE directus_users ADD COLUMN tfa_pending text COLLATE "C";
ALTER TABLE directus_users ADD COLUMN tfa_last_step bigint;
