//! The client half of the `tessera` binary: `login`, `refresh`, `whoami`, `logout`, `request`
//! and `token static`, built on `tessera-client` with sessions kept in per-profile files.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tessera_client::{Client, ClientError, FileStore, TokenStore, refresh_token};

/// Flags every client command takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Profile holding the session, under the config directory (TESSERA_CONFIG_DIR, else
    /// $XDG_CONFIG_HOME/tessera, else ~/.config/tessera). Example: --profile prod
    #[arg(
        long,
        global = true,
        default_value = "default",
        env = "TESSERA_PROFILE"
    )]
    profile: String,
    /// Print JSON even on a terminal (JSON is the default when output is piped). Example: --json
    #[arg(long, global = true)]
    json: bool,
}

impl Common {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Log in and save the session to the profile.
    ///
    /// The password comes from --password-stdin, else TESSERA_PASSWORD, else a prompt.
    /// Example: tessera login --url http://127.0.0.1:8055 --email admin@example.com
    Login {
        /// Server URL. Example: --url https://auth.example.com
        #[arg(long)]
        url: String,
        /// Account e-mail. Example: --email admin@example.com
        #[arg(long)]
        email: String,
        /// Read the password from standard input. Example: echo "$PW" | tessera login ... --password-stdin
        #[arg(long)]
        password_stdin: bool,
        /// One-time password for accounts with two-factor auth. Example: --otp 123456
        #[arg(long)]
        otp: Option<String>,
    },
    /// Spend a refresh token and print {"access_token","expires","refresh_token"}.
    ///
    /// Without --refresh-token(-stdin) the profile's token is used and the rotated one saved.
    /// Example: tessera refresh --refresh-token "$TOKEN" --url http://127.0.0.1:8055
    Refresh {
        /// The refresh token to spend. Example: --refresh-token abc…
        #[arg(long, conflicts_with = "refresh_token_stdin")]
        refresh_token: Option<String>,
        /// Read the refresh token from standard input. Example: cat token | tessera refresh --refresh-token-stdin
        #[arg(long)]
        refresh_token_stdin: bool,
        /// Server URL (default: the profile's). Example: --url http://127.0.0.1:8055
        #[arg(long)]
        url: Option<String>,
        /// On failure print {"error": "<message>"} and exit 0. Example: --continue-on-fail
        #[arg(long)]
        continue_on_fail: bool,
    },
    /// Show who the profile's session belongs to.
    ///
    /// Example: tessera whoami --profile prod
    Whoami,
    /// End the profile's session on the server and delete it locally.
    ///
    /// Example: tessera logout
    Logout,
    /// Send an authenticated request (refreshing as needed) and print the answer.
    ///
    /// Example: tessera request GET /users --data '{"fields":"id"}'
    Request {
        /// HTTP method. Example: PATCH
        method: String,
        /// Path on the server. Example: /users/me
        path: String,
        /// JSON body. Example: --data '{"first_name":"Ada"}'
        #[arg(long)]
        data: Option<String>,
    },
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Set a new random static token for a user (admin only) and print it once.
    ///
    /// Example: tessera token static --user 8d4e…-uuid
    Static {
        /// The user's id. Example: --user 2f6c1a8e-…
        #[arg(long)]
        user: String,
    },
}

fn config_dir() -> Result<PathBuf, ClientError> {
    if let Some(d) = std::env::var_os("TESSERA_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("tessera"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config").join("tessera"))
        .ok_or_else(|| {
            ClientError::Store("no HOME or TESSERA_CONFIG_DIR to keep profiles in".into())
        })
}

fn profile_store(name: &str) -> Result<FileStore, ClientError> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(ClientError::Store(format!("invalid profile name {name:?}")));
    }
    Ok(FileStore::new(
        config_dir()?.join("profiles").join(format!("{name}.json")),
    ))
}

fn profile_client(common: &Common) -> Result<Client, ClientError> {
    let store = profile_store(&common.profile)?;
    let url = store.load()?.and_then(|s| s.url).ok_or_else(|| {
        ClientError::NotLoggedIn(format!(
            "profile {:?} has no session; run tessera login",
            common.profile
        ))
    })?;
    Ok(Client::builder(&url).store(Arc::new(store)).build())
}

fn read_stdin_line() -> Result<String, ClientError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| ClientError::Store(format!("reading standard input: {e}")))?;
    Ok(s.trim().to_owned())
}

/// How results are printed.
struct Out {
    json: bool,
}

impl Out {
    fn print(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs a client command; returns the process exit status.
pub async fn run(common: Common, command: ClientCommand) -> i32 {
    let out = Out {
        json: common.json || !std::io::stdout().is_terminal(),
    };
    let continue_on_fail = matches!(
        command,
        ClientCommand::Refresh {
            continue_on_fail: true,
            ..
        }
    );
    match execute(&common, command, &out).await {
        Ok(()) => 0,
        Err(e) if continue_on_fail => {
            println!("{}", json!({"error": e.to_string()}));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn execute(common: &Common, command: ClientCommand, out: &Out) -> Result<(), ClientError> {
    match command {
        ClientCommand::Login {
            url,
            email,
            password_stdin,
            otp,
        } => {
            let password = if password_stdin {
                read_stdin_line()?
            } else if let Ok(p) = std::env::var("TESSERA_PASSWORD") {
                p
            } else {
                rpassword::prompt_password(format!("Password for {email}: "))
                    .map_err(|e| ClientError::Store(format!("reading the password: {e}")))?
            };
            let store = profile_store(&common.profile)?;
            let client = Client::builder(&url).store(Arc::new(store.clone())).build();
            let r = client.login(&email, &password, otp.as_deref()).await?;
            out.print(
                &json!({"profile": common.profile, "url": client.url(), "expires": r.expires}),
                || {
                    format!(
                        "Logged in to {} as {email} (profile {:?}).",
                        client.url(),
                        common.profile
                    )
                },
            );
        }
        ClientCommand::Refresh {
            refresh_token: token,
            refresh_token_stdin,
            url,
            ..
        } => {
            let token = if refresh_token_stdin {
                Some(read_stdin_line()?)
            } else {
                token
            };
            let result = match token {
                Some(token) => {
                    let url = match url {
                        Some(u) => u,
                        None => profile_store(&common.profile)?
                            .load()?
                            .and_then(|s| s.url)
                            .ok_or_else(|| {
                                ClientError::NotLoggedIn("give --url or log in first".into())
                            })?,
                    };
                    refresh_token(&url, Some(&token)).await?
                }
                None => {
                    let store = profile_store(&common.profile)?;
                    match (url, store.load()?) {
                        (_, Some(_)) => profile_client(common)?.refresh().await?,
                        (Some(url), None) => refresh_token(&url, None).await?,
                        (None, None) => return Err(ClientError::MissingRefreshToken),
                    }
                }
            };
            let v =
                serde_json::to_value(&result).map_err(|e| ClientError::Protocol(e.to_string()))?;
            out.print(&v, || pretty(&v));
        }
        ClientCommand::Whoami => {
            let me = profile_client(common)?.me().await?;
            out.print(&me, || {
                let email = me
                    .get("email")
                    .and_then(Value::as_str)
                    .unwrap_or("(no e-mail)");
                let id = me.get("id").and_then(Value::as_str).unwrap_or("?");
                format!("{email} ({id})")
            });
        }
        ClientCommand::Logout => {
            profile_client(common)?.logout().await?;
            profile_store(&common.profile)?.clear()?;
            out.print(&json!({"logged_out": true}), || "Logged out.".into());
        }
        ClientCommand::Request { method, path, data } => {
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| ClientError::Protocol(format!("invalid method {method:?}")))?;
            let body = data
                .map(|d| serde_json::from_str::<Value>(&d))
                .transpose()
                .map_err(|e| ClientError::Protocol(format!("--data is not JSON: {e}")))?;
            let v = profile_client(common)?
                .request(method, &path, body.as_ref())
                .await?;
            out.print(&v, || pretty(&v));
        }
        ClientCommand::Token(TokenCommand::Static { user }) => {
            let token = tessera_core::tokens::random_token();
            profile_client(common)?
                .request(
                    reqwest::Method::PATCH,
                    &format!("/users/{user}?fields=id"),
                    Some(&json!({"token": token})),
                )
                .await?;
            out.print(&json!({"user": user, "token": token}), || {
                format!("Static token for {user} (shown once):\n{token}")
            });
        }
    }
    Ok(())
}
