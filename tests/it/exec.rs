//! `passbolt-sync exec` as a real child process against the dev server,
//! running real children (`sh`) that record what they saw into files.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, devserver, fixture, set_pin, wait_until, write_config};
use nix::sys::signal::Signal;
use passbolt_devserver::{Faults, Options, seed::ids};

const BIN: &str = env!("CARGO_BIN_EXE_passbolt-sync");

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn lines(p: &Path) -> Vec<String> {
    read(p).lines().map(String::from).collect()
}

/// An `exec:` section mapping `PIN` (the pin-code resource) and
/// `GITLAB` (a password with quotes, `$`, backticks and non-ASCII), polled
/// every second, with `options` added to the section.
fn exec_section(options: &str) -> String {
    format!(
        "schedule: every 1s\nexec:\n  env:\n    PIN: {{ resource: {pin}, field: pin }}\n    GITLAB: {{ name: GitLab, folder: Production }}\n  debounce: 300ms\n{options}",
        pin = ids::V5_PIN,
    )
}

/// `passbolt-sync exec -c config -- sh -c script`, with `{dir}` in the
/// script replaced by `dir`.
fn exec(config: &Path, dir: &Path, script: &str, envs: &[(&str, &str)]) -> Daemon {
    let mut cmd = exec_command(config, dir, script);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Daemon::spawn(cmd)
}

fn exec_command(config: &Path, dir: &Path, script: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["exec", "-c", config.to_str().unwrap(), "--", "sh", "-c"])
        .arg(script.replace("{dir}", dir.to_str().unwrap()))
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM");
    cmd
}

/// Waits for the exec process to exit on its own; its status and log.
async fn exited(mut d: Daemon) -> (Option<i32>, String) {
    let status = tokio::time::timeout(Duration::from_secs(20), d.child.wait())
        .await
        .expect("exec exits within 20 s")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (status.code(), d.log())
}

/// A child that records each start's PIN in `{dir}/starts` and then waits.
const RECORD_AND_WAIT: &str = "printf '%s\\n' \"$PIN\" >> {dir}/starts; exec sleep 60";

#[tokio::test(flavor = "multi_thread")]
async fn the_child_sees_exactly_the_mapped_values_and_its_exit_code_is_passed_through() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("alice"), &exec_section(""));
    let d = exec(
        &config,
        dir.path(),
        "printf %s \"$PIN\" > {dir}/pin; printf %s \"$GITLAB\" > {dir}/gitlab; printf %s \"$HOME\" > {dir}/home; exit 7",
        &[("HOME", "/home/inherited")],
    );
    let (code, log) = exited(d).await;
    assert_eq!(code, Some(7), "the child's exit code:\n{log}");
    assert_eq!(read(&dir.path().join("pin")), "73019468");
    assert_eq!(
        read(&dir.path().join("gitlab")),
        "g1t$lab \"pa ss\" `x` #1 ü"
    );
    assert_eq!(read(&dir.path().join("home")), "/home/inherited");
    assert!(log.contains("child started"), "{log}");
    assert!(log.contains("GITLAB, PIN"), "names are logged:\n{log}");
    assert!(!log.contains("73019468"), "{log}");
    assert!(
        log.contains("logged out"),
        "the refresh token is revoked:\n{log}"
    );

    // Without inherit_env the child gets the mapped variables only.
    write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &exec_section("  inherit_env: false\n"),
    );
    let d = exec(&config, dir.path(), "/usr/bin/env > {dir}/env", &[]);
    let (code, log) = exited(d).await;
    assert_eq!(code, Some(0), "{log}");
    let mut names: Vec<String> = lines(&dir.path().join("env"))
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    names.sort();
    // sh itself adds PWD (and dash nothing else) to what it exports.
    names.retain(|n| n != "PWD");
    assert_eq!(names, ["GITLAB", "PIN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_secret_restarts_the_child_once_and_an_unchanged_pass_does_not() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("alice"), &exec_section(""));
    let d = exec(
        &config,
        dir.path(),
        RECORD_AND_WAIT,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    );
    let starts = dir.path().join("starts");
    assert!(
        wait_until(Duration::from_secs(15), || lines(&starts).len() == 1).await,
        "{}",
        d.log()
    );
    // Three unchanged passes.
    assert!(
        d.wait_log("sync: ", 4, Duration::from_secs(6)).await,
        "{}",
        d.log()
    );
    assert_eq!(lines(&starts), ["73019468"], "{}", d.log());

    // Eight digits: a short one could be part of a pid or a byte count.
    set_pin(&server, "90817263");
    // Within debounce (300 ms) plus one tick (1 s), with some slack.
    assert!(
        wait_until(Duration::from_secs(3), || lines(&starts).len() == 2).await,
        "{}",
        d.log()
    );
    assert_eq!(lines(&starts), ["73019468", "90817263"]);
    // Once only: later passes see the same values.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(lines(&starts).len(), 2, "{}", d.log());

    let (code, log) = d.stop().await;
    // SIGTERM is forwarded; `sleep` dies of it.
    assert_eq!(code, Some(128 + 15), "{log}");
    let restart: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("restarting the child"))
        .collect();
    assert_eq!(restart.len(), 1, "{log}");
    assert!(restart[0].contains("variables=PIN"), "{log}");
    assert!(!restart[0].contains("GITLAB"), "only what changed: {log}");
    assert!(
        !log.contains("90817263") && !log.contains("73019468"),
        "{log}"
    );
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains(" INFO ") || l.contains("changed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signal_mode_sends_the_signal_instead_of_restarting() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &exec_section("  on_change: signal\n  signal: USR1\n"),
    );
    let d = exec(
        &config,
        dir.path(),
        "trap 'echo usr1 >> {dir}/signals' USR1; printf '%s\\n' \"$PIN\" >> {dir}/starts; while :; do sleep 0.1; done",
        &[],
    );
    let starts = dir.path().join("starts");
    assert!(
        wait_until(Duration::from_secs(15), || lines(&starts).len() == 1).await,
        "{}",
        d.log()
    );
    set_pin(&server, "5151");
    let signals = dir.path().join("signals");
    assert!(
        wait_until(Duration::from_secs(4), || lines(&signals) == ["usr1"]).await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lines(&signals), ["usr1"], "once");
    assert_eq!(lines(&starts), ["73019468"], "not restarted");
    let (_, log) = d.stop().await;
    assert!(log.contains("sending SIGUSR1 to the child"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_that_ignores_the_stop_signal_is_killed_after_stop_timeout() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &exec_section("  stop_timeout: 1s\n"),
    );
    // `sleep` inherits the ignored SIGTERM, so the whole group ignores it.
    let d = exec(
        &config,
        dir.path(),
        "trap '' TERM; printf '%s\\n' \"$PIN\" >> {dir}/starts; while :; do sleep 0.1; done",
        &[],
    );
    let starts = dir.path().join("starts");
    assert!(
        wait_until(Duration::from_secs(15), || lines(&starts).len() == 1).await,
        "{}",
        d.log()
    );
    set_pin(&server, "6161");
    assert!(
        wait_until(Duration::from_secs(5), || lines(&starts).len() == 2).await,
        "{}",
        d.log()
    );
    assert_eq!(lines(&starts)[1], "6161");
    let log = d.log();
    assert!(
        log.contains("the child outlived SIGTERM and was killed"),
        "{log}"
    );
    // The forwarded SIGTERM is ignored too; SIGKILL of exec's child
    // group is the operator's way out.
    d.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = nix::unistd::Pid::from_raw(d.child.id().unwrap() as i32);
    assert!(nix::sys::signal::kill(pid, None).is_ok(), "exec still runs");
    let child_pid: i32 = log
        .lines()
        .rev()
        .find(|l| l.contains("child restarted"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("the restart names the new pid");
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child_pid), Signal::SIGKILL).unwrap();
    let (code, log) = exited(d).await;
    assert_eq!(code, Some(128 + 9), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_sigterm_ends_the_child_and_exec_exits_with_its_status() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("alice"), &exec_section(""));
    let d = exec(
        &config,
        dir.path(),
        "trap 'echo term > {dir}/got; exit 3' TERM; touch {dir}/up; while :; do sleep 0.1; done",
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(15), || dir.path().join("up").exists()).await,
        "{}",
        d.log()
    );
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(3), "{log}");
    assert_eq!(read(&dir.path().join("got")), "term\n");
    assert!(log.contains("SIGTERM: forwarded to the child"), "{log}");
    assert!(
        server
            .events()
            .iter()
            .any(|e| matches!(e, passbolt_devserver::Event::Logout { token: Some(_), .. }))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_variable_starts_nothing_and_says_why() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        "exec:\n  env:\n    GONE: { name: No such resource }\n",
    );
    let d = exec(&config, dir.path(), "touch {dir}/started", &[]);
    let (code, log) = exited(d).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(!dir.path().join("started").exists());
    assert!(log.contains("nothing started"), "{log}");
    assert!(log.contains("\"No such resource\""), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_child_gets_no_passphrase_variable_no_supervisor_socket_and_no_inherited_fd() {
    use std::os::fd::AsRawFd;
    const PASS_VAR: &str = "PBS_EXEC_PASSPHRASE";
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let config = dir.path().join("sync.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  url: {}\n  fingerprint: {}\nauth:\n  user_id: {}\n  private_key_file: {}\n  passphrase_env: {PASS_VAR}\n{}",
            server.url(),
            server.server_fingerprint(),
            who.id,
            who.private_path.display(),
            exec_section(""),
        ),
    )
    .unwrap();
    let mut cmd = exec_command(
        &config,
        dir.path(),
        "/usr/bin/env > {dir}/env; ls -l /proc/self/fd > {dir}/fds",
    );
    let socket = dir.path().join("notify.sock");
    let socket_rx = tokio::net::UnixDatagram::bind(&socket).unwrap();
    cmd.env(PASS_VAR, &who.passphrase)
        .env("NOTIFY_SOCKET", &socket);
    // Descriptor 7, open across exec, as a careless supervisor leaves it.
    let extra = std::fs::File::open(&config).unwrap();
    let raw = extra.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 || libc::fcntl(7, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let d = Daemon::spawn(cmd);
    let (code, log) = exited(d).await;
    assert_eq!(code, Some(0), "{log}");
    let env = read(&dir.path().join("env"));
    assert!(env.contains("PIN=73019468"), "{env}");
    for name in [PASS_VAR, "NOTIFY_SOCKET"] {
        assert!(
            !env.contains(&format!("{name}=")),
            "{name} reached the child"
        );
    }
    assert!(!env.contains(&who.passphrase));
    let fds = read(&dir.path().join("fds"));
    let open: Vec<&str> = fds
        .lines()
        .filter(|l| l.contains(" -> "))
        .filter_map(|l| l.split(" -> ").next()?.split_whitespace().last())
        .collect();
    // 0-2 and the directory `ls` opened to list itself.
    assert_eq!(open.len(), 4, "{fds}");
    assert!(!open.contains(&"7"), "{fds}");
    // READY reached systemd's socket, not the child's environment.
    let mut messages = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), socket_rx.recv(&mut buf)).await
    {
        messages.push_str(&String::from_utf8_lossy(&buf[..n]));
        messages.push('\n');
    }
    assert!(messages.contains("READY=1"), "{messages}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_outage_does_not_touch_the_child() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("alice"), &exec_section(""));
    let d = exec(
        &config,
        dir.path(),
        RECORD_AND_WAIT,
        &[("PASSBOLT_SYNC_TEST_BACKOFF", "100ms 300ms")],
    );
    let starts = dir.path().join("starts");
    assert!(
        wait_until(Duration::from_secs(15), || lines(&starts).len() == 1).await,
        "{}",
        d.log()
    );
    server.set_faults(Faults {
        status_for_all: Some(503),
        ..Faults::default()
    });
    assert!(
        d.wait_log("passbolt server down", 1, Duration::from_secs(5))
            .await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lines(&starts), ["73019468"], "{}", d.log());
    server.set_faults(Faults::default());
    assert!(
        d.wait_log("passbolt server recovered", 1, Duration::from_secs(5))
            .await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lines(&starts), ["73019468"], "{}", d.log());
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(128 + 15), "{log}");
    assert!(!log.contains("restarting"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn as_pid_1_exec_reaps_the_orphans_it_inherits() {
    // `unshare --pid --fork` makes its child PID 1 of a new namespace;
    // --mount-proc lets the child see that namespace's processes.
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: unshare --pid --fork --mount-proc is not permitted here (needs root or user namespaces)"
        );
        return;
    }
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("alice"), &exec_section(""));
    // Five grandchildren orphaned at once (their parent `sh` exits), which
    // exit 200 ms later as children of PID 1; then count the zombies of
    // the namespace. The control: one zombie whose parent (`sleep 3`)
    // lives and never waits, which no PID 1 may reap.
    let script = "for i in 1 2 3 4 5; do sh -c 'sleep 0.2 &'; done; \
         sh -c 'sleep 0.1 & exec sleep 3' & sleep 1.5; \
         grep -l '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat 2>/dev/null | wc -l > {dir}/zombies";
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN, "exec", "-c"])
        .arg(&config)
        .args(["--", "sh", "-c"])
        .arg(script.replace("{dir}", dir.path().to_str().unwrap()))
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    let d = Daemon::spawn(cmd);
    let (code, log) = exited(d).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("pid1=true"), "exec ran as PID 1:\n{log}");
    assert_eq!(
        read(&dir.path().join("zombies")).trim(),
        "1",
        "the control zombie only:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_targets_sync_and_a_config_edit_reaches_the_child_while_it_runs() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let target = |extra_var: &str| {
        format!(
            "{}{extra_var}targets:\n  - {{ path: {}/legacy, format: raw, resource: {} }}\n",
            exec_section(""),
            dir.path().display(),
            ids::V4_PASSWORD_STRING
        )
    };
    let config = write_config(dir.path(), &server, &who, &target(""));
    let d = exec(
        &config,
        dir.path(),
        "printf '%s:%s\\n' \"$PIN\" \"$REDIS\" >> {dir}/starts; exec sleep 60",
        &[],
    );
    let starts = dir.path().join("starts");
    assert!(
        wait_until(Duration::from_secs(15), || lines(&starts).len() == 1).await,
        "{}",
        d.log()
    );
    // The target was written before the child started.
    assert_eq!(read(&dir.path().join("legacy")), "legacy-db-pass");
    assert_eq!(lines(&starts), ["73019468:"]);

    // An edit adding a variable (written the way editors do: a new file
    // renamed over the old) restarts the child with it.
    let text = read(&config);
    let edited = text.replace(
        "    GITLAB:",
        &format!(
            "    REDIS: {{ resource: {} }}\n    GITLAB:",
            ids::V5_PASSWORD_STRING
        ),
    );
    assert_ne!(edited, text);
    let tmp = dir.path().join("sync.yaml.new");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    assert!(
        wait_until(Duration::from_secs(8), || lines(&starts).len() == 2).await,
        "{}",
        d.log()
    );
    assert_eq!(lines(&starts)[1], "73019468:redis-pass-v5");
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(128 + 15), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("variables=REDIS"), "{log}");
}
