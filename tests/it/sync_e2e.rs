//! `passbolt-sync once` end to end: the real binary against the dev server,
//! real files on disk, real hook processes.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{cli, devserver, fixture, text, write_config};
use passbolt_devserver::{DevServer, Faults, Options, SeedResource, seed::ids};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

async fn once(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["once", "-c", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cli(&args, &[]).await;
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

/// A config with one target of every format reading every resource type.
fn every_format(out: &Path) -> String {
    let o = out.display();
    format!(
        r#"targets:
  - {{ path: {o}/v4-string, format: raw, resource: {v4s} }}
  - {{ path: {o}/v4-desc, format: raw, resource: {v4d}, field: description }}
  - {{ path: {o}/v4-totp, format: raw, resource: {v4t}, field: totp }}
  - {{ path: {o}/v4-pdt, format: raw, resource: {v4pdt}, field: totp_uri }}
  - {{ path: {o}/v5-string, format: raw, resource: {v5s} }}
  - {{ path: {o}/v5-default, format: raw, name: GitLab, folder: Production }}
  - {{ path: {o}/v5-default-totp, format: raw, resource: {v5dt}, field: totp }}
  - {{ path: {o}/v5-totp, format: raw, resource: {v5t}, field: totp }}
  - {{ path: {o}/v5-custom, format: raw, resource: {v5c}, field: "custom:API token" }}
  - {{ path: {o}/v5-note, format: raw, resource: {v5n}, field: note }}
  - {{ path: {o}/v5-pin, format: raw, resource: {v5p}, field: pin }}
  - path: {o}/app.env
    format: dotenv
    vars:
      USER: {{ resource: {v5d}, field: username }}
      URI: {{ resource: {v5d}, field: uri }}
      NAME: {{ resource: {v4t}, field: name }}
      DESC: {{ resource: {v5d}, field: description }}
      SMTP: {{ name: SMTP relay }}
  - {{ path: {o}/myapp.json, format: json, folder: Production/myapp }}
  - {{ path: {o}/tpl.conf, format: template, template: {o}/../tpl.tmpl }}
"#,
        v4s = ids::V4_PASSWORD_STRING,
        v4d = ids::V4_PASSWORD_DESCRIPTION,
        v4t = ids::V4_TOTP,
        v4pdt = ids::V4_PASSWORD_DESCRIPTION_TOTP,
        v5s = ids::V5_PASSWORD_STRING,
        v5d = ids::V5_DEFAULT,
        v5dt = ids::V5_DEFAULT_TOTP,
        v5t = ids::V5_TOTP,
        v5c = ids::V5_CUSTOM_FIELDS,
        v5n = ids::V5_NOTE,
        v5p = ids::V5_PIN,
    )
}

struct Setup {
    server: DevServer,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Setup {
    fn out(&self) -> std::path::PathBuf {
        self.dir.path().join("out")
    }
}

async fn setup(who: &'static str, targets: impl FnOnce(&Path) -> String) -> Setup {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(
        dir.path().join("tpl.tmpl"),
        "{{ secret(\"Legacy DB\", \"username\") }}:{{ secret(\"3c2b5e1a-0000-4000-8000-000000000005\") }}\n",
    )
    .unwrap();
    let config = write_config(dir.path(), &server, &fixture(who), &targets(&out));
    Setup {
        server,
        dir,
        config,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn once_writes_every_format_from_every_resource_type() {
    for who in ["bob", "alice"] {
        let s = setup(who, every_format).await;
        let (code, stdout, stderr) = once(&s.config, &[]).await;
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let o = s.out();
        let totp = "JBSWY3DPEHPK3PXP";
        let expect: &[(&str, &str)] = &[
            ("v4-string", "legacy-db-pass"),
            ("v4-desc", "rotated monthly"),
            ("v4-totp", totp),
            (
                "v4-pdt",
                "otpauth://totp/Backup%20console%3Aroot?secret=JBSWY3DPEHPK3PXP&algorithm=SHA1&digits=6&period=30&issuer=Backup%20console",
            ),
            ("v5-string", "redis-pass-v5"),
            ("v5-default", "g1t$lab \"pa ss\" `x` #1 ü"),
            ("v5-default-totp", totp),
            ("v5-totp", totp),
            ("v5-custom", "tok-123456"),
            ("v5-note", "line one\nline two"),
            ("v5-pin", "73019468"),
            (
                "app.env",
                "DESC='secret description'\nNAME='VPN 2FA'\nSMTP='smtp-pass-v4'\nURI='https://gitlab.internal'\nUSER='gitlab-admin'\n",
            ),
            ("tpl.conf", "legacy:redis-pass-v5\n"),
        ];
        for (file, content) in expect {
            assert_eq!(read(&o.join(file)), *content, "{who}: {file}");
        }
        let json: serde_json::Value = serde_json::from_str(&read(&o.join("myapp.json"))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"API_KEY": "myapp-api-key", "DB_PASSWORD": "myapp-db-pass"})
        );
        for entry in std::fs::read_dir(&o).unwrap() {
            let meta = entry.unwrap().metadata().unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "default mode");
        }
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("create")).count(),
            14,
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_run_writes_nothing_and_fires_no_hook() {
    let s = setup("alice", |o| {
        format!(
            "targets:\n  - path: {o}/pin\n    format: raw\n    resource: {}\n    field: pin\n    on_change: 'echo \"$PASSBOLT_SYNC_TARGET\" >> {o}/../hook.log'\n",
            ids::V5_PIN,
            o = o.display()
        )
    })
    .await;
    let log = s.dir.path().join("hook.log");
    let pin = s.out().join("pin");
    assert_eq!(once(&s.config, &[]).await.0, 0);
    assert_eq!(read(&log), format!("{}\n", pin.display()));
    let before = std::fs::metadata(&pin).unwrap();
    let (code, stdout, _) = once(&s.config, &[]).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("unchanged"), "{stdout}");
    let after = std::fs::metadata(&pin).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    assert_eq!(
        read(&log).lines().count(),
        1,
        "no hook for an unchanged file"
    );
    // A change on the server: rewritten and the hook fires once more.
    let mut seed = s
        .server
        .resources()
        .into_iter()
        .find(|r| r.id == ids::V5_PIN)
        .unwrap();
    seed.secret =
        r#"{"object_type":"PASSBOLT_SECRET_DATA","pin_code":"9999","description":null}"#.into();
    s.server.add_resource(seed).unwrap();
    let (code, stdout, _) = once(&s.config, &[]).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("update"), "{stdout}");
    assert_eq!(read(&pin), "9999");
    assert_eq!(read(&log).lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_lists_changes_by_variable_name_and_never_a_value() {
    let s = setup("bob", every_format).await;
    let (code, stdout, stderr) = once(&s.config, &["--dry-run"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("create ")).count(),
        14,
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(s.out()).unwrap().count(),
        0,
        "dry run writes nothing"
    );

    assert_eq!(once(&s.config, &[]).await.0, 0);
    let old = read(&s.out().join("app.env"));
    s.server
        .set_secret(
            ids::V5_DEFAULT,
            r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"n3w-g1tlab","description":"new description"}"#,
        )
        .unwrap();
    let (code, stdout, stderr) = once(&s.config, &["--dry-run"]).await;
    assert_eq!(code, 0, "{stderr}");
    let app = s.out().join("app.env");
    assert!(
        stdout.contains(&format!("update     {} (DESC)", app.display())),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "update     {}",
        s.out().join("v5-default").display()
    )));
    assert!(stdout.contains(&format!("unchanged  {}", s.out().join("v5-pin").display())));
    assert_eq!(read(&app), old, "dry run leaves the file alone");
    for secret in [
        "n3w-g1tlab",
        "new description",
        "secret description",
        "g1t$lab",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vanished_resources_follow_their_on_missing_policy() {
    let s = setup("bob", |o| {
        let o = o.display();
        let pin = ids::V5_PIN;
        format!(
            "targets:
  - {{ path: {o}/keep, format: raw, resource: {pin}, field: pin }}
  - {{ path: {o}/remove, format: raw, resource: {pin}, field: pin, on_missing: remove }}
  - {{ path: {o}/fail, format: raw, resource: {pin}, field: pin, on_missing: fail }}
  - {{ path: {o}/other, format: raw, resource: {} }}
",
            ids::V5_PASSWORD_STRING
        )
    })
    .await;
    assert_eq!(once(&s.config, &[]).await.0, 0);
    s.server.remove_resource(ids::V5_PIN);
    std::fs::remove_file(s.out().join("other")).unwrap();
    let (code, stdout, stderr) = once(&s.config, &[]).await;
    assert_eq!(code, 1, "keep and fail leave targets not current");
    let o = s.out();
    assert_eq!(
        read(&o.join("keep")),
        "73019468",
        "keep: the last good file stays"
    );
    assert!(!o.join("remove").exists(), "remove: the file is gone");
    assert_eq!(
        read(&o.join("fail")),
        "73019468",
        "fail: nothing is deleted"
    );
    assert_eq!(
        read(&o.join("other")),
        "redis-pass-v5",
        "other targets go on"
    );
    assert!(
        stdout.contains(&format!(
            "kept       {}: target {}: resource {} is gone",
            o.join("keep").display(),
            o.join("keep").display(),
            ids::V5_PIN
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("remove     {}", o.join("remove").display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("failed     {}", o.join("fail").display())),
        "{stdout}"
    );
    assert!(stderr.contains("on_missing: keep"), "{stderr}");
    // Access taken away is the same condition as deletion.
    s.server.revoke(ids::V5_PASSWORD_STRING, &fixture("bob").id);
    let (_, stdout, _) = once(&s.config, &[]).await;
    assert!(
        stdout.contains(&format!("kept       {}", o.join("other").display())),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_or_failing_touches_no_file() {
    let mut s = setup("alice", every_format).await;
    assert_eq!(once(&s.config, &[]).await.0, 0);
    let snapshot = |dir: &Path| -> Vec<(String, String, i64)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    read(&e.path()),
                    m.mtime_nsec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&s.out());
    s.server.set_faults(Faults {
        status_for_all: Some(500),
        ..Faults::default()
    });
    let (code, _, stderr) = once(&s.config, &[]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("the passbolt server failed"), "{stderr}");
    s.server.set_faults(Faults::default());
    s.server.stop().await;
    let (code, _, stderr) = once(&s.config, &[]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot reach the passbolt server"),
        "{stderr}"
    );
    assert_eq!(snapshot(&s.out()), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ambiguous_name_fails_that_target_only_and_names_the_ids() {
    let s = setup("bob", |o| {
        format!(
            "targets:\n  - {{ path: {o}/redis, format: raw, name: Redis }}\n  - {{ path: {o}/pin, format: raw, resource: {}, field: pin }}\n",
            ids::V5_PIN,
            o = o.display()
        )
    })
    .await;
    let twin = "3c2b5e1a-0000-4000-8000-0000000000ff";
    let mut seed: SeedResource = s
        .server
        .resources()
        .into_iter()
        .find(|r| r.id == ids::V5_PASSWORD_STRING)
        .unwrap();
    seed.id = twin.into();
    s.server.add_resource(seed).unwrap();
    let (code, stdout, _) = once(&s.config, &[]).await;
    assert_eq!(code, 1);
    assert!(
        stdout.contains("several resources are named \"Redis\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(ids::V5_PASSWORD_STRING) && stdout.contains(twin),
        "{stdout}"
    );
    assert_eq!(read(&s.out().join("pin")), "73019468");
    assert!(!s.out().join("redis").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_the_type_lacks_is_an_error_naming_type_and_field() {
    let s = setup("bob", |o| {
        format!(
            "targets:\n  - {{ path: {o}/x, format: raw, resource: {}, field: pin }}\n  - {{ path: {o}/y, format: raw, resource: {}, field: \"custom:nope\" }}\n",
            ids::V5_DEFAULT,
            ids::V5_CUSTOM_FIELDS,
            o = o.display()
        )
    })
    .await;
    let (code, stdout, _) = once(&s.config, &[]).await;
    assert_eq!(code, 1);
    assert!(
        stdout.contains("is of type v5-default, which has no pin field"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no custom field labelled \"nope\" (it has: API host, API token)"),
        "{stdout}"
    );
    let out = cli(
        &["check", "--online", "-c", s.config.to_str().unwrap()],
        &[],
    )
    .await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("FAIL"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn template_errors_are_reported_and_nothing_is_written() {
    let s = setup("bob", |o| {
        format!(
            "targets:\n  - {{ path: {o}/t.conf, format: template, template: {o}/../bad.tmpl }}\n",
            o = o.display()
        )
    })
    .await;
    let tmpl = s.dir.path().join("bad.tmpl");
    std::fs::write(&tmpl, "a={{ secret(\"No such thing\") }}\n").unwrap();
    let (code, stdout, _) = once(&s.config, &[]).await;
    assert_eq!(code, 1);
    assert!(stdout.contains("No such thing"), "{stdout}");
    assert!(
        !s.out().join("t.conf").exists(),
        "never an empty or partial file"
    );

    std::fs::write(&tmpl, "line one\na={{ secret(\"x\" }}\n").unwrap();
    let out = cli(&["check", "-c", s.config.to_str().unwrap()], &[]).await;
    let (_, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a broken template is a config error"
    );
    assert!(
        stderr.contains("bad.tmpl") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_exits_2_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.yaml");
    std::fs::write(&path, "server:\n  url: https://x\n  colour: blue\n").unwrap();
    for cmd in ["check", "once", "resources"] {
        let out = cli(&[cmd, "-c", path.to_str().unwrap()], &[]).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(
            stderr.contains(&format!(
                "{}:3:3: server: unknown field `colour`",
                path.display()
            )),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_pass_every_target_is_old_or_new_never_partial() {
    let s = setup("alice", |o| {
        let mut t = String::from("targets:\n");
        for i in 0..40 {
            let id = if i % 2 == 0 {
                ids::V4_PASSWORD_STRING
            } else {
                ids::V5_PASSWORD_STRING
            };
            t.push_str(&format!(
                "  - {{ path: {}/t{i}, format: raw, resource: {id} }}\n",
                o.display()
            ));
        }
        t
    })
    .await;
    // Whole values carry their round and an end mark: a partial write
    // would lack the mark or have the wrong length.
    let value = |kind: char, round: usize| {
        let fill = if kind == 'A' { 'a' } else { 'b' };
        let len = if kind == 'A' { 4000 } else { 9000 };
        format!("{kind}{round:03}{}Z", fill.to_string().repeat(len))
    };
    let set = |round: usize| {
        s.server
            .set_secret(ids::V4_PASSWORD_STRING, &value('A', round))
            .unwrap();
        s.server
            .set_secret(ids::V5_PASSWORD_STRING, &value('B', round))
            .unwrap();
    };
    set(0);
    assert_eq!(once(&s.config, &[]).await.0, 0);
    for round in 1..=12 {
        set(round);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"))
            .args(["once", "-q", "-c", s.config.to_str().unwrap()])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20 + 12 * round as u64)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for i in 0..40 {
            let got = read(&s.out().join(format!("t{i}")));
            let kind = if i % 2 == 0 { 'A' } else { 'B' };
            // Old, new, or (after an earlier interrupted round) older: never partial.
            let whole = (0..=round).any(|r| got == value(kind, r));
            assert!(
                whole,
                "round {round}, t{i}: partial content ({} bytes)",
                got.len()
            );
        }
    }
    // The next complete pass brings everything to the newest and removes
    // any temp file an interrupted write left behind.
    assert_eq!(once(&s.config, &[]).await.0, 0);
    for i in 0..40 {
        let kind = if i % 2 == 0 { 'A' } else { 'B' };
        assert_eq!(read(&s.out().join(format!("t{i}"))), value(kind, 12));
    }
    let leftovers: Vec<_> = std::fs::read_dir(s.out())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    // The example names its template relative to itself, as in /etc.
    // Offline `check` also wants the credentials and the target
    // directories on this host: give it both, under the scratch folder.
    let etc = dir.path().display().to_string();
    let example = std::fs::read_to_string(root.join("sync.example.yaml"))
        .unwrap()
        .replace("/etc/", &format!("{etc}/"));
    std::fs::write(dir.path().join("sync.yaml"), example).unwrap();
    for d in ["myapp", "nginx/tls"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let alice = crate::common::fixture("alice");
    std::fs::copy(&alice.private_path, dir.path().join("private.asc")).unwrap();
    std::fs::write(dir.path().join("passphrase"), "x\n").unwrap();
    std::fs::copy(
        root.join("docs/app.conf.tmpl"),
        dir.path().join("app.conf.tmpl"),
    )
    .unwrap();
    let config = dir.path().join("sync.yaml");
    let out = cli(
        &["check", "-c", config.to_str().unwrap()],
        &[("CREDENTIALS_DIRECTORY", &etc)],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("valid, 5 target(s)"), "{stdout}");
    assert!(stdout.contains("30 3 * * * (UTC)"), "{stdout}");
    assert!(
        stdout.contains("rotate password of resource 9f1c5d3e-6a0b-4b7e-8f2a-1c3d5e7f9a0b: every 30days and when expired, apply /usr/local/sbin/rotate-db-password (timeout 30s)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_response_is_named_and_touches_no_file() {
    let s = setup("bob", every_format).await;
    assert_eq!(once(&s.config, &[]).await.0, 0);
    let before = read(&s.out().join("app.env"));
    for path in ["/resources.json", "/auth/verify.json"] {
        s.server.set_faults(Faults {
            malformed_path: Some(path.into()),
            ..Faults::default()
        });
        let (code, _, stderr) = once(&s.config, &[]).await;
        assert_eq!(code, 1);
        assert!(
            stderr.contains(&format!("malformed response from {path}"))
                && stderr.contains("not a passbolt JSON envelope"),
            "{stderr}"
        );
        assert_eq!(read(&s.out().join("app.env")), before);
    }
}
