//! Reload commands run after a target's content changed.
//!
//! A hook is a child process as `crate::runtime::process` makes them (own process
//! group, stdin from `/dev/null`, none of the daemon's secrets), told which
//! file changed, with its output captured. When it outlives its timeout the
//! whole group is killed, so a shell script's children go with it. Hook
//! output can contain secrets, so it is logged at DEBUG only and never put
//! into an error.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

pub use crate::config::values::HookCommand;
use crate::config::values::SHELL;
use crate::runtime::process::{self, WaitError};

/// The environment variable that tells a hook which file changed.
pub const TARGET_ENV: &str = "PASSBOLT_SYNC_TARGET";

/// Output kept per stream for the debug log; the rest is read and dropped
/// so that a chatty hook never blocks on a full pipe.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long output is still collected after the hook (or `apply`) exited,
/// for children it left behind that hold the pipes open.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// A hook that ran and exited successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookOutcome {
    pub status: ExitStatus,
    pub elapsed: Duration,
}

/// Why a hook did not succeed. No variant carries the hook's output.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook for {} has an empty command", .target.display())]
    EmptyCommand { target: PathBuf },

    #[error("cannot start hook program {program:?} for {}: {source}", .target.display())]
    Spawn {
        program: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot wait for the hook for {}: {source}", .target.display())]
    Wait {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("hook for {} timed out after {after:?} and was killed", .target.display())]
    TimedOut { target: PathBuf, after: Duration },

    #[error("hook for {} failed: {}", .target.display(), process::describe(.status))]
    Failed { target: PathBuf, status: ExitStatus },
}

/// The child of `cmd` (an argv, or a script for `/bin/sh -c`), set up
/// by [`process::command`]; `None` for an empty argv.
pub fn command(cmd: &HookCommand) -> Option<tokio::process::Command> {
    Some(match cmd {
        HookCommand::Argv(argv) => {
            let (program, args) = argv.split_first()?;
            let mut c = process::command(program);
            c.args(args);
            c
        }
        HookCommand::Shell(script) => {
            let mut c = process::command(SHELL);
            c.arg("-c").arg(script);
            c
        }
    })
}

/// Runs `cmd` for the changed file `target`, as a child set up by
/// [`crate::runtime::process`] (the daemon's environment minus its passphrase
/// variables, stdin from `/dev/null`, no inherited descriptor beyond 0-2,
/// its own process group) with `PASSBOLT_SYNC_TARGET` added. A non-zero
/// exit is [`HookError::Failed`]; a hook still running after `timeout` is
/// killed with its whole process group and is [`HookError::TimedOut`].
pub async fn run(
    cmd: &HookCommand,
    timeout: Duration,
    target: &Path,
) -> Result<HookOutcome, HookError> {
    let Some(mut command) = command(cmd) else {
        return Err(HookError::EmptyCommand {
            target: target.to_owned(),
        });
    };
    command
        .env(TARGET_ENV, target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    // The command is configuration, not a secret, but it stays at DEBUG
    // with the output in case someone put a credential on a command line.
    tracing::debug!(target_path = %target.display(), command = %cmd, "running hook");
    let started = Instant::now();
    let mut child = process::Child::spawn(&mut command).map_err(|source| HookError::Spawn {
        program: cmd.program().to_owned(),
        target: target.to_owned(),
        source,
    })?;
    let stdout = tokio::spawn(collect(child.take_stdout()));
    let stderr = tokio::spawn(collect(child.take_stderr()));

    let status = match child.wait_or_kill(timeout).await {
        Ok(status) => status,
        Err(WaitError::Io(source)) => {
            return Err(HookError::Wait {
                target: target.to_owned(),
                source,
            });
        }
        Err(WaitError::TimedOut(after)) => {
            log_output(target, stdout, stderr).await;
            tracing::warn!(target_path = %target.display(), timeout = ?after,
                "hook timed out; its process group was killed");
            return Err(HookError::TimedOut {
                target: target.to_owned(),
                after,
            });
        }
    };
    let elapsed = started.elapsed();
    log_output(target, stdout, stderr).await;

    if status.success() {
        tracing::info!(target_path = %target.display(), elapsed = ?elapsed, "hook succeeded");
        Ok(HookOutcome { status, elapsed })
    } else {
        tracing::warn!(target_path = %target.display(), status = %process::describe(&status), "hook failed");
        Err(HookError::Failed {
            target: target.to_owned(),
            status,
        })
    }
}

/// Hook output may hold secrets, hence the zeroized, never-reallocated
/// buffers.
async fn collect<R: AsyncRead + Unpin>(stream: Option<R>) -> Zeroizing<Vec<u8>> {
    let Some(mut stream) = stream else {
        return Zeroizing::new(Vec::new());
    };
    let mut kept = Zeroizing::new(Vec::with_capacity(OUTPUT_LIMIT));
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        match stream.read(&mut chunk[..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
    kept
}

async fn log_output(
    target: &Path,
    stdout: tokio::task::JoinHandle<Zeroizing<Vec<u8>>>,
    stderr: tokio::task::JoinHandle<Zeroizing<Vec<u8>>>,
) {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    for (name, handle) in [("stdout", stdout), ("stderr", stderr)] {
        let abort = handle.abort_handle();
        let output = match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(output)) => output,
            Ok(Err(_)) => continue,
            Err(_) => {
                // A child left behind still holds the pipe; stop reading.
                abort.abort();
                continue;
            }
        };
        if !output.is_empty() {
            tracing::debug!(target_path = %target.display(), stream = name,
                output = %String::from_utf8_lossy(&output), "hook output");
        }
    }
}
