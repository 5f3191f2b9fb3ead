//! Reading a file only this process's user may have written: the state
//! directory's files are trusted for what they say, so one that another
//! user could have planted or changed is not read at all.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

/// Why a private file was not read.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error(transparent)]
    Io(io::Error),
    /// Not a file this process's user alone may have written; the text
    /// says why.
    #[error("{0}")]
    Unsafe(String),
}

/// The bytes of `path` when it is there and is a regular file of this
/// process's user, of at most `max_bytes`, that nobody else may read or
/// write; `None` when it is absent. Wiped from memory when dropped: a
/// recovery file holds values.
pub fn read(path: &Path, max_bytes: u64) -> Result<Option<Zeroizing<Vec<u8>>>, PrivateFileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PrivateFileError::Io(e)),
    };
    let unsafe_file = |why: String| Err(PrivateFileError::Unsafe(why));
    if !meta.file_type().is_file() {
        return unsafe_file("not a regular file".into());
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return unsafe_file(format!("owned by uid {}, not by this process", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return unsafe_file(format!(
            "mode {:04o}: readable or writable by others",
            meta.mode() & 0o7777
        ));
    }
    if meta.len() > max_bytes {
        return unsafe_file(format!("larger than {max_bytes} bytes"));
    }
    std::fs::read(path)
        .map(|b| Some(Zeroizing::new(b)))
        .map_err(PrivateFileError::Io)
}
