//! When this host last rotated each secret, kept in the state directory
//! across restarts: one small 0600 file per server and account, with
//! rotation keys (`<resource id>/<field>`) and Unix times, never a value.
//! It is a lower bound for the next rotation besides what the server says
//! (see `due`) and the status's "last success" after a restart; a file
//! that cannot be read is only logged: the server's stamps still decide.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sync::state::sha256_hex;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u32,
    last: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn new(dir: &Path, server: &str, user_id: &str) -> History {
        let id = sha256_hex(format!("{}\n{user_id}", server.trim_end_matches('/')).as_bytes());
        History {
            path: dir.join(format!("rotated-{}.json", &id[..16])),
        }
    }

    /// The last rotation of every key recorded.
    pub fn load(&self) -> BTreeMap<String, DateTime<Utc>> {
        let read = || -> Result<Wire, String> {
            let meta = match std::fs::symlink_metadata(&self.path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Wire::default()),
                Err(e) => return Err(e.to_string()),
            };
            if !meta.file_type().is_file()
                || meta.uid() != nix::unistd::geteuid().as_raw()
                || meta.mode() & 0o022 != 0
                || meta.len() > 1024 * 1024
            {
                return Err("not a regular file of this user, writable by it alone".into());
            }
            let bytes = std::fs::read(&self.path).map_err(|e| e.to_string())?;
            let wire: Wire = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if wire.version != VERSION {
                return Err(format!("version {}, not {VERSION}", wire.version));
            }
            Ok(wire)
        };
        match read() {
            Ok(w) => w
                .last
                .into_iter()
                .filter_map(|(k, t)| Some((k, DateTime::from_timestamp(t, 0)?)))
                .collect(),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "rotation history not used; the server's stamps decide alone");
                BTreeMap::new()
            }
        }
    }

    /// Records `key`'s rotation at `at`, replacing the file atomically.
    pub fn record(&self, key: &str, at: DateTime<Utc>) -> std::io::Result<()> {
        let mut last: BTreeMap<String, i64> = self
            .load()
            .into_iter()
            .map(|(k, t)| (k, t.timestamp()))
            .collect();
        last.insert(key.to_string(), at.timestamp());
        let bytes = serde_json::to_vec(&Wire {
            version: VERSION,
            last,
        })
        .expect("serializes");
        let dir = self.path.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_are_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), "https://pb.example/", "u1");
        assert!(h.load().is_empty());
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        h.record("id/password", at).unwrap();
        h.record("id/custom:x", at).unwrap();
        assert_eq!(h.load().get("id/password"), Some(&at));
        assert_eq!(h.load().len(), 2);
        assert!(
            History::new(dir.path(), "https://pb.example", "u2")
                .load()
                .is_empty()
        );
        assert_eq!(
            History::new(dir.path(), "https://pb.example", "u1")
                .load()
                .len(),
            2,
            "a trailing slash is the same server"
        );
    }
}
