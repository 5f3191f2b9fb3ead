//! `passbolt-sync get` and `passbolt-sync env`: one value, or the exec
//! environment, printed for scripts. They ask the daemon of the same config
//! first (`agent::local`): a daemon that answers costs no login and no
//! download of what it holds. Without one (or with `--no-agent`), each is
//! one login, the listing, the download of only what it prints, and a
//! logout; nothing is held.
//!
//! Values go to stdout (or, for `get --output`, to a file of mode 0600
//! written atomically) and nowhere else: not into a log line, not into an
//! error.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::agent::local::Ask;
use crate::agent::local::ask::{self, Answered};
use crate::cli::{self, AppError, ConfigFile};
use crate::config::EXEC_ENV_KEY;
use crate::config::{Field, Selector, VarSpec};
use crate::sync;
use crate::sync::LookupError;
use crate::sync::held::Held;
use crate::sync::plan::Vars;
use crate::sync::render::{self, RenderError};
use crate::sync::write::{self, WriteError, WriteSpec};
use passbolt_client::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    InvalidField(String),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// What the daemon found, as this command would have said it.
    #[error("{message}")]
    Answered { message: String, exit_code: i32 },
    #[error("cannot render the environment: {0}")]
    Render(#[source] RenderError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl GetError {
    /// 2 for a config or an argument to fix, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            GetError::App(e) => e.exit_code(),
            GetError::InvalidField(_) => 2,
            GetError::Answered { exit_code, .. } => *exit_code,
            _ => 1,
        }
    }
}

/// Whether `get` and `env` may ask the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The daemon of the config when one answers, else a login.
    Agent,
    /// Always a login of their own (`--no-agent`).
    Login,
}

/// Where `get` puts the value.
pub enum Destination<'a> {
    Stdout(&'a mut dyn Write),
    /// Written atomically, mode 0600, owned by this process's user.
    File(PathBuf),
}

/// `passbolt-sync get SELECTOR [--field F]`: the field's exact bytes, no
/// newline added.
pub async fn get(
    file: &ConfigFile,
    reference: &str,
    field: Option<&str>,
    to: Destination<'_>,
    via: Via,
) -> Result<(), GetError> {
    let parsed = field
        .map(Field::parse)
        .transpose()
        .map_err(GetError::InvalidField)?
        .unwrap_or(Field::Password);
    let ask = Ask::Get {
        selector: reference.to_string(),
        field: field.map(str::to_string),
    };
    let values = match asked(file, ask, via).await? {
        Some(values) => values,
        None => {
            let vars = Vars::one(
                "value",
                VarSpec {
                    selector: Selector::from_reference(reference),
                    field: parsed,
                },
            );
            fetch(file, Path::new(reference), &vars).await?
        }
    };
    let value = &values[0].1;
    match to {
        Destination::Stdout(out) => {
            out.write_all(value.expose().as_bytes())
                .and_then(|()| out.flush())
                .map_err(GetError::Stdout)?;
        }
        Destination::File(path) => {
            let spec = WriteSpec {
                path,
                mode: 0o600,
                owner: None,
                group: None,
                create_dirs: false,
            };
            let content = render::raw::render(value);
            write::write_atomic(&spec, &content)?;
        }
    }
    Ok(())
}

/// How `env` prints the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFormat {
    /// A portable dotenv file (see `render::dotenv`).
    Dotenv,
    Json,
    /// `export NAME='value'` lines, for `eval`.
    Shell,
}

/// `passbolt-sync env`: the `exec.env` mapping resolved, as the child of
/// `exec` would get it.
pub async fn env(
    file: &ConfigFile,
    format: EnvFormat,
    out: &mut dyn Write,
    via: Via,
) -> Result<(), GetError> {
    let plan = cli::plan(&file.config)?;
    let env = plan.exec_env.ok_or(LookupError::NoExecSection)?;
    let values = match asked(file, Ask::Env, via).await? {
        Some(values) => values,
        None => fetch(file, Path::new(EXEC_ENV_KEY), &env.vars).await?,
    };
    let environment = render::env::render(values).map_err(GetError::Render)?;
    let text = match format {
        EnvFormat::Shell => render::env::shell(&environment),
        EnvFormat::Json => render::json::render(environment.vars()),
        EnvFormat::Dotenv => {
            render::dotenv::render(environment.vars(), render::dotenv::Dialect::Portable)
                .map_err(GetError::Render)?
        }
    };
    out.write_all(&text)
        .and_then(|()| out.flush())
        .map_err(GetError::Stdout)
}

/// The daemon's answer, when one gave it; `None` when the command must
/// log in itself.
async fn asked(
    file: &ConfigFile,
    ask: Ask,
    via: Via,
) -> Result<Option<Vec<(String, Secret)>>, GetError> {
    if via == Via::Login || !file.config.agent.asked() {
        return Ok(None);
    }
    match ask::ask(&file.path, &file.bytes, ask).await {
        Ok(Answered::Values(values)) => {
            tracing::debug!("answered by the daemon of this config");
            Ok(Some(values))
        }
        Ok(Answered::Error { message, exit_code }) => {
            Err(GetError::Answered { message, exit_code })
        }
        // Someone else's socket where the daemon's should be.
        Err(why @ ask::NoAnswer::Untrusted { .. }) => {
            tracing::warn!(reason = %why, "not asking that socket; logging in");
            Ok(None)
        }
        Err(why) => {
            tracing::debug!(reason = %why, "not answered by a daemon; logging in");
            Ok(None)
        }
    }
}

/// One login, the values of `vars`, one logout (also when resolving
/// failed).
async fn fetch(
    file: &ConfigFile,
    key: &Path,
    vars: &Vars,
) -> Result<Vec<(String, Secret)>, GetError> {
    let client = cli::connect(&file.config).await?;
    let result = sync::fetch_vars(&client, key, vars, &mut Held::new()).await;
    // No live refresh token is left behind.
    let _ = client.logout().await;
    let values = result.map_err(AppError::from)?.map_err(LookupError::from)?;
    Ok(values)
}
