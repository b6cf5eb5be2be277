//! `Config::from_vars`: bad values name their variable.

use std::collections::HashMap;

use tessera_server::config::{Config, SameSite};

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn bad_values_name_the_variable() {
    for (var, value) in [
        ("ACCESS_TOKEN_TTL", "soon"),
        ("REFRESH_TOKEN_TTL", "forever"),
        ("SESSION_REFRESH_GRACE_PERIOD", "x"),
        ("REFRESH_TOKEN_COOKIE_SAME_SITE", "bogus"),
        ("SESSION_COOKIE_SAME_SITE", "sometimes"),
        ("SESSION_COOKIE_SECURE", "yes"),
        ("MAX_PAYLOAD_SIZE", "huge"),
        ("PORT", "http"),
        ("HOST", "localhost:80"),
    ] {
        let err = Config::from_vars(&vars(&[(var, value)])).err().unwrap();
        assert_eq!(err.var, var);
        assert!(err.to_string().contains(var), "{err}");
        assert!(err.to_string().contains(value), "{err}");
    }
}

#[test]
fn same_site_values() {
    let c = Config::from_vars(&vars(&[
        ("REFRESH_TOKEN_COOKIE_SAME_SITE", "strict"),
        ("SESSION_COOKIE_SAME_SITE", "None"),
    ]))
    .unwrap();
    assert_eq!(c.refresh_cookie.same_site, SameSite::Strict);
    assert_eq!(c.session_cookie.same_site, SameSite::None);
    let c = Config::from_vars(&HashMap::new()).unwrap();
    assert_eq!(c.refresh_cookie.same_site, SameSite::Lax);
    assert_eq!(c.session_cookie.same_site, SameSite::Lax);
}

#[test]
fn ttls_shape_cookie_max_age() {
    let c = Config::from_vars(&vars(&[
        ("REFRESH_TOKEN_TTL", "1d"),
        ("SESSION_COOKIE_TTL", "2h"),
        ("ACCESS_TOKEN_TTL", "30s"),
    ]))
    .unwrap();
    assert_eq!(c.refresh_cookie.max_age, 86_400);
    assert_eq!(c.session_cookie.max_age, 7_200);
    assert_eq!(c.auth.access_ttl_ms, 30_000);
}
