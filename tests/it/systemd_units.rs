//! The systemd units shipped in `systemd/`: `systemd-analyze verify` finds
//! nothing to complain about, `systemd-analyze security --offline=true`
//! rates both services at an exposure of 2.0 or less, and the timer's
//! one-shot service carries the same sandbox as the daemon.
//!
//! These tests need `systemd-analyze` (Debian/Ubuntu: `apt-get install
//! systemd`) and fail, rather than skip, without it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DAEMON: &str = "passbolt-sync.service";
const ONCE: &str = "passbolt-sync-once.service";
const TIMER: &str = "passbolt-sync.timer";
const UNITS: [&str; 3] = [DAEMON, ONCE, TIMER];
const SERVICES: [&str; 2] = [DAEMON, ONCE];

/// The highest acceptable "Overall exposure level".
const MAX_EXPOSURE: f64 = 2.0;

/// Paths in the shipped units that only exist on an installed host; the
/// staged copies point them at real files so `verify` can check them.
const INSTALLED_BINARY: &str = "/usr/local/bin/passbolt-sync";
const INSTALLED_CONFIG: &str = "/etc/passbolt-sync/sync.yaml";
const CREDENTIAL_SOURCES: [(&str, &str); 2] = [
    ("/etc/passbolt-sync/private.asc", "private.asc"),
    ("/etc/passbolt-sync/passphrase", "passphrase"),
];

/// `[Service]` settings in which the daemon and the one-shot service may
/// differ: how each starts, stops and restarts. Everything else (sandbox,
/// credentials, limits) must be the same in both. Only the daemon has a
/// runtime directory, for its instance lock: systemd removes it when the
/// unit that has it stops, so the one-shot service must not share it.
const PER_UNIT_SETTINGS: [&str; 12] = [
    "Type",
    "ExecStart",
    "ExecReload",
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "KillMode",
    "WatchdogSec",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
];

fn shipped_units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn read_shipped(unit: &str) -> String {
    let path = shipped_units_dir().join(unit);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Copies of the units whose host paths (binary, config, credential
/// sources) point at files that exist: the binary under test and empty
/// files in the staging directory.
struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    fn new() -> Staged {
        let dir = tempfile::Builder::new()
            .prefix("passbolt-sync-units.")
            .tempdir()
            .expect("create a staging directory");
        let config = dir.path().join("sync.yaml");
        std::fs::write(&config, "").expect("write the staged config");
        for unit in UNITS {
            let mut text = read_shipped(unit);
            if SERVICES.contains(&unit) {
                for needle in [INSTALLED_BINARY, INSTALLED_CONFIG] {
                    assert!(
                        text.contains(needle),
                        "{unit} no longer mentions {needle}; update this test"
                    );
                }
                text = text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_passbolt-sync"));
                text = text.replace(INSTALLED_CONFIG, path_str(&config));
                for (source, name) in CREDENTIAL_SOURCES {
                    let line = format!("LoadCredential={name}:{source}");
                    assert!(
                        text.contains(&line),
                        "{unit} has no `{line}` line; update this test"
                    );
                    let staged = dir.path().join(name);
                    std::fs::write(&staged, "").expect("write a staged credential");
                    text = text.replace(source, path_str(&staged));
                }
            }
            std::fs::write(dir.path().join(unit), text).expect("write a staged unit");
        }
        Staged { dir }
    }

    fn unit(&self, unit: &str) -> PathBuf {
        self.dir.path().join(unit)
    }
}

fn path_str(path: &Path) -> &str {
    let s = path.to_str().expect("staging paths are UTF-8");
    assert!(
        !s.contains(char::is_whitespace) && !s.contains('%'),
        "{s:?} cannot be written into a unit file unquoted"
    );
    s
}

fn systemd_analyze<I, S>(args: I, cwd: &Path) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let result = Command::new("systemd-analyze")
        .args(args)
        .current_dir(cwd)
        // Plain, untranslated, unpaged output that can be parsed.
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_URLIFY", "0")
        .env("SYSTEMD_PAGER", "")
        .env("LC_ALL", "C")
        .output();
    match result {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed, and the systemd unit tests need it: \
             run `apt-get install systemd` (CI installs it)"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn verify_reports_nothing_about_the_units() {
    let staged = Staged::new();
    assert_verify_clean(&staged, &UNITS, "for the units");
}

/// Runs `systemd-analyze verify` on the staged `units` and fails on any
/// complaint about them. Complaints about the host's own units are not
/// ours to fix; anything naming one of our units, or the staging
/// directory, is.
fn assert_verify_clean(staged: &Staged, units: &[&str], what: &str) {
    let mut args = vec![
        "verify".to_owned(),
        "--no-pager".to_owned(),
        "--man=no".to_owned(),
    ];
    args.extend(units.iter().map(|u| path_str(&staged.unit(u)).to_owned()));
    let output = systemd_analyze(&args, staged.dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let staging = path_str(staged.dir.path());
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(staging) || UNITS.iter().any(|u| line.contains(u)))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify is not clean {what}:\n{}",
        describe(&output)
    );
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze verify, about other units:\n{stderr}");
    }
}

#[test]
fn both_services_have_an_exposure_of_at_most_2_0() {
    let staged = Staged::new();
    let mut failures = Vec::new();
    for unit in SERVICES {
        let path = staged.unit(unit);
        let output = systemd_analyze(
            ["security", "--no-pager", "--offline=true", path_str(&path)],
            staged.dir.path(),
        );
        assert!(
            output.status.success(),
            "systemd-analyze security --offline=true {unit} failed \
             (--offline needs systemd 250 or newer):\n{}",
            describe(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let exposure = overall_exposure(&stdout, unit).unwrap_or_else(|| {
            panic!(
                "no \"Overall exposure level for {unit}\" line in:\n{}",
                describe(&output)
            )
        });
        eprintln!("{unit}: overall exposure {exposure:.1}");
        if exposure > MAX_EXPOSURE {
            failures.push(format!(
                "{unit}: exposure {exposure:.1} > {MAX_EXPOSURE:.1}:\n{stdout}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The number in "→ Overall exposure level for UNIT: 2.0 OK 🙂".
fn overall_exposure(report: &str, unit: &str) -> Option<f64> {
    let marker = format!("Overall exposure level for {unit}:");
    report.lines().map(strip_ansi).find_map(|line| {
        let rest = &line[line.find(&marker)? + marker.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter; OSC 8 links end with BEL or ST.
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next() == Some('\\')) {
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_one_shot_service_has_the_daemons_sandbox() {
    let daemon = service_settings(&read_shipped(DAEMON));
    let once = service_settings(&read_shipped(ONCE));
    let shared = |settings: &[(String, String)]| -> Vec<(String, String)> {
        settings
            .iter()
            .filter(|(key, _)| !PER_UNIT_SETTINGS.contains(&key.as_str()))
            .cloned()
            .collect()
    };
    let (daemon_shared, once_shared) = (shared(&daemon), shared(&once));
    for key in ["ProtectSystem", "CapabilityBoundingSet", "SystemCallFilter"] {
        assert!(
            daemon_shared.iter().any(|(k, _)| k == key),
            "{DAEMON} has no {key}="
        );
    }
    assert_eq!(
        daemon_shared, once_shared,
        "{DAEMON} and {ONCE} must share every [Service] setting except {PER_UNIT_SETTINGS:?}"
    );
}

/// The `key=value` lines of the `[Service]` section, in order, without
/// comments or blank lines.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continued line in [Service]; this test does not join them: {line}"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        settings.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    settings
}

#[test]
fn the_exposure_line_is_parsed() {
    let report = "✗ PrivateNetwork=  Service has access to the host's network  0.5\n\n\
                  → Overall exposure level for passbolt-sync.service: 1.9 OK 🙂\n";
    assert_eq!(overall_exposure(report, DAEMON), Some(1.9));
    assert_eq!(overall_exposure(report, ONCE), None);
    let colored = "→ \u{1b}[1mOverall exposure level for passbolt-sync.service\u{1b}[0m: \
                   \u{1b}[32m2.0 OK\u{1b}[0m 🙂";
    assert_eq!(overall_exposure(colored, DAEMON), Some(2.0));
}

/// The drop-in that swaps the plain credentials for ones `systemd-creds
/// encrypt` sealed: `verify` is clean with it applied to both services,
/// and it replaces exactly the units' `LoadCredential=` lines, name for name.
#[test]
fn the_encrypted_credentials_drop_in_verifies_and_replaces_the_plain_ones() {
    let dropin = read_shipped("credentials-encrypted.conf");
    let settings = service_settings(&dropin);
    let mut expected = vec![("LoadCredential".to_owned(), String::new())];
    for (source, name) in CREDENTIAL_SOURCES {
        expected.push((
            "LoadCredentialEncrypted".to_owned(),
            format!("{name}:{source}.cred"),
        ));
    }
    assert_eq!(settings, expected);
    for unit in SERVICES {
        let plain: Vec<(String, String)> = service_settings(&read_shipped(unit))
            .into_iter()
            .filter(|(k, _)| k == "LoadCredential")
            .collect();
        let names: Vec<&str> = plain
            .iter()
            .map(|(_, v)| v.split(':').next().unwrap())
            .collect();
        assert_eq!(
            names,
            CREDENTIAL_SOURCES.map(|(_, n)| n),
            "{unit}: the drop-in must cover every credential"
        );
    }

    let staged = Staged::new();
    let mut text = dropin.clone();
    for (source, name) in CREDENTIAL_SOURCES {
        let sealed = staged.dir.path().join(format!("{name}.cred"));
        std::fs::write(&sealed, "").unwrap();
        text = text.replace(&format!("{source}.cred"), path_str(&sealed));
    }
    for unit in SERVICES {
        let dir = staged.dir.path().join(format!("{unit}.d"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("credentials-encrypted.conf"), &text).unwrap();
    }
    assert_verify_clean(&staged, &SERVICES, "with the drop-in");
}
