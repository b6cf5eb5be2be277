-- Two-factor login: the secret a user generated but has not enabled yet (sealed, as
-- tfa_secret is), and the last TOTP step used, so that no code is accepted twice.
ALTER TABLE directus_users ADD COLUMN tfa_pending TEXT;
ALTER TABLE directus_users ADD COLUMN tfa_last_step INTEGER;
