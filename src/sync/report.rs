//! What a pass reports: per target, what happened or why not; per pass,
//! what it cost. Produced by `plan` and `sync`, read by the commands and
//! the daemon. No variant ever carries a secret value.

// Errors are per target and rare; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::sync::hooks::HookError;
use crate::sync::render::RenderError;
use crate::sync::write::WriteError;
use passbolt_client::secret::FieldError;
use passbolt_client::{ClientError, Counters, DecodeError};

/// Why one target could not be brought up to date. Names the target and
/// the resource; never a value.
/// Why `get` or `env` has no value to print, as they say it whether they
/// looked themselves or the daemon looked for them.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
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
}

impl From<TargetError> for LookupError {
    fn from(e: TargetError) -> LookupError {
        match e {
            TargetError::Missing { selector, .. } => LookupError::Missing(selector),
            TargetError::Ambiguous { name, ids, .. } => LookupError::Ambiguous { name, ids },
            TargetError::Field { source, .. } => LookupError::Field(source),
            other => LookupError::Resolve(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {target}: {selector} is gone or not readable by this account{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Missing {
        target: PathBuf,
        selector: String,
        reason: Option<DecodeError>,
    },
    #[error("target {target}: several resources are named {name:?}: {}; select by id (resource: <id>)", ids.join(", "))]
    Ambiguous {
        target: PathBuf,
        name: String,
        ids: Vec<String>,
    },
    #[error(
        "target {target}: folder {folder:?}: resources {first:?} and {second:?} both give variable {var}"
    )]
    Collision {
        target: PathBuf,
        folder: String,
        var: String,
        first: String,
        second: String,
    },
    #[error("target {target}: {source}")]
    Field { target: PathBuf, source: FieldError },
    #[error("target {target}: {source}")]
    Decrypt {
        target: PathBuf,
        source: DecodeError,
    },
    #[error("target {target}: cannot download its secrets: {source}")]
    Download {
        target: PathBuf,
        source: ClientError,
    },
    #[error("target {target}: {source}")]
    Render {
        target: PathBuf,
        source: RenderError,
    },
    #[error("target {target}: cannot read template {template}: {source}")]
    TemplateRead {
        target: PathBuf,
        template: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("target {target}: unknown {what} {name:?}")]
    Owner {
        target: PathBuf,
        what: &'static str,
        name: String,
    },
}

impl TargetError {
    /// A resource that vanished or became unreadable: the `on_missing`
    /// policy applies.
    pub fn is_missing(&self) -> bool {
        matches!(self, TargetError::Missing { .. })
    }
}

/// What happened to one target in a pass.
#[derive(Debug)]
pub enum Status {
    Created,
    /// Content changed; for dotenv and json, the names of the variables
    /// that changed (empty when unknown).
    Updated {
        changed: Vec<String>,
    },
    Unchanged,
    /// Mode or owner corrected, content unchanged.
    MetadataFixed,
    /// Its resource is gone and `on_missing: remove` removed the file.
    Removed,
    /// Its resource is gone and `on_missing: keep` left the file.
    Kept(TargetError),
    Failed(TargetError),
}

impl Status {
    /// Whether the target is as the config wants it.
    pub fn is_current(&self) -> bool {
        !matches!(self, Status::Kept(_) | Status::Failed(_))
    }

    pub fn label(&self) -> &'static str {
        match self {
            Status::Created => "create",
            Status::Updated { .. } => "update",
            Status::Unchanged => "unchanged",
            Status::MetadataFixed => "fix-permissions",
            Status::Removed => "remove",
            Status::Kept(_) => "kept",
            Status::Failed(_) => "failed",
        }
    }
}

#[derive(Debug)]
pub struct TargetReport {
    pub path: PathBuf,
    pub status: Status,
    /// The hook's failure, when it ran and failed (the file is written).
    pub hook: Option<HookError>,
}

#[derive(Debug, Default)]
pub struct PassReport {
    pub targets: Vec<TargetReport>,
    pub resources_listed: usize,
    /// Whether the pass listed every readable resource (to resolve names,
    /// folders or templates) rather than only the mapped ones.
    pub full_listing: bool,
    /// What the pass cost: requests, bytes, secrets downloaded, private-key
    /// operations (logins and refreshes included).
    pub cost: Counters,
    /// Secrets a full re-download found different from what was held as
    /// current: changes the incremental passes missed (should stay empty).
    pub missed: Vec<String>,
    /// Whether this pass downloaded every secret its targets read again.
    pub full_sync: bool,
    /// The exec environment, when the pass was over it: rendered, or why
    /// not. Never written anywhere.
    pub env: Option<Result<crate::sync::render::env::Environment, TargetError>>,
}

impl PassReport {
    pub fn all_current(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.status.is_current() && t.hook.is_none())
    }

    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &self.targets {
            *counts.entry(t.status.label()).or_default() += 1;
        }
        let hooks = self.targets.iter().filter(|t| t.hook.is_some()).count();
        let mut parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        if hooks > 0 {
            parts.push(format!("{hooks} hook failed"));
        }
        let n = self.targets.len();
        format!(
            "{n} target{}: {}",
            if n == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }
}
