//! Warm restarts: with a state directory, a restarted daemon or the next
//! `once` run downloads no secret whose resource did not change, and
//! anything that does not match (a file edited, a secret changed while
//! stopped, a state file corrupt, truncated, foreign or unsafe) makes the
//! target cold, never wrong.

use crate::common;
use crate::incremental::{pass_lines, targets};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, cli, devserver, fixture, set_pin, text, write_config};
use passbolt_devserver::{DevServer, Options};

struct Setup {
    server: DevServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let server = devserver(Options::default()).await;
        // Frozen with the seeded stamps settled: the first run records them.
        server.set_clock(Some(server.now() + 3));
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("state_dir: {}\n", dir.path().join("state").display());
        let config = write_config(
            dir.path(),
            &server,
            &fixture("alice"),
            &targets(dir.path(), &extra),
        );
        Setup {
            server,
            dir,
            config,
        }
    }

    /// One `once` run: its pass line's secrets_downloaded, and its log.
    async fn once(&self) -> (u64, String) {
        let out = cli(
            &["once", "-c", self.config.to_str().unwrap()],
            &[("RUST_LOG", "passbolt_sync=debug")],
        )
        .await;
        let (stdout, log) = text(&out);
        assert!(out.status.success(), "{stdout}\n{log}");
        let lines = pass_lines(&log);
        assert_eq!(lines.len(), 1, "{log}");
        (lines[0].1.secrets_downloaded, log)
    }

    fn state_file(&self) -> PathBuf {
        let dir = self.dir.path().join("state");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_daemon_restarts_read_no_secret_after_the_first() {
    let s = Setup::new().await;
    let mut reads_after_first = None;
    for run in 0..11 {
        let d = Daemon::start(&s.config, &[("RUST_LOG", "passbolt_sync=debug")]).await;
        assert!(
            d.wait_log(" sync: ", 1, Duration::from_secs(30)).await,
            "{}",
            d.log()
        );
        let (_, log) = d.stop().await;
        let first = &pass_lines(&log)[0];
        if run == 0 {
            assert_eq!(first.1.secrets_downloaded, 5, "{}", first.0);
            reads_after_first = Some(s.server.count_secret_reads());
        } else {
            assert_eq!(first.1.secrets_downloaded, 0, "restart {run}: {}", first.0);
            assert!(first.0.contains("3 unchanged"), "{}", first.0);
        }
    }
    assert_eq!(
        Some(s.server.count_secret_reads()),
        reads_after_first,
        "no secret-access row after the first start"
    );
    let state = s.state_file();
    assert_eq!(mode(&state), 0o600);
    assert_eq!(mode(state.parent().unwrap()), 0o700);
    // Ids, stamps and digests only: no value, name or username.
    let content = std::fs::read_to_string(&state).unwrap();
    for known in common::known_secrets(&s.server, &fixture("alice")) {
        assert!(!content.contains(&known), "a value in the state file");
    }
    for word in ["Redis", "GitLab", "cache", "token"] {
        assert!(!content.contains(word), "{word} in {content}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timer_runs_are_warm_and_an_edit_or_a_change_while_stopped_is_cold() {
    let s = Setup::new().await;
    assert_eq!(s.once().await.0, 5);
    assert_eq!(s.once().await.0, 0, "nothing changed");

    // The pin's file edited while stopped: rewritten, its secret read.
    std::fs::write(s.dir.path().join("pin"), "tampered").unwrap();
    let (downloaded, log) = s.once().await;
    assert_eq!(downloaded, 1, "{log}");
    assert_eq!(s.read("pin"), "73019468");

    // The pin changed on the server while stopped: downloaded.
    set_pin(&s.server, "11112222");
    s.server.set_clock(Some(s.server.now() + 3));
    let (downloaded, log) = s.once().await;
    assert_eq!(downloaded, 1, "{log}");
    assert_eq!(s.read("pin"), "11112222");
    assert_eq!(s.once().await.0, 0);

    // A file removed while stopped is written again.
    std::fs::remove_file(s.dir.path().join("legacy")).unwrap();
    assert_eq!(s.once().await.0, 1);
    assert_eq!(s.read("legacy"), "legacy-db-pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_truncated_foreign_or_unsafe_state_file_makes_every_target_cold() {
    let s = Setup::new().await;
    assert_eq!(s.once().await.0, 5);
    let state = s.state_file();
    let good = std::fs::read_to_string(&state).unwrap();
    let env_before = s.read("app.env");

    let foreign = good.replacen(&s.server.url(), "https://other.example", 1);
    assert_ne!(foreign, good);
    type Spoil<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "corrupt",
            Box::new(|| std::fs::write(&state, "{ not json").unwrap()),
        ),
        (
            "truncated",
            Box::new(|| std::fs::write(&state, &good[..good.len() / 2]).unwrap()),
        ),
        (
            "foreign",
            Box::new(|| std::fs::write(&state, &foreign).unwrap()),
        ),
        (
            "unsafe",
            Box::new(|| {
                std::fs::write(&state, &good).unwrap();
                std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();
            }),
        ),
    ];
    for (what, spoil) in cases {
        spoil();
        let (downloaded, log) = s.once().await;
        assert_eq!(downloaded, 5, "{what}: every target cold: {log}");
        assert!(
            log.contains("sync state not used; every target starts cold"),
            "{what}: {log}"
        );
        assert_eq!(s.read("pin"), "73019468", "{what}");
        assert_eq!(s.read("app.env"), env_before, "{what}");
        // Rewritten whole and safe by that run: the next is warm.
        assert_eq!(mode(&state), 0o600);
        assert_eq!(s.once().await.0, 0, "{what}: warm again");
    }

    // Another plan for a target (its field) is cold for that target only.
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, config.replace("field: pin", "field: name")).unwrap();
    let (downloaded, log) = s.once().await;
    assert_eq!(downloaded, 0, "a metadata field reads no secret: {log}");
    assert!(log.contains("1 update"), "{log}");
    assert_eq!(s.read("pin"), "Server room");
}

/// The listings of `/resources.json` since request `from`: `true` for one
/// that lists everything (no `filter[has-id]`/`filter[has-parent]`).
fn full_listings(server: &DevServer, from: usize) -> usize {
    server.requests()[from..]
        .iter()
        .filter(|(p, q, _)| {
            p == "/resources.json"
                && !q.contains("secret")
                && !q.contains("filter%5Bhas-")
                && !q.contains("filter[has-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_what_names_and_folders_resolved_to_until_the_next_resolution() {
    let server = devserver(Options::default()).await;
    server.set_clock(Some(server.now() + 3));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display();
    let extra = format!(
        "state_dir: {out}/state\nschedule: every 1s\ntargets:\n  - {{ path: {out}/gitlab, format: raw, name: GitLab }}\n  - path: {out}/app.env\n    format: dotenv\n    vars:\n      PIN: {{ name: Server room, field: pin }}\n  - {{ path: {out}/myapp.env, format: dotenv, folder: Production/myapp }}\n",
    );
    let config = write_config(dir.path(), &server, &fixture("bob"), &extra);
    let folder_trees = |server: &DevServer, from: usize| {
        server.requests()[from..]
            .iter()
            .filter(|(p, _, _)| p == "/folders.json")
            .count()
    };
    let once = |server: &DevServer| {
        let from = server.requests().len();
        let config = config.clone();
        async move {
            let out = cli(
                &["once", "-c", config.to_str().unwrap()],
                &[("RUST_LOG", "passbolt_sync=debug")],
            )
            .await;
            let (stdout, log) = text(&out);
            let lines = crate::incremental::pass_lines(&log);
            assert_eq!(lines.len(), 1, "{stdout}\n{log}");
            (from, lines[0].1.secrets_downloaded, out.status.success())
        }
    };
    // Cold: names are resolved on a full listing.
    let (from, downloaded, ok) = once(&server).await;
    assert!(ok);
    assert_eq!(full_listings(&server, from), 1);
    assert!(downloaded > 2, "{downloaded}");
    let myapp = std::fs::read_to_string(dir.path().join("myapp.env")).unwrap();
    // Warm: the recorded resolution is listed by id and by folder (the
    // folder tree alone names its path), nothing downloaded.
    for _ in 0..3 {
        let (from, downloaded, ok) = once(&server).await;
        assert!(ok);
        let requests = &server.requests()[from..];
        assert_eq!(full_listings(&server, from), 0, "{requests:?}");
        assert_eq!(folder_trees(&server, from), 1, "{requests:?}");
        assert_eq!(downloaded, 0);
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("myapp.env")).unwrap(),
        myapp
    );
    let state = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let content = std::fs::read_to_string(&state).unwrap();
    for word in ["GitLab", "Server room"] {
        assert!(
            !content.contains(word),
            "a name in the state file: {content}"
        );
    }
    // Renamed while stopped: the recorded id no longer resolves, so the
    // name is resolved again in full, in the same pass, and is missing.
    let gitlab = server.resource_ids_named("GitLab")[0].clone();
    server.rename(&gitlab, "GitLab (old)").unwrap();
    server.set_clock(Some(server.now() + 3));
    let (from, _, ok) = once(&server).await;
    assert!(!ok, "GitLab is missing: the file is kept and once fails");
    assert_eq!(full_listings(&server, from), 1);
    // A selector changed while stopped resolves anew, whatever was recorded.
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("name: GitLab }", "name: \"GitLab (old)\" }");
    std::fs::write(&config, edited).unwrap();
    let (from, _, ok) = once(&server).await;
    assert!(ok);
    assert_eq!(full_listings(&server, from), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("gitlab")).unwrap(),
        "g1t$lab \"pa ss\" `x` #1 ü"
    );
}
