//! Shared helpers of the integration tests: fixture keys recorded from a
//! real passbolt 5.12 server, and a dev server seeded with those accounts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use passbolt_devserver::DevServer;
pub use passbolt_devserver::fixtures::*;
use serde_json::Value;

/// Writes a config for `who` against `server` into `dir`, with `targets`
/// appended verbatim (YAML, indented as a top-level key).
pub fn write_config(dir: &Path, server: &DevServer, who: &Fixture, extra: &str) -> PathBuf {
    let pass = dir.join(format!("{}.pass", who.name));
    std::fs::write(&pass, format!("{}\n", who.passphrase)).unwrap();
    let config = format!(
        "server:\n  url: {}\n  fingerprint: {}\nauth:\n  user_id: {}\n  private_key_file: {}\n  passphrase_file: {}\n{extra}",
        server.url(),
        server.server_fingerprint(),
        who.id,
        who.private_path.display(),
        pass.display(),
    );
    let path = dir.join("sync.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs the binary with `args`, waiting without blocking the runtime (the
/// dev server lives in this process).
pub async fn cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("the binary runs")
}

/// Runs `cmd` to its end; panics, with its output, unless it succeeded.
pub fn run(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What `cmd` printed on stdout; panics unless it succeeded.
pub fn stdout(cmd: &mut std::process::Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

pub fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every secret value of the dev server's resources (JSON string leaves
/// under secret keys, or the bare string), for leak checks.
pub fn secret_values(server: &DevServer) -> Vec<String> {
    fn walk(v: &Value, key: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s)
                if s.len() >= 4
                    && matches!(
                        key,
                        "password" | "description" | "secret_key" | "pin_code" | "secret_value"
                    ) =>
            {
                out.push(s.clone())
            }
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, k, out)),
            Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in server.resources() {
        match serde_json::from_str::<Value>(&r.secret) {
            Ok(v @ Value::Object(_)) => walk(&v, "", &mut out),
            _ => out.push(r.secret.clone()),
        }
    }
    out
}

/// Every secret a run against `server` as `who` could leak: the seeded
/// secret values, the account's passphrase, the tokens the server issued
/// and the body lines of the armored private key.
pub fn known_secrets(server: &DevServer, who: &Fixture) -> Vec<String> {
    let mut secrets = secret_values(server);
    secrets.push(who.passphrase.clone());
    secrets.extend(server.issued_tokens());
    let armored = std::fs::read_to_string(&who.private_path).unwrap();
    secrets.extend(
        armored
            .lines()
            .filter(|l| l.len() > 40 && !l.starts_with("-----"))
            .map(String::from),
    );
    secrets
}

/// The password of resource `id` as `who` decrypts it with their own key.
pub async fn password_of(server: &DevServer, who: &'static str, id: &str) -> String {
    client(server, &fixture(who))
        .fetch_secrets(&[id.to_string()])
        .await
        .unwrap()
        .remove(id)
        .unwrap()
        .fields
        .unwrap()
        .password
        .unwrap()
        .expose()
        .to_string()
}

/// Changes the PIN of the v5 pin-code resource, as a user editing it would.
pub fn set_pin(server: &DevServer, pin: &str) {
    server
        .set_secret(
            passbolt_devserver::seed::ids::V5_PIN,
            &format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","pin_code":"{pin}","description":null}}"#
            ),
        )
        .unwrap();
}

/// A `passbolt-sync run` child process whose stderr is collected.
pub struct Daemon {
    pub child: tokio::process::Child,
    log: Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    pub async fn start(config: &Path, envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = Daemon::command(config);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Daemon::spawn(cmd)
    }

    /// The `run` command line, for tests that set up more than variables.
    pub fn command(config: &Path) -> tokio::process::Command {
        Daemon::command_of(Path::new(env!("CARGO_BIN_EXE_passbolt-sync")), config)
    }

    /// The `run` command line of another copy of the binary.
    pub fn command_of(program: &Path, config: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(["run", "-c", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        cmd
    }

    pub fn spawn(mut cmd: tokio::process::Command) -> Daemon {
        cmd.stderr(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("the binary runs");
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` `times` times.
    pub async fn wait_log(&self, needle: &str, times: usize, within: std::time::Duration) -> bool {
        wait_until(within, || self.log().matches(needle).count() >= times).await
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    pub async fn stop(mut self) -> (Option<i32>, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait())
            .await
            .expect("the daemon stops within 20 s")
            .unwrap();
        // Let the reader drain the last lines.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (status.code(), self.log())
    }
}

/// Polls `cond` every 20 ms until it holds or `within` has passed.
pub async fn wait_until(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An account kit for `who`, signed with its key as the browser extension
/// signs it.
pub fn account_kit(server: &DevServer, who: &Fixture) -> String {
    let armored = std::fs::read_to_string(&who.private_path).unwrap();
    server
        .account_kit(&who.id, &armored, &shared_key(who))
        .unwrap()
}

/// Replaces a file the way editors and config managers do: write a new
/// file, rename it over the old one.
pub fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The first python3 that imports `module`: the one on PATH (pyenv, a
/// venv), else Debian's, which `package` serves (`.ci/deps --test`
/// installs it). Looked up once per module.
pub fn python_with(module: &'static str, package: &str) -> &'static str {
    static FOUND: std::sync::Mutex<Vec<(&'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap();
    if let Some((_, python)) = found.iter().find(|(m, _)| *m == module) {
        return python;
    }
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", &format!("import {module}")])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!("no python3 imports {module}; `.ci/deps --test` installs Debian's {package}")
        });
    found.push((module, python));
    python
}
