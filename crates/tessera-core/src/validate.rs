//! Joi-style validation of request bodies: the same checks, in the same order, with the same
//! messages Directus sends (`"email" is required`, `"mode" must be one of […]`, …).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A required, non-empty string field. As in Joi, `null` is a wrong type, not a missing key.
pub fn required_string<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match body.get(key) {
        None => Err(Error::payload(format!("\"{key}\" is required"))),
        Some(Value::String(s)) if s.is_empty() => Err(Error::payload(format!(
            "\"{key}\" is not allowed to be empty"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::payload(format!("\"{key}\" must be a string"))),
    }
}

/// An optional string field (absent gives `None`; `null` is a wrong type, as in Joi).
pub fn optional_string<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::payload(format!("\"{key}\" must be a string"))),
    }
}

/// Whether `s` is an e-mail address in the sense of Joi's `email()`: one `@`, a local part of
/// allowed characters, and a domain of at least two labels ending in an alphabetic TLD.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return false;
    }
    let local_ok = local.split('.').all(|part| {
        !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c) || !c.is_ascii()
            })
    });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_alphabetic()));
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "admin@example.com", "x.y+z@sub.example.org"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "invalidEmail",
            "admin@localhost",
            "@x.com",
            "a@.com",
            "a@b.c",
            "a b@c.com",
            "a@b.123",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn string_rules() {
        let body = json!({"a": "", "b": 1, "c": "x", "n": null});
        let body = body.as_object().unwrap();
        let msg = |r: Result<&str>| r.unwrap_err().to_string();
        assert_eq!(
            msg(required_string(body, "a")),
            "Invalid payload. \"a\" is not allowed to be empty."
        );
        assert_eq!(
            msg(required_string(body, "b")),
            "Invalid payload. \"b\" must be a string."
        );
        assert_eq!(
            msg(required_string(body, "z")),
            "Invalid payload. \"z\" is required."
        );
        assert_eq!(required_string(body, "c").unwrap(), "x");
        assert_eq!(
            msg(required_string(body, "n")),
            "Invalid payload. \"n\" must be a string."
        );
        assert!(optional_string(body, "n").is_err());
        assert_eq!(optional_string(body, "z").unwrap(), None);
    }
}
