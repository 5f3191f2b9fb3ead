//! `passbolt-sync set`: changes one field of an existing resource's
//! secret in passbolt, for every user who has access. The write itself
//! (recipients, checks, the PUT, the read-back) is the client's
//! (`passbolt_client::write`); this reads the value, resolves the
//! selector and reports.
//!
//! The value goes to passbolt and, with `--print`, to stdout; nowhere
//! else: not into a log line, not into an error, not into the report.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::cli::{self, AppError};
use crate::config::{Config, Field, Selector};
use crate::sync::{self, TargetError};
use passbolt_client::generate::{self, GenerateError};
use passbolt_client::secret::Secret;
use passbolt_client::write::{SetRequest, WriteError, Written};

/// Where the new value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A file's content (one trailing newline dropped).
    File(PathBuf),
    /// Standard input (one trailing newline dropped).
    Stdin,
    /// The organisation's password policy, else the default generator.
    Generate,
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    InvalidField(String),
    #[error("no resource readable by this account matches {0}")]
    Missing(String),
    #[error("several resources are named {name:?}: {}; give one of the ids instead", ids.join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    #[error(transparent)]
    Resolve(Box<TargetError>),
    #[error("{0}")]
    Value(String),
    #[error("cannot generate a value: {0}")]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl SetError {
    /// 2 for an argument or a config to fix, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            SetError::App(e) => e.exit_code(),
            SetError::InvalidField(_) | SetError::Value(_) => 2,
            _ => 1,
        }
    }
}

impl From<TargetError> for SetError {
    fn from(e: TargetError) -> SetError {
        match e {
            TargetError::Missing { selector, .. } => SetError::Missing(selector),
            TargetError::Ambiguous { name, ids, .. } => SetError::Ambiguous { name, ids },
            other => SetError::Resolve(Box::new(other)),
        }
    }
}

/// The value from `source`, before any login: a bad file fails fast.
/// One trailing newline (as `echo` and editors add) is not part of it.
pub fn read_value(source: &ValueSource, stdin: &mut dyn Read) -> Result<Option<Secret>, SetError> {
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    match source {
        ValueSource::Generate => return Ok(None),
        ValueSource::File(path) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| SetError::Value(format!("--value-file {}: {e}", path.display())))?;
            f.read_to_end(&mut bytes)
                .map_err(|e| SetError::Value(format!("--value-file {}: {e}", path.display())))?;
        }
        ValueSource::Stdin => {
            stdin
                .read_to_end(&mut bytes)
                .map_err(|e| SetError::Value(format!("--stdin: {e}")))?;
        }
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| SetError::Value("the new value is not UTF-8 text".into()))?;
    if text.is_empty() {
        return Err(SetError::Value(
            "the new value is empty; passbolt-sync does not blank a field".into(),
        ));
    }
    Ok(Some(Secret::new(text)))
}

/// `passbolt-sync set SELECTOR [--field F] (--value-file F | --stdin |
/// --generate) [--print]`. The report goes to `report`; the value, with
/// `print`, to `out` and nowhere else.
pub async fn set(
    config: &Config,
    reference: &str,
    field: Option<&str>,
    value: Option<Secret>,
    print: Option<&mut dyn Write>,
    report: &mut dyn Write,
) -> Result<Written, SetError> {
    let field = field
        .map(Field::parse)
        .transpose()
        .map_err(SetError::InvalidField)?
        .unwrap_or(Field::Password);
    if matches!(field, Field::Name | Field::Username | Field::Uri) {
        return Err(SetError::InvalidField(format!(
            "{field} is metadata, not part of the secret; set changes password, description, note, pin, totp or custom:LABEL"
        )));
    }
    let client = cli::connect(config).await?;
    let result = write(&client, reference, &field, value).await;
    // No live refresh token is left behind.
    let _ = client.logout().await;
    let (written, value) = result?;
    let users: Vec<&str> = written
        .recipients
        .iter()
        .map(|r| r.username.as_str())
        .collect();
    let line = format!(
        "updated {field} of {} ({:?}, {}) for {} users: {}\n",
        written.id,
        written.name,
        written.slug,
        users.len(),
        users.join(", ")
    );
    report
        .write_all(line.as_bytes())
        .map_err(SetError::Stdout)?;
    if let Some(out) = print {
        out.write_all(value.expose().as_bytes())
            .and_then(|()| out.flush())
            .map_err(SetError::Stdout)?;
    }
    Ok(written)
}

async fn write(
    client: &passbolt_client::Client,
    reference: &str,
    field: &Field,
    value: Option<Secret>,
) -> Result<(Written, Secret), SetError> {
    let listing = client.list(true).await.map_err(AppError::from)?;
    let selector = Selector::from_reference(reference);
    let resource = sync::resolve_selector(&listing, Path::new(reference), &selector)?;
    let value = match value {
        Some(v) => v,
        None => {
            let policy = client.password_policy().await.map_err(AppError::from)?;
            generate::generate(policy.as_ref())?
        }
    };
    let written = client
        .set_field(SetRequest {
            id: &resource.id,
            field,
            value: &value,
            // A new password answers passbolt's expiry; the server never
            // clears the mark itself.
            clear_expired: *field == Field::Password,
            expected_modified: None,
        })
        .await?;
    Ok((written, value))
}
