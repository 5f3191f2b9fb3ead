//! What this process lets out of itself: no core dump and no ptrace of it,
//! and children that inherit none of its secrets.
//!
//! Every child (the `on_change` hooks, `exec`'s program) is made by
//! [`command`] and run as a [`Child`]: it gets this process's environment
//! minus every passphrase variable ([`crate::runtime::captured`]), stdin
//! from `/dev/null` unless the caller hands its own on, no file descriptor
//! beyond 0-2, and its own process group, which is stopped or killed as a
//! whole on timeout or when the caller gives up on it. Nothing here knows
//! what the children are for.
//!
//! Every child started here is registered until it is reaped, so that
//! [`reap_orphans`] (for a process that is PID 1 and inherits orphans)
//! reaps only what tokio does not wait for.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

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
    for name in crate::runtime::captured::names() {
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

/// How a child ended, in words: "exit code N" or "killed by signal N".
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Makes the child of `command` the foreground process group of the
/// terminal on stdin, when this process's group is: a child in its own
/// group would otherwise be stopped (SIGTTIN) as soon as it read from the
/// terminal, and the terminal's Ctrl-C would not reach it. Nothing changes
/// when stdin is no terminal or this process runs in the background.
pub fn give_terminal(command: &mut Command) {
    // SAFETY: isatty, tcgetpgrp and getpgrp only query descriptor 0 and
    // this process.
    let foreground = unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    };
    if !foreground {
        return;
    }
    // SAFETY: runs between fork and exec, after the child joined its own
    // group; sigprocmask and tcsetpgrp are async-signal-safe system calls,
    // and nothing here allocates or locks.
    unsafe {
        command.pre_exec(|| {
            // A background group changing the foreground would be sent
            // SIGTTOU, which stops it: block it meanwhile.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTTOU);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            Ok(())
        });
    }
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

/// The children started here and not yet reaped, by pid; held while a
/// child is started and while [`reap_orphans`] decides, so that it never
/// reaps one of them.
static OURS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn forget(pid: Pid) {
    OURS.lock().expect("not poisoned").remove(&pid.as_raw());
}

/// A started child leading its own process group. The whole group is
/// killed if the child is dropped before it was reaped.
pub struct Child {
    child: tokio::process::Child,
    /// `None` once reaped: from then on the id may belong to someone else.
    group: Option<Pid>,
}

/// How [`Child::stop`] ended a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Whether it outlived the stop signal's timeout and was killed.
    pub killed: bool,
}

impl Child {
    /// Starts `command`, made by [`command`].
    pub fn spawn(command: &mut Command) -> io::Result<Child> {
        // Whatever the caller changed: the group id below relies on it.
        command.process_group(0);
        let mut ours = OURS.lock().expect("not poisoned");
        let child = command.spawn()?;
        // With process_group(0) the child leads a group whose id is its pid.
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        if let Some(pid) = group {
            ours.insert(pid.as_raw());
        }
        Ok(Child { child, group })
    }

    /// The child's pid, until it is reaped.
    pub fn pid(&self) -> Option<Pid> {
        self.group
    }

    /// Sends `signal` to the child itself (not its group), as a shell's
    /// `kill` would; nothing once it is reaped.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        match self.group {
            Some(pid) => kill(pid, signal),
            None => Ok(()),
        }
    }

    /// Waits for the child to exit, however long it takes.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        if let Some(pid) = self.group.take() {
            forget(pid);
        }
        Ok(status)
    }

    /// Stops the child's whole process group: `signal` first, then
    /// SIGKILL when the child still runs after `timeout`.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> io::Result<Stopped> {
        if let Some(pgid) = self.group {
            let _ = killpg(pgid, signal);
        }
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(status) => status.map(|status| Stopped {
                status,
                killed: false,
            }),
            Err(_) => {
                // Not reaped yet, so the group id cannot have been reused.
                if let Some(pgid) = self.group {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                self.wait().await.map(|status| Stopped {
                    status,
                    killed: true,
                })
            }
        }
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
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
                if let Some(pid) = self.group.take() {
                    forget(pid);
                }
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
            // tokio reaps it (kill_on_drop); if an orphan reaper gets
            // there first, tokio's wait only finds it gone.
            forget(pgid);
        }
    }
}

/// A child's exit status as a shell reports it: its exit code, or 128
/// plus the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        _ => 1,
    }
}

/// Reaps every exited child that was not started by [`Child::spawn`]: the
/// orphans a PID 1 inherits. Returns how many it reaped. A child of ours
/// stays for tokio to wait for; as `waitid` shows one exited child at a
/// time, the others behind it wait for the next call.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    loop {
        let ours = OURS.lock().expect("not poisoned");
        // WNOWAIT: look which child exited without reaping it yet.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) | Err(_) => return reaped,
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return reaped,
            },
        };
        if ours.contains(&pid.as_raw()) {
            return reaped;
        }
        if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
        drop(ours);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill_group();
    }
}
