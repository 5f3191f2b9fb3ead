//! The incremental pass, with the real binary against the dev server: a
//! warm tick lists without secrets and downloads none, a change downloads
//! exactly the changed secret, and the full sync re-reads everything and
//! finds nothing the incremental passes missed.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, devserver, fixture, wait_until, write_config};
use passbolt_sync::devserver::{Options, seed::ids};

/// The counters of one pass log line, e.g. `secrets_downloaded=0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassCost {
    pub requests: u64,
    pub secrets_downloaded: u64,
    pub private_key_operations: u64,
}

/// Every pass line of a daemon log, in order.
pub fn pass_lines(log: &str) -> Vec<(String, PassCost)> {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    log.lines()
        .filter(|l| l.contains(" sync: ") && l.contains("secrets_downloaded="))
        .map(|l| {
            (
                l.to_string(),
                PassCost {
                    requests: field(l, "requests"),
                    secrets_downloaded: field(l, "secrets_downloaded"),
                    private_key_operations: field(l, "private_key_operations"),
                },
            )
        })
        .collect()
}

/// Three targets over five resources, v4 and v5, shared and personal
/// metadata, raw and dotenv, with no folder selector (one request a tick).
pub fn targets(out: &Path, extra: &str) -> String {
    format!(
        "schedule: every 1s\n{extra}targets:\n  - {{ path: {out}/pin, format: raw, resource: {pin}, field: pin }}\n  - {{ path: {out}/legacy, format: raw, resource: {legacy} }}\n  - path: {out}/app.env\n    format: dotenv\n    vars:\n      GITLAB: {{ resource: {gitlab} }}\n      SMTP: {{ resource: {smtp} }}\n      REDIS: {{ resource: {redis} }}\n",
        out = out.display(),
        pin = ids::V5_PIN,
        legacy = ids::V4_PASSWORD_STRING,
        gitlab = ids::V5_DEFAULT,
        smtp = ids::V4_PASSWORD_DESCRIPTION,
        redis = ids::V5_PASSWORD_STRING,
    )
}

pub fn set_pin(server: &passbolt_sync::devserver::DevServer, pin: &str) {
    server
        .set_secret(
            ids::V5_PIN,
            &format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","pin_code":"{pin}","description":null}}"#
            ),
        )
        .unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_ticks_download_nothing_and_a_change_downloads_exactly_it() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("bob");
    let config = write_config(dir.path(), &server, &who, &targets(dir.path(), ""));
    let d = Daemon::start(&config, &[("RUST_LOG", "passbolt_sync=debug")]).await;

    // The seeded stamps are fresh at start, so the first passes download
    // them until they settle; then ten warm ticks in a row.
    let warm = |log: &str| {
        let lines = pass_lines(log);
        lines
            .iter()
            .rev()
            .take_while(|(_, c)| c.secrets_downloaded == 0)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || warm(&d.log()) >= 10).await,
        "{}",
        d.log()
    );
    let lines = pass_lines(&d.log());
    assert_eq!(
        lines[0].1.secrets_downloaded, 5,
        "the cold pass: {}",
        lines[0].0
    );
    for (line, cost) in lines.iter().rev().take(10) {
        assert_eq!(cost.private_key_operations, 0, "{line}");
        assert_eq!(cost.requests, 1, "one listing, nothing else: {line}");
    }
    assert_eq!(read(&dir.path().join("pin")), "73019468");

    // One secret changes: the next tick downloads it and nothing else.
    let before = pass_lines(&d.log()).len();
    set_pin(&server, "55550000");
    let updated = |log: &str| {
        pass_lines(log)[before..]
            .iter()
            .any(|(l, _)| l.contains("1 update"))
    };
    assert!(
        wait_until(Duration::from_secs(10), || updated(&d.log())).await,
        "{}",
        d.log()
    );
    assert_eq!(read(&dir.path().join("pin")), "55550000");
    let after = pass_lines(&d.log());
    let changed = after[before..]
        .iter()
        .find(|(l, _)| l.contains("1 update"))
        .unwrap_or_else(|| panic!("no update line: {}", d.log()));
    assert_eq!(changed.1.secrets_downloaded, 1, "{}", changed.0);
    // The pin is a v5 resource: the edit re-encrypted its metadata too.
    assert_eq!(changed.1.private_key_operations, 2, "{}", changed.0);
    assert_eq!(changed.1.requests, 2, "listing and download: {}", changed.0);
    assert_eq!(read(&dir.path().join("legacy")), "legacy-db-pass");

    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_sync_downloads_every_mapped_secret_again_and_finds_nothing_missed() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let config = write_config(
        dir.path(),
        &server,
        &who,
        &targets(dir.path(), "full_sync_every: 4s\n"),
    );
    let d = Daemon::start(&config, &[("RUST_LOG", "passbolt_sync=debug")]).await;
    assert!(
        d.wait_log(
            "full sync: every mapped secret downloaded again",
            1,
            Duration::from_secs(20)
        )
        .await,
        "{}",
        d.log()
    );
    let lines = pass_lines(&d.log());
    let full = lines
        .iter()
        .rev()
        .find(|(_, c)| c.secrets_downloaded == 5)
        .unwrap();
    assert_eq!(full.1.private_key_operations, 5, "{}", full.0);
    assert!(
        !d.log().contains("incremental passes missed"),
        "{}",
        d.log()
    );
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_sync_every_zero_disables_it() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let out = dir.path();
    let config = write_config(out, &server, &who, &targets(out, "full_sync_every: 0\n"));
    let check = common::cli(&["check", "-c", config.to_str().unwrap()], &[]).await;
    assert!(check.status.success(), "{:?}", common::text(&check));
    let config = passbolt_sync::config::Config::load(&config).unwrap();
    assert_eq!(config.full_sync_every, None);
    let bad = write_config(out, &server, &who, &targets(out, "full_sync_every: 5\n"));
    let err = passbolt_sync::config::Config::load(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sync.yaml:9:18: full_sync_every: 5 has no unit"),
        "{err}"
    );
    assert!(err.contains("has no unit"), "{err}");
}

#[tokio::test]
async fn downloads_are_batched_so_that_no_url_exceeds_8_kib() {
    use passbolt_sync::passbolt::{MAX_URL_BYTES, api};
    let server = devserver(Options::default()).await;
    let who = fixture("alice");
    let client = common::client(&server, &who);
    let mut ids: Vec<String> = (0..1000)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    ids[500] = ids::V5_PIN.to_string();
    ids[999] = ids::V4_TOTP.to_string();
    let batches = client.batches(&ids);
    assert_eq!(batches.concat(), ids, "every id once, in order");
    let per_id = api::HAS_ID_PARAM.len() + 1 + 36;
    for b in &batches {
        let url = format!("{}{}", server.url(), api::resources_path(true, b));
        assert!(url.len() <= MAX_URL_BYTES, "{} bytes", url.len());
    }
    // Full batches are full: no more requests than needed.
    let first = format!("{}{}", server.url(), api::resources_path(true, batches[0]));
    assert!(
        first.len() + per_id > MAX_URL_BYTES,
        "{} bytes",
        first.len()
    );

    // The resource types and metadata keys are fetched once per client.
    client.list(false).await.unwrap();
    let before = client.counters();
    let fetched = client.fetch_secrets(&ids).await.unwrap();
    let cost = client.counters() - before;
    assert_eq!(cost.requests as usize, batches.len());
    assert_eq!(cost.secrets_downloaded, 2);
    let mut got: Vec<&str> = fetched.keys().map(String::as_str).collect();
    got.sort();
    let mut want = vec![ids::V5_PIN, ids::V4_TOTP];
    want.sort();
    assert_eq!(got, want, "unknown ids are simply not listed");
}
