-- See SQLite's migration 0006: a trigram index over the users' text fields. Here it is a GIN
-- index (pg_trgm) on one expression, the lowered concatenation of the columns
-- `tessera_store::schema::USERS.text_index` lists, in that order; the SQL layer writes the
-- same expression (`tessera_sql::filter::text_of`) so the planner matches it, and a
-- conformance test checks that it does.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX directus_users_text ON directus_users USING gin (
    lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' || coalesce(email, '') || ' ' || coalesce(location, '') || ' ' || coalesce(title, '') || ' ' || coalesce(description, '') || ' ' || coalesce(language, '') || ' ' || coalesce(status, '') || ' ' || coalesce(last_page, '') || ' ' || coalesce(provider, '') || ' ' || coalesce(external_identifier, '') || ' ' || coalesce(appearance, '') || ' ' || coalesce(theme_dark, '') || ' ' || coalesce(theme_light, '') || ' ' || coalesce(text_direction, '')) gin_trgm_ops
);
