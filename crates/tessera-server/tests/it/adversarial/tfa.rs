//! A second factor under attack: one code sent twice at once logs in once, every time.

use super::*;

const EMAIL: &str = "second@example.com";
const PASSWORD: &str = "Second-Factor-1";
const SECRET: &str = "JBSWY3DPEHPK3PXP";

#[tokio::test]
async fn one_code_sent_twice_at_once_logs_in_once() {
    let clock = manual_clock();
    let s = TestServer::spawn_with(&[], with_clock(&clock)).await;
    let uid = s.user(EMAIL, PASSWORD).await;
    s.database().execute(
        "UPDATE directus_users SET tfa_secret = $1 WHERE id = $2",
        &[SECRET, &uid],
    );
    for _ in 0..5 {
        clock.advance_ms(30_000);
        let code = tessera_core::tfa::current_code(SECRET, clock.now_ms()).unwrap();
        let body = json!({"email": EMAIL, "password": PASSWORD, "otp": code});
        let (a, b) = tokio::join!(
            s.call("POST", "/auth/login", &[], Some(body.clone())),
            s.call("POST", "/auth/login", &[], Some(body)),
        );
        let wins = [a.status, b.status].iter().filter(|st| **st == 200).count();
        assert_eq!(wins, 1, "{} / {}", a.text, b.text);
        for r in [&a, &b].into_iter().filter(|r| r.status != 200) {
            assert_eq!(r.code(), "INVALID_OTP", "{}", r.text);
        }
    }
}
