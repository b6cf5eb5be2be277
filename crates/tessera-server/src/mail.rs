//! How mail leaves: `EMAIL_TRANSPORT` (SMTP through lettre, or a sendmail binary), behind a
//! bounded queue that one worker drains. Posting never waits; a full queue, a refused
//! address or a failed delivery is logged (without the message's bodies) and dropped.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tessera_core::mail::{Mail, Outbox};
use tokio::sync::mpsc;

/// Messages waiting for the worker at most.
const QUEUE: usize = 256;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// `EMAIL_SMTP_*`.
#[derive(Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `EMAIL_SMTP_SECURE`: TLS from the first byte (else STARTTLS when offered).
    pub secure: bool,
    /// `EMAIL_SMTP_IGNORE_TLS`: never STARTTLS.
    pub ignore_tls: bool,
    /// `EMAIL_SMTP_NAME`: the name this host gives in EHLO.
    pub name: Option<String>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// `EMAIL_TRANSPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Smtp(Smtp),
    /// `EMAIL_SENDMAIL_PATH`.
    Sendmail {
        path: String,
    },
}

/// `EMAIL_FROM` and the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub from: String,
    pub transport: Transport,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            from: "no-reply@example.com".into(),
            transport: Transport::Sendmail {
                path: "/usr/sbin/sendmail".into(),
            },
        }
    }
}

/// Either transport lettre drives.
enum Sender {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
}

impl Sender {
    fn new(t: &Transport) -> anyhow::Result<Self> {
        Ok(match t {
            Transport::Sendmail { path } => {
                Sender::Sendmail(AsyncSendmailTransport::new_with_command(path))
            }
            Transport::Smtp(s) => {
                let tls = TlsParameters::new(s.host.clone());
                let tls = match (s.secure, s.ignore_tls) {
                    (true, _) => Tls::Wrapper(tls?),
                    (false, true) => Tls::None,
                    (false, false) => Tls::Opportunistic(tls?),
                };
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    .port(s.port)
                    .tls(tls)
                    .timeout(Some(SMTP_TIMEOUT));
                if let (Some(user), Some(password)) = (&s.user, &s.password) {
                    b = b.credentials(Credentials::new(user.clone(), password.clone()));
                }
                if let Some(name) = &s.name {
                    b = b.hello_name(ClientId::Domain(name.clone()));
                }
                Sender::Smtp(b.build())
            }
        })
    }

    async fn send(&self, m: Message) -> Result<(), String> {
        match self {
            Sender::Smtp(t) => t.send(m).await.map(drop).map_err(|e| e.to_string()),
            Sender::Sendmail(t) => t.send(m).await.map(drop).map_err(|e| e.to_string()),
        }
    }
}

/// The outbox the core posts to: a bounded queue and its worker.
pub struct Mailer {
    queue: mpsc::Sender<Mail>,
}

impl Mailer {
    /// Starts the worker; refuses settings that can never deliver (a bad `EMAIL_FROM`).
    pub fn start(settings: &EmailSettings) -> anyhow::Result<Arc<Self>> {
        let from: Mailbox = settings.from.parse().map_err(|e| {
            anyhow::anyhow!("EMAIL_FROM {:?} is not an address: {e}", settings.from)
        })?;
        let sender = Sender::new(&settings.transport)?;
        let (queue, mut rx) = mpsc::channel::<Mail>(QUEUE);
        tokio::spawn(async move {
            while let Some(mail) = rx.recv().await {
                let message = match compose(&from, mail) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "mail not sent: it could not be composed");
                        continue;
                    }
                };
                if let Err(e) = sender.send(message).await {
                    tracing::warn!(error = %e, "mail not sent");
                }
            }
        });
        Ok(Arc::new(Self { queue }))
    }
}

fn compose(from: &Mailbox, mail: Mail) -> Result<Message, String> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| format!("the recipient is not an address: {e}"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject)
        .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
        .map_err(|e| e.to_string())
}

impl Outbox for Mailer {
    fn post(&self, mail: Mail) {
        if let Err(e) = self.queue.try_send(mail) {
            tracing::warn!(error = %e, "mail not sent: the outbox is full");
        }
    }
}
