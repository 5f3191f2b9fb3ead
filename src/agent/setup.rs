//! From a config to what a pass needs: the plan, and a client with the
//! account's key unlocked. The daemon's `connect` makes no request (the
//! first one is the login of its first pass, retried with backoff); a
//! command that logs in at once makes the login's first two requests while
//! the key unlocks (`connect_to_log_in`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use passbolt_client::pgp::{PgpError, PrivateKey};
use passbolt_client::{Client, ClientError, SessionOptions};

use crate::config::{self, Config, ConfigError};
use crate::sync::TargetError;
use crate::sync::plan::Plan;

/// Why a config could not be turned into a plan and a client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Every target that cannot be planned, at once.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Targets(Vec<TargetError>),
    #[error("private key {}: {source}", .path.display())]
    Key { path: PathBuf, source: PgpError },
    #[error("server.ca_file {}: {source}", .path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Loads and unlocks the account's key and builds a client for the config.
pub async fn connect(config: &Config) -> Result<Client, SetupError> {
    let client = keyless_client(config)?;
    client.set_key(unlock(config).await?);
    Ok(client)
}

/// As [`connect`], for a command that logs in right away: the requests of
/// the login that need no key are made while the key is unlocked (the
/// passphrase's KDF, up to a few hundred milliseconds of CPU). Their
/// failure is left to the login, which asks again and reports it.
pub async fn connect_to_log_in(config: &Config) -> Result<Client, SetupError> {
    let client = keyless_client(config)?;
    let (key, prepared) = tokio::join!(unlock(config), client.session().prepare_login());
    if let Err(e) = prepared {
        tracing::debug!(error = %e, "nothing prepared before the login");
    }
    client.set_key(key?);
    Ok(client)
}

/// The account's key, unlocked (the passphrase KDF runs off the runtime).
async fn unlock(config: &Config) -> Result<Arc<PrivateKey>, SetupError> {
    let key_path = config::expand(&config.auth.private_key_file)?;
    let key_data = config.auth.read_private_key()?;
    let passphrase = config.auth.read_passphrase()?;
    let key = tokio::task::spawn_blocking(move || {
        PrivateKey::load(&key_data, passphrase.as_ref().map(|p| p.as_slice()))
    })
    .await
    .expect("key loading task")
    .map_err(|source| SetupError::Key {
        path: key_path,
        source,
    })?;
    Ok(Arc::new(key))
}

/// The client of the config, its key not set yet.
fn keyless_client(config: &Config) -> Result<Client, SetupError> {
    let ca_pem = match &config.server.ca_file {
        Some(path) => {
            let path = config::expand(path)?;
            Some(std::fs::read(&path).map_err(|source| SetupError::CaFile { path, source })?)
        }
        None => None,
    };
    let mut opts = session_options(config, ca_pem);
    opts.client_identity = config.server.read_client_identity()?;
    let totp = config.auth.read_totp_secret()?;
    Ok(Client::without_key(opts)?.with_totp(totp))
}

pub fn session_options(config: &Config, ca_pem: Option<Vec<u8>>) -> SessionOptions {
    SessionOptions {
        base_url: config.server.url.clone(),
        user_id: config.auth.user_id.clone(),
        fingerprint: config.server.fingerprint.clone(),
        ca_pem,
        client_identity: None,
        timeout: config.server.timeout,
        max_response_bytes: config.server.max_response_bytes,
    }
}

/// Plans a config: every target's problems at once.
pub fn plan(config: &Config) -> Result<Plan, SetupError> {
    Plan::build(config).map_err(SetupError::Targets)
}

/// Loads a config from its bytes and plans it, for startup and reloads;
/// without `with_env`, the plan leaves the exec environment out.
pub fn parse(path: &Path, bytes: &[u8], with_env: bool) -> Result<(Config, Plan), SetupError> {
    let text = String::from_utf8_lossy(bytes);
    let config = Config::parse(&text, path)?;
    if let Some(message) = rotation_without_state_dir(&config) {
        return Err(ConfigError::InvalidNoPosition {
            path: path.to_path_buf(),
            message,
        }
        .into());
    }
    let mut plan = plan(&config)?;
    if !with_env {
        plan.exec_env = None;
    }
    Ok((config, plan))
}

/// Rotations keep their recovery files in the state directory: without
/// one, a crash between `apply` and the store would lose the value.
pub fn rotation_without_state_dir(config: &Config) -> Option<String> {
    (!config.rotate.is_empty() && crate::sync::state::dir(config.state_dir.as_deref()).is_none())
        .then(|| {
            "rotate: rotations need a state directory for their recovery files: set `state_dir`, or run under the shipped unit (StateDirectory=, which sets $STATE_DIRECTORY)".to_string()
        })
}
