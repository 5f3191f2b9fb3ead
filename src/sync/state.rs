//! Warm restarts: after each pass, per target, the resources it used with
//! their settled `modified` stamps and a SHA-256 of the bytes it wrote,
//! bound to the server URL, the user id, the account's key fingerprint
//! and the target's planned form. On start, a target whose file still has
//! the recorded digest and whose resources still show the recorded stamps
//! is current without a download.
//!
//! The file holds no value, name, username or token (a refresh token is
//! single-use: a copy replayed by a cloned host is reported by passbolt as
//! an attack). Anything that does not match (unreadable, corrupt, hostile,
//! another server, user, key or plan) makes the target cold: the worst a
//! state file can do is cost a download, never a wrong value written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::private_file::{self, PrivateFileError};
use crate::sync::plan::{Output, PlannedTarget};

const VERSION: u32 = 1;

/// A state file larger than this is not read: ids and stamps of even a
/// large host fit in far less.
const MAX_BYTES: u64 = 8 * 1024 * 1024;

/// What one target's file holds, as of its last pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// SHA-256 of the target's planned form (see `form`).
    pub form: String,
    /// SHA-256 of the bytes the target's file holds.
    pub digest: String,
    /// Every resource the content came from, with its settled `modified`.
    pub resources: BTreeMap<String, String>,
    /// Unix seconds of the target's last full sync.
    #[serde(default)]
    pub full_sync_at: Option<i64>,
    /// What the target's names and folders resolved to on the last full
    /// listing: a restart lists those until its next resolution, as the
    /// daemon did, instead of everything the account reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RecordedScope>,
}

/// A resolution of names and folder paths to resource and folder ids, as
/// of `resolved_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedScope {
    pub ids: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub folders: BTreeSet<String>,
    pub resolved_at: i64,
}

/// What a state file is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub server: String,
    pub user_id: String,
    /// The account key's fingerprint.
    pub fingerprint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    binding: Binding,
    targets: BTreeMap<PathBuf, Record>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state directory: the config's `state_dir`, else systemd's
/// `$STATE_DIRECTORY` (its first entry); `None` turns warm restarts off.
pub fn dir(configured: Option<&Path>) -> Option<PathBuf> {
    configured.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .map(PathBuf::from)
            })
            .filter(|p| p.is_absolute())
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A digest of everything that decides a target's content besides its
/// resources: path, mode, owner, format, selectors, fields, and a
/// template's source.
pub fn form(t: &PlannedTarget) -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", t.spec).as_bytes());
    match &t.output {
        Output::Template(file) => {
            h.update(b"\0template\0");
            h.update(file.path.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            // An unreadable template gives a form no record has.
            match std::fs::read(&file.path) {
                Ok(source) => h.update(&source),
                Err(_) => h.update(b"\0unreadable"),
            }
        }
        other => h.update(format!("{other:?}").as_bytes()),
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The binding of `client`'s account on `server`.
pub fn binding(server: &str, client: &passbolt_client::Client) -> Binding {
    Binding {
        server: server.trim_end_matches('/').to_string(),
        user_id: client.session().options().user_id.clone(),
        fingerprint: client.session().user_key().fingerprint(),
    }
}

/// The state file of one config in a state directory: named after the
/// config's path, so that several configs (a daemon and an `exec`) never
/// share one.
pub struct Store {
    path: PathBuf,
    binding: Binding,
    /// What was last written, to skip rewriting an unchanged file.
    last: Vec<u8>,
}

impl Store {
    pub fn new(dir: &Path, config: &Path, binding: Binding) -> Store {
        let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
        let name = &sha256_hex(config.as_os_str().as_encoded_bytes())[..16];
        Store {
            path: dir.join(format!("targets-{name}.json")),
            binding,
            last: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The records of the last run, when the file is there, safe and for
    /// this binding; an empty map (every target cold) otherwise, with one
    /// log line saying why.
    pub fn load(&mut self) -> BTreeMap<PathBuf, Record> {
        match self.read() {
            Ok(Some(records)) => {
                tracing::info!(
                    state_file = %self.path.display(),
                    targets = records.len(),
                    "sync state read: targets whose file and stamps still match start warm"
                );
                records
            }
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(error = %e, "sync state not used; every target starts cold");
                BTreeMap::new()
            }
        }
    }

    fn read(&self) -> Result<Option<BTreeMap<PathBuf, Record>>, StateError> {
        let invalid = |detail: String| StateError::Invalid {
            path: self.path.clone(),
            detail,
        };
        let bytes = match private_file::read(&self.path, MAX_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(PrivateFileError::Io(source)) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
            Err(PrivateFileError::Unsafe(detail)) => return Err(invalid(detail)),
        };
        let file: StateFile = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not a state file of this version: {e}")))?;
        if file.version != VERSION {
            return Err(invalid(format!("version {}, not {VERSION}", file.version)));
        }
        if file.binding != self.binding {
            return Err(invalid(
                "written for another server, user or key".to_string(),
            ));
        }
        Ok(Some(file.targets))
    }

    /// Replaces the state file atomically (0600, in a 0700 directory),
    /// unless it would not change.
    pub fn save(&mut self, records: &BTreeMap<PathBuf, Record>) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let file = StateFile {
            version: VERSION,
            binding: self.binding.clone(),
            targets: records.clone(),
        };
        let bytes = serde_json::to_vec(&file).expect("a state file serializes");
        if bytes == self.last {
            return Ok(());
        }
        let dir = self.path.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        let meta = std::fs::metadata(dir).map_err(io)?;
        if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        // A temp file is created 0600.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        self.last = bytes;
        Ok(())
    }
}
