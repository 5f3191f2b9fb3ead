//! One daemon per config file: `run` (and `exec`, which writes the same
//! targets) holds an exclusive, non-blocking `flock` on a lock file named
//! after the config's canonical path for the life of the process, and
//! writes its PID into it; a second one on the same file is refused with
//! that PID.
//!
//! `once` and `check` take no lock, so that they can run beside the daemon:
//! `once --dry-run` to see what the daemon would change, a `once` to sync
//! now instead of at the next tick. Every write replaces a complete file by
//! a rename, so two processes on one target cannot leave a torn or mixed
//! file; at worst a write fails and is retried, or a hook runs twice.
//!
//! The lock file is left behind on exit: unlinking it would let a third
//! process lock a new file of the same name while a second still holds the
//! old one. Nothing here knows what the config holds.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another passbolt-sync ({}) is already running with the config {}; stop it first (lock file {})",
        Holder(*.pid), .config.display(), .lock.display()
    )]
    Held {
        config: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot create the lock directory {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("lock directory {}: {problem}", .path.display())]
    UnsafeDir { path: PathBuf, problem: String },
    #[error("cannot open the lock file {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot lock {}: {source}", .path.display())]
    Lock { path: PathBuf, source: Errno },
    #[error("cannot write the PID into the lock file {}: {source}", .path.display())]
    WritePid { path: PathBuf, source: io::Error },
}

struct Holder(Option<u32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "PID {pid}"),
            None => f.write_str("PID unknown"),
        }
    }
}

/// The lock of one config, released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl InstanceLock {
    /// Locks `config` in the directory [`lock_dir`] picks from the
    /// environment.
    pub fn acquire(config: &Path) -> Result<InstanceLock, LockError> {
        InstanceLock::acquire_in(&lock_dir(), config)
    }

    /// Locks `config` in `dir`, which is created (mode 0700) if missing and
    /// must belong to this user and be writable by no one else.
    pub fn acquire_in(dir: &Path, config: &Path) -> Result<InstanceLock, LockError> {
        prepare_dir(dir)?;
        let path = dir.join(lock_file_name(config));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Held {
                    config: config.to_owned(),
                    pid: holder_pid(&path),
                    lock: path,
                });
            }
            Err((_, source)) => return Err(LockError::Lock { path, source }),
        };
        // Truncated only now: a process that lost the race must not wipe
        // the holder's PID.
        let write_pid = |mut f: &File| {
            f.set_len(0)?;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())
        };
        write_pid(&file).map_err(|source| LockError::WritePid {
            path: path.clone(),
            source,
        })?;
        Ok(InstanceLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of the lock, where the local socket goes too.
    pub fn dir(&self) -> &Path {
        self.path.parent().expect("a lock file is in a directory")
    }
}

/// The PID in the lock file. The holder writes it just after locking, so
/// it is given a moment when the file is still empty.
fn holder_pid(path: &Path) -> Option<u32> {
    for _ in 0..20 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Where lock files go, from the environment: see [`choose_lock_dir`].
pub fn lock_dir() -> PathBuf {
    choose_lock_dir(
        std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        nix::unistd::geteuid().as_raw(),
        &std::env::temp_dir(),
    )
}

/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`; its first entry)
/// when set; for root `/run/passbolt-sync`, which is also what the shipped
/// unit's `RuntimeDirectory=passbolt-sync` gives, so that a daemon started
/// by hand from a root login (which may have `XDG_RUNTIME_DIR`) meets the
/// service's lock; else `$XDG_RUNTIME_DIR/passbolt-sync`; else
/// `passbolt-sync-<uid>` in the temporary directory.
pub fn choose_lock_dir(
    runtime_directory: Option<&OsStr>,
    xdg_runtime_dir: Option<&OsStr>,
    euid: u32,
    temp_dir: &Path,
) -> PathBuf {
    let first = |v: &OsStr| {
        v.as_bytes()
            .split(|b| *b == b':')
            .next()
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(OsStr::from_bytes(p)))
    };
    if let Some(dir) = runtime_directory.and_then(first) {
        return dir;
    }
    if euid == 0 {
        return PathBuf::from("/run/passbolt-sync");
    }
    if let Some(dir) = xdg_runtime_dir.filter(|v| !v.is_empty()) {
        return Path::new(dir).join("passbolt-sync");
    }
    temp_dir.join(format!("passbolt-sync-{euid}"))
}

/// `<config file name>-<hash of its canonical path>.lock`: two configs do
/// not collide, and one config reached through a symlink or a relative
/// path is the same. A config that does not exist (yet) is named by its
/// absolute path; reading it fails right after anyway.
pub fn lock_file_name(config: &Path) -> String {
    let canonical = std::fs::canonicalize(config)
        .or_else(|_| std::path::absolute(config))
        .unwrap_or_else(|_| config.to_owned());
    let readable: String = canonical
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!(
        "{readable}-{:016x}.lock",
        fnv1a(canonical.as_os_str().as_bytes())
    )
}

/// FNV-1a, 64 bits: stable across builds and releases, which std's
/// `DefaultHasher` does not promise (an upgraded binary must find the lock
/// of the old one). Not a defence against anyone: whoever picks config
/// paths can run a second daemon anyway.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Creates `dir` if needed and checks that no one else can plant or swap
/// lock files in it (it matters in a shared temporary directory).
fn prepare_dir(dir: &Path) -> Result<(), LockError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(LockError::CreateDir {
                path: dir.to_owned(),
                source,
            });
        }
    }
    let unsafe_dir = |problem: String| LockError::UnsafeDir {
        path: dir.to_owned(),
        problem,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|source| LockError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory (or a symlink)".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}
