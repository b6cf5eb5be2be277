//! The `tessera` binary: process concerns only — reading configuration (`.env`, environment,
//! flags), logging, signals, and the `serve`, `migrate` and `bootstrap` commands.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;
mod users;

use clap::{Args, Parser, Subcommand};
use tessera_server::config::{Config, read_env_file};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A Directus-compatible authentication and access-token server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: cli::Common,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (embedded SQLite under ./data unless configured otherwise).
    ///
    /// Example: tessera serve --port 8055
    Serve(ServerFlags),
    /// Create or upgrade the database schema, then exit.
    ///
    /// Example: DB_FILENAME=./data/data.db tessera migrate
    Migrate(ServerFlags),
    /// Create the schema and the first admin (ADMIN_EMAIL/ADMIN_PASSWORD/ADMIN_TOKEN), then exit.
    ///
    /// Example: ADMIN_EMAIL=me@example.com tessera bootstrap
    Bootstrap(ServerFlags),
    /// Copy every user, role, policy, access row, permission, setting and session from one
    /// database to another, fresh one (SQLite to PostgreSQL or back), or import a Directus 10,
    /// 11 or 12 database (everything but its sessions; static tokens are digested). A database is
    /// `sqlite:<file>`, `pg:<libpq connection string>` or a PostgreSQL URL
    /// (`postgresql://user:pass@host/db`). The source's schema is brought up to date; nothing
    /// else in it is written.
    ///
    /// Example: tessera migrate-data --from sqlite:./data/data.db --to postgresql://tessera@db/tessera
    MigrateData {
        /// The database to copy from.
        #[arg(long)]
        from: String,
        /// The database to copy into: created or migrated as needed, and without users.
        #[arg(long)]
        to: String,
    },
    /// Operator commands on users, for a stopped server or one running on the same database.
    ///
    /// Example: tessera users unlock admin@example.com
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
        #[command(flatten)]
        flags: ServerFlags,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// Flags override the environment, which overrides the `.env` file.
#[derive(Args, Clone, Debug)]
struct ServerFlags {
    /// Address to listen on (HOST). Example: --host 0.0.0.0
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on, 0 for any free port (PORT). Example: --port 8055
    #[arg(long)]
    port: Option<u16>,
    /// SQLite database file (DB_FILENAME). Example: --db-filename ./data/data.db
    #[arg(long)]
    db_filename: Option<PathBuf>,
    /// The .env file to read (CONFIG_PATH). Example: --env-file /etc/tessera.env
    #[arg(long)]
    env_file: Option<PathBuf>,
}

fn load(flags: &ServerFlags) -> Result<Config, String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let path = flags
        .env_file
        .clone()
        .or_else(|| env.get("CONFIG_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".env"));
    let mut vars = read_env_file(&path).map_err(|e| e.to_string())?;
    vars.extend(env);
    if let Some(h) = &flags.host {
        vars.insert("HOST".into(), h.clone());
    }
    if let Some(p) = flags.port {
        vars.insert("PORT".into(), p.to_string());
    }
    if let Some(f) = &flags.db_filename {
        vars.insert("DB_FILENAME".into(), f.display().to_string());
    }
    Config::from_vars(&vars).map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// What a server-side command does once configured.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ServerAction {
    Serve,
    Migrate,
    Bootstrap,
    /// A users command; the flag asks for JSON output.
    Users(users::UsersCommand, bool),
}

async fn run(flags: ServerFlags, action: ServerAction) -> anyhow::Result<()> {
    let config = load(&flags).map_err(|e| anyhow::anyhow!(e))?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let ServerAction::Users(command, json) = action {
        return users::run(config, command, json).await;
    }
    if action == ServerAction::Migrate {
        tessera_server::open_store(&config).await?;
        println!("database schema is up to date");
        return Ok(());
    }
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let started = tessera_server::start(config, tessera_server::Hooks::default()).await?;
    if let Some(email) = &started.created_admin {
        eprintln!("Created admin user {email}.");
        if let Some(pw) = &started.generated_admin_password {
            eprintln!(
                "Generated admin password (shown once, set ADMIN_PASSWORD to choose one): {pw}"
            );
        }
    }
    if action == ServerAction::Bootstrap {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("Tessera listening on http://{local}");
    tessera_server::serve(listener, started.state, shutdown_signal()).await?;
    Ok(())
}

/// The configuration of a database named on the command line: `sqlite:<file>`, or a
/// PostgreSQL URL.
fn database(spec: &str) -> anyhow::Result<Config> {
    let vars: std::collections::HashMap<String, String> =
        if let Some(file) = spec.strip_prefix("sqlite:") {
            [("DB_CLIENT", "sqlite3"), ("DB_FILENAME", file)]
        } else if let Some(connection) = spec.strip_prefix("pg:") {
            [("DB_CLIENT", "pg"), ("DB_CONNECTION_STRING", connection)]
        } else if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            [("DB_CLIENT", "pg"), ("DB_CONNECTION_STRING", spec)]
        } else {
            anyhow::bail!(
                "a database is sqlite:<file>, pg:<connection string> or a postgresql:// URL, \
                 not {:?}…",
                spec.split(':').next().unwrap_or_default()
            );
        }
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([("LOG_LEVEL".to_owned(), "warn".to_owned())])
        .collect();
    Config::from_vars(&vars).map_err(|e| anyhow::anyhow!(e))
}

/// `tessera migrate-data`: tells a Tessera source from a Directus one (by its migrations
/// table, read before anything is written), refuses a target that has users, then copies.
async fn migrate_data(from: &str, to: &str) -> anyhow::Result<()> {
    let (source, target) = (database(from)?, database(to)?);
    let foreign = tessera_server::open_foreign(&source).await?;
    let tessera = foreign.columns("tessera_migrations").await?.is_some();
    let directus = foreign.columns("directus_migrations").await?.is_some();
    if !tessera && !directus {
        anyhow::bail!("the source is neither a Tessera nor a Directus database");
    }
    let (target, _) = tessera_server::open_store(&target).await?;
    if target.has_users().await? {
        anyhow::bail!("the target database already has users: migrate-data fills an empty one");
    }
    let moved = if tessera {
        drop(foreign);
        let (source, _) = tessera_server::open_store(&source).await?;
        tessera_core::data_move::move_data(&*source, &*target).await?
    } else {
        tessera_core::data_move::import_directus(&*foreign, &*target).await?
    };
    for m in moved {
        println!("{}: {} rows", m.table, m.rows);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (flags, action) = match cli.command {
        Command::Client(command) => {
            let code = rt.block_on(cli::run(cli.common, command));
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Command::MigrateData { from, to } => {
            return match rt.block_on(migrate_data(&from, &to)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Serve(f) => (f, ServerAction::Serve),
        Command::Migrate(f) => (f, ServerAction::Migrate),
        Command::Bootstrap(f) => (f, ServerAction::Bootstrap),
        Command::Users { command, flags } => {
            (flags, ServerAction::Users(command, cli.common.json()))
        }
    };
    match rt.block_on(run(flags, action)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
