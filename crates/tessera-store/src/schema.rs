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

/// A list of ids found through another collection's foreign key (`policies`, `users`, …).
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    pub name: &'static str,
    /// The table holding the foreign key.
    pub table: &'static str,
    /// The foreign-key column pointing at this collection's primary key.
    pub foreign_key: &'static str,
    /// The column whose values make up the list.
    pub value: &'static str,
}

/// A collection: its table, primary key, fields in Directus's read order, and alias lists.
#[derive(Debug)]
pub struct Collection {
    pub name: &'static str,
    pub table: &'static str,
    pub fields: &'static [Field],
    pub aliases: &'static [Alias],
}

impl Collection {
    /// The field called `name`, if the collection has one.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The alias called `name`, if the collection has one.
    pub fn alias(&self, name: &str) -> Option<&'static Alias> {
        self.aliases.iter().find(|a| a.name == name)
    }

    /// Whether `name` is a field or an alias of this collection.
    pub fn has(&self, name: &str) -> bool {
        self.field(name).is_some() || self.alias(name).is_some()
    }
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
    aliases: &[Alias {
        name: "policies",
        table: "directus_access",
        foreign_key: "user",
        value: "id",
    }],
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
    aliases: &[
        Alias {
            name: "children",
            table: "directus_roles",
            foreign_key: "parent",
            value: "id",
        },
        Alias {
            name: "policies",
            table: "directus_access",
            foreign_key: "role",
            value: "id",
        },
        Alias {
            name: "users",
            table: "directus_users",
            foreign_key: "role",
            value: "id",
        },
    ],
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
        f("ip_access", Kind::String),
        not_null("enforce_tfa", Kind::Boolean),
        not_null("admin_access", Kind::Boolean),
        not_null("app_access", Kind::Boolean),
    ],
    aliases: &[],
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
    aliases: &[],
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
    aliases: &[],
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
