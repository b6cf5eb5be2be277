//! Configuration from Directus's environment variable names. Values come from a `.env` file,
//! then the process environment, then CLI flags (each overriding the one before). Every value
//! is checked at start; a bad one stops the start with a message naming the variable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tessera_core::auth::AuthSettings;
use tessera_core::limits::{Limit, ThrottleSettings};
use tessera_core::password::HashSettings;
use tessera_core::reset::ResetSettings;

use crate::limits::LimiterStore;
use crate::mail::{EmailSettings, Smtp, Transport};

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

fn bad(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        message: message.into(),
    }
}

/// `SameSite` of a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Attributes of one of the two auth cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    pub domain: Option<String>,
    pub secure: bool,
    pub same_site: SameSite,
    /// Max-Age in seconds.
    pub max_age: i64,
}

/// Which database backs the server.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite { filename: PathBuf },
    Postgres(Box<tessera_postgres::Settings>),
}

/// Limits on connections, so that slow or idle clients cannot hold the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `SERVER_HEADERS_TIMEOUT`: time to receive a request's headers, counted from the
    /// connection's start or the end of its previous answer.
    pub headers_timeout: Duration,
    /// `SERVER_KEEP_ALIVE_TIMEOUT`: how long an idle keep-alive connection stays open.
    pub keep_alive_timeout: Duration,
    /// `SERVER_REQUEST_TIMEOUT`: time to receive a request's body once its headers are in.
    pub body_timeout: Duration,
    /// `SERVER_MAX_CONNECTIONS`: open connections at most; further clients wait to be
    /// accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            headers_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// The whole server configuration.
#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub public_url: String,
    pub database: Database,
    /// `SECRET`; when `None` one is generated and kept beside the database.
    pub secret: Option<String>,
    pub auth: AuthSettings,
    pub hash: HashSettings,
    /// `HASH_QUEUE_LIMIT`: password hashes that may wait for a hashing thread; more are
    /// refused with 503 at once.
    pub hash_queue_limit: usize,
    pub http: HttpLimits,
    pub refresh_cookie: CookieSettings,
    pub session_cookie: CookieSettings,
    pub admin_email: String,
    pub admin_password: Option<String>,
    pub admin_token: Option<String>,
    pub max_payload_size: usize,
    pub ip_trust_proxy: bool,
    pub ip_custom_header: Option<String>,
    pub healthcheck_enabled: bool,
    /// `METRICS_ENABLED`: whether `/server/metrics` exists.
    pub metrics_enabled: bool,
    /// `METRICS_TOKENS`: tokens that may read the metrics with `Authorization: Metrics <token>`
    /// (admins always may).
    pub metrics_tokens: Vec<String>,
    pub log_level: String,
    /// `CORS_*`, when `CORS_ENABLED`.
    pub cors: Option<crate::headers::Cors>,
    /// `HSTS_ENABLED`: whether answers carry `Strict-Transport-Security`.
    pub hsts_enabled: bool,
    /// `RATE_LIMITER_POINTS` per `RATE_LIMITER_DURATION`, when `RATE_LIMITER_ENABLED`.
    pub rate_limit: Option<Limit>,
    /// `RATE_LIMITER_STORE`: where the request limit and the login throttle count.
    pub limiter_store: LimiterStore,
    /// `AUTH_THROTTLE_*`: the delays of login and password-reset requests (`None` when
    /// `AUTH_THROTTLE_ENABLED=false`).
    pub throttle: Option<ThrottleSettings>,
    /// `PASSWORD_RESET_*`.
    pub reset: ResetSettings,
    /// `EMAIL_*`.
    pub email: EmailSettings,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("public_url", &self.public_url)
            .field("database", &self.database)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("auth", &self.auth)
            .field("admin_email", &self.admin_email)
            .finish_non_exhaustive()
    }
}

/// Parses a duration as the `ms` package does: a bare number is milliseconds, otherwise a
/// number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`, `y`, or their long forms).
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "w" | "week" | "weeks" => 604_800_000.0,
        "y" | "yr" | "yrs" | "year" | "years" => 31_557_600_000.0,
        _ => return None,
    };
    let ms = (n * factor).round();
    (ms.is_finite() && (0.0..9.0e15).contains(&ms)).then_some(ms as i64)
}

/// Parses a byte size as the `bytes` package does: `1mb`, `100kb`, `512b`, or a bare number.
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "b" => 1.0,
        "kb" => 1024.0,
        "mb" => 1024.0 * 1024.0,
        "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = (n * factor).floor();
    (v.is_finite() && v >= 0.0).then_some(v as usize)
}

/// Reads a `.env` file into a map (missing file = empty map).
pub fn read_env_file(path: &std::path::Path) -> Result<HashMap<String, String>, ConfigError> {
    match dotenvy::from_path_iter(path) {
        Ok(iter) => iter
            .map(|item| item.map_err(|e| bad("CONFIG_PATH", format!("{}: {e}", path.display()))))
            .collect(),
        Err(e) if e.not_found() => Ok(HashMap::new()),
        Err(e) => Err(bad("CONFIG_PATH", format!("{}: {e}", path.display()))),
    }
}

struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_owned).filter(|s| !s.is_empty())
    }

    fn parse<T>(
        &self,
        key: &str,
        default: T,
        what: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => f(v).ok_or_else(|| bad(key, format!("{v:?} is not {what}"))),
        }
    }

    fn duration(&self, key: &str, default_ms: i64) -> Result<i64, ConfigError> {
        self.parse(
            key,
            default_ms,
            "a duration (e.g. 15m, 7d, 10s)",
            parse_duration_ms,
        )
    }

    /// A positive duration.
    fn timeout(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = i64::try_from(default.as_millis()).unwrap_or(i64::MAX);
        match self.duration(key, default_ms)? {
            0 => Err(bad(key, "must be longer than 0")),
            ms => Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))),
        }
    }

    /// A whole number above 0.
    fn positive(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.number(key, default)? {
            0 => Err(bad(key, "must be at least 1")),
            n => Ok(n),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        self.parse(key, default, "a boolean (true or false)", |v| {
            match v.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        })
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        self.parse(key, default, "a whole number", |v| v.trim().parse().ok())
    }

    fn same_site(&self, key: &str) -> Result<SameSite, ConfigError> {
        self.parse(key, SameSite::Lax, "one of lax, strict, none", |v| match v
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "lax" => Some(SameSite::Lax),
            "" | "strict" => Some(SameSite::Strict),
            "none" => Some(SameSite::None),
            _ => None,
        })
    }

    fn cookie(
        &self,
        prefix: &str,
        default_name: &str,
        max_age_ms: i64,
        https: bool,
    ) -> Result<CookieSettings, ConfigError> {
        let secure_key = format!("{prefix}_SECURE");
        Ok(CookieSettings {
            name: self
                .string(&format!("{prefix}_NAME"))
                .unwrap_or_else(|| default_name.to_owned()),
            domain: self.string(&format!("{prefix}_DOMAIN")),
            secure: self.boolean(&secure_key, https)?,
            same_site: self.same_site(&format!("{prefix}_SAME_SITE"))?,
            max_age: max_age_ms / 1000,
        })
    }
}

/// `DB_CONNECTION_STRING`, or `DB_HOST`, `DB_PORT`, `DB_DATABASE`, `DB_USER`, `DB_PASSWORD`
/// (the string wins where both are given), and `DB_POOL__MAX` / `DB_POOL__MIN`.
/// `CORS_*` as Directus reads them: off unless `CORS_ENABLED`; `CORS_ORIGIN` `true` (any
/// origin, reflected), `false` (none), or a comma list of origins and `/regular expressions/`.
/// A comma-separated list, trimmed, without empty entries.
fn csv(list: Option<String>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn rate_limit(v: &Vars<'_>) -> Result<Option<Limit>, ConfigError> {
    if !v.boolean("RATE_LIMITER_ENABLED", false)? {
        return Ok(None);
    }
    let points = u32::try_from(v.positive("RATE_LIMITER_POINTS", 50)?)
        .map_err(|_| bad("RATE_LIMITER_POINTS", "is too large"))?;
    // Seconds, as Directus reads it.
    let window_ms = v.parse(
        "RATE_LIMITER_DURATION",
        1_000,
        "a positive number of seconds",
        |s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0 && *n < 1e9)
                .map(|n| (n * 1000.0).round().max(1.0) as i64)
        },
    )?;
    Ok(Some(Limit { points, window_ms }))
}

fn limiter_store(v: &Vars<'_>, database: &Database) -> Result<LimiterStore, ConfigError> {
    match v.string("RATE_LIMITER_STORE").as_deref().map(str::trim) {
        None | Some("memory") => Ok(LimiterStore::Memory),
        Some("postgres" | "pg" | "database") => match database {
            Database::Postgres(_) => Ok(LimiterStore::Database),
            Database::Sqlite { .. } => Err(bad(
                "RATE_LIMITER_STORE",
                "postgres needs DB_CLIENT=pg (one SQLite instance counts in memory)",
            )),
        },
        Some("redis") => Ok(LimiterStore::Redis(redis_url(v)?)),
        Some(other) => Err(bad(
            "RATE_LIMITER_STORE",
            format!("{other:?} is not supported (supported: memory, redis, postgres)"),
        )),
    }
}

/// `RATE_LIMITER_REDIS` or `REDIS` (a URL), else `REDIS_HOST`, `REDIS_PORT`,
/// `REDIS_USERNAME`, `REDIS_PASSWORD` and `REDIS_DB`.
fn redis_url(v: &Vars<'_>) -> Result<String, ConfigError> {
    if let Some(url) = v.string("RATE_LIMITER_REDIS").or_else(|| v.string("REDIS")) {
        return Ok(url);
    }
    let host = v.string("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port = v.number("REDIS_PORT", 6379u16)?;
    let db = v.number("REDIS_DB", 0u32)?;
    let mut url = url::Url::parse(&format!("redis://{host}:{port}/{db}"))
        .map_err(|e| bad("REDIS_HOST", format!("is not a host name ({e})")))?;
    if let Some(user) = v.string("REDIS_USERNAME") {
        url.set_username(&user)
            .map_err(|()| bad("REDIS_USERNAME", "cannot go into a URL"))?;
    }
    if let Some(password) = v.string("REDIS_PASSWORD") {
        url.set_password(Some(&password))
            .map_err(|()| bad("REDIS_PASSWORD", "cannot go into a URL"))?;
    }
    Ok(url.into())
}

fn throttle_settings(v: &Vars<'_>) -> Result<Option<ThrottleSettings>, ConfigError> {
    if !v.boolean("AUTH_THROTTLE_ENABLED", true)? {
        return Ok(None);
    }
    let d = ThrottleSettings::default();
    let count = |key: &str, default: u32| -> Result<u32, ConfigError> {
        u32::try_from(v.positive(key, default as usize)?).map_err(|_| bad(key, "is too large"))
    };
    // A zero here would turn the throttle off while it says it is on.
    let positive = |key: &str, default: i64| -> Result<i64, ConfigError> {
        match v.duration(key, default)? {
            ms if ms > 0 => Ok(ms),
            _ => Err(bad(
                key,
                "must be longer than 0 (AUTH_THROTTLE_ENABLED=false turns the throttle off)",
            )),
        }
    };
    let first_delay_ms = positive("AUTH_THROTTLE_DELAY", d.first_delay_ms)?;
    let max_delay_ms = positive("AUTH_THROTTLE_MAX_DELAY", d.max_delay_ms)?;
    if max_delay_ms < first_delay_ms {
        return Err(bad(
            "AUTH_THROTTLE_MAX_DELAY",
            "must not be shorter than AUTH_THROTTLE_DELAY",
        ));
    }
    Ok(Some(ThrottleSettings {
        account_free: count("AUTH_THROTTLE_ACCOUNT_ATTEMPTS", d.account_free)?,
        ip_free: count("AUTH_THROTTLE_IP_ATTEMPTS", d.ip_free)?,
        first_delay_ms,
        max_delay_ms,
        window_ms: positive("AUTH_THROTTLE_WINDOW", d.window_ms)?,
    }))
}

fn email_settings(v: &Vars<'_>) -> Result<EmailSettings, ConfigError> {
    let d = EmailSettings::default();
    let transport = match v.string("EMAIL_TRANSPORT").as_deref().map(str::trim) {
        None | Some("sendmail") => Transport::Sendmail {
            path: v
                .string("EMAIL_SENDMAIL_PATH")
                .unwrap_or_else(|| "/usr/sbin/sendmail".into()),
        },
        Some("smtp") => {
            let secure = v.boolean("EMAIL_SMTP_SECURE", false)?;
            Transport::Smtp(Smtp {
                host: v
                    .string("EMAIL_SMTP_HOST")
                    .unwrap_or_else(|| "localhost".into()),
                port: v.number("EMAIL_SMTP_PORT", if secure { 465u16 } else { 587 })?,
                user: v.string("EMAIL_SMTP_USER"),
                password: v.string("EMAIL_SMTP_PASSWORD"),
                secure,
                ignore_tls: v.boolean("EMAIL_SMTP_IGNORE_TLS", false)?,
                name: v.string("EMAIL_SMTP_NAME"),
            })
        }
        Some(other) => {
            return Err(bad(
                "EMAIL_TRANSPORT",
                format!("{other:?} is not supported (supported: sendmail, smtp)"),
            ));
        }
    };
    Ok(EmailSettings {
        from: v.string("EMAIL_FROM").unwrap_or(d.from),
        transport,
    })
}

fn cors_settings(v: &Vars<'_>) -> Result<Option<crate::headers::Cors>, ConfigError> {
    use crate::headers::{Cors, OriginRule, Origins};
    if !v.boolean("CORS_ENABLED", false)? {
        return Ok(None);
    }
    let origins = match v.string("CORS_ORIGIN").as_deref().map(str::trim) {
        None | Some("false") => Origins::Some(Vec::new()),
        Some("true") => Origins::Any,
        Some(list) => Origins::Some(
            crate::headers::origin_entries(list)
                .iter()
                .map(|e| OriginRule::parse(e))
                .collect::<Result<_, _>>()
                .map_err(|e| bad("CORS_ORIGIN", e))?,
        ),
    };
    let list = |key: &str, default: &str| -> Option<String> {
        match v.raw(key) {
            None => Some(default.to_owned()),
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(s.trim().to_owned()),
        }
    };
    Ok(Some(Cors {
        origins,
        methods: list("CORS_METHODS", "GET,POST,PATCH,DELETE")
            .unwrap_or_else(|| "GET,POST,PATCH,DELETE".into()),
        allowed_headers: list("CORS_ALLOWED_HEADERS", "Content-Type,Authorization"),
        exposed_headers: list("CORS_EXPOSED_HEADERS", "Content-Range"),
        credentials: v.boolean("CORS_CREDENTIALS", true)?,
        max_age: v.number("CORS_MAX_AGE", 18_000)?,
    }))
}

fn postgres_settings(v: &Vars<'_>) -> Result<tessera_postgres::Settings, ConfigError> {
    if let Some(key) = v.0.keys().find(|k| k.starts_with("DB_SSL")) {
        return Err(bad(
            key,
            "TLS to PostgreSQL is not built in; reach the database over a local socket, a \
             private network or a TLS tunnel",
        ));
    }
    let mut config = match v.string("DB_CONNECTION_STRING") {
        Some(url) => url.parse::<postgres::Config>().map_err(|e| {
            bad(
                "DB_CONNECTION_STRING",
                format!("is not a PostgreSQL connection string ({e})"),
            )
        })?,
        None => {
            let mut c = postgres::Config::new();
            c.host(&v.string("DB_HOST").unwrap_or_else(|| "127.0.0.1".into()));
            c.port(v.number("DB_PORT", 5432u16)?);
            c.dbname(&v.string("DB_DATABASE").unwrap_or_else(|| "directus".into()));
            c.user(&v.string("DB_USER").unwrap_or_else(|| "postgres".into()));
            if let Some(p) = v.string("DB_PASSWORD") {
                c.password(p);
            }
            c
        }
    };
    if config.get_hosts().is_empty() {
        config.host("127.0.0.1");
    }
    if config.get_user().is_none() {
        config.user("postgres");
    }
    config.application_name("tessera");
    let pool_max = v.positive("DB_POOL__MAX", 10)?;
    let pool_min = v.number("DB_POOL__MIN", 2usize)?;
    if pool_min > pool_max {
        return Err(bad(
            "DB_POOL__MIN",
            format!("must not exceed DB_POOL__MAX ({pool_max})"),
        ));
    }
    Ok(tessera_postgres::Settings {
        config,
        pool_max,
        pool_min,
    })
}

impl Config {
    /// Builds the configuration from a map of variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let v = Vars(vars);
        let host = v.parse("HOST", IpAddr::from([127, 0, 0, 1]), "an IP address", |s| {
            s.trim().parse().ok()
        })?;
        let port = v.number("PORT", 8055u16)?;
        let public_url = v.string("PUBLIC_URL").unwrap_or_else(|| "/".into());
        let https = public_url.starts_with("https://");
        let database = match v.string("DB_CLIENT").as_deref() {
            None | Some("sqlite3" | "sqlite") => Database::Sqlite {
                filename: v
                    .string("DB_FILENAME")
                    .map_or_else(|| PathBuf::from("./data/data.db"), PathBuf::from),
            },
            Some("pg" | "postgres" | "postgresql") => {
                Database::Postgres(Box::new(postgres_settings(&v)?))
            }
            Some(other) => {
                return Err(bad(
                    "DB_CLIENT",
                    format!("{other:?} is not supported (supported: sqlite3, pg)"),
                ));
            }
        };
        let secret = v.string("SECRET");
        let auth = AuthSettings {
            access_ttl_ms: v.duration("ACCESS_TOKEN_TTL", 15 * 60_000)?,
            refresh_ttl_ms: v.duration("REFRESH_TOKEN_TTL", 7 * 86_400_000)?,
            session_ttl_ms: v.duration("SESSION_COOKIE_TTL", 86_400_000)?,
            grace_ms: v.duration("SESSION_REFRESH_GRACE_PERIOD", 10_000)?,
            revoke_on_reuse: v.boolean("SESSION_REFRESH_REVOKE_ON_REUSE", true)?,
            max_sessions_per_user: u32::try_from(v.positive("SESSION_MAX_PER_USER", 100)?)
                .map_err(|_| bad("SESSION_MAX_PER_USER", "is too large"))?,
            login_stall: Duration::from_millis(
                u64::try_from(v.duration("LOGIN_STALL_TIME", 500)?).unwrap_or(500),
            ),
        };
        let defaults = HashSettings::default();
        let hash = HashSettings {
            memory_cost: v.number("HASH_MEMORY_COST", defaults.memory_cost)?,
            time_cost: v.number("HASH_TIME_COST", defaults.time_cost)?,
            parallelism: v.number("HASH_PARALLELISM", defaults.parallelism)?,
            hash_length: v.number("HASH_HASH_LENGTH", defaults.hash_length)?,
            variant: v.number("HASH_TYPE", defaults.variant)?,
            associated_data: v.string("HASH_ASSOCIATED_DATA").map(String::into_bytes),
        };
        if let Err(e) = hash.hasher() {
            return Err(bad("HASH_*", e));
        }
        let refresh_cookie = v.cookie(
            "REFRESH_TOKEN_COOKIE",
            "directus_refresh_token",
            auth.refresh_ttl_ms,
            https,
        )?;
        let session_cookie = v.cookie(
            "SESSION_COOKIE",
            "directus_session_token",
            auth.session_ttl_ms,
            https,
        )?;
        let max_payload_size = v.parse(
            "MAX_PAYLOAD_SIZE",
            1024 * 1024,
            "a size (e.g. 1mb, 100kb)",
            parse_bytes,
        )?;
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            headers_timeout: v.timeout("SERVER_HEADERS_TIMEOUT", defaults.headers_timeout)?,
            keep_alive_timeout: v
                .timeout("SERVER_KEEP_ALIVE_TIMEOUT", defaults.keep_alive_timeout)?,
            body_timeout: v.timeout("SERVER_REQUEST_TIMEOUT", defaults.body_timeout)?,
            max_connections: v.positive("SERVER_MAX_CONNECTIONS", defaults.max_connections)?,
        };
        let hash_queue_limit = v.number(
            "HASH_QUEUE_LIMIT",
            tessera_core::password::DEFAULT_QUEUE_LIMIT,
        )?;
        let ip_custom_header = match v.string("IP_CUSTOM_HEADER") {
            Some(h) if h == "false" => None,
            other => other,
        };
        let limiter_store = limiter_store(&v, &database)?;
        Ok(Self {
            host,
            port,
            database,
            secret,
            auth,
            hash,
            hash_queue_limit,
            http,
            refresh_cookie,
            session_cookie,
            admin_email: v
                .string("ADMIN_EMAIL")
                .unwrap_or_else(|| "admin@example.com".into()),
            admin_password: v.string("ADMIN_PASSWORD"),
            admin_token: v.string("ADMIN_TOKEN"),
            max_payload_size,
            ip_trust_proxy: v.boolean("IP_TRUST_PROXY", false)?,
            ip_custom_header,
            healthcheck_enabled: v.boolean("HEALTHCHECK_ENABLED", true)?,
            metrics_enabled: v.boolean("METRICS_ENABLED", false)?,
            metrics_tokens: v
                .string("METRICS_TOKENS")
                .map(|csv| {
                    csv.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            log_level: v.string("LOG_LEVEL").unwrap_or_else(|| "info".into()),
            cors: cors_settings(&v)?,
            hsts_enabled: v.boolean("HSTS_ENABLED", false)?,
            rate_limit: rate_limit(&v)?,
            limiter_store,
            throttle: throttle_settings(&v)?,
            reset: ResetSettings {
                stall: Duration::from_millis(
                    u64::try_from(v.duration("PASSWORD_RESET_STALL_TIME", 500)?).unwrap_or(500),
                ),
                token_ttl_ms: match v.duration("PASSWORD_RESET_TOKEN_TTL", 3_600_000)? {
                    ms if ms >= 1000 => ms,
                    _ => return Err(bad("PASSWORD_RESET_TOKEN_TTL", "must be at least 1s")),
                },
                allow_list: csv(v.string("PASSWORD_RESET_URL_ALLOW_LIST")),
                public_url: public_url.clone(),
            },
            public_url,
            email: email_settings(&v)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("15m"), Some(900_000));
        assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("500"), Some(500));
        assert_eq!(parse_duration_ms("1.5h"), Some(5_400_000));
        assert_eq!(parse_duration_ms("soon"), None);
        assert_eq!(parse_duration_ms("5 parsecs"), None);
    }

    #[test]
    fn limits_refuse_values_that_would_turn_them_off_silently() {
        for (k, v) in [
            ("AUTH_THROTTLE_DELAY", "0"),
            ("AUTH_THROTTLE_WINDOW", "0"),
            ("AUTH_THROTTLE_MAX_DELAY", "500ms"),
            ("PASSWORD_RESET_TOKEN_TTL", "0"),
            ("RATE_LIMITER_STORE", "postgres"),
            ("RATE_LIMITER_STORE", "mongodb"),
            ("EMAIL_TRANSPORT", "ses"),
        ] {
            let err = Config::from_vars(&vars(&[(k, v), ("RATE_LIMITER_ENABLED", "true")]))
                .err()
                .unwrap_or_else(|| panic!("{k}={v} was accepted"));
            assert!(err.to_string().contains(k), "{err}");
        }
        for v in ["0", "-1", "soon"] {
            let err = Config::from_vars(&vars(&[
                ("RATE_LIMITER_ENABLED", "true"),
                ("RATE_LIMITER_DURATION", v),
            ]));
            assert!(err.is_err(), "RATE_LIMITER_DURATION={v} was accepted");
        }
        let c = Config::from_vars(&vars(&[
            ("RATE_LIMITER_ENABLED", "true"),
            ("RATE_LIMITER_DURATION", "0.5"),
            ("RATE_LIMITER_STORE", "redis"),
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PASSWORD", "p@ss/word"),
        ]))
        .unwrap();
        assert_eq!(c.rate_limit.unwrap().window_ms, 500);
        assert_eq!(
            c.limiter_store,
            LimiterStore::Redis("redis://:p%40ss%2Fword@cache.internal:6379/0".into())
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1mb"), Some(1_048_576));
        assert_eq!(parse_bytes("100KB"), Some(102_400));
        assert_eq!(parse_bytes("42"), Some(42));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn defaults_match_directus() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.port, 8055);
        assert_eq!(c.auth.access_ttl_ms, 900_000);
        assert_eq!(c.refresh_cookie.name, "directus_refresh_token");
        assert_eq!(c.refresh_cookie.max_age, 604_800);
        assert_eq!(c.session_cookie.max_age, 86_400);
        assert!(!c.refresh_cookie.secure);
        assert_eq!(c.max_payload_size, 1_048_576);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Config::from_vars(&vars(&[("ACCESS_TOKEN_TTL", "soon")]))
            .err()
            .unwrap();
        assert_eq!(err.var, "ACCESS_TOKEN_TTL");
        assert!(err.to_string().contains("ACCESS_TOKEN_TTL"));
        let err = Config::from_vars(&vars(&[("PORT", "http")])).err().unwrap();
        assert_eq!(err.var, "PORT");
        let err = Config::from_vars(&vars(&[("DB_CLIENT", "oracle")]))
            .err()
            .unwrap();
        assert_eq!(err.var, "DB_CLIENT");
    }

    #[test]
    fn https_public_url_makes_cookies_secure_unless_overridden() {
        let c = Config::from_vars(&vars(&[("PUBLIC_URL", "https://auth.example.com")])).unwrap();
        assert!(c.refresh_cookie.secure && c.session_cookie.secure);
        let c = Config::from_vars(&vars(&[
            ("PUBLIC_URL", "https://auth.example.com"),
            ("SESSION_COOKIE_SECURE", "false"),
        ]))
        .unwrap();
        assert!(!c.session_cookie.secure && c.refresh_cookie.secure);
    }
}
