//! What this process lets out of itself: no core dump and no ptrace of it,
//! and children that inherit none of its secrets.
//!
//! Every child (the `on_change` hooks, and any future mode that starts
//! programs) is made by [`command`] and run as a [`Child`]: it gets this
//! process's environment minus every passphrase variable
//! ([`crate::config::captured`]), stdin from `/dev/null`, no file
//! descriptor beyond 0-2, and its own process group, which is killed as a
//! whole on timeout or when the caller gives up on it. Nothing here knows
//! what the children are for.

use std::ffi::OsStr;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdout, Command};

/// Descriptors closed in a child when `close_range` is not available
/// (before Linux 5.11, or filtered by seccomp as systemd 252's
/// `@system-service` does): up to the soft `RLIMIT_NOFILE`, at most this.
const FALLBACK_FD_LIMIT: u64 = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("cannot make the process non-dumpable (PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] nix::Error),
    #[error("cannot disable core dumps (RLIMIT_CORE): {0}")]
    CoreLimit(#[source] nix::Error),
}

/// Keeps the unlocked key, the passphrase and decrypted secrets in this
/// process's memory: no core dump is written (`RLIMIT_CORE` 0, soft and
/// hard, inherited by children too), and the process is not dumpable, so
/// processes of the same user cannot ptrace it or read its memory, and its
/// `/proc/<pid>` entries belong to root. Applies also outside systemd,
/// whose unit sets `LimitCORE=0` as well.
pub fn harden() -> Result<(), HardenError> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardenError::CoreLimit)?;
    nix::sys::prctl::set_dumpable(false).map_err(HardenError::Dumpable)
}

/// Makes every thread allocate from one malloc arena. glibc gives each
/// thread that allocates its own arena, and what a pass frees in them
/// stays fragmented there: measured with 1,000 secrets held, the idle
/// daemon's anonymous memory is 5.3 MB with one arena and 10.2 MB with the
/// default. The threads are few and the work is OpenPGP, not allocation,
/// so the shared lock costs nothing measurable. Must run before the
/// runtime starts its threads.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; called while the process
    // is single-threaded, before any other thread could allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A command for `program` with the child set-up described in the module
/// documentation. Callers add arguments, environment and stdout/stderr,
/// and start it with [`Child::spawn`].
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    // The variables were taken out of this process's environment at
    // start-up where possible; this also covers those that could not be.
    for name in crate::config::captured::names() {
        command.env_remove(name);
    }
    let fd_limit = fallback_fd_limit();
    command
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec, where only
    // async-signal-safe calls are allowed: it makes raw system calls and
    // neither allocates nor locks.
    unsafe {
        command.pre_exec(move || {
            close_inherited_fds(fd_limit);
            Ok(())
        });
    }
    command
}

fn fallback_fd_limit() -> libc::c_int {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    libc::c_int::try_from(soft.min(FALLBACK_FD_LIMIT)).unwrap_or(1024)
}

/// Makes every descriptor from 3 up close at exec. The descriptors Rust
/// opens are close-on-exec already, but ones inherited from our own parent
/// (a supervisor, a shell) are not. They are marked rather than closed:
/// closing would also close the pipe through which the standard library
/// reports a failed exec, and a missing program would then look started.
fn close_inherited_fds(fallback_limit: libc::c_int) {
    let first: libc::c_uint = 3;
    // SAFETY: close_range(2) only changes descriptor flags.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !marked {
        for fd in 3..fallback_limit {
            // SAFETY: F_SETFD on a descriptor that may not be open only
            // fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Why waiting for a child did not give its exit status.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("the child timed out after {0:?}; its process group was killed")]
    TimedOut(Duration),
    #[error("cannot wait for the child: {0}")]
    Io(#[source] io::Error),
}

/// A started child leading its own process group. The whole group is
/// killed if the child is dropped before it was reaped.
pub struct Child {
    child: tokio::process::Child,
    /// `None` once reaped: from then on the id may belong to someone else.
    group: Option<Pid>,
}

impl Child {
    /// Starts `command`, made by [`command`].
    pub fn spawn(command: &mut Command) -> io::Result<Child> {
        // Whatever the caller changed: the group id below relies on it.
        command.process_group(0);
        let child = command.spawn()?;
        // With process_group(0) the child leads a group whose id is its pid.
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        Ok(Child { child, group })
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Waits for the child to exit. After `timeout`, or when waiting fails,
    /// its whole process group is killed and the child reaped.
    pub async fn wait_or_kill(&mut self, timeout: Duration) -> Result<ExitStatus, WaitError> {
        let error = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.group = None;
                return Ok(status);
            }
            Ok(Err(e)) => WaitError::Io(e),
            Err(_) => WaitError::TimedOut(timeout),
        };
        // Not reaped yet, so the group id cannot have been reused.
        self.kill_group();
        let _ = self.child.wait().await;
        Err(error)
    }

    fn kill_group(&mut self) {
        if let Some(pgid) = self.group.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill_group();
    }
}
