//! The incremental pass, with the real binary against the dev server: a
//! warm tick lists without secrets and downloads none, a change downloads
//! exactly the changed secret, and the full sync re-reads everything and
//! finds nothing the incremental passes missed.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, devserver, fixture, wait_until, write_config};
use passbolt_devserver::{Options, seed::ids};

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

use crate::common::set_pin;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_ticks_download_nothing_and_a_change_downloads_exactly_it() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("bob");
    let config = write_config(dir.path(), &server, &who, &targets(dir.path(), ""));
    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;

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
        wait_until(Duration::from_secs(30), || warm(&d.log()) >= 1).await,
        "{}",
        d.log()
    );
    let reads = server.count_secret_reads();
    assert!(
        wait_until(Duration::from_secs(30), || warm(&d.log()) >= 11).await,
        "{}",
        d.log()
    );
    assert_eq!(
        server.count_secret_reads(),
        reads,
        "ten warm ticks: no secret-access row on the server"
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
    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;
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
    use passbolt_client::{MAX_URL_BYTES, api};
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

/// A client, its plan and an empty `Held` for library-level passes.
fn pass_setup(
    server: &passbolt_devserver::DevServer,
    who: &'static str,
    dir: &Path,
    targets: &str,
) -> (
    passbolt_client::Client,
    passbolt_sync::sync::plan::Plan,
    passbolt_sync::sync::held::Held,
) {
    let who = fixture(who);
    let config = write_config(dir, server, &who, targets);
    let config = passbolt_sync::config::Config::load(&config).unwrap();
    (
        common::client(server, &who),
        passbolt_sync::sync::plan::Plan::build(&config).unwrap(),
        passbolt_sync::sync::held::Held::new(),
    )
}

async fn pass(
    client: &passbolt_client::Client,
    plan: &passbolt_sync::sync::plan::Plan,
    held: &mut passbolt_sync::sync::held::Held,
) -> passbolt_sync::sync::PassReport {
    passbolt_sync::sync::run_pass(client, plan, held, None, Default::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn two_changes_of_one_secret_within_one_second_both_reach_the_file() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let (client, plan, mut held) = pass_setup(
        &server,
        "alice",
        out,
        &format!(
            "targets:\n  - {{ path: {}/pin, format: raw, resource: {}, field: pin }}\n",
            out.display(),
            ids::V5_PIN
        ),
    );
    // Every stamp of this test falls in one server second, T.
    let t = server.now() + 5;
    server.set_clock(Some(t));
    set_pin(&server, "11110000");
    let r = pass(&client, &plan, &mut held).await;
    assert_eq!(r.cost.secrets_downloaded, 1);
    assert_eq!(read(&out.join("pin")), "11110000");

    // The second edit keeps the stamp: only the unsettled rule sees it.
    set_pin(&server, "22220000");
    let stamp = server.modified(ids::V5_PIN).unwrap();
    assert_eq!(passbolt_sync::sync::held::modified_epoch(&stamp), Some(t));
    let r = pass(&client, &plan, &mut held).await;
    assert_eq!(
        r.cost.secrets_downloaded, 1,
        "downloaded again: the stamp was unsettled"
    );
    assert_eq!(read(&out.join("pin")), "22220000");

    // Two seconds on, one more download settles it; then nothing.
    server.set_clock(Some(t + 2));
    let r = pass(&client, &plan, &mut held).await;
    assert_eq!(r.cost.secrets_downloaded, 1);
    let r = pass(&client, &plan, &mut held).await;
    assert_eq!(r.cost.secrets_downloaded, 0);
    assert_eq!(r.cost.private_key_operations, 0);
    server.set_clock(None);
}

#[tokio::test]
async fn a_newly_shared_resource_is_new_and_an_unshared_one_follows_on_missing() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let alice = fixture("alice").id;
    let bob = fixture("bob").id;
    // A resource only bob reads, yet.
    let mut seed = server
        .resources()
        .into_iter()
        .find(|r| r.id == ids::V4_PASSWORD_DESCRIPTION)
        .unwrap();
    seed.id = "3c2b5e1a-0000-4000-8003-000000000001".into();
    seed.name = "Shared later".into();
    seed.readers = vec![bob];
    server.add_resource(seed.clone()).unwrap();
    let (client, plan, mut held) = pass_setup(
        &server,
        "alice",
        out,
        &format!(
            "targets:\n  - {{ path: {}/later, format: raw, resource: {}, on_missing: remove }}\n",
            out.display(),
            seed.id
        ),
    );
    let target = out.join("later");
    let r = pass(&client, &plan, &mut held).await;
    // Missing, and nothing to remove.
    assert!(
        matches!(r.targets[0].status, passbolt_sync::sync::Status::Unchanged),
        "{:?}",
        r.targets
    );
    assert!(!target.exists());

    // Sharing keeps `modified`: the id appearing is what makes it new.
    let stamp = server.modified(&seed.id);
    server.share(&seed.id, &alice).unwrap();
    assert_eq!(server.modified(&seed.id), stamp);
    let r = pass(&client, &plan, &mut held).await;
    assert!(r.all_current(), "{:?}", r.targets);
    assert_eq!(r.cost.secrets_downloaded, 1);
    assert_eq!(read(&target), "smtp-pass-v4");
    assert_eq!(held.len(), 1);

    server.revoke(&seed.id, &alice);
    let r = pass(&client, &plan, &mut held).await;
    assert!(
        matches!(r.targets[0].status, passbolt_sync::sync::Status::Removed),
        "{:?}",
        r.targets
    );
    assert!(!target.exists());
    assert_eq!(held.len(), 0, "a secret no longer listed is no longer held");
}

#[tokio::test]
async fn a_metadata_key_rotation_drops_everything_held() {
    for bump_modified in [false, true] {
        let server = devserver(Options::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let (client, plan, mut held) =
            pass_setup(&server, "bob", dir.path(), &targets(dir.path(), ""));
        // Settled stamps: the seed is older than the server clock by 2 s.
        server.set_clock(Some(server.now() + 3));
        let r = pass(&client, &plan, &mut held).await;
        assert_eq!(r.cost.secrets_downloaded, 5);
        let r = pass(&client, &plan, &mut held).await;
        assert_eq!(r.cost.secrets_downloaded, 0);

        server.rotate_metadata_key(bump_modified).unwrap();
        let r = pass(&client, &plan, &mut held).await;
        assert!(r.all_current(), "{:?}", r.targets);
        assert_eq!(
            r.cost.secrets_downloaded, 5,
            "every held secret downloaded again (bump_modified: {bump_modified})"
        );
        assert!(
            r.targets
                .iter()
                .all(|t| matches!(t.status, passbolt_sync::sync::Status::Unchanged)),
            "{:?}",
            r.targets
        );
        // Stamps the rotation moved are unsettled once more; then quiet.
        server.set_clock(Some(server.now() + 3));
        let r = pass(&client, &plan, &mut held).await;
        let moved = if bump_modified { 3 } else { 0 };
        assert_eq!(r.cost.secrets_downloaded, moved, "the v5 resources");
        let r = pass(&client, &plan, &mut held).await;
        assert_eq!(r.cost.secrets_downloaded, 0);
        assert_eq!(r.cost.private_key_operations, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_and_check_read_no_secret_and_once_reads_only_the_mapped_ones() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let config = write_config(
        dir.path(),
        &server,
        &who,
        &format!(
            "targets:\n  - {{ path: {out}/pin, format: raw, resource: {pin}, field: pin }}\n  - path: {out}/db.env\n    format: dotenv\n    folder: Production/myapp\n",
            out = dir.path().display(),
            pin = ids::V5_PIN
        ),
    );
    let c = config.to_str().unwrap();
    let out = common::cli(&["resources", "-c", c], &[]).await;
    assert!(out.status.success(), "{:?}", common::text(&out));
    let out = common::cli(&["check", "--online", "-c", c], &[]).await;
    assert!(out.status.success(), "{:?}", common::text(&out));
    assert_eq!(
        server.count_secret_reads(),
        0,
        "resources and check --online read no secret"
    );

    let out = common::cli(&["once", "-c", c], &[]).await;
    assert!(out.status.success(), "{:?}", common::text(&out));
    let mut read: Vec<String> = server
        .secret_reads()
        .into_iter()
        .map(|(u, r)| {
            assert_eq!(u, who.id);
            r
        })
        .collect();
    read.sort();
    let mut want = vec![
        ids::V5_PIN.to_string(),
        ids::MYAPP_DB.to_string(),
        ids::MYAPP_API.to_string(),
    ];
    want.sort();
    assert_eq!(read, want, "once reads the mapped secrets, each once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_auth_in_the_config_drops_everything_held() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let config = write_config(dir.path(), &server, &who, &targets(dir.path(), ""));
    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;
    let last_downloaded = |log: &str| pass_lines(log).last().map(|(_, c)| c.secrets_downloaded);
    assert!(
        wait_until(Duration::from_secs(30), || last_downloaded(&d.log())
            == Some(0))
        .await,
        "{}",
        d.log()
    );
    // The same account, its passphrase read from another file: `auth`
    // changed, so the daemon logs in again and trusts nothing it held.
    let text = std::fs::read_to_string(&config).unwrap();
    let pass = dir.path().join(format!("{}.pass", who.name));
    let moved = dir.path().join("passphrase-2");
    std::fs::copy(&pass, &moved).unwrap();
    let text = text.replace(pass.to_str().unwrap(), moved.to_str().unwrap());
    let tmp = dir.path().join("sync.yaml.new");
    std::fs::write(&tmp, text).unwrap();
    let before = pass_lines(&d.log()).len();
    std::fs::rename(&tmp, &config).unwrap();
    assert!(
        d.wait_log("relogin=true", 1, Duration::from_secs(10)).await,
        "{}",
        d.log()
    );
    let full = |log: &str| {
        pass_lines(log)[before..]
            .iter()
            .any(|(_, c)| c.secrets_downloaded == 5)
    };
    assert!(
        wait_until(Duration::from_secs(10), || full(&d.log())).await,
        "{}",
        d.log()
    );
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
}
