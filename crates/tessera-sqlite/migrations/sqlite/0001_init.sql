-- Roles, policies, the access junction and permissions: Directus's policy-based model.
CREATE TABLE directus_roles (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    icon        TEXT NOT NULL DEFAULT 'supervised_user_circle',
    description TEXT,
    parent      TEXT REFERENCES directus_roles(id) ON DELETE SET NULL
);

CREATE TABLE directus_policies (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    icon         TEXT NOT NULL DEFAULT 'badge',
    description  TEXT,
    ip_access    TEXT,
    enforce_tfa  INTEGER NOT NULL DEFAULT 0,
    admin_access INTEGER NOT NULL DEFAULT 0,
    app_access   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE directus_users (
    id                    TEXT PRIMARY KEY NOT NULL,
    first_name            TEXT,
    last_name             TEXT,
    email                 TEXT,
    password              TEXT,
    location              TEXT,
    title                 TEXT,
    description           TEXT,
    tags                  TEXT,
    avatar                TEXT,
    language              TEXT,
    tfa_secret            TEXT,
    status                TEXT NOT NULL DEFAULT 'active',
    role                  TEXT REFERENCES directus_roles(id) ON DELETE SET NULL,
    token_hash            TEXT UNIQUE,
    last_access           INTEGER,
    last_page             TEXT,
    provider              TEXT NOT NULL DEFAULT 'default',
    external_identifier   TEXT UNIQUE,
    auth_data             TEXT,
    email_notifications   INTEGER DEFAULT 1,
    appearance            TEXT,
    theme_dark            TEXT,
    theme_light           TEXT,
    theme_light_overrides TEXT,
    theme_dark_overrides  TEXT,
    text_direction        TEXT NOT NULL DEFAULT 'auto',
    failed_logins         INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX directus_users_email_lower ON directus_users(lower(email));
CREATE INDEX directus_users_role ON directus_users(role);

CREATE TABLE directus_access (
    id     TEXT PRIMARY KEY NOT NULL,
    role   TEXT REFERENCES directus_roles(id) ON DELETE CASCADE,
    user   TEXT REFERENCES directus_users(id) ON DELETE CASCADE,
    policy TEXT NOT NULL REFERENCES directus_policies(id) ON DELETE CASCADE,
    sort   INTEGER
);
CREATE INDEX directus_access_role ON directus_access(role);
CREATE INDEX directus_access_user ON directus_access(user);

CREATE TABLE directus_permissions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    policy      TEXT NOT NULL REFERENCES directus_policies(id) ON DELETE CASCADE,
    collection  TEXT NOT NULL,
    action      TEXT NOT NULL,
    permissions TEXT,
    validation  TEXT,
    presets     TEXT,
    fields      TEXT
);
CREATE INDEX directus_permissions_policy ON directus_permissions(policy);

-- One row per refresh token ever issued in a session family. The live token of a family has
-- next_token_hash NULL; rotated rows stay until their own expiry so a replay can be detected.
CREATE TABLE directus_sessions (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    family          TEXT NOT NULL,
    user            TEXT REFERENCES directus_users(id) ON DELETE CASCADE,
    share           TEXT,
    expires         INTEGER NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    origin          TEXT,
    next_token_hash TEXT,
    rotated_at      INTEGER
);
CREATE INDEX directus_sessions_family ON directus_sessions(family);
CREATE INDEX directus_sessions_user ON directus_sessions(user);
CREATE INDEX directus_sessions_expires ON directus_sessions(expires);

CREATE TABLE directus_settings (
    id                               INTEGER PRIMARY KEY NOT NULL,
    project_name                     TEXT NOT NULL DEFAULT 'Directus',
    project_url                      TEXT,
    project_color                    TEXT NOT NULL DEFAULT '#6644FF',
    project_logo                     TEXT,
    project_descriptor               TEXT,
    default_language                 TEXT NOT NULL DEFAULT 'en-US',
    default_appearance               TEXT NOT NULL DEFAULT 'auto',
    public_note                      TEXT,
    auth_login_attempts              INTEGER DEFAULT 25,
    auth_password_policy             TEXT,
    public_registration              INTEGER NOT NULL DEFAULT 0,
    public_registration_verify_email INTEGER NOT NULL DEFAULT 1,
    public_registration_role         TEXT REFERENCES directus_roles(id) ON DELETE SET NULL,
    public_registration_email_filter TEXT
);
INSERT INTO directus_settings (id) VALUES (1);

-- The public policy, attached to nobody: anonymous requests and role-less users get it.
INSERT INTO directus_policies (id, name, icon, description, app_access, admin_access)
VALUES ('abf8a154-5b1c-4a46-ac9c-7300570f4f17', '$t:public_label', 'public', '$t:public_description', 0, 0);
INSERT INTO directus_access (id, role, user, policy, sort)
VALUES ('c1c6d0a2-5b9c-4f0e-9d53-3e0f2f3a6b11', NULL, NULL, 'abf8a154-5b1c-4a46-ac9c-7300570f4f17', 1);
