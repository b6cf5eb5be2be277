-- A trigram index over the users' text fields, so that `_contains`, `_icontains`,
-- `_starts_with`, `_ends_with` and `search` narrow a million users through the index instead of
-- testing every row (the SQL layer adds `id IN (… MATCH …)` before the exact condition; the
-- index folds case, so it finds a superset). The columns are the users' text fields as
-- `tessera_store::schema::USERS.text_index` lists them, in that order.
--
-- The index keeps its own copy of the text and the user's id: a user's rowid is not stable
-- (VACUUM may renumber it), so each user gets a key of its own in directus_users_text_key,
-- whose INTEGER PRIMARY KEY is the index row's rowid.
CREATE TABLE directus_users_text_key (
    k  INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE directus_users_text USING fts5(
    id UNINDEXED, first_name, last_name, email, location, title, description, language, status, last_page, provider, external_identifier, appearance, theme_dark, theme_light, text_direction,
    tokenize = 'trigram'
);
INSERT INTO directus_users_text_key (id) SELECT id FROM directus_users;
INSERT INTO directus_users_text (rowid, id, first_name, last_name, email, location, title, description, language, status, last_page, provider, external_identifier, appearance, theme_dark, theme_light, text_direction)
    SELECT k.k, u.id, u.first_name, u.last_name, u.email, u.location, u.title, u.description, u.language, u.status, u.last_page, u.provider, u.external_identifier, u.appearance, u.theme_dark, u.theme_light, u.text_direction
    FROM directus_users u JOIN directus_users_text_key k ON k.id = u.id;
CREATE TRIGGER directus_users_text_insert AFTER INSERT ON directus_users
BEGIN
    INSERT INTO directus_users_text_key (id) VALUES (new.id);
    INSERT INTO directus_users_text (rowid, id, first_name, last_name, email, location, title, description, language, status, last_page, provider, external_identifier, appearance, theme_dark, theme_light, text_direction)
        SELECT k, new.id, new.first_name, new.last_name, new.email, new.location, new.title, new.description, new.language, new.status, new.last_page, new.provider, new.external_identifier, new.appearance, new.theme_dark, new.theme_light, new.text_direction
        FROM directus_users_text_key WHERE id = new.id;
END;
CREATE TRIGGER directus_users_text_update AFTER UPDATE OF first_name, last_name, email, location, title, description, language, status, last_page, provider, external_identifier, appearance, theme_dark, theme_light, text_direction ON directus_users
BEGIN
    UPDATE directus_users_text SET first_name = new.first_name, last_name = new.last_name, email = new.email, location = new.location, title = new.title, description = new.description, language = new.language, status = new.status, last_page = new.last_page, provider = new.provider, external_identifier = new.external_identifier, appearance = new.appearance, theme_dark = new.theme_dark, theme_light = new.theme_light, text_direction = new.text_direction
        WHERE rowid = (SELECT k FROM directus_users_text_key WHERE id = new.id);
END;
CREATE TRIGGER directus_users_text_delete AFTER DELETE ON directus_users
BEGIN
    DELETE FROM directus_users_text
        WHERE rowid = (SELECT k FROM directus_users_text_key WHERE id = old.id);
    DELETE FROM directus_users_text_key WHERE id = old.id;
END;
