//! The YAML config: schema, defaults and validation, and the reading of the
//! credential files it names. It knows nothing of what is built from it
//! (plans, passes, commands).
//!
//! Field-level checks run inside deserialization (`checks`), so that serde
//! reports them with the line and column of the offending value. Checks
//! that span several fields of a target run on the whole target and name it
//! (`schema`); checks across targets run once the file is read (`load`).

mod checks;
mod credentials;
mod load;
mod rotate;
mod schema;
pub mod values;

use std::path::PathBuf;

pub use passbolt_client::secret::Field;
pub use values::{DEFAULT_FULL_SYNC_EVERY, Dialect, EXEC_ENV_KEY, HookCommand, parse_mode};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    InvalidNoPosition { path: PathBuf, message: String },
    #[error("cannot read {what} {path}: {source}")]
    ReadCredential {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the environment variable {name} (auth.passphrase_env) is not set")]
    PassphraseEnvMissing { name: String },
    #[error("the environment variable {name} (auth.totp_secret_env) is not set")]
    TotpEnvMissing { name: String },
    #[error("{what}: {source}")]
    TotpSeed {
        what: String,
        source: passbolt_client::mfa::TotpSeedError,
    },
    #[error(
        "{path} uses ${{CREDENTIALS_DIRECTORY}}, which is not set (it is set by systemd's LoadCredential=)"
    )]
    NoCredentialsDirectory { path: String },
}

pub use checks::{check_url, normalize_folder};
pub use credentials::{expand, strip_line_end};
pub use rotate::*;
pub use schema::*;
