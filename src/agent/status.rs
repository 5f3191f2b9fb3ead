//! Each target's and each rotation's state as the daemon last saw it, the
//! status file that carries it to `passbolt-sync status`, and readiness.
//!
//! The file is JSON, replaced atomically after every pass, mode 0644: it
//! holds paths, times and one-line reasons, never a secret, a resource name
//! or a username, and a monitoring check running as another user may read
//! it. Reasons are written here from the error's kind and ids, not from its
//! message, because several messages quote resource names.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::metrics::{RotationResult, TargetResult};
use crate::sync::render::RenderError;
use crate::sync::report::{Status, TargetError, TargetReport};
use crate::sync::rotate::{RotateError, RotateErrorKind};
use crate::sync::write::{self, WriteError, WriteSpec};
use passbolt_client::ClientError;
use passbolt_client::secret::FieldError;
use passbolt_client::write::WriteError as ClientWriteError;

/// Where `status` looks when neither the config nor `$RUNTIME_DIRECTORY`
/// names a status file: the unit's `RuntimeDirectory=passbolt-sync`.
pub const SYSTEMD_STATUS_FILE: &str = "/run/passbolt-sync/status.json";

/// Mode of the status file: readable by monitoring checks of other users.
pub const STATUS_FILE_MODE: u32 = 0o644;

/// The status file's format version.
const VERSION: u32 = 1;

/// One target as the status file has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    pub path: PathBuf,
    pub format: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// `None` until a pass has tried the target.
    pub last_result: Option<TargetResult>,
    /// Why the last result is not `current`, in one line.
    pub reason: Option<String>,
    /// When its schedule next fires, as far as the daemon can tell (a retry
    /// after a failed pass may come earlier).
    pub next_tick: Option<DateTime<Utc>>,
}

impl TargetState {
    pub fn new(path: PathBuf, format: String) -> TargetState {
        TargetState {
            path,
            format,
            last_success: None,
            last_attempt: None,
            last_result: None,
            reason: None,
            next_tick: None,
        }
    }

    /// As the config wants it: current, or removed by `on_missing: remove`.
    pub fn is_current(&self) -> bool {
        matches!(
            self.last_result,
            Some(TargetResult::Current | TargetResult::Removed)
        )
    }

    pub fn record(&mut self, at: DateTime<Utc>, result: TargetResult, reason: Option<String>) {
        self.last_attempt = Some(at);
        self.last_result = Some(result);
        self.reason = reason;
        if matches!(result, TargetResult::Current | TargetResult::Removed) {
            self.last_success = Some(at);
        }
    }
}

/// One rotation as the status file has it: ids and times, never a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationState {
    pub resource_id: String,
    /// The field as the config names it.
    pub field: String,
    /// When it last stored a new value.
    pub last_success: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// `None` until it was first attempted.
    pub last_result: Option<RotationResult>,
    /// Why the last attempt did not end `rotated`, in one line.
    pub reason: Option<String>,
    /// When it next falls due, as far as the daemon can tell.
    pub next_due: Option<DateTime<Utc>>,
}

impl RotationState {
    pub fn new(resource_id: &str, field: &str) -> RotationState {
        RotationState {
            resource_id: resource_id.to_string(),
            field: field.to_string(),
            last_success: None,
            last_attempt: None,
            last_result: None,
            reason: None,
            next_due: None,
        }
    }

    /// Nothing to look into: never attempted, or its last attempt rotated.
    pub fn is_ok(&self) -> bool {
        matches!(self.last_result, None | Some(RotationResult::Rotated))
    }

    pub fn record(&mut self, at: DateTime<Utc>, result: RotationResult, reason: Option<String>) {
        self.last_attempt = Some(at);
        self.last_result = Some(result);
        self.reason = reason;
        if result == RotationResult::Rotated {
            self.last_success = Some(at);
        }
    }
}

/// The whole status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: u32,
    pub written_at: DateTime<Utc>,
    pub pid: u32,
    /// The first complete sync is done.
    pub first_sync_done: bool,
    pub targets: Vec<TargetState>,
    /// Absent from files written before rotations existed.
    #[serde(default)]
    pub rotations: Vec<RotationState>,
}

/// The daemon's per-target and per-rotation state, in config order.
#[derive(Debug, Default)]
pub struct StatusBook {
    pub first_sync_done: bool,
    pub targets: Vec<TargetState>,
    pub rotations: Vec<RotationState>,
}

impl StatusBook {
    /// Keeps the state of targets that stay, adds new ones as not yet
    /// tried, drops the others; returns the dropped paths.
    pub fn set_targets(&mut self, targets: Vec<(PathBuf, String)>) -> Vec<PathBuf> {
        let mut old = std::mem::take(&mut self.targets);
        for (path, format) in targets {
            let state = match old.iter().position(|s| s.path == path) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    if s.format != format {
                        // Another kind of file: its history says nothing.
                        s = TargetState::new(path, format);
                    }
                    s
                }
                None => TargetState::new(path, format),
            };
            self.targets.push(state);
        }
        old.into_iter().map(|s| s.path).collect()
    }

    /// Keeps the state of rotations that stay, adds new ones, drops the
    /// others; returns the dropped (resource id, field) pairs.
    pub fn set_rotations(&mut self, rotations: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut old = std::mem::take(&mut self.rotations);
        for (id, field) in rotations {
            let state = match old
                .iter()
                .position(|s| s.resource_id == id && s.field == field)
            {
                Some(i) => old.swap_remove(i),
                None => RotationState::new(&id, &field),
            };
            self.rotations.push(state);
        }
        old.into_iter().map(|s| (s.resource_id, s.field)).collect()
    }

    pub fn rotation_mut(&mut self, id: &str, field: &str) -> Option<&mut RotationState> {
        self.rotations
            .iter_mut()
            .find(|s| s.resource_id == id && s.field == field)
    }

    pub fn get_mut(&mut self, path: &Path) -> Option<&mut TargetState> {
        self.targets.iter_mut().find(|s| s.path == path)
    }

    /// `Ok` once the first complete sync is done and the last pass of every
    /// target left it current, removed or kept by `on_missing: keep`;
    /// otherwise the first reason why not, in one line.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.first_sync_done {
            return Err("not ready: the first complete sync has not finished".into());
        }
        for t in &self.targets {
            match t.last_result {
                Some(TargetResult::Current | TargetResult::Removed | TargetResult::Kept) => {}
                None => {
                    return Err(format!(
                        "not ready: target {} has not been synced yet",
                        t.path.display()
                    ));
                }
                Some(TargetResult::Failed) => {
                    return Err(format!(
                        "not ready: target {} failed: {}",
                        t.path.display(),
                        t.reason.as_deref().unwrap_or("no reason recorded")
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn report(&self) -> StatusReport {
        StatusReport {
            version: VERSION,
            written_at: Utc::now(),
            pid: std::process::id(),
            first_sync_done: self.first_sync_done,
            targets: self.targets.clone(),
            rotations: self.rotations.clone(),
        }
    }
}

/// A failed rotation in one line, with ids but without the resource names
/// and usernames some client errors quote.
pub fn rotation_reason(e: &RotateError) -> String {
    let text = match &e.kind {
        RotateErrorKind::Write(w) => match w {
            ClientWriteError::RecipientKey { id, .. }
            | ClientWriteError::FingerprintMismatch { id, .. } => {
                format!(
                    "resource {id}: the key of a user with access cannot receive the secret (the daemon's log names the user)"
                )
            }
            ClientWriteError::Verify { id, .. } => format!(
                "resource {id}: the server accepted the write, but reading it back differs (the daemon's log has the details)"
            ),
            ClientWriteError::NotARecipient { id } => {
                format!("resource {id}: the server's list of users with access lacks this account")
            }
            _ => "the write was refused (the daemon's log has the details)".into(),
        },
        other => other.to_string(),
    };
    one_line(&text)
}

/// A target's result in a pass and, unless current, why.
pub fn outcome(t: &TargetReport) -> (TargetResult, Option<String>) {
    if let Some(hook) = &t.hook {
        return (TargetResult::Failed, Some(hook.to_string()));
    }
    match &t.status {
        Status::Created | Status::Updated { .. } | Status::Unchanged | Status::MetadataFixed => {
            (TargetResult::Current, None)
        }
        Status::Removed => (TargetResult::Removed, None),
        Status::Kept(e) => (
            TargetResult::Kept,
            Some(format!("{} (on_missing: keep)", reason(e))),
        ),
        Status::Failed(e) => (TargetResult::Failed, Some(reason(e))),
    }
}

/// A pass that failed as a whole: every target it was to sync failed so.
pub fn pass_failure_reason(e: &ClientError) -> String {
    one_line(&e.to_string())
}

/// A target error in one line, with ids but without the resource names,
/// folder names or variable values that some messages quote.
pub fn reason(e: &TargetError) -> String {
    let text = match e {
        TargetError::Missing { selector, .. } => {
            // A selector by id is written `resource <uuid>`; one by name
            // (or a folder) names what the account can read.
            let by_id = selector
                .strip_prefix("resource ")
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok());
            if by_id {
                format!("{selector} is gone or not readable by this account")
            } else {
                "the resource or folder it names is gone or not readable by this account".into()
            }
        }
        TargetError::Ambiguous { ids, .. } => format!(
            "several resources have the name it selects ({}); select by id",
            ids.join(", ")
        ),
        TargetError::Collision { .. } => {
            "two resources of its folder give the same variable name".into()
        }
        TargetError::Field { source, .. } => match source {
            FieldError::NotInType { id, slug, .. } => {
                format!("resource {id} is of type {slug}, which lacks a field it reads")
            }
            FieldError::NoCustomField { id, .. } => {
                format!("resource {id} lacks a custom field it reads")
            }
            FieldError::Empty { id, .. } => {
                format!("resource {id} has no value for a field it reads")
            }
            FieldError::NotDecrypted { id } => {
                format!("the secret of resource {id} was not decrypted")
            }
        },
        TargetError::Decrypt { source, .. } => source.to_string(),
        TargetError::Download { source, .. } => {
            format!("cannot download its secrets: {source}")
        }
        TargetError::Render { source, .. } => match source {
            RenderError::Parse { .. } => source.to_string(),
            RenderError::TemplateSyntax { line, .. }
            | RenderError::TemplateRender { line, .. }
            | RenderError::Lookup { line, .. } => match line {
                Some(l) => {
                    format!("its template fails at line {l} (the daemon's log has the details)")
                }
                None => "its template fails (the daemon's log has the details)".into(),
            },
            _ => "its content cannot be rendered (the daemon's log has the details)".into(),
        },
        TargetError::TemplateRead {
            template, source, ..
        } => format!("cannot read template {}: {source}", template.display()),
        TargetError::Write(e) => e.to_string(),
        TargetError::Hook(e) => e.to_string(),
        TargetError::Owner { what, .. } => format!("its {what} does not exist on this host"),
    };
    one_line(&text)
}

/// Newlines and runs of blanks become one space: a reason is one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "no status file at {}: the daemon is not running, has not finished a pass yet, or runs with status_file: false",
        .path.display()
    )]
    NotFound { path: PathBuf },
    #[error("no status file is configured: status_file is false in the config")]
    Off,
    #[error("cannot read the status file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the status file {} is not one passbolt-sync wrote: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl StatusError {
    /// 3 when there is no status to show; 1 for a file that cannot be read.
    pub fn exit_code(&self) -> i32 {
        match self {
            StatusError::NotFound { .. } | StatusError::Off => 3,
            _ => 1,
        }
    }
}

/// Replaces the status file with `report`, atomically.
pub fn write_file(path: &Path, report: &StatusReport) -> Result<(), StatusError> {
    let mut json = serde_json::to_vec_pretty(report).expect("serializable");
    json.push(b'\n');
    let spec = WriteSpec {
        mode: STATUS_FILE_MODE,
        ..WriteSpec::new(path)
    };
    write::write_atomic(&spec, &json)?;
    Ok(())
}

pub fn read_file(path: &Path) -> Result<StatusReport, StatusError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => StatusError::NotFound {
            path: path.to_path_buf(),
        },
        _ => StatusError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StatusError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The status file `passbolt-sync status` reads: the config's, else the
/// one in `$RUNTIME_DIRECTORY`, else the systemd unit's.
pub fn file_for(config: Option<&crate::config::Config>) -> Result<PathBuf, StatusError> {
    use crate::config::StatusFile;
    match config.map(|c| &c.status_file) {
        Some(StatusFile::Off) => Err(StatusError::Off),
        Some(StatusFile::Path(p)) => Ok(p.clone()),
        Some(StatusFile::Default) | None => Ok(StatusFile::Default
            .resolve()
            .unwrap_or_else(|| PathBuf::from(SYSTEMD_STATUS_FILE))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(results: &[Option<TargetResult>]) -> StatusBook {
        let mut b = StatusBook::default();
        b.set_targets(
            (0..results.len())
                .map(|i| (PathBuf::from(format!("/t{i}")), "raw".to_string()))
                .collect(),
        );
        for (s, r) in b.targets.iter_mut().zip(results) {
            if let Some(r) = r {
                s.record(Utc::now(), *r, Some("why".into()));
            }
        }
        b.first_sync_done = true;
        b
    }

    #[test]
    fn ready_when_every_target_is_current_removed_or_kept() {
        use TargetResult::*;
        assert_eq!(
            book(&[Some(Current), Some(Removed), Some(Kept)]).readiness(),
            Ok(())
        );
        let e = book(&[Some(Current), Some(Failed)])
            .readiness()
            .unwrap_err();
        assert_eq!(e, "not ready: target /t1 failed: why");
        let e = book(&[Some(Current), None]).readiness().unwrap_err();
        assert!(e.contains("/t1 has not been synced yet"), "{e}");
        let mut b = book(&[Some(Current)]);
        b.first_sync_done = false;
        assert!(b.readiness().unwrap_err().contains("first complete sync"));
    }

    #[test]
    fn a_reload_keeps_the_state_of_targets_that_stay() {
        let mut b = book(&[Some(TargetResult::Current), Some(TargetResult::Failed)]);
        let gone = b.set_targets(vec![
            ("/t1".into(), "raw".into()),
            ("/new".into(), "json".into()),
            ("/t0".into(), "dotenv".into()),
        ]);
        assert_eq!(gone, Vec::<PathBuf>::new());
        assert_eq!(b.targets[0].last_result, Some(TargetResult::Failed));
        assert_eq!(b.targets[1].last_result, None);
        assert_eq!(
            b.targets[2].last_result, None,
            "another format: a new target"
        );
        let gone = b.set_targets(vec![("/new".into(), "json".into())]);
        assert_eq!(gone.len(), 2);
    }

    #[test]
    fn reasons_are_one_line_and_name_no_resource() {
        let e = TargetError::Missing {
            target: "/t".into(),
            selector: "resource named \"Prod DB\" in folder \"Ops\"".into(),
            reason: None,
        };
        let r = reason(&e);
        assert!(!r.contains("Prod DB") && !r.contains("Ops"), "{r}");
        let e = TargetError::Field {
            target: "/t".into(),
            source: FieldError::NotInType {
                id: "3c2b5e1a-0000-4000-8000-00000000000b".into(),
                name: "Prod DB".into(),
                slug: "v5-note".into(),
                field: "password".into(),
            },
        };
        let r = reason(&e);
        assert!(r.contains("3c2b5e1a-0000-4000-8000-00000000000b") && !r.contains("Prod DB"));
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
