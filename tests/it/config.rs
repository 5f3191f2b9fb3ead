//! Config loading: every error names the file, line and column, and
//! nothing broken is accepted silently.

use std::path::{Path, PathBuf};

use passbolt_sync::config::{Config, ConfigError, Field, Format, OnMissing, Selector, Source};

const HEAD: &str = "server:
  url: https://passbolt.example.com
auth:
  user_id: 8bb7f6a2-1f7b-4c1e-9a55-0d6a3c2b1e00
  private_key_file: /etc/passbolt-sync/private.asc
  passphrase_file: /etc/passbolt-sync/passphrase
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/passbolt-sync/sync.yaml"))
}

/// The error's text, which must start with `file:line:column:`.
fn positioned(text: &str, line: usize, column: usize) -> String {
    let err = parse(text).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("/etc/passbolt-sync/sync.yaml:{line}:{column}: ")),
        "expected position {line}:{column} in: {msg}"
    );
    msg
}

#[test]
fn a_minimal_config_loads_with_defaults() {
    let c = parse(HEAD).unwrap();
    assert_eq!(c.server.url, "https://passbolt.example.com");
    assert!(c.targets.is_empty());
    assert_eq!(c.server.timeout, std::time::Duration::from_secs(30));
}

#[test]
fn targets_of_every_format_parse() {
    let c = parse(&format!(
        "{HEAD}schedule: \"*/5 * * * *\"
timezone: Europe/Berlin
targets:
  - path: /etc/app/a.key
    format: raw
    resource: 2B7E1516-28AE-4D2A-ABF7-158809CF4F3C
    field: custom:TLS key
    mode: \"0640\"
    owner: root
    group: 0
    on_change: [systemctl, reload, nginx]
  - path: /etc/app/b.env
    format: dotenv
    dialect: docker
    folder: /Production//myapp/
    vars:
      DB_USER: {{ name: db, folder: Production, field: username }}
  - path: /etc/app/c.json
    format: json
    vars:
      X: {{ resource: 2b7e1516-28ae-4d2a-abf7-158809cf4f3c }}
    on_missing: remove
    schedule: every 1m
  - path: /etc/app/d.conf
    format: template
    template: d.conf.tmpl
    on_change: systemctl reload app
    hook_timeout: 5s
"
    ))
    .unwrap();
    let t = &c.targets;
    assert_eq!(t[0].mode, 0o640);
    assert_eq!(t[0].group.as_deref(), Some("0"));
    match &t[0].source {
        Source::Field(v) => {
            // Ids are normalized to lower case, as the server does.
            assert_eq!(
                v.selector,
                Selector::Id("2b7e1516-28ae-4d2a-abf7-158809cf4f3c".into())
            );
            assert_eq!(v.field, Field::Custom("TLS key".into()));
        }
        other => panic!("{other:?}"),
    }
    match &t[1].source {
        Source::Vars { folder, vars, .. } => {
            assert_eq!(folder.as_deref(), Some("Production/myapp"));
            assert_eq!(vars["DB_USER"].field, Field::Username);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t[2].on_missing, OnMissing::Remove);
    assert_eq!(t[2].mode, 0o600, "default mode");
    assert_eq!(t[3].format, Format::Template);
    // A relative template path is relative to the config file.
    assert_eq!(
        t[3].source,
        Source::Template(PathBuf::from("/etc/passbolt-sync/d.conf.tmpl"))
    );
    assert_eq!(
        c.schedule_of(&t[0]).to_string(),
        "*/5 * * * * (Europe/Berlin)"
    );
    assert_eq!(c.schedule_of(&t[2]).to_string(), "every 1m");
}

#[test]
fn splay_defaults_to_zero_and_takes_a_duration_up_to_a_day() {
    use std::time::Duration;
    assert_eq!(parse(HEAD).unwrap().splay, Duration::ZERO);
    for (value, expected) in [
        ("5m", Duration::from_secs(300)),
        ("1h 30m", Duration::from_secs(5400)),
        ("\"90s\"", Duration::from_secs(90)),
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("24h", Duration::from_secs(86_400)),
    ] {
        let c = parse(&format!("{HEAD}splay: {value}\n")).unwrap();
        assert_eq!(c.splay, expected, "splay: {value}");
    }
    // A changed splay is a changed config: a reload applies it.
    assert_ne!(
        parse(&format!("{HEAD}splay: 5m\n")).unwrap(),
        parse(&format!("{HEAD}splay: 4m\n")).unwrap()
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let msg = positioned("server:\n  url: \"https://x\n", 3, 1);
    assert!(msg.contains("unexpected end of stream"), "{msg}");
    let msg = positioned("server:\n\turl: x\n", 2, 1);
    assert!(msg.contains("cannot start any token"), "{msg}");
}

#[test]
fn unknown_keys_are_errors_with_a_position() {
    let msg = positioned(&format!("{HEAD}shedule: every 5m\n"), 7, 1);
    assert!(msg.contains("unknown field `shedule`"), "{msg}");
    let msg = positioned(
        &format!(
            "{HEAD}targets:\n  - path: /x\n    format: raw\n    resource: 2b7e1516-28ae-4d2a-abf7-158809cf4f3c\n    mdoe: \"0600\"\n"
        ),
        11,
        5,
    );
    assert!(msg.contains("mdoe"), "{msg}");
}

#[test]
fn plain_http_is_refused_except_on_loopback() {
    let text = HEAD.replace(
        "https://passbolt.example.com",
        "http://passbolt.example.com",
    );
    let msg = positioned(&text, 2, 8);
    assert!(msg.contains("http:// is refused"), "{msg}");
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let c = parse(&HEAD.replace("https://passbolt.example.com", ok)).unwrap();
        assert_eq!(c.server.url, ok);
    }
}

#[test]
fn a_trailing_slash_in_the_url_is_dropped() {
    let c = parse(&HEAD.replace("passbolt.example.com", "passbolt.example.com/sub/")).unwrap();
    assert_eq!(c.server.url, "https://passbolt.example.com/sub");
}

#[test]
fn bad_values_name_their_position() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("schedule: every 0s\n", 7, 11, "every 0s"),
        ("schedule: \"61 * * * *\"\n", 7, 11, "minute"),
        ("timezone: Mars/Olympus\n", 7, 11, "unknown time zone"),
        ("splay: soon\n", 7, 8, "splay: duration \"soon\""),
        (
            "splay: 25h\n",
            7,
            8,
            "splay \"25h\" is longer than the maximum of 24h",
        ),
        ("splay: 24h 1s\n", 7, 8, "longer than the maximum of 24h"),
        ("splay: 30\n", 7, 8, "splay 30 has no unit"),
        ("splay: -5\n", 7, 8, "negative"),
        ("splay: [5m]\n", 7, 8, "a duration such as 5m"),
        (
            "targets:\n  - path: /x\n    format: raw\n    resource: not-a-uuid\n",
            10,
            15,
            "not a UUID",
        ),
        (
            "targets:\n  - path: /x\n    format: raw\n    name: a\n    field: secret\n",
            11,
            12,
            "unknown field \"secret\"",
        ),
        (
            "targets:\n  - path: /x\n    format: raw\n    name: a\n    mode: 640\n",
            11,
            11,
            "quote file modes",
        ),
        (
            "targets:\n  - path: /x\n    format: raw\n    name: a\n    mode: \"9999\"\n",
            11,
            11,
            "mode",
        ),
        (
            "targets:\n  - path: /x\n    format: dotenv\n    vars:\n      1BAD: { name: a }\n",
            11,
            7,
            "1BAD",
        ),
        (
            "targets:\n  - path: /x\n    format: csv\n",
            9,
            13,
            "unknown variant `csv`",
        ),
    ];
    for (tail, line, col, needle) in cases {
        let msg = positioned(&format!("{HEAD}{tail}"), *line, *col);
        assert!(msg.contains(needle), "{tail:?}: {msg}");
    }
}

#[test]
fn inconsistent_targets_are_errors_that_name_the_target() {
    let cases: &[(&str, &str)] = &[
        ("  - path: /x\n    format: raw\n", "needs `resource`"),
        (
            "  - path: /x\n    format: raw\n    resource: 2b7e1516-28ae-4d2a-abf7-158809cf4f3c\n    name: a\n",
            "not both",
        ),
        (
            "  - path: /x\n    format: dotenv\n",
            "give `vars` or a `folder`",
        ),
        ("  - path: /x\n    format: template\n", "needs `template`"),
        (
            "  - path: /x\n    format: json\n    resource: 2b7e1516-28ae-4d2a-abf7-158809cf4f3c\n",
            "takes `vars`",
        ),
        (
            "  - path: /x\n    format: raw\n    name: a\n    dialect: docker\n",
            "dotenv targets only",
        ),
    ];
    for (target, needle) in cases {
        let err = parse(&format!("{HEAD}targets:\n{target}")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("target /x") && msg.contains(needle),
            "{target:?}: {msg}"
        );
        assert!(msg.starts_with("/etc/passbolt-sync/sync.yaml:"), "{msg}");
    }
}

#[test]
fn two_targets_cannot_share_a_file() {
    let err = parse(&format!(
        "{HEAD}targets:\n  - {{ path: /x, format: raw, name: a }}\n  - {{ path: /x, format: raw, name: b }}\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
}

#[test]
fn passphrase_from_file_env_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    let c = parse(&HEAD.replace("/etc/passbolt-sync/passphrase", pass.to_str().unwrap())).unwrap();
    assert_eq!(
        c.auth.read_passphrase().unwrap().unwrap().as_slice(),
        b"s3cret"
    );

    let env_cfg = HEAD.replace(
        "passphrase_file: /etc/passbolt-sync/passphrase",
        "passphrase_env: PBS_TEST_PASSPHRASE_UNSET",
    );
    let c = parse(&env_cfg).unwrap();
    let err = c.auth.read_passphrase().unwrap_err();
    assert!(
        matches!(err, ConfigError::PassphraseEnvMissing { .. }),
        "{err}"
    );

    let both = format!("{HEAD}  passphrase_env: X\n");
    let err = parse(&both).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn credentials_directory_is_expanded_and_its_absence_is_explained() {
    let text = HEAD.replace(
        "/etc/passbolt-sync/private.asc",
        "${CREDENTIALS_DIRECTORY}/private.asc",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.auth.private_key_file,
        PathBuf::from("${CREDENTIALS_DIRECTORY}/private.asc"),
        "not anchored to the config's directory"
    );
    // This test process has no CREDENTIALS_DIRECTORY (systemd sets it).
    assert!(std::env::var_os("CREDENTIALS_DIRECTORY").is_none());
    let err = c.auth.read_private_key().unwrap_err();
    assert!(
        matches!(err, ConfigError::NoCredentialsDirectory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("LoadCredential"), "{err}");
    // Under systemd it points into the credentials directory: the key
    // loads, and the next problem is the (absent) server.
    let accounts: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures/accounts.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let creds = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/captures/keys/alice_private.asc"),
        creds.path().join("private.asc"),
    )
    .unwrap();
    std::fs::write(
        creds.path().join("passphrase"),
        format!("{}\n", accounts["alice"]["passphrase"].as_str().unwrap()),
    )
    .unwrap();
    let cfg = creds.path().join("sync.yaml");
    std::fs::write(
        &cfg,
        HEAD.replace("https://passbolt.example.com", "http://127.0.0.1:9")
            .replace(
                "/etc/passbolt-sync/private.asc",
                "${CREDENTIALS_DIRECTORY}/private.asc",
            )
            .replace(
                "/etc/passbolt-sync/passphrase",
                "${CREDENTIALS_DIRECTORY}/passphrase",
            ),
    )
    .unwrap();
    let run = |env: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"));
        cmd.args(["resources", "-c", cfg.to_str().unwrap()])
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = env {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stderr).into_owned()
    };
    let with = run(Some(creds.path()));
    assert!(with.contains("cannot reach the passbolt server"), "{with}");
    let without = run(None);
    assert!(without.contains("CREDENTIALS_DIRECTORY"), "{without}");
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let err = Config::load(Path::new("/nonexistent/sync.yaml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sync.yaml"), "{err}");
}

#[test]
fn an_unquoted_leading_zero_mode_reads_as_octal() {
    let c = parse(&format!(
        "{HEAD}targets:\n  - {{ path: /x, format: raw, name: a, mode: 0640 }}\n"
    ))
    .unwrap();
    assert_eq!(c.targets[0].mode, 0o640);
}

#[test]
fn the_exec_section_has_defaults_checked_signals_and_the_dotenv_mapping() {
    use passbolt_sync::config::{OnChange, Signal};
    use std::time::Duration;
    let c = parse(&format!(
        "{HEAD}exec:\n  env:\n    DB: {{ resource: 8bb7f6a2-1f7b-4c1e-9a55-0d6a3c2b1e00 }}\n    USER: {{ name: db, folder: /Prod//app/, field: username }}\n"
    ))
    .unwrap();
    let e = c.exec.unwrap();
    assert_eq!(e.on_change, OnChange::Restart);
    assert_eq!(e.signal, Signal::SIGHUP);
    assert_eq!(e.stop_signal, Signal::SIGTERM);
    assert_eq!(e.stop_timeout, Duration::from_secs(10));
    assert_eq!(e.debounce, Duration::from_secs(2));
    assert!(e.inherit_env);
    assert!(e.command.is_none());
    let env = e.env.unwrap();
    assert_eq!(
        env["USER"].selector,
        Selector::Name {
            name: "db".into(),
            folder: Some("Prod/app".into())
        }
    );
    assert_eq!(env["USER"].field, Field::Username);

    let c = parse(&format!(
        "{HEAD}exec:\n  folder: Prod\n  field: username\n  on_change: signal\n  signal: usr2\n  stop_signal: SIGINT\n  command: myapp --serve\n"
    ))
    .unwrap();
    let e = c.exec.unwrap();
    assert_eq!(
        (e.on_change, e.signal, e.stop_signal),
        (OnChange::Signal, Signal::SIGUSR2, Signal::SIGINT)
    );
    assert_eq!(e.folder_field(), Field::Username);

    let msg = positioned(&format!("{HEAD}exec:\n  signal: SIGKILL\n"), 8, 11);
    assert!(msg.contains("cannot handle"), "{msg}");
    let msg = positioned(&format!("{HEAD}exec:\n  stop_signal: SIGNOPE\n"), 8, 16);
    assert!(msg.contains("unknown signal"), "{msg}");
    let msg = positioned(
        &format!("{HEAD}exec:\n  env:\n    1BAD: {{ name: x }}\n"),
        9,
        5,
    );
    assert!(msg.contains("1BAD"), "{msg}");
    let msg = parse(&format!("{HEAD}exec:\n  field: username\n"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`field` applies to a whole `folder`"), "{msg}");
    let msg = parse(&format!(
        "{HEAD}targets:\n  - {{ path: exec.env, format: raw, name: x }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("taken by the exec environment"), "{msg}");
}

#[test]
fn the_agent_section_defaults_to_a_socket_for_run_only() {
    let c = parse(HEAD).unwrap();
    assert!(c.agent.listens(false), "run listens");
    assert!(!c.agent.listens(true), "exec does not");
    assert!(c.agent.asked());
    // Every key commented out: the defaults.
    let c = parse(&format!("{HEAD}agent:\n")).unwrap();
    assert_eq!(c.agent, Default::default());
    let c = parse(&format!(
        "{HEAD}agent:\n  socket: true\n  socket_group: 4242\n"
    ))
    .unwrap();
    assert!(c.agent.listens(true));
    assert_eq!(c.agent.socket_group.as_deref(), Some("4242"));
    let c = parse(&format!("{HEAD}agent:\n  socket: false\n")).unwrap();
    assert!(!c.agent.listens(false) && !c.agent.asked());
    assert_eq!(
        parse(&format!("{HEAD}agent:\n  socket_grup: ops\n"))
            .unwrap_err()
            .to_string(),
        "/etc/passbolt-sync/sync.yaml:8:3: agent: unknown field `socket_grup`; did you mean `socket_group`?"
    );
}
