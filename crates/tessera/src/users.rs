//! `tessera users …`: the operator's commands on a server's database, for a server that is
//! stopped or running on the same database (a running server sees the change within the few
//! seconds its caches keep an answer): list, unlock, reset-password, create-admin.

use std::io::{IsTerminal, Read};

use clap::{Args, Subcommand};
use tessera_core::clock::iso8601;
use tessera_core::operator::{Operator, Unlocked};
use tessera_core::password::Passwords;
use tessera_server::config::Config;

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum UsersCommand {
    /// List every user with status, role, admin access and login lock.
    ///
    /// Example: tessera users list
    List,
    /// Lift a user's login lock and forget its failed logins; a suspended user becomes
    /// active again.
    ///
    /// Example: tessera users unlock admin@example.com
    Unlock {
        /// The user's e-mail. Example: admin@example.com
        email: String,
    },
    /// Set a user's password (asked for, or read from standard input); their sessions end.
    ///
    /// Example: echo "$PW" | tessera users reset-password admin@example.com --password-stdin
    ResetPassword {
        /// The user's e-mail. Example: admin@example.com
        email: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Create an active user with admin access.
    ///
    /// Example: tessera users create-admin ops@example.com
    CreateAdmin {
        /// The new admin's e-mail. Example: ops@example.com
        email: String,
        #[command(flatten)]
        password: PasswordSource,
    },
}

/// Where a new password comes from.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PasswordSource {
    /// Read the password from standard input instead of asking. Example: --password-stdin
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordSource {
    fn read(&self, email: &str) -> anyhow::Result<String> {
        let password = if self.password_stdin {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            let first = rpassword::prompt_password(format!("New password for {email}: "))?;
            let again = rpassword::prompt_password("Again: ")?;
            anyhow::ensure!(first == again, "the two passwords differ");
            first
        };
        anyhow::ensure!(!password.is_empty(), "the password is empty");
        Ok(password)
    }
}

/// Runs one users command against the configured database.
pub async fn run(config: Config, command: UsersCommand, json: bool) -> anyhow::Result<()> {
    execute(config, command, json).await.map_err(|e| {
        // A refusal worded for the API ("Invalid payload. …") reads better bare here.
        match e.downcast::<tessera_core::Error>() {
            Ok(tessera_core::Error::InvalidPayload(reason)) => anyhow::anyhow!(reason),
            Ok(other) => other.into(),
            Err(e) => e,
        }
    })
}

async fn execute(config: Config, command: UsersCommand, json: bool) -> anyhow::Result<()> {
    let (store, _) = tessera_server::open_store(&config).await?;
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let passwords = Passwords::new(config.hash.clone(), cores, config.hash_queue_limit)?;
    let operator = Operator::new(store, passwords);
    let json = json || !std::io::stdout().is_terminal();
    match command {
        UsersCommand::List => {
            let users = operator.list().await?;
            if json {
                println!("{}", serde_json::to_string(&users)?);
                return Ok(());
            }
            println!("email\tstatus\trole\tadmin\tfailed logins\tlocked until\tlast access");
            for u in users {
                let time = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), iso8601);
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    u.email.as_deref().unwrap_or("-"),
                    u.status,
                    u.role.as_deref().unwrap_or("-"),
                    if u.admin { "yes" } else { "no" },
                    u.failed_logins,
                    time(u.locked_until),
                    time(u.last_access),
                );
            }
        }
        UsersCommand::Unlock { email } => match operator.unlock(&email).await? {
            Unlocked::Reactivated => println!("{email} is active again; failed logins cleared."),
            Unlocked::Cleared => println!("{email}: login lock lifted, failed logins cleared."),
        },
        UsersCommand::ResetPassword { email, password } => {
            let password = password.read(&email)?;
            operator.reset_password(&email, &password).await?;
            println!("Password of {email} changed; their sessions have ended.");
        }
        UsersCommand::CreateAdmin { email, password } => {
            let password = password.read(&email)?;
            let id = operator.create_admin(&email, &password).await?;
            println!("Created admin {email} ({id}).");
        }
    }
    Ok(())
}
