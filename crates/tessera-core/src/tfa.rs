//! Two-factor login with TOTP (RFC 6238 as otplib's authenticator speaks it: HMAC-SHA1,
//! 6 digits, 30-second steps, base32 secrets of 10 random bytes), and the sealing of TOTP
//! secrets at rest: each is stored encrypted (ChaCha20-Poly1305, under a key derived from the
//! server's `SECRET`), so a copy of the database does not give away anyone's second factor.
//! Unlike Directus, a code is accepted one step early or late (clock skew), and never twice.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The length of a TOTP step.
const STEP_MS: i64 = 30_000;

/// How a sealed secret starts, so that a plain one (imported from Directus) is told apart.
const SEALED: &str = "tfa1:";

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 (RFC 4648) without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Reads base32 (any case, padding and spaces ignored); `None` for anything else.
pub fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for ch in text.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let value = ALPHABET
            .iter()
            .position(|a| char::from(*a) == ch.to_ascii_uppercase())?;
        buffer = (buffer << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A new secret: base32 of 10 random bytes (16 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    base32(&bytes)
}

/// The code of `secret` for step `step`.
fn code(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let value = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", value % 1_000_000)
}

/// The step a code of `secret` was made for, within one step of `now_ms`, if it is one; the
/// caller must refuse a step it has seen used.
pub fn check(secret: &str, otp: &str, now_ms: i64) -> Option<i64> {
    let key = unbase32(secret)?;
    if otp.len() != 6 || !otp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = now_ms.div_euclid(STEP_MS);
    [now, now - 1, now + 1]
        .into_iter()
        .find(|step| bool::from(code(&key, *step).as_bytes().ct_eq(otp.as_bytes())))
}

/// The current code of `secret` (for tests and for clients of this library).
pub fn current_code(secret: &str, now_ms: i64) -> Option<String> {
    Some(code(&unbase32(secret)?, now_ms.div_euclid(STEP_MS)))
}

/// Seals and opens TOTP secrets with a key derived from the server's secret.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    pub fn new(server_secret: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"tessera"), server_secret);
        let mut key = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(b"tfa secret at rest v1", &mut key);
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// The stored form of `secret`.
    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), secret.as_bytes())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The secret a stored value holds: sealed ones are opened (`None` when they do not open
    /// under this key), plain ones (imported from Directus) are taken as they are.
    pub fn open(&self, stored: &str) -> Option<String> {
        let Some(body) = stored.strip_prefix(SEALED) else {
            return Some(stored.to_owned());
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plain = self.cipher.decrypt(&Nonce::from(nonce), sealed).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vectors() {
        // RFC 6238 appendix B, SHA-1, secret "12345678901234567890", last 6 digits.
        let secret = base32(b"12345678901234567890");
        assert_eq!(current_code(&secret, 59_000).unwrap(), "287082");
        assert_eq!(current_code(&secret, 1_111_111_109_000).unwrap(), "081804");
        assert_eq!(current_code(&secret, 2_000_000_000_000).unwrap(), "279037");
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_only() {
        let secret = new_secret();
        assert_eq!(secret.len(), 16);
        let now = 1_700_000_000_000;
        let code_at = |ms: i64| current_code(&secret, ms).unwrap();
        let step = now / STEP_MS;
        assert_eq!(check(&secret, &code_at(now), now), Some(step));
        assert_eq!(check(&secret, &code_at(now - STEP_MS), now), Some(step - 1));
        assert_eq!(check(&secret, &code_at(now + STEP_MS), now), Some(step + 1));
        assert_eq!(check(&secret, &code_at(now - 2 * STEP_MS), now), None);
        assert_eq!(check(&secret, "12345", now), None);
        assert_eq!(check(&secret, "abcdef", now), None);
        assert_eq!(check("not base32!", "123456", now), None);
    }

    #[test]
    fn secrets_seal_and_open_only_under_their_key() {
        let a = Sealer::new(b"one server secret");
        let b = Sealer::new(b"another server secret");
        let sealed = a.seal("JBSWY3DPEHPK3PXP");
        assert!(sealed.starts_with(SEALED));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(sealed, a.seal("JBSWY3DPEHPK3PXP"));
        assert_eq!(a.open(&sealed).as_deref(), Some("JBSWY3DPEHPK3PXP"));
        assert_eq!(b.open(&sealed), None);
        assert_eq!(
            a.open("PLAINFROMDIRECTUS").as_deref(),
            Some("PLAINFROMDIRECTUS")
        );
        assert_eq!(a.open("tfa1:garbage"), None);
        assert_eq!(unbase32(&base32(b"round trip")).unwrap(), b"round trip");
    }
}
