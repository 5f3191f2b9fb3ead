//! What the process lets out: hooks get none of the daemon's secrets and
//! none of its inherited descriptors, a running daemon keeps no passphrase
//! in its environment and cannot dump core or be read by its own user, and
//! one config has one daemon. With the real binary against the dev server.

use crate::common;
use crate::common::replace;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, Fixture, devserver, fixture, set_pin, wait_until, write_config};
use passbolt_devserver::{DevServer, Options, seed::ids};
use passbolt_sync::agent::lock::{InstanceLock, LockError, choose_lock_dir, lock_file_name};

const BIN: &str = env!("CARGO_BIN_EXE_passbolt-sync");
/// The variable the configs name in `auth.passphrase_env`.
const PASS_VAR: &str = "PBS_HARDENING_PASSPHRASE";
/// Another variable holding the passphrase, named only by a reload.
const LATE_VAR: &str = "PBS_HARDENING_LATE_PASSPHRASE";
/// The inherited descriptor the binary is started with.
const EXTRA_FD: i32 = 7;
/// Who the daemon runs as when the tests run as root: a non-root user, for
/// whom a non-dumpable process is visible from outside.
const NOBODY: u32 = 65534;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A config for `who` whose passphrase comes from `var`.
fn env_config(
    dir: &Path,
    server: &DevServer,
    who: &Fixture,
    key: &Path,
    var: &str,
    extra: &str,
) -> String {
    format!(
        "server:\n  url: {}\n  fingerprint: {}\n  timeout: 10s\nauth:\n  user_id: {}\n  private_key_file: {}\n  passphrase_env: {var}\n{extra}",
        server.url(),
        server.server_fingerprint(),
        who.id,
        key.display(),
    )
    .replace("{dir}", dir.to_str().unwrap())
}

/// A pin target whose hook records its environment in `{dir}/hook.env` and
/// its open descriptors in `{dir}/hook.fds`.
const RECORDING_TARGET: &str = "schedule: every 1s\ntargets:\n  - path: {dir}/pin\n    format: raw\n    resource: 3c2b5e1a-0000-4000-8000-00000000000b\n    field: pin\n    on_change: \"env > {dir}/hook.env; ls -l /proc/self/fd > {dir}/hook.fds\"\n";

/// Makes `cmd`'s child inherit `file` as descriptor 7, not close-on-exec,
/// the way a supervisor or a shell can leave descriptors open.
fn inherit_as_fd7(cmd: &mut tokio::process::Command, file: &std::fs::File) {
    let raw = file.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, EXTRA_FD) < 0 || libc::fcntl(EXTRA_FD, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `ls -l /proc/self/fd` output as descriptor -> what it points to.
fn listed_fds(listing: &str) -> BTreeMap<i32, String> {
    listing
        .lines()
        .filter_map(|line| {
            let (left, target) = line.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_owned()))
        })
        .collect()
}

fn env_var_names(env: &str) -> Vec<&str> {
    env.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_gets_no_passphrase_variable_and_no_inherited_descriptor() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let config = dir.path().join("sync.yaml");
    std::fs::write(
        &config,
        env_config(
            dir.path(),
            &server,
            &who,
            &who.private_path,
            PASS_VAR,
            RECORDING_TARGET,
        ),
    )
    .unwrap();
    let extra = std::fs::File::open(&config).unwrap();

    // The set-up does hand descriptor 7 to what it starts.
    let mut control = tokio::process::Command::new("sh");
    control.args(["-c", "ls -l /proc/self/fd"]);
    inherit_as_fd7(&mut control, &extra);
    let out = control.output().await.unwrap();
    assert!(
        listed_fds(&String::from_utf8_lossy(&out.stdout)).contains_key(&EXTRA_FD),
        "{out:?}"
    );

    let mut once = tokio::process::Command::new(BIN);
    once.args(["once", "-c", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env(PASS_VAR, &who.passphrase);
    inherit_as_fd7(&mut once, &extra);
    let out = once.output().await.unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(read(&dir.path().join("pin")), "73019468");

    let env = read(&dir.path().join("hook.env"));
    let names = env_var_names(&env);
    assert!(!names.contains(&PASS_VAR), "{env}");
    assert!(
        !env.contains(&who.passphrase),
        "the passphrase reached the hook"
    );
    let target = dir.path().join("pin");
    assert!(
        env.lines()
            .any(|l| l == format!("PASSBOLT_SYNC_TARGET={}", target.display())),
        "{env}"
    );
    assert!(names.contains(&"PATH"), "the rest of the environment stays");

    let listing = read(&dir.path().join("hook.fds"));
    let fds = listed_fds(&listing);
    assert_eq!(
        fds.keys().filter(|fd| **fd <= 2).count(),
        3,
        "stdin, stdout and stderr:\n{listing}"
    );
    assert_eq!(fds[&0], "/dev/null", "{listing}");
    // Beyond 0-2 only the directory `ls` opened to list itself.
    let beyond: Vec<_> = fds.iter().filter(|(fd, _)| **fd > 2).collect();
    assert!(beyond.len() <= 1, "{listing}");
    for (_, target) in beyond {
        let pid = target
            .strip_prefix("/proc/")
            .and_then(|t| t.strip_suffix("/fd"));
        assert!(
            pid.is_some_and(|p| p.chars().all(|c| c.is_ascii_digit())),
            "{listing}"
        );
    }
}

/// The owner of `/proc/<pid>/status`: the process's user while it is
/// dumpable, root once it is not.
fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid()
}

fn proc_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_has_no_passphrase_in_its_environment_no_core_dumps_and_is_not_dumpable() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let root = nix::unistd::geteuid().is_root();
    let uid = if root {
        NOBODY
    } else {
        nix::unistd::geteuid().as_raw()
    };
    let key = dir.path().join("key.asc");
    std::fs::copy(&who.private_path, &key).unwrap();
    let config = dir.path().join("sync.yaml");
    let text = env_config(dir.path(), &server, &who, &key, PASS_VAR, RECORDING_TARGET);
    std::fs::write(&config, &text).unwrap();
    // The other user may not be able to reach the build directory (a
    // clone under /root, mode 0700): it runs a copy of the binary.
    let program = dir.path().join("passbolt-sync");
    std::fs::copy(env!("CARGO_BIN_EXE_passbolt-sync"), &program).unwrap();
    if root {
        chown_tree(dir.path(), uid);
    }

    let mut cmd = Daemon::command_of(&program, &config);
    cmd.env(PASS_VAR, &who.passphrase)
        .env(LATE_VAR, &who.passphrase)
        .env("RUNTIME_DIRECTORY", dir.path().join("run"));
    if root {
        cmd.uid(uid).gid(uid);
    }
    let d = Daemon::spawn(cmd);
    assert!(
        d.wait_log("ready", 1, Duration::from_secs(20)).await,
        "{}",
        d.log()
    );
    let pid = d.child.id().unwrap();
    assert_eq!(proc_uid(pid), uid);

    // The passphrase variable is gone from what /proc shows; the variable
    // that was never named by the config at start-up is still there.
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => {
            let environ = String::from_utf8_lossy(&environ);
            assert!(!environ.contains(PASS_VAR), "{environ:?}");
            assert!(
                environ.contains(&format!("{LATE_VAR}={}", who.passphrase)),
                "{environ:?}"
            );
            assert_eq!(
                environ.matches(who.passphrase.as_str()).count(),
                1,
                "only {LATE_VAR} holds it"
            );
        }
        // Without root, a non-dumpable process's environ is closed to its
        // own user.
        Err(e) => assert!(
            !root && e.kind() == std::io::ErrorKind::PermissionDenied,
            "{e}"
        ),
    }

    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );

    // Not dumpable: its /proc entries belong to root, while those of a
    // dumpable process of the same user belong to that user.
    let mut sleeper = tokio::process::Command::new("sleep");
    sleeper.arg("30").kill_on_drop(true);
    if root {
        sleeper.uid(uid).gid(uid);
    }
    let sleeper = sleeper.spawn().unwrap();
    assert_eq!(proc_owner(sleeper.id().unwrap()), uid, "the control");
    assert_eq!(proc_owner(pid), 0, "the daemon is dumpable");
    drop(sleeper);

    let hook_env = dir.path().join("hook.env");
    let pin = dir.path().join("pin");
    assert!(wait_until(Duration::from_secs(5), || hook_env.exists()).await);
    assert!(!env_var_names(&read(&hook_env)).contains(&PASS_VAR));

    // A reload that logs in again with the same variable uses the captured
    // value.
    replace(&config, &text.replace("timeout: 10s", "timeout: 11s"));
    assert!(
        d.wait_log("config reloaded", 1, Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );
    set_pin(&server, "1111");
    assert!(
        wait_until(Duration::from_secs(10), || read(&pin) == "1111").await,
        "{}",
        d.log()
    );
    // That change's hook still runs after the pin is written, and its
    // environment has the later variable (not named yet): its hook.env
    // must not be taken for the next one's.
    assert!(
        d.wait_log("hook succeeded", 2, Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );

    // A reload naming a variable that was never captured reads it from the
    // environment; hooks do not get that one either.
    std::fs::remove_file(&hook_env).unwrap();
    replace(
        &config,
        &text
            .replace("timeout: 10s", "timeout: 11s")
            .replace(PASS_VAR, LATE_VAR),
    );
    assert!(
        d.wait_log("config reloaded", 2, Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );
    set_pin(&server, "2222");
    assert!(
        wait_until(Duration::from_secs(10), || read(&pin) == "2222").await,
        "{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || hook_env.exists()).await);
    let env = read(&hook_env);
    let names = env_var_names(&env);
    assert!(
        !names.contains(&PASS_VAR) && !names.contains(&LATE_VAR),
        "{env}"
    );
    assert!(!env.contains(&who.passphrase));

    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("config reload failed"), "{log}");
    assert_eq!(log.matches("relogin=true").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_config_is_refused_with_the_first_ones_pid() {
    let server = devserver(Options::default()).await;
    let who = fixture("alice");
    let runtime = tempfile::tempdir().unwrap();
    let run_dir = runtime.path().join("passbolt-sync");
    let run_env = [("RUNTIME_DIRECTORY", run_dir.to_str().unwrap())];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let target = |d: &Path| {
        format!(
            "targets:\n  - {{ path: {}/pin, format: raw, resource: {}, field: pin }}\n",
            d.display(),
            ids::V5_PIN
        )
    };
    let config_a = write_config(dir_a.path(), &server, &who, &target(dir_a.path()));
    let config_b = write_config(dir_b.path(), &server, &who, &target(dir_b.path()));

    let first = Daemon::start(&config_a, &run_env).await;
    assert!(
        first.wait_log("ready", 1, Duration::from_secs(20)).await,
        "{}",
        first.log()
    );
    let first_pid = first.child.id().unwrap();
    let logins = server.count_logins();

    // Named directly, and through a symlink: the same file either way.
    let link = dir_b.path().join("link.yaml");
    std::os::unix::fs::symlink(&config_a, &link).unwrap();
    for path in [&config_a, &link] {
        let mut second = tokio::process::Command::new(BIN);
        second
            .args(["run", "-c", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(run_env)
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(20), second.output())
            .await
            .expect("a second daemon does not start")
            .unwrap();
        let (_, stderr) = common::text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("PID {first_pid}")), "{stderr}");
        assert!(stderr.contains("already running"), "{stderr}");
    }
    assert_eq!(
        server.count_logins(),
        logins,
        "the refused ones never log in"
    );

    // Another config is another lock.
    let other = Daemon::start(&config_b, &run_env).await;
    assert!(
        other.wait_log("ready", 1, Duration::from_secs(20)).await,
        "{}",
        other.log()
    );
    let (code, log) = other.stop().await;
    assert_eq!(code, Some(0), "{log}");

    // The lock goes with its holder.
    let (code, log) = first.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let again = Daemon::start(&config_a, &run_env).await;
    assert!(
        again.wait_log("ready", 1, Duration::from_secs(20)).await,
        "{}",
        again.log()
    );
    let (code, log) = again.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn the_lock_file_holds_the_pid_and_refuses_a_second_holder_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = dir.path().join("sync.yaml");
    let other = dir.path().join("other.yaml");
    std::fs::write(&config, "").unwrap();
    std::fs::write(&other, "").unwrap();

    let held = InstanceLock::acquire_in(&run, &config).unwrap();
    assert_eq!(
        std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let meta = std::fs::metadata(held.path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(held.path()).unwrap(),
        format!("{}\n", std::process::id())
    );

    // flock conflicts between two opens, in one process too.
    let err = InstanceLock::acquire_in(&run, &config).unwrap_err();
    assert!(
        matches!(&err, LockError::Held { pid: Some(p), .. } if *p == std::process::id()),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("PID {}", std::process::id())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(held.path()).unwrap(),
        format!("{}\n", std::process::id()),
        "the refused one left the PID alone"
    );
    let second = InstanceLock::acquire_in(&run, &other).unwrap();
    assert_ne!(second.path(), held.path());

    drop(held);
    InstanceLock::acquire_in(&run, &config).unwrap();
}

#[test]
fn lock_file_names_follow_the_canonical_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.yaml");
    std::fs::write(&config, "").unwrap();
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let name = lock_file_name(&config);
    assert!(
        name.starts_with("sync.yaml-") && name.ends_with(".lock"),
        "{name}"
    );
    assert_eq!(lock_file_name(&link), name);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    assert_eq!(lock_file_name(&dir.path().join("sub/../sync.yaml")), name);
    assert_ne!(lock_file_name(&dir.path().join("other.yaml")), name);
}

#[test]
fn a_lock_directory_others_can_write_to_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = InstanceLock::acquire_in(&shared, &dir.path().join("sync.yaml")).unwrap_err();
    assert!(matches!(err, LockError::UnsafeDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    let err = InstanceLock::acquire_in(&link, &dir.path().join("sync.yaml")).unwrap_err();
    assert!(matches!(err, LockError::UnsafeDir { .. }), "{err:?}");
}

#[test]
fn the_lock_directory_comes_from_systemd_then_root_then_the_user_runtime_dir() {
    use std::ffi::OsStr;
    let tmp = Path::new("/tmp");
    let runtime = Some(OsStr::new("/run/passbolt-sync:/run/other"));
    let xdg = Some(OsStr::new("/run/user/1000"));
    let pick = |r, x, uid| choose_lock_dir(r, x, uid, tmp);
    assert_eq!(
        pick(runtime, xdg, 1000),
        PathBuf::from("/run/passbolt-sync")
    );
    assert_eq!(pick(None, xdg, 0), PathBuf::from("/run/passbolt-sync"));
    assert_eq!(
        pick(None, xdg, 1000),
        PathBuf::from("/run/user/1000/passbolt-sync")
    );
    assert_eq!(
        pick(None, None, 1000),
        PathBuf::from("/tmp/passbolt-sync-1000")
    );
    assert_eq!(
        pick(Some(OsStr::new("")), Some(OsStr::new("")), 1000),
        PathBuf::from("/tmp/passbolt-sync-1000")
    );
}
