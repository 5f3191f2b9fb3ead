//! The recovery file of a rotation: from just before `apply` runs until
//! passbolt holds the new value, the old and the new value live in a
//! 0600 file in the state directory (0700), written atomically and
//! fsynced. A crash, a SIGKILL or an outage between `apply` and the store
//! loses nothing: the next start finds the file and finishes the store.
//! passbolt keeps no past secret by default (`max_revisions: 1`), so this
//! file, not the server, is what makes a rotation safe.
//!
//! It is the only file passbolt-sync writes that holds secret values.
//! One per rotation, named after the resource id and the field; removed
//! once the value is stored. A file that cannot be read or is not safe
//! (another owner, loose mode, another server or account) is an error,
//! never ignored or overwritten: it may hold the only copy of a value in
//! use.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{Field, Rotate};
use crate::runtime::private_file::{self, PrivateFileError};
use crate::sync::state::sha256_hex;
use passbolt_client::secret::Secret;

const VERSION: u32 = 1;

/// A recovery file larger than this is not one of ours.
const MAX_BYTES: u64 = 1024 * 1024;

/// File names start with this; `strays` looks for them.
const PREFIX: &str = "rotation-";

/// How far a rotation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `apply` was started and has not been seen to succeed: after a
    /// crash it is run again with the same values.
    Applying,
    /// `apply` succeeded: the new value is in use and awaits its store.
    Applied,
}

/// A rotation between `apply` and the store.
#[derive(Debug, Clone)]
pub struct Pending {
    pub resource_id: String,
    pub field: Field,
    pub phase: Phase,
    /// The resource's `modified` when the old value was read: the store
    /// is refused if it moved.
    pub expected_modified: Option<String>,
    pub old: Option<Secret>,
    pub new: Secret,
    pub started: DateTime<Utc>,
}

/// The file as written: the values borrowed, never copied.
#[derive(Serialize)]
struct WireOut<'a> {
    version: u32,
    server: &'a str,
    user_id: &'a str,
    resource_id: &'a str,
    field: String,
    phase: Phase,
    expected_modified: Option<&'a str>,
    started: DateTime<Utc>,
    old: Option<&'a str>,
    new: &'a str,
}

/// The file as read; the values go into `Secret`s at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u32,
    server: String,
    user_id: String,
    resource_id: String,
    field: String,
    phase: Phase,
    expected_modified: Option<String>,
    started: DateTime<Utc>,
    old: Option<String>,
    new: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "recovery file {path}: {detail}; it may hold the only copy of a value in use, so the rotation waits until it is fixed or removed"
    )]
    Invalid { path: PathBuf, detail: String },
    #[error("recovery file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The recovery files of one server and account in a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    dir: PathBuf,
    server: String,
    user_id: String,
}

impl Recovery {
    pub fn new(dir: &Path, server: &str, user_id: &str) -> Recovery {
        Recovery {
            dir: dir.to_path_buf(),
            server: server.trim_end_matches('/').to_string(),
            user_id: user_id.to_string(),
        }
    }

    /// `rotation-<resource id>-<field>.json`; a custom field by a digest
    /// of its label, which may hold any character.
    pub fn path(&self, r: &Rotate) -> PathBuf {
        let field = match &r.field {
            Field::Custom(label) => format!("custom-{}", &sha256_hex(label.as_bytes())[..12]),
            other => other.to_string(),
        };
        self.dir
            .join(format!("{PREFIX}{}-{field}.json", r.resource))
    }

    pub fn exists(&self, r: &Rotate) -> bool {
        std::fs::symlink_metadata(self.path(r)).is_ok()
    }

    /// Replaces the rotation's file atomically: created 0600 in a 0700
    /// directory, fsynced with the directory before this returns.
    pub fn save(&self, r: &Rotate, p: &Pending) -> Result<(), RecoveryError> {
        let path = self.path(r);
        let io = |source| RecoveryError::Io {
            path: path.clone(),
            source,
        };
        let wire = WireOut {
            version: VERSION,
            server: &self.server,
            user_id: &self.user_id,
            resource_id: &p.resource_id,
            field: p.field.to_string(),
            phase: p.phase,
            expected_modified: p.expected_modified.as_deref(),
            started: p.started,
            old: p.old.as_ref().map(Secret::expose),
            new: p.new.expose(),
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(512));
        serde_json::to_writer_pretty(&mut *bytes, &wire).expect("serializes");
        bytes.push(b'\n');
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let meta = std::fs::metadata(&self.dir).map_err(io)?;
        if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        // A temp file is created 0600.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        sync_dir(&self.dir).map_err(io)
    }

    /// The rotation's pending value, if its file is there.
    pub fn load(&self, r: &Rotate) -> Result<Option<Pending>, RecoveryError> {
        let path = self.path(r);
        let invalid = |detail: String| RecoveryError::Invalid {
            path: path.clone(),
            detail,
        };
        let Some(bytes) = read_safely(&path)? else {
            return Ok(None);
        };
        // serde's message may quote a value of the file: only its position.
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|e| {
            invalid(format!(
                "not a recovery file of this version (at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if wire.version != VERSION {
            return Err(invalid(format!("version {}, not {VERSION}", wire.version)));
        }
        if wire.server != self.server || wire.user_id != self.user_id {
            return Err(invalid(format!(
                "written for {} as user {}, not for this config's server and account",
                wire.server, wire.user_id
            )));
        }
        let field = Field::parse(&wire.field).map_err(invalid)?;
        if wire.resource_id != r.resource || field != r.field {
            return Err(invalid(format!(
                "it is for {} of resource {}",
                wire.field, wire.resource_id
            )));
        }
        Ok(Some(Pending {
            resource_id: wire.resource_id,
            field,
            phase: wire.phase,
            expected_modified: wire.expected_modified,
            // Moved, not copied: a `Secret` wipes its buffer when dropped.
            old: wire.old.map(Secret::new),
            new: Secret::new(wire.new),
            started: wire.started,
        }))
    }

    /// Removes the rotation's file once passbolt holds the value.
    pub fn remove(&self, r: &Rotate) -> Result<(), RecoveryError> {
        let path = self.path(r);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(|source| RecoveryError::Io { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RecoveryError::Io { path, source }),
        }
    }

    /// Recovery files in the directory that belong to no rotation of
    /// `rotations`: values the daemon will not store.
    pub fn strays(&self, rotations: &[Rotate]) -> Vec<PathBuf> {
        let ours: Vec<PathBuf> = rotations.iter().map(|r| self.path(r)).collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".json"))
                    && !ours.contains(p)
            })
            .collect();
        out.sort();
        out
    }
}

/// The file's bytes when it is there and only this process's user may
/// have written it; `None` when it is absent.
fn read_safely(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, RecoveryError> {
    private_file::read(path, MAX_BYTES).map_err(|e| match e {
        PrivateFileError::Io(source) => RecoveryError::Io {
            path: path.to_path_buf(),
            source,
        },
        PrivateFileError::Unsafe(detail) => RecoveryError::Invalid {
            path: path.to_path_buf(),
            detail,
        },
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Apply, Generator, HookCommand};

    fn rotation(field: Field) -> Rotate {
        Rotate {
            resource: "9f1c5d3e-0000-4000-8000-000000000001".into(),
            field,
            every: None,
            when_expired: true,
            generate: Generator::Policy,
            apply: Apply {
                command: HookCommand::Argv(vec!["true".into()]),
                timeout: std::time::Duration::from_secs(1),
            },
        }
    }

    fn pending(r: &Rotate) -> Pending {
        Pending {
            resource_id: r.resource.clone(),
            field: r.field.clone(),
            phase: Phase::Applied,
            expected_modified: Some("2026-01-01T00:00:00+00:00".into()),
            old: None,
            new: Secret::new("n3w-value"),
            started: Utc::now(),
        }
    }

    #[test]
    fn a_saved_value_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let rec = Recovery::new(&state, "https://pb.example/", "u1");
        let r = rotation(Field::Custom("api/key".into()));
        assert!(rec.load(&r).unwrap().is_none());
        rec.save(&r, &pending(&r)).unwrap();
        let path = rec.path(&r);
        assert!(
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("rotation-9f1c5d3e")
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        let back = rec.load(&r).unwrap().unwrap();
        assert_eq!(back.new.expose(), "n3w-value");
        assert_eq!(back.phase, Phase::Applied);
        assert!(rec.strays(std::slice::from_ref(&r)).is_empty());
        assert_eq!(rec.strays(&[]), vec![path.clone()]);
        rec.remove(&r).unwrap();
        assert!(!path.exists());
        rec.remove(&r).unwrap();
    }

    #[test]
    fn an_unsafe_or_foreign_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recovery::new(dir.path(), "https://pb.example", "u1");
        let r = rotation(Field::Password);
        rec.save(&r, &pending(&r)).unwrap();
        let other = Recovery::new(dir.path(), "https://other.example", "u1");
        let e = other.load(&r).unwrap_err().to_string();
        assert!(e.contains("not for this config's server"), "{e}");
        assert!(!e.contains("n3w-value"), "{e}");
        std::fs::set_permissions(rec.path(&r), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = rec.load(&r).unwrap_err().to_string();
        assert!(
            e.contains("mode 0644") && e.contains(&*rec.path(&r).to_string_lossy()),
            "{e}"
        );
        std::fs::write(rec.path(&r), "{").unwrap();
        std::fs::set_permissions(rec.path(&r), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            rec.load(&r)
                .unwrap_err()
                .to_string()
                .contains("not a recovery file")
        );
    }
}
