//! A refused login names its cause. Before the first challenge the client
//! compares server.url with the base URL the server announces (`app.url`
//! at `/settings.json`) and this host's clock with the server's; each
//! mismatch fails before a challenge is sent, with the message
//! `check --online` prints. A login refused with both checks passed names
//! the key to compare with the server's. A server that announces no base
//! URL gets today's login and today's message.

use crate::common;

use std::path::Path;

use common::{fixture, shared_key};
use passbolt_devserver::{DevServer, Event, Faults, Options};

/// `check --online`: exit code and stderr.
async fn check_online(config: &Path) -> (Option<i32>, String) {
    let out = common::cli(&["check", "--online", "-c", config.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = common::text(&out);
    (out.status.code(), format!("{stdout}{stderr}"))
}

/// Rewrites the config's server.url.
fn set_url(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let line = format!("  url: {from}\n");
    assert!(text.contains(&line), "{text}");
    common::replace(config, &text.replace(&line, &format!("  url: {to}\n")));
}

fn challenges(server: &DevServer) -> usize {
    server
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Request { path, .. } if path.starts_with("/auth/jwt/login")))
        .count()
}

/// Every request served so far, as "METHOD /path".
fn requests(server: &DevServer) -> Vec<String> {
    server
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Request { method, path, .. } => Some(format!("{method} {path}")),
            _ => None,
        })
        .collect()
}

fn settings_requests(server: &DevServer) -> usize {
    server
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Request { method, path, .. } if method == "GET" && path == "/settings.json"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn another_spelling_of_the_host_is_named_before_the_challenge() {
    let server = common::devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &server, &fixture("alice"), "");
    let localhost = server.url().replace("127.0.0.1", "localhost");
    set_url(&config, &server.url(), &localhost);
    let (code, out) = check_online(&config).await;
    eprintln!("MESSAGE another spelling of the host (exit {code:?}):\n{out}");
    assert_eq!(code, Some(2), "a config error: {out}");
    assert!(
        out.contains(&format!(
            "server.url must be {}, the base URL this server announces (app.url at /settings.json), not {localhost}",
            server.url()
        )),
        "{out}"
    );
    assert_eq!(challenges(&server), 0, "no challenge sent");
    assert!(server.attacks().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_with_a_path_is_named_before_the_challenge() {
    let server = common::devserver(Options::default()).await;
    // Behind a proxy that maps /passbolt/ to the server's root, the server
    // configured for the proxy's address.
    let announced = format!("{}/passbolt", server.url());
    server.set_full_base_url(Some(&format!("{announced}/")));
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &server, &fixture("alice"), "");
    let (code, out) = check_online(&config).await;
    eprintln!("MESSAGE a path suffix (exit {code:?}):\n{out}");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "server.url must be {announced}, the base URL this server announces"
        )),
        "{out}"
    );
    assert_eq!(challenges(&server), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_ten_minutes_off_logs_in_and_two_hours_behind_is_named() {
    let server = common::devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &server, &fixture("alice"), "");
    // The challenge's expiry is taken from the server's clock and the
    // server's signature is within OpenPGP's tolerance: no refusal, and
    // no false alarm either.
    for offset in [600, -600, -7200] {
        server.set_clock_offset(offset);
        let (code, out) = check_online(&config).await;
        assert_eq!(code, Some(0), "server clock {offset:+} s: {out}");
        assert!(out.contains("logged in to"), "{out}");
    }
    // This host two hours behind: the server's signed answer would be
    // dated two hours in our future and refused after the server had
    // issued tokens. Named before the challenge instead.
    server.set_clock_offset(7200);
    let before = challenges(&server);
    let (code, out) = check_online(&config).await;
    eprintln!("MESSAGE a clock two hours off (exit {code:?}):\n{out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("this host's clock is 2 h 0 min 0 s behind the server's")
            || out.contains("this host's clock is 1 h 59 min 59 s behind the server's")
            || out.contains("this host's clock is 2 h 0 min 1 s behind the server's"),
        "{out}"
    );
    assert!(out.contains("set this host's clock (NTP)"), "{out}");
    assert_eq!(challenges(&server), before, "no challenge sent");
    assert!(server.attacks().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_of_another_user_is_named_with_its_fingerprint_and_user_ids() {
    let server = common::devserver(Options::default()).await;
    let (alice, bob) = (fixture("alice"), fixture("bob"));
    let dir = tempfile::tempdir().unwrap();
    // Bob's key and passphrase, Alice's id.
    let config = common::write_config(dir.path(), &server, &bob, "");
    let text = std::fs::read_to_string(&config).unwrap();
    common::replace(
        &config,
        &text.replace(
            &format!("user_id: {}", bob.id),
            &format!("user_id: {}", alice.id),
        ),
    );
    let (code, out) = check_online(&config).await;
    eprintln!("MESSAGE a key of another user (exit {code:?}):\n{out}");
    assert_eq!(code, Some(1), "{out}");
    let key = shared_key(&bob).public();
    let uids = key.user_ids();
    assert!(!uids.is_empty());
    assert!(
        out.contains(&format!(
            "login refused for user {}: \"The credentials are invalid.\" (HTTP 400). server.url is the base URL the server announces and the clock agrees with the server's, so either auth.user_id is not this key's account or the key is another user's: the key is {} ({})",
            alice.id,
            key.fingerprint(),
            uids.join(", ")
        )),
        "{out}"
    );
    assert_eq!(challenges(&server), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_announces_no_base_url_gets_todays_login_and_message() {
    let server = common::devserver(Options::default()).await;
    server.set_faults(Faults {
        hide_app_url: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &server, &fixture("alice"), "");
    let (code, out) = check_online(&config).await;
    assert_eq!(code, Some(0), "{out}");

    let localhost = server.url().replace("127.0.0.1", "localhost");
    set_url(&config, &server.url(), &localhost);
    let (code, out) = check_online(&config).await;
    eprintln!("MESSAGE no app.url, another spelling (exit {code:?}):\n{out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("(HTTP 400). Check auth.user_id, that the key is this user's, that server.url is exactly the server's base URL, and the clock"),
        "{out}"
    );
    // The server's domain check refused it, as before.
    assert!(server.events().iter().any(|e| matches!(e,
        Event::LoginRejected { reason, .. } if reason.contains("domain is invalid"))));
}

/// The check costs one unauthenticated GET per process: none before a
/// re-login, a refresh, or a request.
#[tokio::test(flavor = "multi_thread")]
async fn the_check_is_one_settings_request_per_process() {
    let server = common::devserver(Options::default()).await;
    let client = common::client(&server, &fixture("alice"));
    client.login().await.unwrap();
    assert_eq!(settings_requests(&server), 1);
    let first_login = server.count_requests();
    for _ in 0..3 {
        client.session().login().await.unwrap();
    }
    client.list(false).await.unwrap();
    assert_eq!(server.count_logins(), 4);
    assert_eq!(settings_requests(&server), 1, "not before a re-login");
    let mut paths = requests(&server);
    paths.truncate(first_login);
    eprintln!("COST first login: {first_login} requests: {paths:?}");
    assert_eq!(
        paths,
        [
            "GET /auth/verify.json",
            "GET /settings.json",
            "POST /auth/jwt/login.json"
        ]
    );
}

/// A command that logs in at once asks the server key and the settings
/// while its key unlocks, and its login does not ask again; a failure there
/// is the login's, with its own message.
#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_login_asks_each_first_request_once_and_a_failure_is_the_logins() {
    let server = common::devserver(Options::default()).await;
    let who = fixture("alice");
    let client =
        passbolt_client::Client::without_key(common::session_options(&server, &who)).unwrap();
    client.session().prepare_login().await.unwrap();
    let prepared = server.count_requests();
    assert_eq!(prepared, 2, "the server key and the settings, nothing else");
    client.set_key(shared_key(&who));
    client.login().await.unwrap();
    let paths = requests(&server);
    let mut first_two = paths[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["GET /auth/verify.json", "GET /settings.json"]);
    assert_eq!(&paths[2..], ["POST /auth/jwt/login.json"], "{paths:?}");
    // A re-login asks the server key again, as always.
    client.session().login().await.unwrap();
    assert_eq!(server.count_requests(), prepared + 3);

    // A mismatched base URL found while preparing: the login says so.
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &server, &who, "");
    let localhost = server.url().replace("127.0.0.1", "localhost");
    set_url(&config, &server.url(), &localhost);
    let out = common::cli(&["once", "-c", config.to_str().unwrap()], &[]).await;
    let (_, stderr) = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("app.url at /settings.json"), "{stderr}");
}

/// `init` takes server.url from the kit's domain: the same check, before
/// anything is written, says which of the two differs.
#[tokio::test(flavor = "multi_thread")]
async fn init_names_the_kits_domain_and_the_servers_base_url() {
    let server = common::devserver(Options::default()).await;
    let alice = fixture("alice");
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::write(&kit, common::account_kit(&server, &alice)).unwrap();
    let announced = format!("{}/passbolt", server.url());
    server.set_full_base_url(Some(&format!("{announced}/")));
    let dir = tmp.path().join("etc");
    let out = common::cli(
        &[
            "init",
            "--account-kit",
            kit.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = common::text(&out);
    eprintln!("MESSAGE init:\n{stdout}{stderr}");
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "the account kit's domain is {}, but the server there announces its base URL as {announced} (app.url at /settings.json)",
            server.url()
        )),
        "{stderr}"
    );
    assert!(!dir.exists(), "nothing written");
    assert_eq!(challenges(&server), 0);
}

/// A daemon that ticks, refreshes and logs in again makes the check's
/// request once, at its first login: the idle tick's cost is unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_checks_once_whatever_it_logs_in_again() {
    let server = common::devserver(Options {
        access_token_ttl: std::time::Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(
        dir.path(),
        &server,
        &fixture("bob"),
        &format!(
            "schedule: every 1s\ntargets:\n  - {{ path: {}/pin, format: raw, resource: {}, field: pin }}\n",
            dir.path().display(),
            passbolt_devserver::seed::ids::V5_PIN
        ),
    );
    let d = common::Daemon::start(&config, &[]).await;
    let pin = dir.path().join("pin");
    assert!(
        common::wait_until(std::time::Duration::from_secs(15), || pin.exists()).await,
        "{}",
        d.log()
    );
    // Two 401s in a row: a refresh, then a full login.
    server.set_faults(Faults {
        unauthorized_next: 2,
        ..Faults::default()
    });
    assert!(
        common::wait_until(std::time::Duration::from_secs(15), || server.count_logins()
            >= 2)
        .await,
        "{}",
        d.log()
    );
    let requests = server.count_requests();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    eprintln!(
        "COST daemon: {} logins, {} refreshes, {} requests in all, {} GET /settings.json; {} requests in the last 3 s of idle ticks",
        server.count_logins(),
        server.count_refreshes(),
        server.count_requests(),
        settings_requests(&server),
        server.count_requests() - requests
    );
    assert_eq!(settings_requests(&server), 1, "{log}");
}
