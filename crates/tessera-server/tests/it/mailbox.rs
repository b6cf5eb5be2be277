//! A small SMTP sink on 127.0.0.1 for the tests that follow links in mail: it speaks just
//! enough SMTP for lettre (no STARTTLS, so the client's opportunistic TLS falls back to
//! plain), keeps every message, and parses it with mailparse.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One received message.
pub struct Received {
    pub from: String,
    pub to: String,
    pub subject: String,
    /// `(content type, decoded body)` of each leaf part.
    pub parts: Vec<(String, String)>,
}

impl Received {
    /// The body of the part of `mime` type.
    pub fn body(&self, mime: &str) -> &str {
        self.parts
            .iter()
            .find(|(t, _)| t == mime)
            .map(|(_, b)| b.as_str())
            .unwrap_or_else(|| panic!("no {mime} part"))
    }

    /// The first link in the plain-text body that starts with `prefix`, up to the next blank.
    pub fn link(&self, prefix: &str) -> String {
        let text = self.body("text/plain");
        let at = text
            .find(prefix)
            .unwrap_or_else(|| panic!("no link {prefix} in {text}"));
        text[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

pub struct Mailbox {
    pub port: u16,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Mailbox {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 sink\r\n",
                            "DATA" => {
                                w.write_all(b"354 go on\r\n").await.unwrap();
                                let mut raw = String::new();
                                while let Ok(Some(l)) = lines.next_line().await {
                                    if l == "." {
                                        break;
                                    }
                                    raw.push_str(l.strip_prefix('.').unwrap_or(&l));
                                    raw.push_str("\r\n");
                                }
                                let _ = tx.send(parse(&raw));
                                b"250 kept\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 ok\r\n",
                        };
                        if w.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, rx }
    }

    /// The next message, failing the test if none comes within ten seconds.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a mail within 10 s")
            .expect("the sink runs")
    }

    /// Messages received so far and not yet taken.
    pub fn waiting(&self) -> usize {
        self.rx.len()
    }

    /// Server settings that send mail here.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EMAIL_TRANSPORT", "smtp".into()),
            ("EMAIL_SMTP_HOST", "127.0.0.1".into()),
            ("EMAIL_SMTP_PORT", self.port.to_string()),
        ]
    }
}

fn parse(raw: &str) -> Received {
    let mail = mailparse::parse_mail(raw.as_bytes()).expect("a parseable message");
    let header = |name: &str| {
        mail.headers
            .iter()
            .find(|h| h.get_key().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
            .unwrap_or_default()
    };
    let mut parts = Vec::new();
    let mut todo = vec![&mail];
    while let Some(p) = todo.pop() {
        if p.subparts.is_empty() {
            parts.push((p.ctype.mimetype.clone(), p.get_body().unwrap()));
        } else {
            todo.extend(p.subparts.iter().rev());
        }
    }
    Received {
        from: header("From"),
        to: header("To"),
        subject: header("Subject"),
        parts,
    }
}
