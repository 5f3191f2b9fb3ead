//! Servers of other versions and states: a passbolt 4 server without the
//! `/metadata` endpoints, and a v5 account no administrator has shared the
//! metadata key with yet (zero-knowledge mode).

use std::time::Duration;

use crate::common::{self, Daemon, fixture};
use passbolt_devserver::{Faults, Options, seed::ids};

const V4_PASSWORD: &str = "legacy-db-pass";
const PIN: &str = "73019468";

#[tokio::test(flavor = "multi_thread")]
async fn a_server_before_v5_syncs_its_v4_resources_and_check_says_what_it_lacks() {
    let server = common::devserver(Options::default()).await;
    server.set_faults(Faults {
        pre_v5: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v4");
    let config = common::write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &format!(
            "targets:\n  - {{ path: {}, format: raw, resource: {} }}\n",
            out.display(),
            ids::V4_PASSWORD_STRING
        ),
    );
    let c = config.to_str().unwrap();
    let once = common::cli(&["once", "-c", c], &[]).await;
    let (stdout, stderr) = common::text(&once);
    assert_eq!(once.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), V4_PASSWORD);

    let check = common::cli(&["check", "--online", "-c", c], &[]).await;
    let (stdout, stderr) = common::text(&check);
    assert_eq!(check.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("v5 metadata: none on this server (passbolt before v5); v4 resources only"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  ok   {}", out.display())),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_without_the_metadata_key_names_it_and_recovers_once_it_is_shared() {
    let server = common::devserver(Options::default()).await;
    let alice = fixture("alice");
    server.unshare_metadata_key(&alice.id);
    let fpr = server.metadata_key_fingerprints().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let (pin, v4) = (dir.path().join("pin"), dir.path().join("v4"));
    let config = common::write_config(
        dir.path(),
        &server,
        &alice,
        &format!(
            "schedule: every 1s\ntargets:\n  - {{ path: {}, format: raw, resource: {}, field: pin }}\n  - {{ path: {}, format: raw, resource: {} }}\n",
            pin.display(),
            ids::V5_PIN,
            v4.display(),
            ids::V4_PASSWORD_STRING
        ),
    );
    let c = config.to_str().unwrap();
    let message = format!(
        "the metadata key {fpr} is not shared with this account yet; an administrator must share it"
    );
    let check = common::cli(&["check", "--online", "-c", c], &[]).await;
    let (stdout, _) = common::text(&check);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("  {message}")), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "  FAIL {p}: target {p}: resource {}: {message}",
            ids::V5_PIN,
            p = pin.display()
        )),
        "{stdout}"
    );

    // The v4 target syncs; the v5 one waits, named, and is not created.
    let d = Daemon::start(&config, &[]).await;
    assert!(
        d.wait_log(&message, 2, Duration::from_secs(20)).await,
        "{}",
        d.log()
    );
    assert_eq!(std::fs::read_to_string(&v4).unwrap(), V4_PASSWORD);
    assert!(!pin.exists());

    server.share_metadata_key(&alice.id).unwrap();
    let written = common::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pin).is_ok_and(|p| p == PIN)
    })
    .await;
    assert!(written, "{}", d.log());
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(server.attacks().is_empty());
}
