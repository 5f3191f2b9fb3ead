//! `rotate:` in the daemon, with the real binary, the dev server over HTTP
//! and real `apply` scripts: a value is applied, put in use in the
//! targets at once, stored for every user with access and the expiry mark
//! cleared; a failing apply stores nothing; an outage or a SIGKILL between
//! apply and the store loses nothing (the recovery file); a `modified` that
//! moved aborts the store; no value reaches a log, the metrics, the status
//! or `--dry-run`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::common;

use common::{Daemon, cli, devserver, fixture, password_of, wait_until, write_config};
use passbolt_devserver::{DevServer, Options, READ, seed::ids};
use serde_json::Value;

const ID: &str = ids::V5_DEFAULT;

/// Trace logs of both crates, and retries within a second.
const ENV: &[(&str, &str)] = &[
    ("RUST_LOG", "passbolt_sync=trace,passbolt_client=trace"),
    ("PASSBOLT_SYNC_TEST_BACKOFF", "50ms 500ms"),
];

/// What the `apply` script does with its input.
#[derive(Clone, Copy)]
enum Script {
    /// Appends it to `applied.jsonl` and echoes it to stdout and stderr.
    Record,
    /// The same, then waits for the file `go`.
    RecordAndWait,
    /// Counts the attempt in `attempts` and exits 3.
    Fail,
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A config for admin with a raw target and a dotenv target that read
    /// the rotated resource, a state directory, a status file, a metrics
    /// textfile and one rotation of `ID` (`when` is its YAML).
    fn new(server: &DevServer, when: &str, script: Script) -> Setup {
        Setup::new_for(server, "admin", when, script)
    }

    /// The same, for the account `who`.
    fn new_for(server: &DevServer, who: &'static str, when: &str, script: Script) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let apply = d.join("apply.sh");
        let body = match script {
            Script::Record => RECORD.to_string(),
            Script::RecordAndWait => format!("{RECORD}{WAIT}"),
            Script::Fail => "#!/bin/sh\ncat > /dev/null\necho attempt >> \"$(dirname \"$0\")/attempts\"\nexit 3\n".into(),
        };
        std::fs::write(&apply, body).unwrap();
        std::fs::set_permissions(&apply, std::fs::Permissions::from_mode(0o755)).unwrap();
        let extra = format!(
            "schedule: every 1s\nstate_dir: {d}/state\nstatus_file: {d}/status.json\nmetrics:\n  textfile: {d}/metrics.prom\n\
             targets:\n  - path: {d}/out/db.password\n    format: raw\n    create_dirs: true\n    resource: {ID}\n\
             \x20 - path: {d}/out/app.env\n    format: dotenv\n    create_dirs: true\n    vars:\n      DB: {{ resource: {ID} }}\n      LEGACY: {{ resource: {legacy} }}\n\
             rotate:\n  - resource: {ID}\n    {when}\n    apply:\n      command: [{apply}]\n      timeout: 20s\n",
            d = d.display(),
            legacy = ids::V4_PASSWORD_STRING,
            apply = apply.display(),
        );
        let config = write_config(d, server, &fixture(who), &extra);
        Setup { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What `apply` was given, one object per run.
    fn applied(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("applied.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn target(&self) -> String {
        std::fs::read_to_string(self.path("out/db.password")).unwrap_or_default()
    }

    fn recovery_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path("state"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("rotation-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn go(&self) {
        std::fs::write(self.path("go"), "").unwrap();
    }

    /// The status file, `null` until the daemon wrote it.
    fn status(&self) -> Value {
        std::fs::read(self.path("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    fn metrics(&self) -> String {
        std::fs::read_to_string(self.path("metrics.prom")).unwrap_or_default()
    }
}

const RECORD: &str = "#!/bin/sh\nin=$(cat)\nprintf '%s\\n' \"$in\" >> \"$(dirname \"$0\")/applied.jsonl\"\nprintf 'applying %s\\n' \"$in\"\nprintf 'applying %s\\n' \"$in\" >&2\n";
const WAIT: &str = "while [ ! -e \"$(dirname \"$0\")/go\" ]; do sleep 0.05; done\n";

async fn eventually(within: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(within, cond).await, "timed out: {what}");
}

fn assert_no_value(text: &str, values: &[&str], what: &str) {
    for v in values {
        assert!(!v.is_empty());
        assert!(!text.contains(v), "{what} holds a value: {v}");
    }
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_password_is_rotated_for_every_user_with_access_and_its_mark_cleared() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    // bob (RSA-3072) reads it directly, alice (Curve25519) through a group.
    server.revoke(ID, &alice.id);
    let ops = server.add_group("ops", &[alice.id.as_str()]);
    server.share_with_group(ID, &ops, READ).unwrap();
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let old = password_of(&server, "admin", ID).await;
    // Letters and digits: the policy's symbols may be quoted in the
    // dotenv file, or be more than a portable dotenv can carry, and this
    // test compares the file's bytes with the value.
    let s = Setup::new(
        &server,
        "when: expired\n    generate: { length: 40, characters: alphanumeric }",
        Script::Record,
    );
    let d = Daemon::start(&s.config, ENV).await;

    eventually(Duration::from_secs(30), "the rotation", || {
        s.applied().len() == 1 && server.expired(ID).is_none() && s.recovery_files().is_empty()
    })
    .await;
    let input = &s.applied()[0];
    assert_eq!(input["version"], 1);
    assert_eq!(input["resource_id"], ID);
    assert_eq!(input["field"], "password");
    assert_eq!(input["old"], old.as_str());
    assert_eq!(input["resumed"], false);
    let new = input["new"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    for who in ["admin", "bob", "alice"] {
        assert_eq!(password_of(&server, who, ID).await, new, "{who}");
    }
    eventually(Duration::from_secs(10), "the targets", || s.target() == new).await;
    // Each target is written in turn: the dotenv one may follow the raw one.
    let app_env = s.path("out/app.env");
    eventually(Duration::from_secs(10), "the dotenv target", || {
        std::fs::read_to_string(&app_env).is_ok_and(|env| env.contains(&new))
    })
    .await;
    eventually(Duration::from_secs(10), "the status", || {
        s.status()["rotations"][0]["last_result"] == "rotated"
    })
    .await;
    // The mark is cleared: nothing more is due.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.applied().len(), 1);

    let status = cli(&["status", "-c", s.config.to_str().unwrap()], &[]).await;
    let (table, _) = common::text(&status);
    assert_eq!(status.status.code(), Some(0), "{table}");
    assert!(table.contains(&format!("{ID}/password")), "{table}");
    let metrics = s.metrics();
    assert_eq!(
        metric(
            &metrics,
            &format!("passbolt_sync_rotations_total{{resource=\"{ID}\",field=\"password\"}}")
        ),
        1.0
    );
    let (_, log) = d.stop().await;
    assert!(log.contains("apply output discarded unread"), "{log}");
    assert!(
        log.contains("rotated: the new value is applied and stored"),
        "{log}"
    );
    let status_file = std::fs::read_to_string(s.path("status.json")).unwrap();
    for (text, what) in [
        (&log, "the trace log"),
        (&table, "status"),
        (&metrics, "the metrics"),
        (&status_file, "the status file"),
    ] {
        assert_no_value(text, &[&new, &old], what);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_apply_stores_nothing_is_counted_and_tried_again_at_the_next_tick() {
    let server = devserver(Options::default()).await;
    let before = (
        server.modified(ID),
        server.stored_secret(ID, &fixture("admin").id),
    );
    // Due at once: the seeded secret is older than a second by then.
    let s = Setup::new(&server, "every: 1s", Script::Fail);
    let d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "two attempts", || {
        std::fs::read_to_string(s.path("attempts"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    })
    .await;
    eventually(Duration::from_secs(10), "the failure in the status", || {
        s.status()["rotations"][0]["last_result"] == "failed"
    })
    .await;
    let status = cli(&["status", "-c", s.config.to_str().unwrap()], &[]).await;
    let (table, _) = common::text(&status);
    assert_eq!(status.status.code(), Some(1), "{table}");
    assert!(table.contains("failed: "), "{table}");
    let (_, log) = d.stop().await;
    assert!(
        log.contains(&format!("rotation of password of resource {ID}")),
        "{log}"
    );
    assert_eq!(
        (
            server.modified(ID),
            server.stored_secret(ID, &fixture("admin").id)
        ),
        before,
        "nothing stored"
    );
    assert!(s.recovery_files().is_empty());
    let reason = s.status()["rotations"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("apply failed: exit code 3"), "{reason}");
    let failures = metric(
        &s.metrics(),
        &format!(
            "passbolt_sync_rotation_failures_total{{resource=\"{ID}\",field=\"password\",stage=\"apply\"}}"
        ),
    );
    assert!(failures >= 2.0, "{failures}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_after_apply_keeps_the_value_in_use_and_stores_it_once_the_server_is_back() {
    let mut server = devserver(Options::default()).await;
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let s = Setup::new(&server, "when: expired", Script::RecordAndWait);
    let d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "apply", || s.applied().len() == 1).await;
    server.stop().await;
    s.go();
    let new = s.applied()[0]["new"].as_str().unwrap().to_string();
    // Rendered from what the daemon holds, with the server down.
    eventually(Duration::from_secs(10), "the target", || s.target() == new).await;
    let files = s.recovery_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    eventually(Duration::from_secs(10), "pending in the status", || {
        s.status()["rotations"][0]["last_result"] == "pending"
    })
    .await;
    server.restart().await.unwrap();
    eventually(Duration::from_secs(30), "the store", || {
        s.recovery_files().is_empty()
    })
    .await;
    for who in ["admin", "bob", "alice"] {
        assert_eq!(password_of(&server, who, ID).await, new, "{who}");
    }
    let stores = metric(
        &s.metrics(),
        &format!(
            "passbolt_sync_rotation_failures_total{{resource=\"{ID}\",field=\"password\",stage=\"store\"}}"
        ),
    );
    assert!(stores >= 1.0, "{stores}");
    let (_, log) = d.stop().await;
    assert!(
        log.contains("the rotated value is in use but not stored yet"),
        "{log}"
    );
    assert_no_value(&log, &[&new], "the trace log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_between_apply_and_the_store_is_finished_from_the_recovery_file_at_the_next_start()
 {
    let mut server = devserver(Options::default()).await;
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let s = Setup::new(&server, "when: expired", Script::RecordAndWait);
    let mut d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "apply", || s.applied().len() == 1).await;
    // The store cannot happen: the server is down.
    server.stop().await;
    s.go();
    let new = s.applied()[0]["new"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the target", || s.target() == new).await;
    eventually(
        Duration::from_secs(10),
        "the recovery file, applied",
        || {
            s.recovery_files()
                .first()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .is_some_and(|t| t.contains("\"applied\""))
        },
    )
    .await;
    d.child.start_kill().unwrap();
    d.child.wait().await.unwrap();
    server.restart().await.unwrap();

    let d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "the store", || {
        s.recovery_files().is_empty()
    })
    .await;
    for who in ["admin", "bob", "alice"] {
        assert_eq!(password_of(&server, who, ID).await, new, "{who}");
    }
    assert_eq!(s.applied().len(), 1, "apply ran once");
    assert_eq!(s.target(), new, "the restart never rendered the old value");
    let (_, log) = d.stop().await;
    assert!(log.contains("a rotated value awaits its store"), "{log}");
    assert_no_value(&log, &[&new], "the trace log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_while_apply_runs_runs_it_again_resumed_with_the_same_values() {
    let server = devserver(Options::default()).await;
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let s = Setup::new(&server, "when: expired", Script::RecordAndWait);
    let mut d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "apply", || s.applied().len() == 1).await;
    d.child.start_kill().unwrap();
    d.child.wait().await.unwrap();
    let d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "apply again", || {
        s.applied().len() == 2
    })
    .await;
    s.go();
    eventually(Duration::from_secs(30), "the store", || {
        s.recovery_files().is_empty()
    })
    .await;
    let runs = s.applied();
    assert_eq!(runs[1]["resumed"], true);
    assert_eq!(runs[1]["new"], runs[0]["new"]);
    assert_eq!(runs[1]["old"], runs[0]["old"]);
    let new = runs[0]["new"].as_str().unwrap();
    assert_eq!(password_of(&server, "bob", ID).await, new);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_modified_that_moved_under_the_rotation_aborts_the_store_and_keeps_the_recovery_file() {
    let server = devserver(Options::default()).await;
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let s = Setup::new(&server, "when: expired", Script::RecordAndWait);
    let d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(30), "apply", || s.applied().len() == 1).await;
    // `modified` has one-second precision: another second for the edit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let theirs = "changed-by-someone-else";
    server
        .set_secret(
            ID,
            &format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","password":"{theirs}","description":null,"custom_fields":null}}"#
            ),
        )
        .unwrap();
    // Someone who rotates by hand clears the mark too.
    server.set_expired(ID, None);
    s.go();
    let new = s.applied()[0]["new"].as_str().unwrap().to_string();
    assert!(
        d.wait_log("was changed by someone else", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.log()
    );
    eventually(
        Duration::from_secs(10),
        "the conflict in the status",
        || s.status()["rotations"][0]["last_result"] == "conflict",
    )
    .await;
    let reason = s.status()["rotations"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&format!("resource {ID} was changed by someone else")),
        "{reason}"
    );
    assert_eq!(s.recovery_files().len(), 1, "kept: the value is in use");
    assert_eq!(
        password_of(&server, "admin", ID).await,
        theirs,
        "not overwritten"
    );
    assert_eq!(s.target(), new, "the applied value stays in use");
    // No further attempt while the operator has not decided.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.applied().len(), 1);
    // The operator decides for passbolt's value: the file goes, theirs is used.
    std::fs::remove_file(&s.recovery_files()[0]).unwrap();
    eventually(
        Duration::from_secs(15),
        "passbolt's value in the target",
        || s.target() == theirs,
    )
    .await;
    let (_, log) = d.stop().await;
    assert_no_value(&log, &[&new], "the trace log");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_lists_what_would_rotate_and_when_and_changes_nothing() {
    let server = devserver(Options::default()).await;
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let s = Setup::new(&server, "when: expired", Script::Record);
    // A second rotation, not due for 30 days.
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "  - resource: {}\n    every: 30d\n    apply:\n      command: [/bin/false]\n",
        ids::V4_PASSWORD_DESCRIPTION
    ));
    std::fs::write(&s.config, text).unwrap();
    let before = server.modified(ID);
    let c = s.config.to_str().unwrap();
    let out = cli(&["once", "--dry-run", "-vv", "-c", c], &[]).await;
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "rotate     password of resource {ID}: due now (passbolt marks the password expired since 2020-01-01 00:00:00 UTC)"
        )),
        "{stdout}"
    );
    let second = format!(
        "rotate     password of resource {}: next due ",
        ids::V4_PASSWORD_DESCRIPTION
    );
    assert!(stdout.contains(&second), "{stdout}");
    assert!(s.applied().is_empty(), "apply did not run");
    assert_eq!(server.modified(ID), before);
    assert!(server.expired(ID).is_some());
    let old = password_of(&server, "admin", ID).await;
    let mut secrets = common::known_secrets(&server, &fixture("admin"));
    secrets.push(old);
    for v in &secrets {
        assert!(
            !stdout.contains(v.as_str()) && !stderr.contains(v.as_str()),
            "{v}"
        );
    }
    // `once` itself rotates nothing; `check` lists the rotations.
    let out = cli(&["once", "-c", c], &[]).await;
    assert!(out.status.success(), "{:?}", common::text(&out));
    assert!(s.applied().is_empty());
    let out = cli(&["check", "-c", c], &[]).await;
    let (stdout, _) = common::text(&out);
    assert!(
        stdout.contains(&format!("rotate password of resource {ID}: when expired")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_without_a_state_directory_refuses_to_start() {
    let server = devserver(Options::default()).await;
    let s = Setup::new(&server, "every: 30d", Script::Record);
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("state_dir:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&s.config, text).unwrap();
    let out = cli(&["run", "-c", s.config.to_str().unwrap()], &[]).await;
    let (_, stderr) = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rotations need a state directory"),
        "{stderr}"
    );
    let out = cli(&["check", "-c", s.config.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_account_is_refused_before_anything_changes() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server.set_permission(ID, &bob.id, READ).unwrap();
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let before = server.modified(ID);
    let s = Setup::new_for(&server, "bob", "when: expired", Script::Record);
    let d = Daemon::start(&s.config, ENV).await;
    eventually(Duration::from_secs(20), "the refusal in the status", || {
        s.status()["rotations"][0]["last_result"] == "failed"
    })
    .await;
    let (_, log) = d.stop().await;
    let reason = s.status()["rotations"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&format!("this account may only read resource {ID}")),
        "{reason}"
    );
    assert!(log.contains("may only read"), "{log}");
    assert!(s.applied().is_empty(), "apply never ran");
    assert!(s.recovery_files().is_empty());
    assert_eq!(server.modified(ID), before);
}

/// Under `exec`, a rotation reaches the child: it is restarted once with
/// the applied value in its environment, and nothing else of the rotation
/// changes (stored for every user, the recovery file gone).
#[tokio::test(flavor = "multi_thread")]
async fn under_exec_the_child_is_restarted_once_with_the_rotated_value() {
    let server = devserver(Options::default()).await;
    server.set_expired(ID, Some("2020-01-01T00:00:00+00:00"));
    let old = password_of(&server, "admin", ID).await;
    let s = Setup::new(&server, "when: expired", Script::Record);
    let mut yaml = std::fs::read_to_string(&s.config).unwrap();
    yaml.push_str(&format!(
        "exec:\n  env:\n    DB: {{ resource: {ID} }}\n  debounce: 100ms\n"
    ));
    std::fs::write(&s.config, yaml).unwrap();
    let starts = s.path("starts");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"));
    cmd.args(["exec", "-c", s.config.to_str().unwrap(), "--", "sh", "-c"])
        .arg(format!(
            "printf '%s\\n' \"$DB\" >> {}; exec sleep 60",
            starts.display()
        ))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM");
    for (k, v) in ENV {
        cmd.env(k, v);
    }
    let d = Daemon::spawn(cmd);
    eventually(Duration::from_secs(30), "the rotation", || {
        s.applied().len() == 1 && server.expired(ID).is_none() && s.recovery_files().is_empty()
    })
    .await;
    let new = s.applied()[0]["new"].as_str().unwrap().to_string();
    let lines = || {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(15), "the child restarted", || {
        lines().last() == Some(&new)
    })
    .await;
    // Started with the old value (or, had the rotation come first, with
    // the new one only), restarted once, never with the old after the new.
    let seen = lines();
    assert!(
        seen == [old.clone(), new.clone()] || seen == [new.clone()],
        "{seen:?}"
    );
    for who in ["admin", "bob"] {
        assert_eq!(password_of(&server, who, ID).await, new, "{who}");
    }
    let (_, log) = d.stop().await;
    assert_no_value(&log, &[&old, &new], "the exec log");
}
