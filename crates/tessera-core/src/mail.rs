//! Mail the core sends (password-reset links): what a message holds, and the outbox it is
//! handed to. How mail leaves the machine (SMTP, sendmail) is the server's business; posting
//! never waits for it and never fails the request that posts.

/// One message, with a plain-text and an HTML body.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Mail {
    // The bodies carry one-time tokens: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Where the core posts mail. `post` returns at once; a message that cannot be queued or
/// sent is logged by the outbox and dropped.
pub trait Outbox: Send + Sync + 'static {
    fn post(&self, mail: Mail);
}

/// Escapes text for an HTML body.
pub fn html_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_bodies_stay_out_of_debug() {
        assert_eq!(
            html_escaped(r#"<a href="x?a=1&b='2'">"#),
            "&lt;a href=&quot;x?a=1&amp;b=&#39;2&#39;&quot;&gt;"
        );
        let m = Mail {
            to: "a@example.com".into(),
            subject: "S".into(),
            text: "secret-token".into(),
            html: "secret-token".into(),
        };
        assert!(!format!("{m:?}").contains("secret"));
    }
}
