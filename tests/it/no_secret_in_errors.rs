//! A known secret pushed through every failure path never shows up in an
//! error (its message, its Debug form, its sources), and a hook's output
//! only shows up in logs at DEBUG level.

use std::error::Error;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passbolt_client::secret::Secret;
use passbolt_sync::sync::hooks::{self, HookCommand};
use passbolt_sync::sync::render::dotenv::{self, Dialect};
use passbolt_sync::sync::render::{Lookup, Template};
use passbolt_sync::sync::write::{self, WriteSpec};

const SECRET: &str = "Kx9-TOPSECRET-vqz";

fn assert_clean(err: &dyn Error) {
    let mut shown = vec![err.to_string(), format!("{err:?}")];
    let mut source = err.source();
    while let Some(s) = source {
        shown.push(s.to_string());
        shown.push(format!("{s:?}"));
        source = s.source();
    }
    for text in shown {
        assert!(!text.contains(SECRET), "secret in error text: {text}");
        assert!(
            !text.contains("TOPSECRET"),
            "part of the secret in error text: {text}"
        );
    }
}

#[test]
fn render_errors() {
    for (value, dialect) in [
        (format!("it's ${SECRET}"), Dialect::Portable),
        (format!("${{{SECRET}}}"), Dialect::Portable),
        (format!("{SECRET}\\"), Dialect::Portable),
        (format!("{SECRET}\r\n"), Dialect::Portable),
        (format!("{SECRET}\n"), Dialect::Docker),
        (format!("'{SECRET}'"), Dialect::Docker),
        (format!(" {SECRET}"), Dialect::Docker),
    ] {
        let err = dotenv::render(&[("VAR".into(), Secret::new(value))], dialect).unwrap_err();
        assert!(err.to_string().contains("VAR"));
        assert_clean(&err);
    }

    // A malformed line holding a secret, as found in an existing file.
    for bytes in [
        format!("A='{SECRET}\n"),
        format!("A=\"{SECRET}\\q\"\n"),
        format!("A={SECRET} x\n"),
        format!("{SECRET}\n"),
    ] {
        let err = dotenv::parse(bytes.as_bytes()).unwrap_err();
        assert_clean(&err);
    }

    struct One;
    impl Lookup for One {
        fn field(&self, resource: &str, field: &str) -> Result<Secret, String> {
            match (resource, field) {
                ("r", "password") => Ok(Secret::new(SECRET)),
                ("r", _) => Err(format!("r has no field {field}")),
                _ => Err(format!("unknown resource {resource}")),
            }
        }
    }
    for source in [
        "{{ secret('r') + 1 }}",
        "{{ secret('r')|int }}",
        "{% include secret('r') %}",
        "{{ secret(secret('r')) }}",
        "{{ secret('r', secret('r')) }}",
        "{{ secret('r')|nope }}",
        "{% for c in secret('r') %}{{ c + 1 }}{% endfor %}",
    ] {
        let t = Template::parse("t", source.into()).unwrap();
        let err = t.render(&One).map(|_| ()).expect_err(source);
        assert_clean(&err);
    }
}

#[test]
fn write_errors() {
    let dir = tempfile::tempdir().unwrap();
    let content = format!("PASSWORD='{SECRET}'\n");
    for spec in [
        WriteSpec::new(dir.path().to_owned()),
        WriteSpec::new(dir.path().join("missing/dir/f")),
        WriteSpec {
            mode: 0o77777,
            ..WriteSpec::new(dir.path().join("f"))
        },
    ] {
        let err = write::write_atomic(&spec, content.as_bytes()).unwrap_err();
        assert_clean(&err);
    }
}

/// Log lines captured from a subscriber set for the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn run_logged(
    level: tracing::Level,
    cmd: &HookCommand,
    timeout: Duration,
    target: &Path,
) -> (Result<hooks::HookOutcome, hooks::HookError>, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = {
        let _guard = tracing::subscriber::set_default(subscriber);
        // Other tests of this binary hit the same callsites on other threads
        // without a subscriber; a callsite first seen there may have cached
        // "never" while this one was being set up.
        tracing::callsite::rebuild_interest_cache();
        hooks::run(cmd, timeout, target).await
    };
    (result, captured.text())
}

/// Hooks that print the file they were called for, as a careless reload
/// script might.
#[tokio::test]
async fn hook_errors_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("app.env");
    std::fs::write(&target, format!("PASSWORD={SECRET}\n")).unwrap();
    let shown = target.display().to_string();
    let timeout = Duration::from_secs(10);

    let failing = HookCommand::Shell(
        r#"cat "$PASSBOLT_SYNC_TARGET"; cat "$PASSBOLT_SYNC_TARGET" >&2; exit 1"#.into(),
    );
    let (result, info_log) = run_logged(tracing::Level::INFO, &failing, timeout, &target).await;
    assert_clean(&result.unwrap_err());
    assert!(info_log.contains("hook failed"), "{info_log}");
    assert!(info_log.contains(&shown), "{info_log}");
    assert!(!info_log.contains(SECRET), "{info_log}");

    let (_, debug_log) = run_logged(tracing::Level::DEBUG, &failing, timeout, &target).await;
    assert!(
        debug_log.contains(SECRET),
        "output is logged at DEBUG: {debug_log}"
    );

    let hanging = HookCommand::Shell(r#"cat "$PASSBOLT_SYNC_TARGET"; sleep 30"#.into());
    let short = Duration::from_millis(300);
    let (result, info_log) = run_logged(tracing::Level::INFO, &hanging, short, &target).await;
    assert_clean(&result.unwrap_err());
    assert!(info_log.contains("timed out"), "{info_log}");
    assert!(!info_log.contains(SECRET), "{info_log}");

    let ok = HookCommand::Argv(vec!["cat".into(), shown.clone()]);
    let (result, info_log) = run_logged(tracing::Level::INFO, &ok, timeout, &target).await;
    result.unwrap();
    assert!(info_log.contains("hook succeeded"), "{info_log}");
    assert!(!info_log.contains(SECRET), "{info_log}");
}
