//! `passbolt-sync get` and `passbolt-sync env` with the real binary
//! against the dev server, and the trace logs of `exec`, `get` and `env`.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Daemon, cli, devserver, fixture, known_secrets, wait_until, write_config};
use passbolt_devserver::{Options, seed::ids};

const GITLAB_PASSWORD: &str = "g1t$lab \"pa ss\" `x` #1 ü";

#[tokio::test(flavor = "multi_thread")]
async fn get_prints_the_exact_bytes_of_a_value_and_writes_files_of_mode_0600() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("bob"), "");
    let c = config.to_str().unwrap();
    for (args, expected) in [
        // Quotes, `$`, backticks and non-ASCII, by name.
        (vec!["GitLab"], GITLAB_PASSWORD),
        // A newline inside the value, by id.
        (vec![ids::V5_NOTE, "--field", "note"], "line one\nline two"),
        // Folder/Name, and a metadata field.
        (
            vec!["Production/myapp/db password", "--field", "username"],
            "myapp",
        ),
        (vec!["Server room", "--field", "pin"], "73019468"),
        (
            vec!["API credentials", "--field", "custom:API token"],
            "tok-123456",
        ),
    ] {
        let mut full = vec!["get", "-c", c];
        full.extend(&args);
        let out = cli(&full, &[]).await;
        let (_, stderr) = common::text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert_eq!(out.stdout, expected.as_bytes(), "{args:?}");
        assert!(stderr.is_empty(), "quiet by default: {stderr}");
    }

    let file = dir.path().join("secret");
    let out = cli(
        &["get", "-c", c, "GitLab", "--output", file.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(out.status.success(), "{:?}", common::text(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), GITLAB_PASSWORD.as_bytes());
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    // One login, one logout per run: no refresh token is left behind.
    assert_eq!(server.active_refresh_tokens(&fixture("bob").id), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_fails_clearly_for_a_missing_resource_a_missing_field_and_an_ambiguous_name() {
    let server = devserver(Options::default()).await;
    let who = fixture("bob");
    let mut twin = passbolt_devserver::seed::sample_resources(std::slice::from_ref(&who.id))
        .into_iter()
        .find(|r| r.id == ids::V5_PASSWORD_STRING)
        .unwrap();
    twin.id = "3c2b5e1a-0000-4000-8002-000000000001".into();
    server.add_resource(twin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &who, "");
    let c = config.to_str().unwrap();
    for (args, message) in [
        (
            vec!["No such thing"],
            "no resource readable by this account matches resource named \"No such thing\"",
        ),
        (
            vec!["Server room", "--field", "password"],
            "is of type v5-pin-code, which has no password field",
        ),
        (vec!["Redis"], "several resources are named \"Redis\": "),
    ] {
        let mut full = vec!["get", "-c", c];
        full.extend(&args);
        let out = cli(&full, &[]).await;
        let (stdout, stderr) = common::text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = cli(&["get", "-c", c, "Redis"], &[]).await;
    let (_, stderr) = common::text(&out);
    assert!(
        stderr.contains(ids::V5_PASSWORD_STRING)
            && stderr.contains("3c2b5e1a-0000-4000-8002-000000000001"),
        "the ids are named: {stderr}"
    );
    let out = cli(&["get", "-c", c, "Redis", "--field", "nonsense"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", common::text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_prints_the_exec_mapping_as_dotenv_json_and_shell() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let exec = format!(
        "exec:\n  folder: Production/myapp\n  env:\n    GITLAB: {{ resource: {} }}\n    NOTE: {{ name: Recovery note, field: note }}\n",
        ids::V5_DEFAULT
    );
    let config = write_config(dir.path(), &server, &fixture("alice"), &exec);
    let c = config.to_str().unwrap();

    let out = cli(&["env", "-c", c, "--format", "json"], &[]).await;
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "stdout is no terminal: {stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "API_KEY": "myapp-api-key",
            "DB_PASSWORD": "myapp-db-pass",
            "GITLAB": GITLAB_PASSWORD,
            "NOTE": "line one\nline two",
        })
    );

    // The shell format, evaluated by a real shell, gives back every byte.
    let out = cli(&["env", "-c", c, "--format", "shell"], &[]).await;
    assert!(out.status.success());
    let script = format!(
        "{}printf '%s\\0' \"$API_KEY\" \"$DB_PASSWORD\" \"$GITLAB\" \"$NOTE\"",
        String::from_utf8(out.stdout).unwrap()
    );
    let read = tokio::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let values: Vec<&[u8]> = read.stdout.split(|b| *b == 0).collect();
    assert_eq!(
        values[..4],
        [
            b"myapp-api-key".as_slice(),
            b"myapp-db-pass",
            GITLAB_PASSWORD.as_bytes(),
            b"line one\nline two"
        ]
    );

    // dotenv (the default): the portable dialect a target would write.
    let out = cli(&["env", "-c", c], &[]).await;
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("API_KEY='myapp-api-key'\nDB_PASSWORD='myapp-db-pass'\n"),
        "{stdout}"
    );

    // On a terminal (script(1) gives it one) env warns on stderr.
    match tokio::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} env -c {c}", env!("CARGO_BIN_EXE_passbolt-sync")),
            "/dev/null",
        ])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => {
            let both = String::from_utf8_lossy(&out.stdout);
            assert!(
                both.contains("warning: printing secret values to a terminal"),
                "{both}"
            );
        }
        other => eprintln!("skipped the terminal check: script(1) is not usable here: {other:?}"),
    }

    // No exec: section, nothing to print.
    let bare = write_config(dir.path(), &server, &fixture("alice"), "");
    let out = cli(&["env", "-c", bare.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out).1.contains("no exec: section"));
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_of_exec_get_and_env_leak_nothing_beyond_the_printed_values() {
    let server = devserver(Options {
        access_token_ttl: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("bob");
    let exec = format!(
        "schedule: every 1s\nexec:\n  folder: Production/myapp\n  env:\n    GITLAB: {{ resource: {} }}\n    PIN: {{ resource: {}, field: pin }}\n    NOTE: {{ name: Recovery note, field: note }}\n  debounce: 200ms\ntargets:\n  - {{ path: {}/legacy, format: raw, resource: {} }}\n",
        ids::V5_DEFAULT,
        ids::V5_PIN,
        dir.path().display(),
        ids::V4_PASSWORD_STRING,
    );
    let config = write_config(dir.path(), &server, &who, &exec);
    let c = config.to_str().unwrap();
    let trace = [("RUST_LOG", "trace")];
    let mut logs = String::new();

    // exec through a restart; its child prints nothing.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"));
    cmd.args(["exec", "-c", c, "--", "sh", "-c"])
        .arg(format!(
            "printf '%s\\n' \"$PIN\" >> {}/starts; exec sleep 60",
            dir.path().display()
        ))
        .env("RUST_LOG", "trace")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::piped());
    let d = Daemon::spawn(cmd);
    let starts = dir.path().join("starts");
    let count = || {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(15), || count() == 1).await,
        "{}",
        d.log()
    );
    common::set_pin(&server, "90817263");
    assert!(
        wait_until(Duration::from_secs(5), || count() == 2).await,
        "{}",
        d.log()
    );
    // Refreshes happen meanwhile (2 s tokens) and are traced too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(128 + 15), "{log}");
    assert!(log.contains("restarting the child"), "{log}");
    logs.push_str(&log);

    let mut printed = String::new();
    for args in [
        vec!["get", "-c", c, "GitLab"],
        vec!["get", "-c", c, ids::V5_NOTE, "--field", "note"],
        vec!["env", "-c", c],
        vec!["env", "-c", c, "--format", "shell"],
        vec!["--log-format", "json", "env", "-c", c, "--format", "json"],
    ] {
        let out = cli(&args, &trace).await;
        let (stdout, stderr) = common::text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        printed.push_str(&stdout);
        logs.push_str(&stderr);
    }
    assert!(logs.contains("TRACE"), "trace level was on");
    assert!(
        printed.contains("90817263"),
        "the values are printed on stdout"
    );

    let mut secrets = known_secrets(&server, &who);
    secrets.push("90817263".into());
    secrets.push("73019468".into());
    assert!(secrets.iter().any(|s| s == "myapp-db-pass"));
    for s in &secrets {
        for part in s.lines().filter(|p| p.len() >= 6) {
            assert!(
                !logs.contains(part),
                "a secret leaked into the logs: {part:?}"
            );
        }
    }
}
