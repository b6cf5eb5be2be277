//! Opaque tokens: refresh tokens in Directus's shape (64 characters of `A-Za-z0-9_-`) that name
//! their session family and generation under a MAC, random tokens, and the SHA-256 digests
//! under which static tokens and live refresh tokens are stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Length of refresh and session tokens, as Directus's `nanoid(64)`.
pub const TOKEN_LEN: usize = 64;

/// Bytes of a refresh token: family (16), generation (8), MAC (24); base64url gives 64 chars.
const FAMILY: usize = 16;
const GENERATION: usize = 8;
const TAG: usize = 24;
const RAW_LEN: usize = FAMILY + GENERATION + TAG;

/// What a refresh token names: the session family (one login) and its place in that family's
/// chain of rotations. Generation 0 is issued by login; each refresh issues the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshId {
    pub family: Uuid,
    pub generation: u64,
}

fn tag(secret: &[u8], family: &[u8], generation: &[u8]) -> [u8; TAG] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(b"tessera refresh token v2\0");
    mac.update(family);
    mac.update(generation);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG];
    out.copy_from_slice(&full[..TAG]);
    out
}

/// The refresh token for `id`. Deterministic: the same family and generation always give the
/// same token, so a refresh repeated inside the grace window can hand out the live token again
/// although no token is ever stored. Only the holder of `secret` can make one.
pub fn refresh_token(secret: &[u8], id: RefreshId) -> String {
    let mut raw = [0u8; RAW_LEN];
    raw[..FAMILY].copy_from_slice(id.family.as_bytes());
    raw[FAMILY..FAMILY + GENERATION].copy_from_slice(&id.generation.to_be_bytes());
    let t = tag(secret, &raw[..FAMILY], &raw[FAMILY..FAMILY + GENERATION]);
    raw[FAMILY + GENERATION..].copy_from_slice(&t);
    URL_SAFE_NO_PAD.encode(raw)
}

/// A presented refresh token read: what it says it names, and whether this secret made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken {
    pub id: RefreshId,
    /// The MAC matches under this secret (compared in constant time). A token made under an
    /// earlier secret, or forged, is not authentic, whatever it names.
    pub authentic: bool,
}

/// Reads a presented refresh token; `None` if it does not have the shape of one.
pub fn read_refresh_token(secret: &[u8], token: &str) -> Option<PresentedToken> {
    if token.len() != TOKEN_LEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() != RAW_LEN {
        return None;
    }
    let (family, rest) = raw.split_at(FAMILY);
    let (generation, presented) = rest.split_at(GENERATION);
    let expected = tag(secret, family, generation);
    Some(PresentedToken {
        id: RefreshId {
            family: Uuid::from_slice(family).ok()?,
            generation: u64::from_be_bytes(generation.try_into().ok()?),
        },
        authentic: subtle::ConstantTimeEq::ct_eq(&expected[..], presented).into(),
    })
}

/// A fresh random token: 48 random bytes, base64url, exactly 64 characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The hex SHA-256 digest under which a static token or a live refresh token is stored.
pub fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
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
    fn refresh_tokens_round_trip_and_are_deterministic_per_secret() {
        let id = RefreshId {
            family: Uuid::new_v4(),
            generation: 7,
        };
        let t = refresh_token(b"secret-one", id);
        assert!(directus_shaped(&t), "{t}");
        assert_eq!(t, refresh_token(b"secret-one", id));
        let read = read_refresh_token(b"secret-one", &t).unwrap();
        assert_eq!((read.id, read.authentic), (id, true));
        assert_ne!(t, refresh_token(b"secret-two", id));
        let foreign = read_refresh_token(b"secret-two", &t).unwrap();
        assert_eq!((foreign.id, foreign.authentic), (id, false));
        let next = RefreshId {
            generation: 8,
            ..id
        };
        assert_ne!(t, refresh_token(b"secret-one", next));
    }

    #[test]
    fn forged_and_malformed_refresh_tokens_are_refused() {
        let id = RefreshId {
            family: Uuid::new_v4(),
            generation: 0,
        };
        let t = refresh_token(b"k", id);
        // Flip the generation bits without the key: the MAC no longer matches.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[FAMILY + GENERATION - 1] ^= 1;
        let forged = read_refresh_token(b"k", &URL_SAFE_NO_PAD.encode(&raw)).unwrap();
        assert_eq!(forged.id.generation, 1);
        assert!(!forged.authentic);
        assert!(!read_refresh_token(b"k", &random_token()).unwrap().authentic);
        for bad in ["", "short", &t[..63], "é".repeat(32).as_str()] {
            assert_eq!(read_refresh_token(b"k", bad), None, "{bad}");
        }
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
