//! Rotating one secret for a `rotate:` entry, in the order that loses
//! nothing:
//!
//! 1. if it is due (`due`), read the old value, check that this account
//!    may update the resource and that every recipient's key can take the
//!    new value, and make the new value;
//! 2. record both in the recovery file (`recovery`), then run `apply`
//!    (`apply`) with them on its stdin; if it fails, nothing was changed
//!    and the file goes;
//! 3. once `apply` succeeded the new value is in use: it wins over
//!    passbolt's in what the daemon holds and the targets that read the
//!    resource are rendered from it at once, without the server; then it
//!    is stored in passbolt through the client's `set_field` (recipients
//!    checked, `modified` unchanged since step 1, read back), which also
//!    clears passbolt's expiry mark; the recovery file goes once it is
//!    stored.
//!
//! Nothing here knows about schedules or retries: the agent decides when
//! to check, and how often to try the store again.

pub mod apply;
pub mod due;
pub mod history;
pub mod recovery;

use chrono::{DateTime, Utc};

use crate::config::{Field, Generator, Rotate};
use crate::sync::held::Held;
use crate::sync::plan::Plan;
use crate::sync::report::PassReport;
use apply::{ApplyError, ApplyInput};
use passbolt_client::generate::{self, GenerateError};
use passbolt_client::secret::{Resource, Secret};
use passbolt_client::write::{SetRequest, WriteError, Written};
use passbolt_client::{Client, ClientError, DecodeError};
use recovery::{Pending, Phase, Recovery, RecoveryError};

/// passbolt's "can update" permission: what a writer needs.
const UPDATE: u8 = 7;

/// Where a rotation stopped, for metrics and the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before `apply`: nothing was changed anywhere.
    Check,
    /// `apply` failed: nothing was changed (as its contract says).
    Apply,
    /// The value is in use but not stored yet: tried again.
    Store,
    /// Someone else changed the resource: the store was aborted and
    /// waits for the operator.
    Conflict,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Check => "check",
            Stage::Apply => "apply",
            Stage::Store => "store",
            Stage::Conflict => "conflict",
        }
    }
}

/// A rotation that failed, with the rotation it is about.
#[derive(Debug, thiserror::Error)]
#[error("{rotation}: {kind}")]
pub struct RotateError {
    /// The rotation as `Rotate`'s `Display` names it: field and resource id.
    pub rotation: String,
    pub kind: RotateErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateErrorKind {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Write(WriteError),
    #[error("resource {0} is gone or not readable by this account")]
    Missing(String),
    #[error(
        "this account may only read resource {0}; a rotation needs \"can update\" permission, given by an owner in passbolt. Nothing was changed"
    )]
    ReadOnly(String),
    #[error("resource {id} is of type {slug}, which has no {field} field")]
    NoField {
        id: String,
        slug: String,
        field: String,
    },
    #[error("resource {id}: its metadata declares no custom field labelled {label:?}")]
    NoCustomField { id: String, label: String },
    #[error("cannot read its current secret: {0}")]
    Decode(DecodeError),
    #[error("cannot generate a value: {0}")]
    Generate(#[from] GenerateError),
    #[error(
        "{0}; nothing was stored, and the next attempt follows the schedule (apply must change nothing when it fails)"
    )]
    Apply(ApplyError),
    #[error(
        "{source}; the applied value stays in use and in the recovery file, and apply runs again with the same values at the next check"
    )]
    Reapply { source: ApplyError },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(
        "resource {id} was changed by someone else since its old value was read (modified {read} then, {now} now): the store is aborted. The applied value stays in use, in the targets and in {recovery}; put the right value in passbolt (passbolt-sync set) and remove that file to end the rotation. Give each resource one rotator"
    )]
    Conflict {
        id: String,
        read: String,
        now: String,
        recovery: String,
    },
}

impl RotateError {
    fn new(r: &Rotate, kind: impl Into<RotateErrorKind>) -> RotateError {
        RotateError {
            rotation: r.to_string(),
            kind: kind.into(),
        }
    }

    pub fn stage(&self) -> Stage {
        match &self.kind {
            RotateErrorKind::Apply(_) => Stage::Apply,
            RotateErrorKind::Reapply { .. } => Stage::Apply,
            RotateErrorKind::Conflict { .. } => Stage::Conflict,
            _ => Stage::Check,
        }
    }

    /// The server could not be reached or failed: worth trying again soon.
    pub fn is_outage(&self) -> bool {
        match &self.kind {
            RotateErrorKind::Client(e) | RotateErrorKind::Write(WriteError::Client(e)) => {
                e.is_outage()
            }
            _ => false,
        }
    }
}

impl From<WriteError> for RotateErrorKind {
    fn from(e: WriteError) -> RotateErrorKind {
        match e {
            WriteError::Client(c) => RotateErrorKind::Client(c),
            WriteError::NotFound { id } => RotateErrorKind::Missing(id),
            other => RotateErrorKind::Write(other),
        }
    }
}

/// What a check found.
#[derive(Debug)]
pub enum Begun {
    /// Not due; when it next will be, if that can be told.
    NotDue(due::Due),
    /// `apply` succeeded: the new value is in use and awaits its store.
    Applied(Pending),
}

/// What a rotation would do now, for `--dry-run`: nothing is changed,
/// no secret is read.
#[derive(Debug)]
pub enum Preview {
    /// A value awaits its store (its recovery file is there).
    Pending {
        phase: Phase,
        since: DateTime<Utc>,
    },
    Due(due::Reason),
    /// Not due; when it next falls due, if that can be told.
    NotDue(Option<DateTime<Utc>>),
}

/// What `r` would do now. `recovery` and `last` come from the state
/// directory, when there is one.
pub async fn preview(
    client: &Client,
    r: &Rotate,
    recovery: Option<&Recovery>,
    last: Option<DateTime<Utc>>,
) -> Result<Preview, RotateError> {
    let err = |e: RotateErrorKind| RotateError::new(r, e);
    if let Some(p) = recovery
        .map(|rec| rec.load(r))
        .transpose()
        .map_err(|e| err(e.into()))?
        .flatten()
    {
        return Ok(Preview::Pending {
            phase: p.phase,
            since: p.started,
        });
    }
    let stamps = client
        .secret_stamps(&r.resource, r.every.is_some())
        .await
        .map_err(|e| err(e.into()))?;
    if stamps.permission.is_some_and(|p| p < UPDATE) {
        return Err(err(RotateErrorKind::ReadOnly(r.resource.clone())));
    }
    let due = due::check(r, &stamps, last, Utc::now());
    Ok(match due.now {
        Some(reason) => Preview::Due(reason),
        None => Preview::NotDue(due.next),
    })
}

/// Steps 1 and 2: when `r` is due, reads the old value, makes the new one,
/// records both in the recovery file and runs `apply`. `last` is this
/// host's last rotation of it.
pub async fn begin(
    client: &Client,
    r: &Rotate,
    recovery: &Recovery,
    last: Option<DateTime<Utc>>,
) -> Result<Begun, RotateError> {
    let err = |e: RotateErrorKind| RotateError::new(r, e);
    let stamps = client
        .secret_stamps(&r.resource, r.every.is_some())
        .await
        .map_err(|e| err(e.into()))?;
    let due = due::check(r, &stamps, last, Utc::now());
    let Some(reason) = &due.now else {
        return Ok(Begun::NotDue(due));
    };
    if stamps.permission.is_some_and(|p| p < UPDATE) {
        return Err(err(RotateErrorKind::ReadOnly(r.resource.clone())));
    }
    tracing::info!(rotation = %r.key(), reason = %reason, "rotation due");
    let (old, modified) = read_old(client, r).await.map_err(err)?;
    // A key that cannot take the new value would stop the store after
    // apply: find out before anything changes.
    client
        .recipients(&r.resource)
        .await
        .map_err(|e| err(e.into()))?;
    let new = make_value(client, &r.generate).await.map_err(err)?;
    let mut pending = Pending {
        resource_id: r.resource.clone(),
        field: r.field.clone(),
        phase: Phase::Applying,
        expected_modified: modified,
        old,
        new,
        started: Utc::now(),
    };
    recovery.save(r, &pending).map_err(|e| err(e.into()))?;
    if let Err(e) = run_apply(r, &pending, false).await {
        // apply's contract: a failure changed nothing, so nothing is kept.
        recovery.remove(r).map_err(|e| err(e.into()))?;
        return Err(err(RotateErrorKind::Apply(e)));
    }
    pending.phase = Phase::Applied;
    recovery.save(r, &pending).map_err(|e| err(e.into()))?;
    Ok(Begun::Applied(pending))
}

/// A recovery file left in phase `applying` (the daemon stopped while
/// `apply` ran): `apply` runs again with the same values, marked
/// `resumed`. A failure keeps the file: whether the first run changed
/// anything is unknown.
pub async fn reapply(
    r: &Rotate,
    recovery: &Recovery,
    mut pending: Pending,
) -> Result<Pending, RotateError> {
    if pending.phase == Phase::Applied {
        return Ok(pending);
    }
    run_apply(r, &pending, true)
        .await
        .map_err(|source| RotateError::new(r, RotateErrorKind::Reapply { source }))?;
    pending.phase = Phase::Applied;
    recovery
        .save(r, &pending)
        .map_err(|e| RotateError::new(r, e))?;
    Ok(pending)
}

/// The applied value is in use: it wins over passbolt's in `held` until
/// stored, and the targets whose last pass read the resource are rendered
/// from it now, without the server.
pub async fn put_in_use(plan: &Plan, held: &mut Held, pending: &Pending) -> PassReport {
    held.set_pending(&pending.resource_id, &pending.field, pending.new.clone());
    crate::sync::render_held(plan, held, &pending.resource_id).await
}

/// Step 3's store: the value into passbolt for every user with access
/// (as `set`), refused if the resource moved since the old value was read,
/// clearing the expiry mark; then the recovery file goes. A store that
/// already happened (the daemon stopped before removing the file) is
/// recognised by the value passbolt holds.
pub async fn store(
    client: &Client,
    r: &Rotate,
    recovery: &Recovery,
    pending: &Pending,
) -> Result<Option<Written>, RotateError> {
    let err = |e: RotateErrorKind| RotateError::new(r, e);
    let sent = client
        .set_field(SetRequest {
            id: &r.resource,
            field: &r.field,
            value: &pending.new,
            // A rotation answers passbolt's expiry; the server never clears it.
            clear_expired: true,
            expected_modified: pending.expected_modified.as_deref(),
        })
        .await;
    let written = match sent {
        Ok(w) => Some(w),
        Err(WriteError::Concurrent { read, now, .. }) => {
            let (held, _) = read_old(client, r).await.map_err(err)?;
            if held.as_ref() != Some(&pending.new) {
                return Err(err(RotateErrorKind::Conflict {
                    id: r.resource.clone(),
                    read,
                    now,
                    recovery: recovery.path(r).display().to_string(),
                }));
            }
            tracing::info!(rotation = %r.key(), "passbolt already holds the rotated value");
            None
        }
        Err(e) => return Err(err(e.into())),
    };
    recovery.remove(r).map_err(|e| err(e.into()))?;
    Ok(written)
}

async fn run_apply(r: &Rotate, pending: &Pending, resumed: bool) -> Result<(), ApplyError> {
    let input = ApplyInput {
        resource_id: &r.resource,
        field: &r.field,
        old: pending.old.as_ref(),
        new: &pending.new,
        resumed,
    };
    let took = apply::run(&r.apply, &input).await?;
    tracing::info!(rotation = %r.key(), elapsed = ?took, resumed, "apply succeeded");
    Ok(())
}

/// The field's current value (`None` when it has none) and the
/// `modified` of the answer that carried it.
async fn read_old(
    client: &Client,
    r: &Rotate,
) -> Result<(Option<Secret>, Option<String>), RotateErrorKind> {
    let id = r.resource.clone();
    let listing = client.list_scoped(std::slice::from_ref(&id), &[]).await?;
    let resource = listing
        .get(&id)
        .ok_or_else(|| RotateErrorKind::Missing(id.clone()))?;
    check_field(resource, &r.field)?;
    let mut fetched = client.fetch_secrets(std::slice::from_ref(&id)).await?;
    let f = fetched
        .remove(&id)
        .ok_or_else(|| RotateErrorKind::Missing(id.clone()))?;
    let fields = match f.fields {
        Ok(fields) => fields,
        Err(DecodeError::NoSecret { .. }) => return Err(RotateErrorKind::Missing(id)),
        Err(e) => return Err(RotateErrorKind::Decode(e)),
    };
    Ok((resource.field(&r.field, Some(&fields)).ok(), f.modified))
}

fn check_field(r: &Resource, field: &Field) -> Result<(), RotateErrorKind> {
    if !passbolt_client::secret::type_has_field(&r.type_slug, field) {
        return Err(RotateErrorKind::NoField {
            id: r.id.clone(),
            slug: r.type_slug.clone(),
            field: field.to_string(),
        });
    }
    match field {
        Field::Custom(label) if !r.custom_field_labels.iter().any(|(_, l)| l == label) => {
            Err(RotateErrorKind::NoCustomField {
                id: r.id.clone(),
                label: label.clone(),
            })
        }
        _ => Ok(()),
    }
}

async fn make_value(client: &Client, g: &Generator) -> Result<Secret, RotateErrorKind> {
    Ok(match g {
        Generator::Policy => {
            let policy = client.password_policy().await?;
            generate::generate(policy.as_ref())?
        }
        Generator::Own { length, characters } => generate::pick(&characters.alphabet(), *length)?,
    })
}
