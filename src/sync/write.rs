//! Atomic file writes with exact mode and ownership.
//!
//! A target is replaced by renaming a fully written and synced temporary
//! file over it, so readers see either the old or the new content, never a
//! mix. The temporary file is created in the target's directory, readable
//! by its owner at most until it has its final owner, so there is no moment
//! when a secret is readable by anyone it is not meant for. Every operation
//! goes through a descriptor of the target's directory and never follows a
//! symlink at the target itself: a symlink there is replaced, not written
//! through.
//!
//! One writer per target is assumed: a write removes any temporary file
//! left next to its target, which is how a crash's leftovers go away.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat};
use nix::unistd::{Gid, Group, Uid, UnlinkatFlags, User, fchown, fsync, unlinkat};
use zeroize::Zeroizing;

/// Where and how a file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSpec {
    pub path: PathBuf,
    /// Permission bits, at most `0o7777`.
    pub mode: u32,
    /// Owner uid. With `None`, a file that is (re)written gets the daemon's
    /// own user, never the previous file's (which anyone able to create
    /// files there could have planted); a file left in place keeps its.
    pub owner: Option<u32>,
    /// Group gid, like `owner`.
    pub group: Option<u32>,
    /// Create missing parent directories (mode 0700) instead of failing.
    pub create_dirs: bool,
}

impl WriteSpec {
    /// A spec with mode 0600, no ownership change and no directory creation.
    pub fn new(path: impl Into<PathBuf>) -> WriteSpec {
        WriteSpec {
            path: path.into(),
            mode: 0o600,
            owner: None,
            group: None,
            create_dirs: false,
        }
    }
}

/// What a write did, or would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The file did not exist.
    Created,
    /// The content changed, or something other than a regular file (such
    /// as a symlink) was replaced.
    Updated,
    /// Content, mode and ownership were already right; nothing was written.
    Unchanged,
    /// The content was right; mode or ownership was corrected in place.
    MetadataFixed,
}

impl WriteOutcome {
    /// Whether the content changed, which is what reload hooks follow.
    pub fn content_changed(self) -> bool {
        matches!(self, WriteOutcome::Created | WriteOutcome::Updated)
    }
}

/// Why a write, a read or a removal failed. Variants name the path; none
/// carries file content. The OS error is part of the message: operators
/// read Display, and "cannot chown" without "Operation not permitted" is
/// half an answer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {}: its parent directory does not exist", .path.display())]
    NoParent { path: PathBuf },

    #[error("cannot write {}: {reason}", .path.display())]
    InvalidTarget { path: PathBuf, reason: &'static str },

    #[error("cannot write {}: mode {mode:#o} is larger than 0o7777", .path.display())]
    InvalidMode { path: PathBuf, mode: u32 },

    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("unknown user {name:?}")]
    UnknownUser { name: String },

    #[error("unknown group {name:?}")]
    UnknownGroup { name: String },

    #[error("cannot look up {what} {name:?}: {source}")]
    AccountLookup {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> WriteError + 'a {
    move |e| WriteError::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}

fn std_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Writes `content` to `spec.path` atomically, with the spec's mode and
/// ownership, unless it is already there.
pub fn write_atomic(spec: &WriteSpec, content: &[u8]) -> Result<WriteOutcome, WriteError> {
    let target = Target::new(spec)?;
    let dir = match target.open_dir()? {
        Some(dir) => dir,
        None if spec.create_dirs => {
            create_dirs(target.dir_path)?;
            target.open_dir()?.ok_or_else(|| WriteError::NoParent {
                path: spec.path.clone(),
            })?
        }
        None => {
            return Err(WriteError::NoParent {
                path: spec.path.clone(),
            });
        }
    };
    target.remove_leftovers(&dir);

    match target.decide(&dir, content)? {
        Decision::Write(outcome) => {
            target.replace(&dir, content)?;
            Ok(outcome)
        }
        Decision::Unchanged => Ok(WriteOutcome::Unchanged),
        Decision::FixMetadata { file, stat } => {
            fix_metadata(&file, &stat, spec)?;
            tracing::debug!(path = %spec.path.display(), "corrected mode or owner in place");
            Ok(WriteOutcome::MetadataFixed)
        }
    }
}

/// What [`write_atomic`] would do, without changing anything.
pub fn plan(spec: &WriteSpec, content: &[u8]) -> Result<WriteOutcome, WriteError> {
    let target = Target::new(spec)?;
    let Some(dir) = target.open_dir()? else {
        return if spec.create_dirs {
            Ok(WriteOutcome::Created)
        } else {
            Err(WriteError::NoParent {
                path: spec.path.clone(),
            })
        };
    };
    Ok(match target.decide(&dir, content)? {
        Decision::Write(outcome) => outcome,
        Decision::Unchanged => WriteOutcome::Unchanged,
        Decision::FixMetadata { .. } => WriteOutcome::MetadataFixed,
    })
}

/// The content of the regular file at `path`; `None` when there is none,
/// or when `path` is a symlink or anything else but a regular file.
pub fn read_current(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, WriteError> {
    let target = Target::from_path(path)?;
    let Some(dir) = target.open_dir()? else {
        return Ok(None);
    };
    match target.inspect(&dir)? {
        Current::Regular { file, stat } => read_all(&file, &stat)
            .map(Some)
            .map_err(std_err("read", path)),
        Current::Missing | Current::Other => Ok(None),
    }
}

/// Removes `path` (a symlink itself, not what it points to). `false` when
/// there was nothing to remove.
pub fn remove(path: &Path) -> Result<bool, WriteError> {
    let target = Target::from_path(path)?;
    let Some(dir) = target.open_dir()? else {
        return Ok(false);
    };
    target.remove_leftovers(&dir);
    match fstatat(&dir, target.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(io_err("inspect", path)(e)),
        Ok(st) if kind(&st) == SFlag::S_IFDIR => {
            return Err(WriteError::InvalidTarget {
                path: path.to_owned(),
                reason: "it is a directory",
            });
        }
        Ok(_) => {}
    }
    match unlinkat(&dir, target.name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::ENOENT) => return Ok(false),
        r => r.map_err(io_err("remove", path))?,
    }
    fsync(&dir).map_err(io_err("sync the directory of", path))?;
    Ok(true)
}

/// A uid from a number or a user name.
pub fn resolve_user(name_or_id: &str) -> Result<u32, WriteError> {
    if let Some(id) = numeric_id(name_or_id) {
        return Ok(id);
    }
    match User::from_name(name_or_id) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(WriteError::UnknownUser {
            name: name_or_id.to_owned(),
        }),
        Err(e) => Err(WriteError::AccountLookup {
            what: "user",
            name: name_or_id.to_owned(),
            source: e.into(),
        }),
    }
}

/// A gid from a number or a group name.
pub fn resolve_group(name_or_id: &str) -> Result<u32, WriteError> {
    if let Some(id) = numeric_id(name_or_id) {
        return Ok(id);
    }
    match Group::from_name(name_or_id) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(WriteError::UnknownGroup {
            name: name_or_id.to_owned(),
        }),
        Err(e) => Err(WriteError::AccountLookup {
            what: "group",
            name: name_or_id.to_owned(),
            source: e.into(),
        }),
    }
}

fn numeric_id(s: &str) -> Option<u32> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

struct Target<'a> {
    path: &'a Path,
    dir_path: &'a Path,
    name: &'a OsStr,
    spec: Option<&'a WriteSpec>,
}

enum Decision {
    /// Created or Updated.
    Write(WriteOutcome),
    Unchanged,
    FixMetadata {
        file: File,
        stat: FileStat,
    },
}

enum Current {
    Missing,
    /// A symlink, a FIFO, a device: something that is replaced, never read.
    Other,
    Regular {
        file: File,
        stat: FileStat,
    },
}

impl<'a> Target<'a> {
    fn new(spec: &'a WriteSpec) -> Result<Target<'a>, WriteError> {
        if spec.mode > 0o7777 {
            return Err(WriteError::InvalidMode {
                path: spec.path.clone(),
                mode: spec.mode,
            });
        }
        let mut target = Target::from_path(&spec.path)?;
        target.spec = Some(spec);
        Ok(target)
    }

    fn from_path(path: &'a Path) -> Result<Target<'a>, WriteError> {
        let invalid = |reason| WriteError::InvalidTarget {
            path: path.to_owned(),
            reason,
        };
        // `file_name` would quietly drop a trailing `/` or `/.`, which must
        // not turn a directory path into a file path.
        let raw = path.as_os_str().as_bytes();
        if raw.ends_with(b"/") || raw.ends_with(b"/.") || raw == b"." {
            return Err(invalid("it does not name a file"));
        }
        let name = path
            .file_name()
            .ok_or_else(|| invalid("it does not name a file"))?;
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok(Target {
            path,
            dir_path,
            name,
            spec: None,
        })
    }

    fn spec(&self) -> &WriteSpec {
        self.spec.expect("a write needs a spec")
    }

    /// The target's directory, or `None` when it does not exist.
    fn open_dir(&self) -> Result<Option<File>, WriteError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match nix::fcntl::open(self.dir_path, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ENOTDIR) => Err(WriteError::InvalidTarget {
                path: self.path.to_owned(),
                reason: "its parent is not a directory",
            }),
            Err(e) => Err(io_err("open the directory of", self.path)(e)),
        }
    }

    fn inspect(&self, dir: &File) -> Result<Current, WriteError> {
        let stat = match fstatat(dir, self.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Current::Missing),
            Err(e) => return Err(io_err("inspect", self.path)(e)),
        };
        match kind(&stat) {
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => {
                return Err(WriteError::InvalidTarget {
                    path: self.path.to_owned(),
                    reason: "it is a directory",
                });
            }
            _ => return Ok(Current::Other),
        }
        // O_NONBLOCK keeps a FIFO swapped in after the check from blocking
        // the open; O_NOFOLLOW refuses a symlink swapped in.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let file = match openat(dir, self.name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(Current::Missing),
            Err(Errno::ELOOP) => return Ok(Current::Other),
            Err(e) => return Err(io_err("open", self.path)(e)),
        };
        let stat = fstat(&file).map_err(io_err("inspect", self.path))?;
        if kind(&stat) != SFlag::S_IFREG {
            return Ok(Current::Other);
        }
        Ok(Current::Regular { file, stat })
    }

    fn decide(&self, dir: &File, content: &[u8]) -> Result<Decision, WriteError> {
        let spec = self.spec();
        Ok(match self.inspect(dir)? {
            Current::Missing => Decision::Write(WriteOutcome::Created),
            Current::Other => Decision::Write(WriteOutcome::Updated),
            Current::Regular { file, stat } => {
                if !same_content(&file, &stat, content).map_err(std_err("read", self.path))? {
                    Decision::Write(WriteOutcome::Updated)
                } else if metadata_matches(&stat, spec) {
                    Decision::Unchanged
                } else {
                    Decision::FixMetadata { file, stat }
                }
            }
        })
    }

    /// `.<name>.pbsync.`, with the name shortened so that temporary names
    /// stay within the 255-byte limit.
    fn temp_prefix(&self) -> Vec<u8> {
        let name = self.name.as_bytes();
        let mut prefix = Vec::with_capacity(name.len().min(200) + 9);
        prefix.push(b'.');
        prefix.extend_from_slice(&name[..name.len().min(200)]);
        prefix.extend_from_slice(b".pbsync.");
        prefix
    }

    fn is_leftover(&self, prefix: &[u8], candidate: &[u8]) -> bool {
        candidate
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(b".tmp"))
            .is_some_and(|id| id.len() == 16 && id.iter().all(u8::is_ascii_hexdigit))
    }

    /// Best effort: a leftover that cannot be removed is logged, and the
    /// write goes on.
    fn remove_leftovers(&self, dir: &File) {
        let prefix = self.temp_prefix();
        let entries = match std::fs::read_dir(self.dir_path) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "cannot list directory to remove leftover temporary files");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !self.is_leftover(&prefix, name.as_bytes()) {
                continue;
            }
            match unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => tracing::info!(path = %self.path.display(),
                    leftover = %name.to_string_lossy(), "removed leftover temporary file"),
                Err(Errno::ENOENT) => {}
                Err(e) => tracing::warn!(path = %self.path.display(),
                    leftover = %name.to_string_lossy(), error = %e,
                    "cannot remove leftover temporary file"),
            }
        }
    }

    fn replace(&self, dir: &File, content: &[u8]) -> Result<(), WriteError> {
        let spec = self.spec();
        let path = self.path;
        let (temp_name, file) = self.create_temp(dir)?;
        let guard = TempGuard {
            dir,
            name: &temp_name,
        };
        if spec.owner.is_some() || spec.group.is_some() {
            fchown(
                &file,
                spec.owner.map(Uid::from_raw),
                spec.group.map(Gid::from_raw),
            )
            .map_err(io_err("change the owner of", path))?;
        }
        // After the chown, which clears set-id bits; exact whatever the umask.
        fchmod(&file, mode_bits(spec.mode)).map_err(io_err("change the mode of", path))?;
        (&file).write_all(content).map_err(std_err("write", path))?;
        file.sync_all().map_err(std_err("sync", path))?;
        renameat(dir, temp_name.as_os_str(), dir, self.name).map_err(io_err("replace", path))?;
        std::mem::forget(guard);
        fsync(dir).map_err(io_err("sync the directory of", path))
    }

    fn create_temp(&self, dir: &File) -> Result<(OsString, File), WriteError> {
        // Never looser than 0600 while the file still has the wrong owner.
        let initial = mode_bits(self.spec().mode & 0o600);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut attempts = 0;
        loop {
            let mut name = self.temp_prefix();
            name.extend_from_slice(format!("{:016x}.tmp", random_u64()).as_bytes());
            let name = OsString::from_vec(name);
            match openat(dir, name.as_os_str(), flags, initial) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(Errno::EEXIST) if attempts < 8 => attempts += 1,
                Err(e) => return Err(io_err("create a temporary file for", self.path)(e)),
            }
        }
    }
}

/// Removes the temporary file unless it was renamed into place.
struct TempGuard<'a> {
    dir: &'a File,
    name: &'a OsStr,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        let _ = unlinkat(self.dir, self.name, UnlinkatFlags::NoRemoveDir);
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    hasher.finish()
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

fn mode_bits(mode: u32) -> Mode {
    Mode::from_bits_truncate(mode & 0o7777)
}

fn metadata_matches(stat: &FileStat, spec: &WriteSpec) -> bool {
    stat.st_mode & 0o7777 == spec.mode
        && spec.owner.is_none_or(|uid| stat.st_uid == uid)
        && spec.group.is_none_or(|gid| stat.st_gid == gid)
}

fn fix_metadata(file: &File, stat: &FileStat, spec: &WriteSpec) -> Result<(), WriteError> {
    let path = &spec.path;
    let owner_changes = spec.owner.is_some_and(|uid| uid != stat.st_uid)
        || spec.group.is_some_and(|gid| gid != stat.st_gid);
    if owner_changes {
        // While ownership moves, allow no more than both the old and the
        // new mode do.
        let interim = stat.st_mode & 0o7777 & spec.mode;
        fchmod(file, mode_bits(interim)).map_err(io_err("change the mode of", path))?;
        fchown(
            file,
            spec.owner.map(Uid::from_raw),
            spec.group.map(Gid::from_raw),
        )
        .map_err(io_err("change the owner of", path))?;
    }
    fchmod(file, mode_bits(spec.mode)).map_err(io_err("change the mode of", path))?;
    fsync(file).map_err(io_err("sync", path))
}

fn same_content(file: &File, stat: &FileStat, content: &[u8]) -> io::Result<bool> {
    if u64::try_from(stat.st_size).ok() != Some(content.len() as u64) {
        return Ok(false);
    }
    Ok(read_all(file, stat)?.as_slice() == content)
}

/// Reads the whole file without letting the buffer reallocate behind a
/// `Zeroizing` wrapper's back, which would leave copies in freed memory.
fn read_all(mut file: &File, stat: &FileStat) -> io::Result<Zeroizing<Vec<u8>>> {
    let hint = usize::try_from(stat.st_size).unwrap_or(0);
    let mut buf = Zeroizing::new(vec![0u8; hint + 1]);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            let mut bigger = Zeroizing::new(vec![0u8; buf.len() * 2]);
            bigger[..filled].copy_from_slice(&buf[..filled]);
            buf = bigger;
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Creates the missing directories down to `dir` with mode 0700, syncing
/// each parent so the new entries survive a crash.
fn create_dirs(dir: &Path) -> Result<(), WriteError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match std::fs::symlink_metadata(cur) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(std_err("inspect", cur)(e)),
        }
    }
    for new_dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(new_dir) {
            Ok(()) => {}
            // Someone else made it meanwhile: fine, it exists.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(std_err("create the directory", new_dir)(e)),
        }
        // The umask may have narrowed 0700; make it exact.
        std::fs::set_permissions(new_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(std_err("change the mode of", new_dir))?;
        let parent = match new_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent_fd = File::open(parent).map_err(std_err("open the directory", parent))?;
        fsync(parent_fd.as_fd()).map_err(io_err("sync the directory", parent))?;
        tracing::info!(path = %new_dir.display(), "created directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names() {
        let spec = WriteSpec::new("/x/app.env");
        let t = Target::new(&spec).unwrap();
        let p = t.temp_prefix();
        assert_eq!(p, b".app.env.pbsync.");
        assert!(t.is_leftover(&p, b".app.env.pbsync.0123456789abcdef.tmp"));
        assert!(!t.is_leftover(&p, b".app.env.pbsync.0123456789abcdeg.tmp"));
        assert!(!t.is_leftover(&p, b".app.env.pbsync.notes.tmp"));
        assert!(!t.is_leftover(&p, b".other.pbsync.0123456789abcdef.tmp"));
        assert!(!t.is_leftover(&p, b"app.env"));
    }

    #[test]
    fn paths_that_name_no_file() {
        for p in ["/", "/etc/", "/etc/.", ".", "a/.."] {
            assert!(
                matches!(
                    Target::from_path(Path::new(p)),
                    Err(WriteError::InvalidTarget { .. })
                ),
                "{p}"
            );
        }
        let t = Target::from_path(Path::new("app.env")).unwrap();
        assert_eq!(t.dir_path, Path::new("."));
    }
}
