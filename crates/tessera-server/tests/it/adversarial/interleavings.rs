//! Property tests over the refresh, grace and reuse state machine: random interleavings of
//! logins, refreshes (of live, spent and replayed tokens), logouts, time moving inside and past
//! the grace window and session lifetimes, and suspensions. Whatever happened, each session
//! has at most one live successor (every refresh that succeeds at one moment, in any order or
//! all at once, hands out the same token), and a suspended user has no live session.

use std::collections::HashMap;
use std::future::Future;

use super::*;

const EMAIL: &str = "walker@example.com";
const PASSWORD: &str = "Walker-Pass-12";

/// A small deterministic generator, so a failing run names its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every token each session (keyed by its first token) ever handed out.
type Sessions = HashMap<String, Vec<String>>;

async fn login(s: &TestServer, sessions: &mut Sessions) {
    let token = refresh_of(&s.login(EMAIL, PASSWORD, None).await);
    sessions.insert(token.clone(), vec![token]);
}

/// The generation a refresh token names (bytes 16..24 of its payload).
fn generation(token: &str) -> u64 {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("a refresh token is base64url");
    u64::from_be_bytes(bytes[16..24].try_into().unwrap())
}

/// Refreshes every token of every session at once, one of them three times over. The same
/// token refreshed at once gets one answer; across a session the answers name at most two
/// adjacent generations (the live one, and the one just spent, still inside its grace
/// window, which itself leads to the live one). The answers are kept.
async fn all_at_once(s: &TestServer, sessions: &mut Sessions, seed: u64, step: usize) {
    for tokens in sessions.values_mut() {
        let mut sent: Vec<String> = tokens.clone();
        let repeated = tokens[tokens.len() - 1].clone();
        sent.extend([repeated.clone(), repeated.clone()]);
        let replies =
            futures_like_join(sent.iter().map(|t| s.refresh_json(t.as_str())).collect()).await;
        let mut same: Vec<String> = Vec::new();
        let mut handed: Vec<String> = Vec::new();
        for (token, r) in sent.iter().zip(&replies) {
            if r.status != 200 {
                assert_eq!(
                    r.code(),
                    "INVALID_CREDENTIALS",
                    "seed {seed}, step {step}: {}",
                    r.text
                );
                continue;
            }
            let got = refresh_of(r);
            if *token == repeated {
                same.push(got.clone());
            }
            handed.push(got);
        }
        same.dedup();
        assert!(
            same.len() <= 1,
            "seed {seed}, step {step}: one token, two answers {same:?}"
        );
        handed.sort();
        handed.dedup();
        let generations: Vec<u64> = handed.iter().map(|t| generation(t)).collect();
        let spread =
            generations.iter().max().unwrap_or(&0) - generations.iter().min().unwrap_or(&0);
        assert!(
            handed.len() <= 2 && spread <= 1 && (handed.len() < 2 || spread == 1),
            "seed {seed}, step {step}: live successors {handed:?}"
        );
        tokens.extend(handed);
    }
}

/// Runs the futures concurrently and collects their answers in order.
async fn futures_like_join(calls: Vec<impl Future<Output = Reply>>) -> Vec<Reply> {
    let mut pending: Vec<_> = calls.into_iter().map(|c| Some(Box::pin(c))).collect();
    let mut out: Vec<Option<Reply>> = pending.iter().map(|_| None).collect();
    // Poll them all from one task until each is done.
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, answer) in pending.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => {
                        *answer = Some(r);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn random_interleavings_never_leave_two_live_successors_or_a_suspended_users_session() {
    for seed in [0x5eed_0001_u64, 0x5eed_0002, 0x5eed_0003, 0x5eed_0004] {
        let clock = manual_clock();
        let s = TestServer::spawn_with(
            &[
                ("SESSION_REFRESH_GRACE_PERIOD", "10s"),
                ("REFRESH_TOKEN_TTL", "2m"),
            ],
            with_clock(&clock),
        )
        .await;
        let uid = s.user(EMAIL, PASSWORD).await;
        let mut dice = Dice(seed);
        let mut sessions = Sessions::new();
        login(&s, &mut sessions).await;
        for step in 0..40 {
            let keys: Vec<String> = sessions.keys().cloned().collect();
            let pick = |dice: &mut Dice| {
                let tokens = &sessions[&keys[dice.below(keys.len())]];
                tokens[dice.below(tokens.len())].clone()
            };
            match dice.below(10) {
                0 => login(&s, &mut sessions).await,
                1..=4 => {
                    let token = pick(&mut dice);
                    let r = s.refresh_json(token.as_str()).await;
                    if r.status == 200 {
                        let first = keys
                            .iter()
                            .find(|k| sessions[*k].contains(&token))
                            .cloned()
                            .unwrap_or_default();
                        sessions.entry(first).or_default().push(refresh_of(&r));
                    } else {
                        assert_eq!(r.code(), "INVALID_CREDENTIALS", "seed {seed}: {}", r.text);
                    }
                }
                5 => {
                    let token = pick(&mut dice);
                    assert_eq!(s.logout_json(token.as_str()).await.status, 204);
                }
                6 => clock.advance_ms(1_000 + 1_000 * dice.below(8) as i64),
                7 => clock.advance_ms(11_000 + 10_000 * dice.below(4) as i64),
                8 => all_at_once(&s, &mut sessions, seed, step).await,
                _ => {
                    let path = format!("/users/{uid}");
                    let r = s
                        .admin("PATCH", &path, Some(json!({"status": "suspended"})))
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text);
                    for tokens in sessions.values() {
                        for t in tokens {
                            let r = s.refresh_json(t.as_str()).await;
                            assert_ne!(
                                r.status, 200,
                                "seed {seed}, step {step}: a suspended user refreshed"
                            );
                        }
                    }
                    let r = s
                        .admin("PATCH", &path, Some(json!({"status": "active"})))
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text);
                    login(&s, &mut sessions).await;
                }
            }
        }
        all_at_once(&s, &mut sessions, seed, 40).await;
    }
}
