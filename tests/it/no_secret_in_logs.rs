//! Logs at trace level, of every command, contain no secret value, no
//! token, no passphrase and no private key material.

use crate::common;

use common::{cli, devserver, fixture, secret_values, write_config};
use passbolt_sync::devserver::{Options, seed::ids};

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

    let mut secrets = secret_values(&server);
    secrets.push(who.passphrase.clone());
    secrets.extend(server.issued_tokens());
    // The body lines of the armored private key.
    let armored = std::fs::read_to_string(&who.private_path).unwrap();
    secrets.extend(
        armored
            .lines()
            .filter(|l| l.len() > 40 && !l.starts_with("-----"))
            .map(String::from),
    );
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
