//! The JWT session against the dev server: login and each way it fails,
//! refresh and rotation, 401 handling, logout, and decoding every type.

use crate::common;

use std::time::Duration;

use common::{client, devserver, fixture};
use passbolt_client::{ClientError, api};
use passbolt_devserver::{Faults, Options, seed::ids};

fn short_tokens() -> Options {
    Options {
        access_token_ttl: Duration::from_secs(2),
        ..Options::default()
    }
}

/// A client whose URL, user id or pin differ from the account's own.
fn custom_client(
    base_url: String,
    user_id: String,
    fingerprint: Option<String>,
    key_of: &common::Fixture,
) -> passbolt_client::Client {
    passbolt_client::Client::new(
        passbolt_client::SessionOptions {
            base_url,
            user_id,
            fingerprint,
            ca_pem: None,
            client_identity: None,
            timeout: Duration::from_secs(5),
            max_response_bytes: passbolt_client::session::DEFAULT_MAX_RESPONSE_BYTES,
        },
        common::shared_key(key_of),
    )
    .unwrap()
}

/// Waits until a 2-second access token has expired.
async fn expire() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

#[tokio::test]
async fn login_works_for_rsa_and_curve25519_accounts() {
    let server = devserver(Options::default()).await;
    for who in ["admin", "bob", "alice"] {
        let f = fixture(who);
        let c = client(&server, &f);
        c.login().await.unwrap();
        let me = api::me(c.session()).await.unwrap();
        assert_eq!(me.id, f.id);
        assert_eq!(c.stats().logins, 1);
        assert!(c.session().has_refresh_token().await);
    }
    assert_eq!(server.count_logins(), 3);
}

#[tokio::test]
async fn a_pinned_fingerprint_that_does_not_match_fails_closed() {
    let server = devserver(Options::default()).await;
    let f = fixture("alice");
    let c = custom_client(
        server.url(),
        f.id.clone(),
        Some("0123456789ABCDEF0123456789ABCDEF01234567".into()),
        &f,
    );
    let err = c.login().await.unwrap_err();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&server.server_fingerprint()));
    assert_eq!(server.count_logins(), 0, "no challenge was even sent");
}

#[tokio::test]
async fn a_response_signed_by_another_key_is_refused() {
    let server = devserver(Options::default()).await;
    server.set_faults(Faults {
        sign_with_other_key: true,
        ..Faults::default()
    });
    let err = client(&server, &fixture("bob")).login().await.unwrap_err();
    assert!(
        matches!(err, ClientError::ServerNotAuthenticated(_)),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not decrypt and verify"),
        "{err}"
    );
}

#[tokio::test]
async fn a_response_that_does_not_echo_the_verify_token_is_refused() {
    let server = devserver(Options::default()).await;
    server.set_faults(Faults {
        wrong_verify_token: true,
        ..Faults::default()
    });
    let err = client(&server, &fixture("alice"))
        .login()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("verify_token"), "{err}");
}

#[tokio::test]
async fn a_response_for_another_domain_is_refused() {
    let server = devserver(Options::default()).await;
    server.set_faults(Faults {
        wrong_domain: Some("https://evil.example.com/".into()),
        ..Faults::default()
    });
    let err = client(&server, &fixture("alice"))
        .login()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ServerNotAuthenticated(_)),
        "{err}"
    );
    assert!(err.to_string().contains("evil.example.com"), "{err}");
}

#[tokio::test]
async fn an_announced_key_that_differs_from_the_pin_fails() {
    let server = devserver(Options::default()).await;
    server.set_faults(Faults {
        announce_other_key: true,
        ..Faults::default()
    });
    let err = client(&server, &fixture("alice"))
        .login()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
}

#[tokio::test]
async fn the_wrong_key_for_the_user_is_a_400_login_refusal() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    let bob = fixture("bob");
    // Alice's id with Bob's key: the server cannot verify the signature.
    let c = custom_client(
        server.url(),
        alice.id.clone(),
        Some(server.server_fingerprint()),
        &bob,
    );
    let err = c.login().await.unwrap_err();
    match &err {
        ClientError::LoginRefused { message, key, .. } => {
            assert_eq!(message, "The credentials are invalid.");
            // Both pre-checks passed: the key is named.
            let key = key.as_ref().expect("the key named");
            assert_eq!(key.fingerprint, bob.public.fingerprint());
            assert_eq!(key.user_ids, bob.public.user_ids());
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_wrong_base_url_is_refused_by_the_server_domain_check() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    // Same server, other spelling (127.1 is 127.0.0.1, and needs no
    // resolver, unlike localhost): the server compares strings exactly.
    let url = server.url().replace("127.0.0.1", "127.1");
    let c = custom_client(
        url.clone(),
        alice.id.clone(),
        Some(server.server_fingerprint()),
        &alice,
    );
    // The base URL the server announces is compared before the challenge.
    let err = c.login().await.unwrap_err();
    match &err {
        ClientError::BaseUrlMismatch {
            configured,
            announced,
        } => {
            assert_eq!(configured, &url);
            assert_eq!(announced, &server.url());
        }
        other => panic!("{other}"),
    }
    assert_eq!(server.count_logins(), 0);
    assert!(server.attacks().is_empty(), "no challenge sent");
    // A server that announces none: the server's own check refuses it.
    server.set_faults(Faults {
        hide_app_url: true,
        ..Faults::default()
    });
    let c = custom_client(
        url,
        alice.id.clone(),
        Some(server.server_fingerprint()),
        &alice,
    );
    let err = c.login().await.unwrap_err();
    assert!(
        matches!(err, ClientError::LoginRefused { key: None, .. }),
        "{err}"
    );
    assert!(server.events().iter().any(|e| matches!(e,
        passbolt_devserver::Event::LoginRejected { reason, .. } if reason.contains("domain is invalid"))));
}

#[tokio::test]
async fn an_unknown_user_is_a_404() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    let c = custom_client(
        server.url(),
        "00000000-0000-4000-8000-000000000000".into(),
        None,
        &alice,
    );
    let err = c.login().await.unwrap_err();
    assert!(matches!(err, ClientError::UserNotFound { .. }), "{err}");
}

#[tokio::test]
async fn mfa_is_a_clear_error_naming_the_providers() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.set_mfa(&alice.id, &["totp", "yubikey"]);
    let err = client(&server, &alice).login().await.unwrap_err();
    assert!(matches!(err, ClientError::MfaRequired { .. }), "{err}");
    assert!(err.to_string().contains("totp, yubikey"), "{err}");
}

#[tokio::test]
async fn refresh_rotates_and_never_presents_a_token_twice() {
    let server = devserver(short_tokens()).await;
    let c = client(&server, &fixture("alice"));
    for i in 0..5 {
        if i > 0 {
            expire().await;
        }
        api::me(c.session()).await.unwrap();
    }
    assert_eq!(server.count_logins(), 1);
    assert_eq!(server.count_refreshes(), 4);
    assert!(server.refresh_reuses().is_empty());
    let stats = c.stats();
    assert_eq!(
        (stats.logins, stats.refreshes, stats.refresh_failures),
        (1, 4, 0)
    );
    // Exactly one refresh token of this session is alive: the newest.
    assert_eq!(server.active_refresh_tokens(&fixture("alice").id), 1);
}

#[tokio::test]
async fn a_refresh_response_without_cookie_leads_to_a_login_not_a_replay() {
    let server = devserver(short_tokens()).await;
    let c = client(&server, &fixture("bob"));
    api::me(c.session()).await.unwrap();
    server.set_faults(Faults {
        omit_refresh_cookie: true,
        ..Faults::default()
    });
    expire().await;
    api::me(c.session()).await.unwrap(); // refresh, no new refresh token
    server.set_faults(Faults::default());
    expire().await;
    api::me(c.session()).await.unwrap(); // must log in again
    assert_eq!(server.count_logins(), 2);
    assert_eq!(server.count_refreshes(), 1);
    assert!(server.refresh_reuses().is_empty());
}

#[tokio::test]
async fn a_failed_refresh_falls_back_to_login() {
    let server = devserver(Options {
        access_token_ttl: Duration::from_secs(3),
        ..Options::default()
    })
    .await;
    let alice = fixture("alice");
    let c = client(&server, &alice);
    api::me(c.session()).await.unwrap();
    // Another session logs out every session of the account (empty body):
    // our refresh token dies server-side.
    let other = client(&server, &alice);
    other.login().await.unwrap();
    let token = other.session().access_token().await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/auth/jwt/logout.json", server.url()))
        .bearer_auth(token.as_str())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.clear_events();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    api::me(c.session()).await.unwrap();
    assert_eq!(c.stats().refresh_failures, 1);
    assert_eq!(c.stats().logins, 2);
    assert_eq!(server.count_logins(), 1);
    // The dead token was presented once (its one allowed use), not twice.
    assert_eq!(server.refresh_reuses().len(), 1);
}

#[tokio::test]
async fn a_401_gets_one_renewal_then_one_login_then_fails() {
    let server = devserver(Options::default()).await;
    let c = client(&server, &fixture("admin"));
    api::me(c.session()).await.unwrap();
    server.set_faults(Faults {
        unauthorized_next: 1,
        ..Faults::default()
    });
    api::me(c.session()).await.unwrap();
    assert_eq!(c.stats().refreshes, 1);
    assert_eq!(c.stats().logins, 1);
    // The refreshed token refused too: one full login, one last try.
    server.set_faults(Faults {
        unauthorized_next: 2,
        ..Faults::default()
    });
    api::me(c.session()).await.unwrap();
    assert_eq!(c.stats().refreshes, 2);
    assert_eq!(c.stats().logins, 2);
    server.set_faults(Faults {
        unauthorized_next: 3,
        ..Faults::default()
    });
    let err = api::me(c.session()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert_eq!((c.stats().refreshes, c.stats().logins), (3, 3), "bounded");
    assert!(server.refresh_reuses().is_empty());
    assert!(server.attacks().is_empty());
}

#[tokio::test]
async fn logout_revokes_only_this_sessions_refresh_token() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    let first = client(&server, &alice);
    let second = client(&server, &alice);
    first.login().await.unwrap();
    second.login().await.unwrap();
    assert_eq!(server.active_refresh_tokens(&alice.id), 2);
    first.logout().await.unwrap();
    assert_eq!(server.active_refresh_tokens(&alice.id), 1);
    assert!(!first.session().has_refresh_token().await);
    // The other session lives on and can still refresh.
    assert!(
        server
            .events()
            .iter()
            .any(|e| matches!(e, passbolt_devserver::Event::Logout { token: Some(_), .. }))
    );
    api::me(second.session()).await.unwrap();
}

#[tokio::test]
async fn a_server_that_is_down_or_failing_is_an_outage() {
    let mut server = devserver(Options::default()).await;
    let c = client(&server, &fixture("alice"));
    server.set_faults(Faults {
        status_for_all: Some(503),
        ..Faults::default()
    });
    let err = c.login().await.unwrap_err();
    assert!(err.is_outage(), "{err}");
    assert!(
        matches!(err, ClientError::ServerError { status: 503, .. }),
        "{err}"
    );
    server.set_faults(Faults::default());
    server.stop().await;
    let err = c.login().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(err.is_outage());
    server.restart().await.unwrap();
    c.login().await.unwrap();
}

#[tokio::test]
async fn every_resource_type_decodes_for_rsa_and_curve25519() {
    let server = devserver(Options::default()).await;
    for who in ["bob", "alice"] {
        let c = client(&server, &fixture(who));
        let listing = c.list(true).await.unwrap();
        assert!(listing.failures.is_empty(), "{:?}", listing.failures);
        let ids: Vec<String> = listing.resources.iter().map(|r| r.id.clone()).collect();
        let mut fetched = c.fetch_secrets(&ids).await.unwrap();
        assert_eq!(fetched.len(), ids.len());
        let mut secrets = std::collections::HashMap::new();
        for id in &ids {
            let f = fetched.remove(id).unwrap();
            assert_eq!(f.modified, listing.get(id).unwrap().modified);
            secrets.insert(id.clone(), f.fields.unwrap());
        }
        let slugs: std::collections::BTreeSet<&str> = listing
            .resources
            .iter()
            .map(|r| r.type_slug.as_str())
            .collect();
        assert_eq!(slugs.len(), 11, "{slugs:?}");
        let get = |id: &str| listing.get(id).unwrap();
        let secret = |id: &str| secrets[id].clone();
        assert_eq!(
            secret(ids::V4_PASSWORD_STRING).password.unwrap().expose(),
            "legacy-db-pass"
        );
        assert_eq!(
            get(ids::V4_PASSWORD_STRING).description.as_deref(),
            Some("v4 cleartext description")
        );
        assert_eq!(
            secret(ids::V4_PASSWORD_DESCRIPTION)
                .description
                .unwrap()
                .expose(),
            "rotated monthly"
        );
        assert_eq!(
            secret(ids::V4_TOTP).totp.unwrap().secret_key.expose(),
            "JBSWY3DPEHPK3PXP"
        );
        assert_eq!(
            secret(ids::V4_PASSWORD_DESCRIPTION_TOTP)
                .totp
                .unwrap()
                .digits,
            6
        );
        assert_eq!(
            secret(ids::V5_PASSWORD_STRING).password.unwrap().expose(),
            "redis-pass-v5"
        );
        assert_eq!(get(ids::V5_DEFAULT).uris.len(), 2);
        assert_eq!(get(ids::V5_DEFAULT).folder.as_deref(), Some("Production"));
        assert_eq!(
            get(ids::MYAPP_DB).folder.as_deref(),
            Some("Production/myapp")
        );
        assert_eq!(
            secret(ids::V5_DEFAULT).password.unwrap().expose(),
            "g1t$lab \"pa ss\" `x` #1 ü"
        );
        assert_eq!(secret(ids::V5_DEFAULT_TOTP).totp.unwrap().period, 30);
        assert!(secret(ids::V5_TOTP).password.is_none());
        let custom = secret(ids::V5_CUSTOM_FIELDS);
        assert_eq!(
            custom.custom("API host").unwrap().value.expose(),
            "api.internal"
        );
        assert_eq!(
            custom.custom("API token").unwrap().value.expose(),
            "tok-123456"
        );
        assert_eq!(
            secret(ids::V5_NOTE).note.unwrap().expose(),
            "line one\nline two"
        );
        assert_eq!(secret(ids::V5_PIN).pin.unwrap().expose(), "73019468");
        // One personal (user_key) resource each.
        assert_eq!(
            listing
                .resources
                .iter()
                .filter(|r| r.name.starts_with("Personal"))
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn listing_without_secrets_decrypts_nothing_secret() {
    let server = devserver(Options::default()).await;
    let c = client(&server, &fixture("alice"));
    let listing = c.list(false).await.unwrap();
    assert!(listing.resources.iter().all(|r| r.folder.is_none()));
    assert!(server.events().iter().any(|e| matches!(e,
        passbolt_devserver::Event::Request { path, .. } if path == "/resources.json")));
    // Without folder paths, the listing is one request: no /folders.json.
    assert!(!server.events().iter().any(|e| matches!(e,
        passbolt_devserver::Event::Request { path, .. } if path == "/folders.json")));
    let one = c.fetch_secrets(&[ids::V5_PIN.to_string()]).await.unwrap();
    assert_eq!(one.len(), 1);
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_an_outage_named_as_such() {
    let server = devserver(Options::default()).await;
    server.set_faults(Faults {
        delay: Some(Duration::from_secs(3)),
        ..Faults::default()
    });
    let alice = fixture("alice");
    let c = passbolt_client::Client::new(
        passbolt_client::SessionOptions {
            base_url: server.url(),
            user_id: alice.id.clone(),
            fingerprint: None,
            ca_pem: None,
            client_identity: None,
            timeout: Duration::from_millis(500),
            max_response_bytes: passbolt_client::session::DEFAULT_MAX_RESPONSE_BYTES,
        },
        common::shared_key(&alice),
    )
    .unwrap();
    let err = c.login().await.unwrap_err();
    assert!(err.is_outage(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}
