//! Reload hooks as real child processes.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use passbolt_sync::sync::hooks::{HookCommand, HookError, run};

const TIMEOUT: Duration = Duration::from_secs(10);

fn argv(args: &[&str]) -> HookCommand {
    HookCommand::Argv(args.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn argv_form_passes_arguments_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cmd = argv(&[
        "sh",
        "-c",
        "printf '%s|%s' \"$1\" \"$2\" > \"$3\"",
        "sh",
        "a b",
        "it's $HOME",
        out.to_str().unwrap(),
    ]);
    let outcome = run(&cmd, TIMEOUT, Path::new("/etc/app.env")).await.unwrap();
    assert!(outcome.status.success());
    assert_eq!(fs::read_to_string(&out).unwrap(), "a b|it's $HOME");
}

#[tokio::test]
async fn shell_form_runs_through_sh_with_the_target_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let target = dir.path().join("my app.env");
    let cmd = HookCommand::Shell(format!(
        "printf '%s' \"$PASSBOLT_SYNC_TARGET\" > '{}' && test -n \"$PATH\"",
        out.display()
    ));
    run(&cmd, TIMEOUT, &target).await.unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap(), target.to_str().unwrap());
}

#[tokio::test]
async fn non_zero_exit_is_failed() {
    let err = run(
        &HookCommand::Shell("exit 3".into()),
        TIMEOUT,
        Path::new("/t"),
    )
    .await
    .unwrap_err();
    match &err {
        HookError::Failed { target, status } => {
            assert_eq!(target, Path::new("/t"));
            assert_eq!(status.code(), Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "hook for /t failed: exit code 3");
}

#[tokio::test]
async fn missing_program_and_empty_command_are_errors() {
    let err = run(&argv(&["/no/such/reload"]), TIMEOUT, Path::new("/t"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HookError::Spawn { program, .. } if program == "/no/such/reload"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/no/such/reload"));
    let err = run(&HookCommand::Argv(vec![]), TIMEOUT, Path::new("/t"))
        .await
        .unwrap_err();
    assert!(matches!(err, HookError::EmptyCommand { .. }));
}

#[tokio::test]
async fn stdin_is_closed_and_large_output_does_not_block() {
    let started = Instant::now();
    run(&argv(&["cat"]), TIMEOUT, Path::new("/t"))
        .await
        .unwrap();
    run(
        &HookCommand::Shell("head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2".into()),
        TIMEOUT,
        Path::new("/t"),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn pid_is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A killed child whose new parent has not reaped it yet.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z'),
    }
}

async fn wait_gone(pid: i32) -> bool {
    for _ in 0..50 {
        if pid_is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn timeout_kills_the_hook_quickly() {
    let started = Instant::now();
    let err = run(
        &argv(&["sleep", "30"]),
        Duration::from_millis(300),
        Path::new("/t"),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, HookError::TimedOut { after, .. } if after == Duration::from_millis(300))
    );
    assert!(elapsed < Duration::from_millis(900), "took {elapsed:?}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = HookCommand::Shell(format!(
        "sleep 30 & echo $! > '{}'; wait",
        pidfile.display()
    ));
    let started = Instant::now();
    let err = run(&cmd, Duration::from_millis(300), Path::new("/t"))
        .await
        .unwrap_err();
    assert!(matches!(err, HookError::TimedOut { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "took {:?}",
        started.elapsed()
    );
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_gone(pid).await, "background child {pid} survived");
}

#[tokio::test]
async fn children_left_running_do_not_hold_up_a_successful_hook() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The background sleep keeps stdout open after the shell exits.
    let cmd = HookCommand::Shell(format!(
        "sleep 5 & echo $! > '{}'; echo started",
        pidfile.display()
    ));
    let started = Instant::now();
    run(&cmd, TIMEOUT, Path::new("/t")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A daemon started by a reload hook is not the hook's to kill.
    assert!(!pid_is_gone(pid));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn dropping_the_future_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = HookCommand::Shell(format!(
        "sleep 30 & echo $! > '{}'; wait",
        pidfile.display()
    ));
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        run(&cmd, TIMEOUT, Path::new("/t")),
    )
    .await;
    assert!(abandoned.is_err());
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_gone(pid).await, "background child {pid} survived");
}

#[test]
fn commands_deserialize_from_a_list_or_a_string() {
    let list: HookCommand = serde_json::from_str(r#"["systemctl", "reload", "nginx"]"#).unwrap();
    assert_eq!(list, argv(&["systemctl", "reload", "nginx"]));
    let shell: HookCommand = serde_json::from_str(r#""nginx -s reload && echo ok""#).unwrap();
    assert_eq!(
        shell,
        HookCommand::Shell("nginx -s reload && echo ok".into())
    );
    assert!(serde_json::from_str::<HookCommand>("42").is_err());
}
