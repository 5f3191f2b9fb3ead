//! The daemon's local socket: `run` and `exec` answer `get` and `env` of
//! the same config on this host from the session they hold (no login)
//! and the secrets they hold (no download of what is current), so a
//! host has one session however many scripts ask.
//!
//! The protocol is one JSON object per line, one request per connection:
//!
//! ```text
//! > {"version":1,"config":"<sha256 of the config file>","op":"get","selector":"db","field":"password"}
//! < {"version":1,"result":"ok","values":[["value","…"]]}
//! > {"version":1,"config":"…","op":"env"}
//! < {"version":1,"result":"error","kind":"missing","message":"…","exit_code":1}
//! ```
//!
//! The daemon answers only peers the kernel names root, its own user, or
//! a member of `agent.socket_group` (`SO_PEERCRED`), and only for the very
//! config file it runs (same path, hence the same socket; same bytes,
//! hence the digest). A peer that gets anything but an answer (no daemon,
//! another version, another config, a refusal, a daemon gone
//! mid-request) logs in itself: the socket saves work, it never decides
//! what a command prints. Values appear in an answer to an authorised
//! peer and nowhere else.

pub mod ask;
pub mod serve;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::lock;
use passbolt_client::secret::Secret;

/// The protocol's version; a peer of another one is answered `version`
/// and logs in itself.
pub const VERSION: u32 = 1;

/// A request longer than this is not one of ours.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What root's daemon (the shipped unit's `RuntimeDirectory=`) uses, which
/// a peer of another user also tries.
const SYSTEM_DIR: &str = "/run/passbolt-sync";

/// The socket of the daemon of `config`: beside its instance lock, named
/// like it.
pub fn socket_path(dir: &Path, config: &Path) -> PathBuf {
    let lock = lock::lock_file_name(config);
    let stem = lock.strip_suffix(".lock").unwrap_or(&lock);
    dir.join(format!("{stem}.sock"))
}

/// Where a peer looks for the daemon of `config`: where a daemon of its own
/// user would listen, then where root's does.
pub fn socket_candidates(config: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![lock::lock_dir()];
    if dirs[0] != Path::new(SYSTEM_DIR) {
        dirs.push(PathBuf::from(SYSTEM_DIR));
    }
    dirs.iter().map(|d| socket_path(d, config)).collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// SHA-256 of the config file's bytes, in hex.
    pub config: String,
    #[serde(flatten)]
    pub ask: Ask,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Ask {
    /// One field of one resource, as `get` prints it.
    Get {
        selector: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// The `exec.env` mapping, as `env` prints it.
    Env,
}

impl Ask {
    pub fn op(&self) -> &'static str {
        match self {
            Ask::Get { .. } => "get",
            Ask::Env => "env",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub version: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        values: Vec<(String, WireSecret)>,
    },
    /// Not answered for this peer: the peer logs in itself.
    Declined {
        reason: Declined,
    },
    /// The request was understood and has no value to give, as the
    /// command itself would have found (no such resource, no exec
    /// section, an unknown field): the peer prints it and exits with
    /// `exit_code`.
    Error {
        message: String,
        exit_code: i32,
    },
}

/// Why the daemon did not answer; each is also the `result` label of its
/// request in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Declined {
    /// The peer is not root, the daemon's user or in `agent.socket_group`.
    Refused,
    /// Another protocol version.
    Version,
    /// The peer read other config bytes than the daemon runs (edited
    /// since, not reloaded yet).
    Config,
    /// Not a request of this protocol.
    Malformed,
    /// The daemon could not reach the server or its session failed.
    Server,
}

impl Declined {
    pub fn as_str(self) -> &'static str {
        match self {
            Declined::Refused => "refused",
            Declined::Version => "version",
            Declined::Config => "config",
            Declined::Malformed => "malformed",
            Declined::Server => "server",
        }
    }
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Declined::Refused => "the daemon does not answer this user",
            Declined::Version => "the daemon speaks another protocol version",
            Declined::Config => "the daemon runs other bytes of this config file",
            Declined::Malformed => "the daemon did not understand the request",
            Declined::Server => "the daemon cannot reach the passbolt server",
        })
    }
}

/// A value on the wire: written and read as a JSON string, never
/// printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WireSecret(pub Secret);

impl fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for WireSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

impl<'de> Deserialize<'de> for WireSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WireSecret, D::Error> {
        // Moved into the zeroizing buffer, not copied.
        String::deserialize(d).map(|s| WireSecret(Secret::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_stable() {
        let r = Request {
            version: VERSION,
            config: "ab".into(),
            ask: Ask::Get {
                selector: "db".into(),
                field: Some("username".into()),
            },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"version":1,"config":"ab","op":"get","selector":"db","field":"username"}"#
        );
        let a = Answer {
            version: VERSION,
            outcome: Outcome::Declined {
                reason: Declined::Config,
            },
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"version":1,"result":"declined","reason":"config"}"#
        );
        let ok: Answer =
            serde_json::from_str(r#"{"version":1,"result":"ok","values":[["A","s3cr3t"]]}"#)
                .unwrap();
        let Outcome::Ok { values } = ok.outcome else {
            panic!("not ok")
        };
        assert_eq!(values[0].1.0.expose(), "s3cr3t");
        assert!(!format!("{values:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_socket_sits_beside_the_lock() {
        let p = socket_path(
            Path::new("/run/x"),
            Path::new("/etc/passbolt-sync/sync.yaml"),
        );
        let lock = lock::lock_file_name(Path::new("/etc/passbolt-sync/sync.yaml"));
        assert_eq!(p, Path::new("/run/x").join(lock.replace(".lock", ".sock")));
    }
}
