//! What runs for a long time: `run`, `exec`, the service they share
//! (generations, reloads, retries), the rotations it drives, their setup
//! from a config file, what they tell the outside (metrics, status file),
//! the instance lock, and the local socket through which `get` and `env`
//! use their session.
//! Nothing here prints for a terminal or picks an exit status: that is `cli`.

use std::path::PathBuf;

pub mod exec;
pub mod local;
pub mod lock;
pub mod metrics;
pub mod observe;
pub mod rotation;
pub mod run;
pub mod service;
pub mod setup;
pub mod status;

pub use setup::SetupError;

/// Why a long-running mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Listen(#[from] metrics::ListenError),
    #[error(transparent)]
    Socket(#[from] local::serve::SocketError),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot watch {}: {source}", .path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: Box<crate::runtime::watch::WatchError>,
    },
}

impl AgentError {
    /// 2 for a config (or an MFA set-up) the operator must fix, 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Setup(SetupError::Config(_) | SetupError::Targets(_)) => 2,
            // A wrong TOTP seed or an MFA the daemon cannot answer: the
            // operator must fix the config; retrying would only add failed
            // attempts on the server.
            AgentError::Setup(SetupError::Client(e)) if e.is_misconfiguration() => 2,
            AgentError::Socket(local::serve::SocketError::Group(_)) => 2,
            _ => 1,
        }
    }
}

impl From<crate::config::ConfigError> for AgentError {
    fn from(e: crate::config::ConfigError) -> AgentError {
        AgentError::Setup(SetupError::Config(e))
    }
}
