//! Password and opaque-token reading: the PHC-string verification path of
//! `tessera_core::password::Passwords` (the argon2 PHC parser Tessera relies on, stored hashes
//! in Directus's and Tessera's shapes, the dummy hash for unknown accounts), hash → verify round
//! trips under the cheapest argon2 settings the server accepts (m=8 KiB, t=1, p=1), refresh
//! tokens (`tokens::read_refresh_token`, forged and foreign ones), and static tokens (looked up
//! by digest through `Auth::authenticate`).
//!
//! Input: the first line is a password, the rest a PHC string; every line is also presented as
//! a refresh token and as a static token. A PHC string whose parameters would cost more than a
//! fraction of a millisecond is parsed but not hashed, so no input costs a default argon2 hash.
#![no_main]

use argon2::password_hash::phc::PasswordHash;
use libfuzzer_sys::fuzz_target;
use tessera_core::Error;
use tessera_core::jwt::is_directus_jwt;
use tessera_core::tokens::{RefreshId, TOKEN_LEN, digest, read_refresh_token, refresh_token};
use tessera_fuzz::{ADMIN_TOKEN, SECRET, first_line, server};
use uuid::Uuid;

/// The most argon2 work one input may ask for: memory in KiB, passes, lanes.
const MAX_M_COST: u32 = 256;
const MAX_T_COST: u32 = 2;
const MAX_P_COST: u32 = 2;

/// Whether verifying against `phc` costs little: it does not parse (verification fails before
/// hashing) or its parameters are small.
fn cheap(phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return true;
    };
    let printed = hash.to_string();
    let again = PasswordHash::new(&printed).expect("a printed PHC string parses");
    assert_eq!(again.to_string(), printed, "PHC printing is not stable");
    match argon2::Params::try_from(&hash) {
        Ok(p) => p.m_cost() <= MAX_M_COST && p.t_cost() <= MAX_T_COST && p.p_cost() <= MAX_P_COST,
        Err(_) => true,
    }
}

fn verify(password: &str, phc: Option<&str>) -> bool {
    let s = server();
    s.block_on(
        s.state
            .auth
            .passwords()
            .verify(password.to_owned(), phc.map(str::to_owned)),
    )
    .expect("verification answers (the queue is never full here)")
}

fn passwords(password: &str, phc: &str) {
    if cheap(phc) {
        let ok = verify(password, Some(phc));
        if ok {
            assert!(
                PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2")),
                "verified against a string that is no argon2 PHC string"
            );
            assert!(!verify(&format!("{password}\u{1}"), Some(phc)));
        }
    }
    let s = server();
    let made = s
        .block_on(s.state.auth.passwords().hash(password.to_owned()))
        .expect("hashing");
    assert!(made.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{made}");
    assert!(verify(password, Some(&made)));
    assert!(!verify(&format!("{password}\u{1}"), Some(&made)));
    assert!(!verify(password, None), "an unknown account logged in");
}

fn refresh(line: &str, family: [u8; 16], generation: u64) {
    if let Some(read) = read_refresh_token(SECRET.as_bytes(), line) {
        assert_eq!(line.len(), TOKEN_LEN);
        let remade = refresh_token(SECRET.as_bytes(), read.id);
        assert_eq!(read.authentic, remade == line, "authenticity of {line}");
    }
    let id = RefreshId {
        family: Uuid::from_bytes(family),
        generation,
    };
    let token = refresh_token(SECRET.as_bytes(), id);
    assert_eq!(token.len(), TOKEN_LEN);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let read = read_refresh_token(SECRET.as_bytes(), &token).expect("a made token reads");
    assert_eq!((read.id, read.authentic), (id, true));
    let foreign = read_refresh_token(b"another secret", &token).expect("a made token reads");
    assert_eq!((foreign.id, foreign.authentic), (id, false));
}

fn static_token(line: &str) {
    let d = digest(line);
    assert!(d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if line.is_empty() || is_directus_jwt(line) {
        return;
    }
    let s = server();
    match s.block_on(s.state.auth.authenticate(Some(line), None)) {
        Ok(acc) => {
            assert_eq!(
                line, ADMIN_TOKEN,
                "a static token nobody holds authenticated"
            );
            assert!(acc.admin && acc.user.is_some());
        }
        Err(e) => {
            assert_ne!(
                line, ADMIN_TOKEN,
                "the admin's static token was refused: {e:?}"
            );
            assert!(matches!(e, Error::InvalidCredentials), "{e:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (password, phc) = first_line(data);
    let password = String::from_utf8_lossy(password);
    let phc = String::from_utf8_lossy(phc);
    passwords(&password, phc.trim_end_matches('\n'));

    let mut family = [0u8; 16];
    for (slot, b) in family.iter_mut().zip(data) {
        *slot = *b;
    }
    let generation = data
        .iter()
        .rev()
        .take(8)
        .fold(0u64, |g, &b| (g << 8) | u64::from(b));
    for line in String::from_utf8_lossy(data).lines() {
        refresh(line, family, generation);
        static_token(line);
    }
});
