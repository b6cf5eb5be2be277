//! The collections Tessera exposes through its generic item routes: which fields each has, of
//! which kind, and how a field maps onto a database column. Handlers and the core never name a
//! column; they name a field, and this table decides whether it exists and how it is stored.

/// How a field's value is stored and read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UUID primary or foreign key, stored as text.
    Uuid,
    /// Free text.
    String,
    /// An integer.
    Integer,
    /// A boolean, stored as 0/1.
    Boolean,
    /// Arbitrary JSON, stored as its text.
    Json,
    /// A point in time, stored as Unix milliseconds and read as an ISO-8601 string.
    Timestamp,
    /// An argon2 PHC string (`password`): written hashed, read concealed, never filtered on.
    Hash,
    /// A secret stored only as its SHA-256 digest (`token`): read concealed.
    Digest,
    /// A secret stored as given but never shown (`tfa_secret`).
    Concealed,
    /// A list of names, stored as comma-separated text and read as a JSON array (Directus's
    /// `cast-csv`: a permission's `fields`, a policy's `ip_access`).
    Csv,
}

impl Kind {
    /// Whether reads replace a set value with `**********`.
    pub fn is_concealed(self) -> bool {
        matches!(self, Kind::Hash | Kind::Digest | Kind::Concealed)
    }
}

/// Whether a field's column takes null, as its `NOT NULL` and default say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    /// Nullable.
    Allowed,
    /// `NOT NULL` with a default: may be left out, never set to null.
    Refused,
    /// `NOT NULL` without a default: must be given when an item is created.
    Required,
}

/// One field of a collection.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name on the wire.
    pub name: &'static str,
    /// The column that holds it.
    pub column: &'static str,
    pub kind: Kind,
    /// Whether writes through the item routes may set it.
    pub writable: bool,
    pub nulls: Nulls,
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        column: name,
        kind,
        writable: true,
        nulls: Nulls::Allowed,
    }
}

/// A writable `NOT NULL` field with a default.
const fn not_null(name: &'static str, kind: Kind) -> Field {
    Field {
        nulls: Nulls::Refused,
        ..f(name, kind)
    }
}

/// A writable `NOT NULL` field without a default.
const fn required(name: &'static str, kind: Kind) -> Field {
    Field {
        nulls: Nulls::Required,
        ..f(name, kind)
    }
}

const fn ro(name: &'static str, kind: Kind) -> Field {
    Field {
        writable: false,
        ..f(name, kind)
    }
}

/// A link from a collection to items of another (or of the same one): the items of `target`
/// whose `remote` column equals this item's `local` column. A field holding a foreign key
/// (`role`) links many-to-one (`local` is its column, `remote` the target's key); an alias
/// (`policies`) links one-to-many (`local` is this collection's key, `remote` the foreign key
/// in `target`) and reads as the list of the linked items' keys.
#[derive(Debug)]
pub struct Relation {
    pub name: &'static str,
    pub target: &'static Collection,
    pub local: &'static str,
    pub remote: &'static str,
    pub many: bool,
}

const fn one(name: &'static str, target: &'static Collection) -> Relation {
    Relation {
        name,
        target,
        local: name,
        remote: "id",
        many: false,
    }
}

const fn many(name: &'static str, target: &'static Collection, remote: &'static str) -> Relation {
    Relation {
        name,
        target,
        local: "id",
        remote,
        many: true,
    }
}

/// A collection: its table, fields in Directus's read order, and the relations its fields and
/// aliases follow.
#[derive(Debug)]
pub struct Collection {
    pub name: &'static str,
    pub table: &'static str,
    pub fields: &'static [Field],
    pub relations: &'static [Relation],
    /// The text columns a trigram index covers (see the engines' `user_text` migrations, which
    /// list the same columns in the same order); empty where there is none.
    pub text_index: &'static [&'static str],
}

impl Collection {
    /// The field called `name`, if the collection has one.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The alias (one-to-many list) called `name`, if the collection has one.
    pub fn alias(&self, name: &str) -> Option<&'static Relation> {
        self.relations.iter().find(|r| r.many && r.name == name)
    }

    /// The aliases, in read order.
    pub fn aliases(&self) -> impl Iterator<Item = &'static Relation> + use<> {
        let relations: &'static [Relation] = self.relations;
        relations.iter().filter(|r| r.many)
    }

    /// The relation a field or alias called `name` follows, if any.
    pub fn relation(&self, name: &str) -> Option<&'static Relation> {
        self.relations.iter().find(|r| r.name == name)
    }

    /// Whether `name` is a field or an alias of this collection.
    pub fn has(&self, name: &str) -> bool {
        self.field(name).is_some() || self.alias(name).is_some()
    }

    /// The primary key.
    pub fn key(&self) -> &'static Field {
        let fields: &'static [Field] = self.fields;
        fields.iter().find(|f| f.name == "id").unwrap_or(&fields[0])
    }
}

/// Every collection the item routes serve, by name.
pub static COLLECTIONS: &[&Collection] =
    &[&USERS, &ROLES, &POLICIES, &ACCESS, &PERMISSIONS, &SETTINGS];

/// The collection called `name`.
pub fn collection(name: &str) -> Option<&'static Collection> {
    COLLECTIONS.iter().copied().find(|c| c.name == name)
}

/// `directus_users`.
pub static USERS: Collection = Collection {
    name: "directus_users",
    table: "directus_users",
    fields: &[
        ro("id", Kind::Uuid),
        f("first_name", Kind::String),
        f("last_name", Kind::String),
        f("email", Kind::String),
        f("password", Kind::Hash),
        f("location", Kind::String),
        f("title", Kind::String),
        f("description", Kind::String),
        f("tags", Kind::Json),
        f("avatar", Kind::Uuid),
        f("language", Kind::String),
        f("tfa_secret", Kind::Concealed),
        not_null("status", Kind::String),
        f("role", Kind::Uuid),
        Field {
            name: "token",
            column: "token_hash",
            ..f("token", Kind::Digest)
        },
        ro("last_access", Kind::Timestamp),
        f("last_page", Kind::String),
        not_null("provider", Kind::String),
        f("external_identifier", Kind::String),
        f("auth_data", Kind::Json),
        f("email_notifications", Kind::Boolean),
        f("appearance", Kind::String),
        f("theme_dark", Kind::String),
        f("theme_light", Kind::String),
        f("theme_light_overrides", Kind::Json),
        f("theme_dark_overrides", Kind::Json),
        not_null("text_direction", Kind::String),
    ],
    relations: &[one("role", &ROLES), many("policies", &ACCESS, "user")],
    text_index: &[
        "first_name",
        "last_name",
        "email",
        "location",
        "title",
        "description",
        "language",
        "status",
        "last_page",
        "provider",
        "external_identifier",
        "appearance",
        "theme_dark",
        "theme_light",
        "text_direction",
    ],
};

/// `directus_roles`.
pub static ROLES: Collection = Collection {
    name: "directus_roles",
    table: "directus_roles",
    fields: &[
        ro("id", Kind::Uuid),
        required("name", Kind::String),
        not_null("icon", Kind::String),
        f("description", Kind::String),
        f("parent", Kind::Uuid),
    ],
    relations: &[
        one("parent", &ROLES),
        many("children", &ROLES, "parent"),
        many("policies", &ACCESS, "role"),
        many("users", &USERS, "role"),
    ],
    text_index: &[],
};

/// `directus_policies`.
pub static POLICIES: Collection = Collection {
    name: "directus_policies",
    table: "directus_policies",
    fields: &[
        ro("id", Kind::Uuid),
        required("name", Kind::String),
        not_null("icon", Kind::String),
        f("description", Kind::String),
        f("ip_access", Kind::Csv),
        not_null("enforce_tfa", Kind::Boolean),
        not_null("admin_access", Kind::Boolean),
        not_null("app_access", Kind::Boolean),
    ],
    relations: &[
        many("permissions", &PERMISSIONS, "policy"),
        many("users", &ACCESS, "policy"),
        many("roles", &ACCESS, "policy"),
    ],
    text_index: &[],
};

/// `directus_access`: which role or user (or, with neither, everybody) a policy applies to.
pub static ACCESS: Collection = Collection {
    name: "directus_access",
    table: "directus_access",
    fields: &[
        ro("id", Kind::Uuid),
        f("role", Kind::Uuid),
        f("user", Kind::Uuid),
        required("policy", Kind::Uuid),
        f("sort", Kind::Integer),
    ],
    relations: &[
        one("role", &ROLES),
        one("user", &USERS),
        one("policy", &POLICIES),
    ],
    text_index: &[],
};

/// `directus_permissions`: what a policy allows on one collection and action. The key is a
/// number the database assigns.
pub static PERMISSIONS: Collection = Collection {
    name: "directus_permissions",
    table: "directus_permissions",
    fields: &[
        ro("id", Kind::Integer),
        required("collection", Kind::String),
        required("action", Kind::String),
        f("permissions", Kind::Json),
        f("validation", Kind::Json),
        f("presets", Kind::Json),
        f("fields", Kind::Csv),
        required("policy", Kind::Uuid),
    ],
    relations: &[one("policy", &POLICIES)],
    text_index: &[],
};

/// `directus_settings`: a single row with id 1.
pub static SETTINGS: Collection = Collection {
    name: "directus_settings",
    table: "directus_settings",
    fields: &[
        ro("id", Kind::Integer),
        not_null("project_name", Kind::String),
        f("project_url", Kind::String),
        not_null("project_color", Kind::String),
        f("project_logo", Kind::Uuid),
        f("project_descriptor", Kind::String),
        not_null("default_language", Kind::String),
        not_null("default_appearance", Kind::String),
        f("public_note", Kind::String),
        f("auth_login_attempts", Kind::Integer),
        f("auth_password_policy", Kind::String),
        not_null("public_registration", Kind::Boolean),
        not_null("public_registration_verify_email", Kind::Boolean),
        f("public_registration_role", Kind::Uuid),
        f("public_registration_email_filter", Kind::Json),
    ],
    relations: &[one("public_registration_role", &ROLES)],
    text_index: &[],
};

/// A table as a data move copies it (`tessera migrate-data`): every column of the schema,
/// the key it is read in order of, and the columns that reference rows of the same table
/// (written in a second pass, once every row exists).
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static str,
    pub columns: &'static [&'static str],
    /// Whether the key is copied; if not, the target numbers the rows itself.
    pub copy_key: bool,
    pub later: &'static [&'static str],
}

/// Every table of the schema, parents before children: the order a data move fills them in.
pub static TABLES: &[Table] = &[
    Table {
        name: "directus_roles",
        key: "id",
        columns: &["id", "name", "icon", "description", "parent"],
        copy_key: true,
        later: &["parent"],
    },
    Table {
        name: "directus_policies",
        key: "id",
        columns: &[
            "id",
            "name",
            "icon",
            "description",
            "ip_access",
            "enforce_tfa",
            "admin_access",
            "app_access",
        ],
        copy_key: true,
        later: &[],
    },
    Table {
        name: "directus_users",
        key: "id",
        columns: &[
            "id",
            "first_name",
            "last_name",
            "email",
            "password",
            "location",
            "title",
            "description",
            "tags",
            "avatar",
            "language",
            "tfa_secret",
            "status",
            "role",
            "token_hash",
            "last_access",
            "last_page",
            "provider",
            "external_identifier",
            "auth_data",
            "email_notifications",
            "appearance",
            "theme_dark",
            "theme_light",
            "theme_light_overrides",
            "theme_dark_overrides",
            "text_direction",
            "failed_logins",
            "login_locked_until",
            "tfa_pending",
            "tfa_last_step",
        ],
        copy_key: true,
        later: &[],
    },
    Table {
        name: "directus_access",
        key: "id",
        columns: &["id", "role", "user", "policy", "sort"],
        copy_key: true,
        later: &[],
    },
    Table {
        name: "directus_permissions",
        key: "id",
        columns: &[
            "id",
            "policy",
            "collection",
            "action",
            "permissions",
            "validation",
            "presets",
            "fields",
        ],
        copy_key: false,
        later: &[],
    },
    Table {
        name: "directus_settings",
        key: "id",
        columns: &[
            "id",
            "project_name",
            "project_url",
            "project_color",
            "project_logo",
            "project_descriptor",
            "default_language",
            "default_appearance",
            "public_note",
            "auth_login_attempts",
            "auth_password_policy",
            "public_registration",
            "public_registration_verify_email",
            "public_registration_role",
            "public_registration_email_filter",
        ],
        copy_key: true,
        later: &[],
    },
    Table {
        name: "directus_sessions",
        key: "family",
        columns: &[
            "family",
            "user",
            "generation",
            "token_hash",
            "created",
            "expires",
            "rotated_at",
            "prev_rotated_at",
            "ip",
            "user_agent",
            "origin",
        ],
        copy_key: true,
        later: &[],
    },
];
