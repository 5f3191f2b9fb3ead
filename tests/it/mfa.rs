//! TOTP MFA against the dev server: login with a code, the `passbolt_mfa`
//! cookie on every later request, the remembered login, a wrong seed, the
//! providers a daemon cannot answer, the token dropped mid-run, and the
//! seed kept out of logs and children.

use crate::common;

use std::time::{Duration, Instant};

use common::{cli, client, devserver, fixture, write_config};
use passbolt_client::{ClientError, TotpSeed, api};
use passbolt_devserver::{Canned, Faults, Options, seed::ids};

/// The account's seed at the dev server.
const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// A seed of some other account.
const WRONG_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn seed(s: &str) -> Option<TotpSeed> {
    Some(TotpSeed::parse(s.as_bytes()).unwrap())
}

fn short_tokens() -> Options {
    Options {
        access_token_ttl: Duration::from_secs(2),
        ..Options::default()
    }
}

#[tokio::test]
async fn login_with_totp_then_refresh_and_logout_carry_the_cookie() {
    let server = devserver(short_tokens()).await;
    let alice = fixture("alice");
    server.set_totp(&alice.id, SEED).unwrap();
    let c = client(&server, &alice).with_totp(seed(SEED));
    c.login().await.unwrap();
    assert_eq!(server.totp_attempts(&alice.id), (1, 0));
    assert!(c.session().has_mfa_cookie());
    assert_eq!(api::me(c.session()).await.unwrap().id, alice.id);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The access token expired: a refresh, with the cookie.
    api::me(c.session()).await.unwrap();
    assert_eq!(server.count_refreshes(), 1);
    c.logout().await.unwrap();
    assert_eq!(server.active_refresh_tokens(&alice.id), 0);

    let seen = server.mfa_cookie_requests();
    for path in [
        "/users/me.json",
        "/auth/jwt/refresh.json",
        "/auth/jwt/logout.json",
    ] {
        assert!(
            seen.iter().any(|(p, valid)| p == path && *valid),
            "{path} carried a valid cookie: {seen:?}"
        );
    }
    assert!(seen.iter().all(|(_, valid)| *valid), "{seen:?}");
    // One code for the whole session, and nothing the server calls an attack.
    assert_eq!(server.totp_attempts(&alice.id), (1, 0));
    assert!(server.attacks().is_empty(), "{:?}", server.attacks());
    assert!(server.refresh_reuses().is_empty());
}

#[tokio::test]
async fn a_remembered_cookie_skips_the_code_at_the_next_login() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server.set_totp(&bob.id, SEED).unwrap();
    let c = client(&server, &bob).with_totp(seed(SEED));
    c.login().await.unwrap();
    c.login().await.unwrap();
    api::me(c.session()).await.unwrap();
    assert_eq!(server.count_logins(), 2);
    assert_eq!(
        server.totp_attempts(&bob.id),
        (1, 0),
        "the second login sent no code"
    );
    assert_eq!(server.active_mfa_tokens(&bob.id), 1);
}

#[tokio::test]
async fn a_wrong_seed_fails_after_exactly_one_attempt() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.set_totp(&alice.id, SEED).unwrap();
    let c = client(&server, &alice).with_totp(seed(WRONG_SEED));
    let err = c.login().await.unwrap_err();
    assert!(matches!(err, ClientError::MfaRejected { .. }), "{err}");
    assert!(err.is_misconfiguration());
    let text = err.to_string();
    assert!(text.contains("auth.totp_secret_file"), "{text}");
    assert!(!text.contains(WRONG_SEED), "{text}");
    assert_eq!(server.totp_attempts(&alice.id), (0, 1));
    assert!(!c.session().has_refresh_token().await);
    assert!(!c.session().has_mfa_cookie());
}

#[tokio::test]
async fn once_with_a_wrong_seed_is_a_config_error_after_one_attempt() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server.set_totp(&bob.id, SEED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("bob.totp");
    std::fs::write(&seed_file, format!("{WRONG_SEED}\n")).unwrap();
    let target = dir.path().join("db.pass");
    let config = write_config(
        dir.path(),
        &server,
        &bob,
        &format!(
            "targets:\n  - {{ path: {}, format: raw, resource: {} }}\n",
            target.display(),
            ids::V4_PASSWORD_STRING
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "auth:\n",
        &format!("auth:\n  totp_secret_file: {}\n", seed_file.display()),
    );
    std::fs::write(&config, text).unwrap();
    let out = cli(&["once", "-c", config.to_str().unwrap()], &[]).await;
    let (_, stderr) = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rejected the TOTP code"), "{stderr}");
    assert_eq!(server.totp_attempts(&bob.id), (0, 1));
    assert!(!target.exists());
}

#[tokio::test]
async fn the_daemon_with_a_wrong_seed_waits_its_maximum_backoff() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server.set_totp(&bob.id, SEED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("db.pass");
    let config = write_config(
        dir.path(),
        &server,
        &bob,
        &format!(
            "targets:\n  - {{ path: {}, format: raw, resource: {} }}\n",
            target.display(),
            ids::V4_PASSWORD_STRING
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("auth:\n", "auth:\n  totp_secret_env: BOB_TOTP\n");
    std::fs::write(&config, text).unwrap();
    // A 50 ms backoff would allow dozens of attempts in the window below;
    // the cap (4 s) is what a rejected code waits.
    let daemon = common::Daemon::start(
        &config,
        &[
            ("PASSBOLT_SYNC_TEST_BACKOFF", "50ms 4s"),
            ("BOB_TOTP", WRONG_SEED),
        ],
    )
    .await;
    assert!(
        common::wait_until(Duration::from_secs(20), || server.totp_attempts(&bob.id).1
            >= 1)
        .await,
        "{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.totp_attempts(&bob.id), (0, 1), "{}", daemon.log());
    let (_, log) = daemon.stop().await;
    assert!(log.contains("rejected the TOTP code"), "{log}");
    assert!(!log.contains(WRONG_SEED));
}

#[tokio::test]
async fn yubikey_only_and_duo_only_accounts_get_their_error() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    for (provider, words) in [("yubikey", "Yubikey"), ("duo", "Duo is a browser flow")] {
        server.set_mfa(&alice.id, &[provider]);
        let err = client(&server, &alice)
            .with_totp(seed(SEED))
            .login()
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::MfaUnsupported { .. }),
            "{provider}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(provider) && text.contains(words), "{text}");
    }
    assert_eq!(server.totp_attempts(&alice.id), (0, 0));
}

#[tokio::test]
async fn an_mfa_account_without_a_seed_names_the_option() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.set_totp(&alice.id, SEED).unwrap();
    let err = client(&server, &alice).login().await.unwrap_err();
    assert!(matches!(err, ClientError::MfaRequired { .. }), "{err}");
    assert!(err.to_string().contains("auth.totp_secret_file"), "{err}");
    assert_eq!(server.totp_attempts(&alice.id), (0, 0));
}

#[tokio::test]
async fn a_dropped_mfa_token_is_verified_once_more() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.set_totp(&alice.id, SEED).unwrap();
    let c = client(&server, &alice).with_totp(seed(SEED));
    api::me(c.session()).await.unwrap();
    // The next step by the server's clock, so no wait for a fresh code.
    server.set_clock_offset(30);
    server.drop_mfa_tokens(&alice.id);
    api::me(c.session()).await.unwrap();
    assert_eq!(server.totp_attempts(&alice.id), (2, 0));
    assert_eq!(server.count_logins(), 1, "no new login was needed");
    assert!(
        server
            .mfa_cookie_requests()
            .contains(&("/users/me.json".to_string(), false))
    );

    // Dropped on refresh: the refresh token is not spent by the 302, so
    // the session verifies with the access token it has and refreshes.
    server.set_clock_offset(280);
    api::me(c.session()).await.unwrap(); // learns the server's clock
    server.drop_mfa_tokens(&alice.id);
    api::me(c.session()).await.unwrap();
    assert_eq!(server.totp_attempts(&alice.id), (3, 0));
    assert_eq!(server.count_refreshes(), 1);
    assert_eq!(server.count_logins(), 1);
    assert!(server.attacks().is_empty(), "{:?}", server.attacks());
    assert!(server.refresh_reuses().is_empty());
}

#[tokio::test]
async fn a_code_rejected_mid_run_makes_the_next_attempt_a_new_login() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.set_totp(&alice.id, SEED).unwrap();
    let c = client(&server, &alice).with_totp(seed(SEED));
    api::me(c.session()).await.unwrap();
    // An admin reset the account's TOTP: the seed this host has is stale.
    server.set_totp(&alice.id, WRONG_SEED).unwrap();
    server.drop_mfa_tokens(&alice.id);
    server.set_clock_offset(30);
    let err = api::me(c.session()).await.unwrap_err();
    assert!(matches!(err, ClientError::MfaRejected { .. }), "{err}");
    assert_eq!(server.count_logins(), 1);
    server.set_clock_offset(60);
    let err = api::me(c.session()).await.unwrap_err();
    assert!(matches!(err, ClientError::MfaRejected { .. }), "{err}");
    // Each rejected code came after its own login, so the server's count
    // since the last login never passes one.
    assert_eq!(server.count_logins(), 2);
    assert_eq!(server.totp_attempts(&alice.id), (1, 2));
}

#[tokio::test]
async fn a_token_dropped_again_right_after_verifying_fails() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.set_totp(&alice.id, SEED).unwrap();
    let c = client(&server, &alice).with_totp(seed(SEED));
    c.login().await.unwrap();
    server.set_clock_offset(30);
    // Every listing answers the MFA redirect, verified or not.
    server.set_faults(Faults {
        respond: Some(Canned {
            path_prefix: "/resources.json".into(),
            status: 302,
            headers: vec![(
                "location".into(),
                format!("{}/mfa/verify/error.json", server.url()),
            )],
            body: Vec::new(),
        }),
        ..Faults::default()
    });
    let err = c.list(false).await.unwrap_err();
    assert!(matches!(err, ClientError::MfaDropped { .. }), "{err}");
    assert_eq!(
        server.totp_attempts(&alice.id),
        (2, 0),
        "exactly one new verification"
    );
}

#[tokio::test]
async fn a_second_code_waits_for_the_next_step() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    // A 3-second period keeps the wait short; the rule is the same.
    let uri = format!("otpauth://totp/passbolt:alice?secret={SEED}&period=3&digits=6");
    server.set_totp(&alice.id, &uri).unwrap();
    let c = client(&server, &alice).with_totp(seed(&uri));
    c.login().await.unwrap();
    server.drop_mfa_tokens(&alice.id);
    let started = Instant::now();
    api::me(c.session()).await.unwrap();
    assert_eq!(server.totp_attempts(&alice.id), (2, 0));
    let steps = server.totp_accepted_steps(&alice.id);
    assert!(steps[1] > steps[0], "two codes of one step: {steps:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn the_dev_server_logs_the_account_out_after_too_many_rejected_codes() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server.set_totp(&bob.id, SEED).unwrap();
    let c = client(&server, &bob).with_totp(seed(SEED));
    c.login().await.unwrap();
    let bearer = c.session().access_token().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/mfa/verify/totp.json", server.url());
    let mut messages = Vec::new();
    for _ in 0..5 {
        let reply: serde_json::Value = http
            .post(&url)
            .bearer_auth(bearer.as_str())
            .json(&serde_json::json!({"totp": "000000", "remember": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        messages.push(reply["header"]["message"].as_str().unwrap().to_string());
    }
    assert!(
        messages[..4]
            .iter()
            .all(|m| m == "Something went wrong when validating the one-time password."),
        "{messages:?}"
    );
    assert_eq!(
        messages[4],
        "You have been logged out due to too many failed attempts."
    );
    assert_eq!(server.active_refresh_tokens(&bob.id), 0);
    // The error page names the providers, as a 403.
    let page = http
        .get(format!("{}/mfa/verify/error.json", server.url()))
        .bearer_auth(bearer.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    let body: serde_json::Value = page.json().await.unwrap();
    assert_eq!(body["body"]["mfa_providers"], serde_json::json!(["totp"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_and_the_cookie_never_reach_trace_logs_or_children() {
    let server = devserver(short_tokens()).await;
    let bob = fixture("bob");
    server.set_totp(&bob.id, SEED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("db.env");
    let seen = dir.path().join("child-env");
    let config = write_config(
        dir.path(),
        &server,
        &bob,
        &format!(
            "targets:\n  - {{ path: {}, format: dotenv, folder: Production/myapp, on_change: 'env > {}' }}\n",
            target.display(),
            seen.display()
        ),
    );
    let env_config = dir.path().join("env.yaml");
    std::fs::write(
        &env_config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("auth:\n", "auth:\n  totp_secret_env: BOB_TOTP\n"),
    )
    .unwrap();
    let seed_file = dir.path().join("bob.totp");
    let uri = format!("otpauth://totp/passbolt:bob?secret={SEED}&issuer=passbolt");
    std::fs::write(&seed_file, &uri).unwrap();
    let file_config = dir.path().join("file.yaml");
    std::fs::write(
        &file_config,
        std::fs::read_to_string(&config).unwrap().replace(
            "auth:\n",
            &format!("auth:\n  totp_secret_file: {}\n", seed_file.display()),
        ),
    )
    .unwrap();
    let envs = [("RUST_LOG", "trace"), ("BOB_TOTP", SEED)];
    let mut logs = String::new();
    for args in [
        vec!["check", "--online", "-c", env_config.to_str().unwrap()],
        vec!["once", "-c", env_config.to_str().unwrap()],
        vec!["once", "-c", file_config.to_str().unwrap()],
    ] {
        let out = cli(&args, &envs).await;
        let (stdout, stderr) = common::text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        logs.push_str(&stdout);
        logs.push_str(&stderr);
    }
    assert!(
        logs.contains("TRACE") && logs.contains("MFA verified"),
        "{logs}"
    );
    let child_env = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !child_env.contains("BOB_TOTP"),
        "the hook saw the seed variable"
    );
    let mut secrets = vec![SEED.to_string(), uri.clone()];
    secrets.extend(server.issued_tokens());
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "leaked into the logs: {s:?}");
        assert!(!child_env.contains(s.as_str()), "leaked to a child: {s:?}");
    }
    // Every login of the three commands answered MFA.
    let (accepted, rejected) = server.totp_attempts(&bob.id);
    assert_eq!((accepted, rejected), (3, 0));
}
