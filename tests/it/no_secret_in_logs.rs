//! Logs at trace level, of every command, contain no secret value, no
//! token, no passphrase and no private key material.

use crate::common;

use common::{cli, devserver, fixture, known_secrets, secret_values, write_config};
use passbolt_devserver::{Options, seed::ids};

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_of_every_command_leak_nothing() {
    let server = devserver(Options {
        // Short tokens, so that refreshes happen and get logged too.
        access_token_ttl: std::time::Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(
        dir.path().join("t.tmpl"),
        "{{ secret(\"Cloud console\", \"totp_uri\") }} {{ secret(\"GitLab\") }}\n",
    )
    .unwrap();
    let o = out.display();
    let targets = format!(
        "targets:
  - {{ path: {o}/a, format: raw, resource: {v4} }}
  - {{ path: {o}/b.env, format: dotenv, folder: Production/myapp, on_change: 'echo hook-saw-$PASSBOLT_SYNC_TARGET' }}
  - {{ path: {o}/c.json, format: json, vars: {{ PIN: {{ resource: {pin}, field: pin }}, NOTE: {{ resource: {note}, field: note }}, TOK: {{ resource: {cf}, field: \"custom:API token\" }} }} }}
  - {{ path: {o}/d, format: template, template: {tpl} }}
  - {{ path: {o}/e, format: raw, resource: {pdt}, field: totp }}
",
        v4 = ids::V4_PASSWORD_STRING,
        pin = ids::V5_PIN,
        note = ids::V5_NOTE,
        cf = ids::V5_CUSTOM_FIELDS,
        pdt = ids::V4_PASSWORD_DESCRIPTION_TOTP,
        tpl = dir.path().join("t.tmpl").display(),
    );
    let who = fixture("bob");
    let config = write_config(dir.path(), &server, &who, &targets);
    let c = config.to_str().unwrap();
    let trace = [("RUST_LOG", "trace")];
    let kit = dir.path().join("kit");
    std::fs::write(&kit, common::account_kit(&server, &who)).unwrap();
    let pass = dir.path().join(format!("{}.pass", who.name));
    let init_dir = dir.path().join("init");
    let init_target = out.join("init.env");
    let mut logs = String::new();
    for args in [
        vec![
            "init",
            "--account-kit",
            kit.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--dir",
            init_dir.to_str().unwrap(),
            "--folder",
            "Production/myapp",
            "--target",
            init_target.to_str().unwrap(),
        ],
        vec!["resources", "-c", c],
        vec!["resources", "--json", "-c", c],
        vec!["check", "--online", "-c", c],
        vec!["once", "--dry-run", "-c", c],
        vec!["once", "-c", c],
        vec!["once", "-c", c],
        vec!["--log-format", "json", "once", "--dry-run", "-c", c],
    ] {
        let out = cli(&args, &trace).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // The logs are really at trace level and really saw the work.
    assert!(logs.contains("TRACE"), "trace level was on");
    assert!(logs.contains("hook-saw"), "hook output is logged at debug");
    assert!(logs.contains("logged in"));

    let secrets = known_secrets(&server, &who);
    assert!(secrets.len() > 30, "the check covers many values");
    assert!(secrets.iter().any(|s| s == "legacy-db-pass"));
    for s in &secrets {
        // Multi-line secrets are checked line by line, as logs escape newlines.
        // Shorter strings turn up by chance in timestamps and ids; every
        // seeded secret is longer.
        for part in s.lines().filter(|p| p.len() >= 6) {
            assert!(
                !logs.contains(part),
                "a secret leaked into the logs: {part:?}"
            );
        }
    }
}

/// The daemon's metrics (both formats, endpoint and textfile), its status
/// file and `status` name paths and resource ids only: no secret value, no
/// resource or folder name, no username, also for targets that fail with
/// errors whose messages quote names.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_status_show_no_secret_name_or_username() {
    use crate::metrics::{Format, endpoint, get, parse};
    use passbolt_devserver::seed;

    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(
        dir.path().join("t.tmpl"),
        "{{ secret(\"Cloud console\", \"totp_uri\") }} {{ secret(\"GitLab\") }}\n",
    )
    .unwrap();
    let o = out.display();
    let targets = format!(
        "metrics:
  listen: 127.0.0.1:0
  textfile: {d}/m.prom
status_file: {d}/status.json
targets:
  - {{ path: {o}/a, format: raw, resource: {v4} }}
  - {{ path: {o}/b.env, format: dotenv, folder: Production/myapp, on_change: 'true' }}
  - {{ path: {o}/c.json, format: json, vars: {{ PIN: {{ resource: {pin}, field: pin }}, TOK: {{ resource: {cf}, field: \"custom:API token\" }} }} }}
  - {{ path: {o}/d, format: template, template: {tpl} }}
  - {{ path: {o}/e, format: raw, name: Legacy DB }}
  - {{ path: {o}/f, format: raw, name: Recovery note, field: password }}
  - {{ path: {o}/g, format: raw, name: Server room, folder: Production, on_missing: fail }}
",
        d = dir.path().display(),
        v4 = ids::V4_PASSWORD_STRING,
        pin = ids::V5_PIN,
        cf = ids::V5_CUSTOM_FIELDS,
        tpl = dir.path().join("t.tmpl").display(),
    );
    let config = write_config(dir.path(), &server, &fixture("bob"), &targets);
    let d = common::Daemon::start(&config, &[("RUST_LOG", "passbolt_sync=trace")]).await;
    let base = endpoint(&d).await;
    assert!(
        d.wait_log("first sync complete", 1, std::time::Duration::from_secs(20))
            .await,
        "{}",
        d.log()
    );
    let mut shown = String::new();
    for openmetrics in [true, false] {
        let (code, body) = get(&format!("{base}/metrics"), openmetrics).await;
        assert_eq!(code, 200);
        shown.push_str(&body);
    }
    let (code, why) = get(&format!("{base}/readyz"), false).await;
    assert_eq!(code, 503, "targets f and g fail");
    shown.push_str(&why);
    shown.push_str(&std::fs::read_to_string(dir.path().join("m.prom")).unwrap());
    shown.push_str(&std::fs::read_to_string(dir.path().join("status.json")).unwrap());
    let status = cli(&["status", "-c", config.to_str().unwrap()], &[]).await;
    assert_eq!(status.status.code(), Some(1));
    eprintln!("{}", String::from_utf8_lossy(&status.stdout));
    shown.push_str(&String::from_utf8_lossy(&status.stdout));
    let (code, _) = d.stop().await;
    assert_eq!(code, Some(0));

    // The outputs really cover failures and every target.
    parse(
        &shown[..shown.find("# EOF").unwrap() + 6],
        Format::OpenMetrics,
    );
    assert!(shown.contains("failed: resource"), "{shown}");
    for t in ["a", "b.env", "c.json", "d", "e", "f", "g"] {
        assert!(shown.contains(&format!("{o}/{t}\"")), "{t}: {shown}");
    }
    let mut forbidden = secret_values(&server);
    for r in server.resources() {
        forbidden.push(r.name.clone());
        forbidden.extend(r.username.clone());
        forbidden.extend(r.custom_fields.iter().map(|(_, label, _)| label.clone()));
    }
    forbidden.extend(seed::sample_folders().into_iter().map(|f| f.name));
    assert!(forbidden.iter().any(|s| s == "Server room"));
    for s in &forbidden {
        for part in s.lines().filter(|p| p.len() >= 4) {
            assert!(!shown.contains(part), "{part:?} is shown:\n{shown}");
        }
    }
}
