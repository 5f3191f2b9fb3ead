//! `passbolt-sync get` and `passbolt-sync env`: one value, or the exec
//! environment, printed for scripts. Each is one login, the listing, the
//! download of only what it prints, and a logout; nothing is held.
//!
//! Values go to stdout (or, for `get --output`, to a file of mode 0600
//! written atomically) and nowhere else: not into a log line, not into an
//! error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{self, AppError};
use crate::config::EXEC_ENV_KEY;
use crate::config::{Config, Field, Selector, VarSpec};
use crate::sync;
use crate::sync::plan::Vars;
use crate::sync::render::{self, RenderError};
use crate::sync::report::TargetError;
use crate::sync::write::{self, WriteError, WriteSpec};
use passbolt_client::secret::{FieldError, Secret};

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    InvalidField(String),
    #[error("no resource readable by this account matches {0}")]
    Missing(String),
    #[error("several resources are named {name:?}: {}; give one of the ids instead", ids.join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    #[error(transparent)]
    Field(FieldError),
    #[error(transparent)]
    Resolve(TargetError),
    #[error("the config has no exec: section, so there is no environment to print")]
    NoExecSection,
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
            _ => 1,
        }
    }
}

impl From<TargetError> for GetError {
    fn from(e: TargetError) -> GetError {
        match e {
            TargetError::Missing { selector, .. } => GetError::Missing(selector),
            TargetError::Ambiguous { name, ids, .. } => GetError::Ambiguous { name, ids },
            TargetError::Field { source, .. } => GetError::Field(source),
            other => GetError::Resolve(other),
        }
    }
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
    config: &Config,
    reference: &str,
    field: Option<&str>,
    to: Destination<'_>,
) -> Result<(), GetError> {
    let field = field
        .map(Field::parse)
        .transpose()
        .map_err(GetError::InvalidField)?
        .unwrap_or(Field::Password);
    let vars = Vars {
        named: BTreeMap::from([(
            "value".to_string(),
            VarSpec {
                selector: Selector::from_reference(reference),
                field,
            },
        )]),
        folder: None,
        folder_field: Field::Password,
    };
    let values = fetch(config, Path::new(reference), &vars).await?;
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
pub async fn env(config: &Config, format: EnvFormat, out: &mut dyn Write) -> Result<(), GetError> {
    let plan = cli::plan(config)?;
    let env = plan.exec_env.ok_or(GetError::NoExecSection)?;
    let values = fetch(config, Path::new(EXEC_ENV_KEY), &env.vars).await?;
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

/// One login, the values of `vars`, one logout (also when resolving
/// failed).
async fn fetch(
    config: &Config,
    key: &Path,
    vars: &Vars,
) -> Result<Vec<(String, Secret)>, GetError> {
    let client = cli::connect(config).await?;
    let result = sync::fetch_vars(&client, key, vars).await;
    // No live refresh token is left behind.
    let _ = client.logout().await;
    let values = result.map_err(AppError::from)??;
    Ok(values)
}
