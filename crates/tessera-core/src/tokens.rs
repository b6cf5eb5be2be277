//! Opaque tokens: generation of refresh/session tokens in Directus's shape (64 characters of
//! `A-Za-z0-9_-`), the deterministic successor of a spent refresh token, and the SHA-256
//! digests under which refresh and static tokens are stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

/// Length of refresh and session tokens, as Directus's `nanoid(64)`.
pub const TOKEN_LEN: usize = 64;

/// A fresh random token: 48 random bytes, base64url, exactly 64 characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The successor a refresh of `token` yields. Deriving it (instead of drawing it) lets a
/// second refresh inside the grace window return the same successor although only digests
/// are stored. Only the holder of `secret` can compute it.
pub fn successor(secret: &[u8], token: &str) -> String {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(b"tessera refresh successor\0");
    mac.update(token.as_bytes());
    let out = mac.finalize().into_bytes();
    URL_SAFE_NO_PAD.encode(&out[..48])
}

/// The hex SHA-256 digest under which a token is stored and looked up.
pub fn digest(token: &str) -> String {
    let hash = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in hash {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directus_shaped(t: &str) -> bool {
        t.len() == TOKEN_LEN
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    #[test]
    fn tokens_have_nanoid_shape_and_differ() {
        let a = random_token();
        let b = random_token();
        assert!(directus_shaped(&a) && directus_shaped(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn successor_is_deterministic_per_secret() {
        let t = random_token();
        let s1 = successor(b"secret-one", &t);
        assert!(directus_shaped(&s1));
        assert_eq!(s1, successor(b"secret-one", &t));
        assert_ne!(s1, successor(b"secret-two", &t));
        assert_ne!(s1, successor(b"secret-one", &s1));
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
