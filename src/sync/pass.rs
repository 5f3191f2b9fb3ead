//! One sync pass: list the resources without their secrets, resolve the
//! due targets' selectors, download only the secrets that are new, changed
//! or not held yet, render, write what changed, run hooks.
//!
//! Nothing here knows about schedules; the daemon calls `run_pass` with
//! the targets that are due and the secrets it holds (`held`). A failing
//! target never stops the others.

// Errors are per target and rare; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Field, OnMissing, Selector, VarSpec};
use crate::sync::held::{Held, Stored};
use crate::sync::hooks::{self, HookError};
use crate::sync::plan::{Output, Plan, PlannedEnv, PlannedTarget, Vars};
use crate::sync::render::env::Environment;
use crate::sync::render::{self, Lookup, Template};
use crate::sync::write::{self, WriteOutcome};
use passbolt_client::secret::{FieldError, Resource, Secret, SecretFields};
use passbolt_client::{Client, ClientError, DecodeError, Listing};

use crate::sync::held::{SETTLE_SECONDS, modified_epoch};
use crate::sync::report::{PassReport, Status, TargetError, TargetReport};
use crate::sync::{scope, state};

#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Compute and report, write nothing, run no hook.
    pub dry_run: bool,
}

/// Finds the one resource a selector names, or why not. A resource that
/// is listed but cannot be decoded is a failure of the target, not a
/// missing resource: its file must not be removed for a decoding problem.
fn resolve<'a>(
    listing: &'a Listing,
    target: &Path,
    selector: &Selector,
) -> Result<&'a Resource, TargetError> {
    match selector {
        Selector::Id(id) => listing.get(id).ok_or_else(|| match listing.failure(id) {
            Some(e) => TargetError::Decrypt {
                target: target.to_path_buf(),
                source: e.clone(),
            },
            None => TargetError::Missing {
                target: target.to_path_buf(),
                selector: selector.to_string(),
                reason: None,
            },
        }),
        Selector::Name { name, folder } => {
            let found: Vec<&Resource> = listing
                .resources
                .iter()
                .filter(|r| &r.name == name)
                .filter(|r| folder.is_none() || r.folder.as_deref() == folder.as_deref())
                .collect();
            match found.as_slice() {
                [one] => Ok(one),
                [] => Err(TargetError::Missing {
                    target: target.to_path_buf(),
                    selector: selector.to_string(),
                    reason: None,
                }),
                many => Err(TargetError::Ambiguous {
                    target: target.to_path_buf(),
                    name: name.clone(),
                    ids: many.iter().map(|r| r.id.clone()).collect(),
                }),
            }
        }
    }
}

/// The one resource `selector` names in `listing` (`key` names the
/// caller in errors), for commands that act on a resource.
pub fn resolve_selector<'a>(
    listing: &'a Listing,
    key: &Path,
    selector: &Selector,
) -> Result<&'a Resource, TargetError> {
    resolve(listing, key, selector)
}

/// One value a target reads: `field` of resource `id`, as variable `var`
/// (empty for raw targets).
#[derive(Debug, Clone)]
struct Need {
    var: String,
    id: String,
    field: Field,
}

/// The values of a dotenv/json target, sorted by variable.
fn resolve_vars(listing: &Listing, target: &Path, vars: &Vars) -> Result<Vec<Need>, TargetError> {
    let mut out: Vec<Need> = Vec::new();
    if let Some(folder) = &vars.folder {
        let members: Vec<&Resource> = listing
            .resources
            .iter()
            .filter(|r| r.folder.as_deref() == Some(folder.as_str()))
            .collect();
        if members.is_empty() {
            return Err(TargetError::Missing {
                target: target.to_path_buf(),
                selector: format!("folder {folder:?}"),
                reason: None,
            });
        }
        let mut by_var: HashMap<String, &Resource> = HashMap::new();
        for r in members {
            let var = render::dotenv::derive_name(&r.name);
            if let Some(prev) = by_var.insert(var.clone(), r) {
                return Err(TargetError::Collision {
                    target: target.to_path_buf(),
                    folder: folder.clone(),
                    var,
                    first: prev.name.clone(),
                    second: r.name.clone(),
                });
            }
        }
        for (var, r) in by_var {
            // Explicit vars override the folder's variable of the same name.
            if !vars.named.contains_key(&var) {
                out.push(Need {
                    var,
                    id: r.id.clone(),
                    field: vars.folder_field.clone(),
                });
            }
        }
    }
    for (var, spec) in &vars.named {
        let r = resolve(listing, target, &spec.selector)?;
        out.push(Need {
            var: var.clone(),
            id: r.id.clone(),
            field: spec.field.clone(),
        });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// The values of `vars`, resolved, with every field checked against its
/// resource's type.
fn checked_vars(listing: &Listing, key: &Path, vars: &Vars) -> Result<Vec<Need>, TargetError> {
    let needs = resolve_vars(listing, key, vars)?;
    for Need { id, field, .. } in &needs {
        let r = listing.get(id).expect("resolved from this listing");
        check_field(key, r, field)?;
    }
    Ok(needs)
}

/// Every value a non-template target reads. Fails early on selectors that
/// do not resolve and on fields the type lacks.
fn requirements(listing: &Listing, t: &PlannedTarget) -> Result<Vec<Need>, TargetError> {
    let needs = match &t.output {
        Output::Raw(VarSpec { selector, field }) => {
            let r = resolve(listing, t.path(), selector)?;
            vec![Need {
                var: String::new(),
                id: r.id.clone(),
                field: field.clone(),
            }]
        }
        Output::Dotenv { vars, .. } | Output::Json { vars } => {
            resolve_vars(listing, t.path(), vars)?
        }
        Output::Template(_) => Vec::new(),
    };
    for Need { id, field, .. } in &needs {
        let r = listing.get(id).expect("resolved from this listing");
        check_field(t.path(), r, field)?;
    }
    Ok(needs)
}

/// Whether `r` can have `field` at all: its type has it, and a custom
/// label is one its metadata declares.
fn check_field(target: &Path, r: &Resource, field: &Field) -> Result<(), TargetError> {
    if !passbolt_client::secret::type_has_field(&r.type_slug, field) {
        return Err(TargetError::Field {
            target: target.to_path_buf(),
            source: FieldError::NotInType {
                id: r.id.clone(),
                name: r.name.clone(),
                slug: r.type_slug.clone(),
                field: field.to_string(),
            },
        });
    }
    if let Field::Custom(label) = field
        && !r.custom_field_labels.iter().any(|(_, l)| l == label)
    {
        return Err(TargetError::Field {
            target: target.to_path_buf(),
            source: FieldError::NoCustomField {
                id: r.id.clone(),
                name: r.name.clone(),
                label: label.clone(),
                available: r
                    .custom_field_labels
                    .iter()
                    .map(|(_, l)| l.clone())
                    .collect(),
            },
        });
    }
    Ok(())
}

/// The secrets known to this pass: what is held, updated by what the pass
/// downloaded, and the resources whose secret could not be had.
struct Secrets<'a> {
    held: &'a Held,
    /// Listed without a secret for this account, or gone by the time the
    /// secrets were downloaded: the `on_missing` policy applies.
    missing: &'a HashMap<String, Option<DecodeError>>,
    /// Downloaded but not decrypted or parsed: a failure of the target.
    failed: &'a HashMap<String, DecodeError>,
}

impl Secrets<'_> {
    /// `field` of `r`, for target `target`.
    fn value(&self, target: &Path, r: &Resource, field: &Field) -> Result<Secret, TargetError> {
        // A rotated value in use wins over passbolt's until it is stored.
        if let Some(v) = self.held.pending(&r.id, field) {
            return Ok(v.clone());
        }
        let secret = if field.is_secret() {
            Some(self.secret(target, &r.id)?)
        } else {
            None
        };
        r.field(field, secret).map_err(|source| TargetError::Field {
            target: target.to_path_buf(),
            source,
        })
    }

    fn secret(&self, target: &Path, id: &str) -> Result<&SecretFields, TargetError> {
        if let Some(e) = self.failed.get(id) {
            return Err(TargetError::Decrypt {
                target: target.to_path_buf(),
                source: e.clone(),
            });
        }
        if let Some(reason) = self.missing.get(id) {
            return Err(TargetError::Missing {
                target: target.to_path_buf(),
                selector: format!("resource {id}"),
                reason: reason.clone(),
            });
        }
        self.held.get(id).ok_or_else(|| TargetError::Missing {
            target: target.to_path_buf(),
            selector: format!("resource {id}"),
            reason: None,
        })
    }
}

/// Answers a template's `secret()` calls. With `secrets` absent (the
/// discovery render, and `check`), secret fields are recorded and answered
/// with a placeholder; the pass downloads them and renders again.
struct TemplateLookup<'a> {
    listing: &'a Listing,
    secrets: Option<&'a Secrets<'a>>,
    target: &'a Path,
    /// Resources whose secret the template read.
    read: Mutex<BTreeSet<String>>,
    /// Every resource the template named and found, secret or not.
    found: Mutex<BTreeSet<String>>,
    /// Whether a reference did not resolve: `Some(true)` when it named
    /// nothing, `Some(false)` when it failed otherwise.
    unresolved: Mutex<Option<bool>>,
    /// The first reason a secret could not be given, for the error.
    unavailable: Mutex<Option<TargetError>>,
}

impl<'a> TemplateLookup<'a> {
    fn new(listing: &'a Listing, secrets: Option<&'a Secrets<'a>>, target: &'a Path) -> Self {
        TemplateLookup {
            listing,
            secrets,
            target,
            read: Mutex::new(BTreeSet::new()),
            found: Mutex::new(BTreeSet::new()),
            unresolved: Mutex::new(None),
            unavailable: Mutex::new(None),
        }
    }
}

impl Lookup for TemplateLookup<'_> {
    fn field(&self, resource: &str, field: &str) -> Result<Secret, String> {
        let field = Field::parse(field)?;
        let selector = Selector::from_reference(resource);
        let unresolved = |missing: bool| {
            let mut u = self.unresolved.lock().expect("not poisoned");
            *u = Some(u.unwrap_or(true) && missing);
        };
        let r = resolve(self.listing, self.target, &selector).map_err(|e| {
            unresolved(e.is_missing());
            match e {
                TargetError::Missing { .. } => format!("no readable {selector}"),
                other => other.to_string(),
            }
        })?;
        self.found
            .lock()
            .expect("not poisoned")
            .insert(r.id.clone());
        check_field(self.target, r, &field).map_err(|e| {
            unresolved(false);
            e.to_string()
        })?;
        if field.is_secret() {
            self.read.lock().expect("not poisoned").insert(r.id.clone());
        }
        match self.secrets {
            None if field.is_secret() => Ok(Secret::new("")),
            None => r.field(&field, None).map_err(|e| e.to_string()),
            Some(secrets) => secrets.value(self.target, r, &field).map_err(|e| {
                let message = match &e {
                    TargetError::Missing { .. } => {
                        format!("the secret of {selector} is not available")
                    }
                    other => other.to_string(),
                };
                self.unavailable
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert(e);
                message
            }),
        }
    }
}

/// A due target after resolution, before the download.
enum Resolved {
    Values(Vec<Need>),
    Template(Arc<Template>),
}

/// Resolves every target of `plan` against a listing without downloading
/// any secret: what `check --online` reports. Templates render with
/// placeholders for their secrets.
pub fn resolve_only(plan: &Plan, listing: &Listing) -> Vec<(PathBuf, Result<(), TargetError>)> {
    let env = plan.exec_env.as_ref().map(|e| {
        (
            e.key().to_path_buf(),
            checked_vars(listing, e.key(), &e.vars).map(drop),
        )
    });
    plan.targets
        .iter()
        .map(|t| {
            let result = match &t.output {
                Output::Template(file) => file.current(t.path()).and_then(|tpl| {
                    let lookup = TemplateLookup::new(listing, None, t.path());
                    tpl.render(&lookup)
                        .map(drop)
                        .map_err(|source| TargetError::Render {
                            target: t.path().to_path_buf(),
                            source,
                        })
                }),
                _ => requirements(listing, t).map(drop),
            };
            (t.path().to_path_buf(), result)
        })
        .chain(env)
        .collect()
}

/// Whether resolving `vars` needs folder paths in the listing.
fn vars_use_folders(vars: &Vars) -> bool {
    vars.folder.is_some()
        || vars.named.values().any(|v| {
            matches!(
                &v.selector,
                Selector::Name {
                    folder: Some(_),
                    ..
                }
            )
        })
}

/// Whether resolving `t` needs folder paths in the listing.
fn uses_folders(t: &PlannedTarget) -> bool {
    match &t.output {
        Output::Raw(v) => matches!(
            &v.selector,
            Selector::Name {
                folder: Some(_),
                ..
            }
        ),
        Output::Dotenv { vars, .. } | Output::Json { vars } => vars_use_folders(vars),
        // A template may name `Folder/Name`; it is read only as it renders.
        Output::Template(_) => true,
    }
}

/// Lists with folder paths when any target needs them, e.g. for
/// `check --online`.
pub async fn list_for(client: &Client, plan: &Plan) -> Result<Listing, ClientError> {
    let env = plan
        .exec_env
        .as_ref()
        .is_some_and(|e| vars_use_folders(&e.vars));
    client
        .list(env || plan.targets.iter().any(uses_folders))
        .await
}

/// Resolves `vars` against a fresh listing and downloads only the secrets
/// they read that `held` does not hold current, storing them there: `get`
/// and `env` pass an empty `held`; the daemon, answering them on its
/// socket, passes what its passes hold. `key` names them in errors, as a
/// target's path would. A server that cannot be reached is the outer
/// `Err`.
pub async fn fetch_vars(
    client: &Client,
    key: &Path,
    vars: &Vars,
    held: &mut Held,
) -> Result<Result<Vec<(String, Secret)>, TargetError>, ClientError> {
    let sel = vars_selection(vars);
    // By id only: nothing to resolve, so only those are listed.
    let listing = if sel.dynamic {
        client.list(vars_use_folders(vars)).await?
    } else {
        let ids: Vec<String> = sel.ids.into_iter().collect();
        client.list_scoped(&ids, &[]).await?
    };
    let needs = match checked_vars(&listing, key, vars) {
        Ok(needs) => needs,
        Err(e) => return Ok(Err(e)),
    };
    // Values decrypted under other keys are no evidence of these.
    held.check_identity(&client.key_identity().await);
    let wanted: Vec<String> = secret_reads(&needs)
        .into_iter()
        .filter(|id| {
            let r = listing.get(id).expect("resolved from this listing");
            held.current(r).is_none()
        })
        .collect();
    let downloads = download(client, held, &wanted).await?;
    let secrets = Secrets {
        held,
        missing: &downloads.missing,
        failed: &downloads.failed,
    };
    Ok(values(&listing, &secrets, key, &needs))
}

fn values(
    listing: &Listing,
    secrets: &Secrets<'_>,
    key: &Path,
    needs: &[Need],
) -> Result<Vec<(String, Secret)>, TargetError> {
    needs
        .iter()
        .map(|n| {
            let r = listing.get(&n.id).expect("resolved from this listing");
            Ok((n.var.clone(), secrets.value(key, r, &n.field)?))
        })
        .collect()
}

/// One pass over the targets at `due` (all when `None`). `held` is what
/// earlier passes downloaded; it is brought up to date. A server that
/// cannot be reached, for the listing or the download, is an `Err`: no
/// file is touched. Everything else is reported per target.
///
/// The pass lists only what its targets map (see `scope`): ids by id,
/// resolved folders by folder, and everything only when names, folders or
/// templates are due to be resolved again.
pub async fn run_pass(
    client: &Client,
    plan: &Plan,
    held: &mut Held,
    due: Option<&[PathBuf]>,
    opts: PassOptions,
) -> Result<PassReport, ClientError> {
    let before = client.counters();
    let selected: Vec<&PlannedTarget> = plan
        .targets
        .iter()
        .filter(|t| due.is_none_or(|d| d.iter().any(|p| p == t.path())))
        .collect();
    let env_due = plan
        .exec_env
        .as_ref()
        .filter(|e| due.is_none_or(|d| d.iter().any(|p| p == e.key())));
    let folder_paths = selected.iter().any(|t| uses_folders(t))
        || env_due.is_some_and(|e| vars_use_folders(&e.vars));

    let now = Instant::now();
    // What each due target (and the environment) selects before listing.
    let mut keys: Vec<(&Path, Selection)> = selected
        .iter()
        .map(|t| (t.path(), selection(&t.output)))
        .collect();
    if let Some(e) = env_due {
        keys.push((e.key(), vars_selection(&e.vars)));
    }
    let resolve_every = plan.resolve_every();
    // After a restart, names and folders resolve to what the state file
    // recorded; a fresh client then learns the folder tree alone.
    let mut restored_folders = false;
    // `keys` begins with the selected targets' selections, in order.
    for (t, (_, sel)) in selected.iter().zip(&keys) {
        if sel.dynamic && held.restore_scope(t.path(), || state::form(t), resolve_every, now) {
            restored_folders |= uses_folders(t);
        }
    }
    let mut full = keys.iter().any(|(k, sel)| {
        sel.dynamic
            && (held.scope().needs_full(k, resolve_every, now)
                || held.full_sync_pending(k, plan.full_sync_every, now))
    });
    let listing = if full {
        client.list(folder_paths).await?
    } else {
        if restored_folders {
            client.load_folder_paths().await?;
        }
        let (mut ids, mut folders) = (BTreeSet::new(), BTreeSet::new());
        for (k, sel) in &keys {
            ids.extend(sel.ids.iter().cloned());
            held.scope().add_request(k, &mut ids, &mut folders);
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let folders: Vec<String> = folders.into_iter().collect();
        client.list_scoped(&ids, &folders).await?
    };
    let dropped = held.len();
    if held.check_identity(&client.key_identity().await) && dropped > 0 {
        tracing::info!(
            dropped,
            "the account's key or the set of metadata keys changed; every held secret is downloaded again"
        );
        // Resolution is redone too; the next pass lists in full.
    }
    let resolve_all = |listing: &Listing, held: &mut Held| {
        let resolved: Vec<DueTarget> = selected
            .iter()
            .map(|t| resolve_due(listing, held, plan, t, now))
            .collect();
        let env = env_due.map(|e| resolve_env(listing, held, plan, e, now));
        (resolved, env)
    };
    let (mut resolved, mut env) = resolve_all(&listing, held);
    let mut listing = listing;
    if !full {
        // A resolved name, folder or template reference that no longer
        // resolves on the scoped listing: gone, renamed, moved, or its
        // folder gone. Only a full listing can tell which.
        let stale = resolved
            .iter()
            .map(|d| (d.target.path(), d.resolution))
            .chain(env.iter().map(|e| (e.env.key(), e.resolution)))
            .filter(|(k, r)| {
                *r != Resolution::Complete
                    && keys.iter().any(|(kk, sel)| kk == k && sel.dynamic)
                    && held.scope().was_resolved(k)
            })
            .map(|(k, _)| k.display().to_string())
            .collect::<Vec<_>>();
        if !stale.is_empty() {
            tracing::info!(
                targets = ?stale,
                "a resolved resource no longer resolves on the scoped listing; resolving again on a full listing"
            );
            listing = client.list(folder_paths).await?;
            full = true;
            (resolved, env) = resolve_all(&listing, held);
        }
    }
    if full {
        held.forget_unlisted(|id| listing.get(id).is_some());
        record_scope(client, held, &keys, &resolved, env.as_ref(), now);
    } else {
        // Only what was asked for by id is known gone; a folder member
        // that left is dropped with its target's next use.
        let asked: BTreeSet<&str> = keys
            .iter()
            .flat_map(|(_, sel)| sel.ids.iter().map(String::as_str))
            .collect();
        held.forget_unlisted(|id| !asked.contains(id) || listing.get(id).is_some());
    }

    let wanted: BTreeSet<String> = resolved
        .iter()
        .flat_map(|d| d.wanted.iter())
        .chain(env.iter().flat_map(|e| e.wanted.iter()))
        .cloned()
        .collect();
    let wanted: Vec<String> = wanted.into_iter().collect();
    // An outage here, too, leaves every file as it is.
    let downloads = download(client, held, &wanted).await?;

    let mut report = PassReport {
        resources_listed: listing.resources.len(),
        full_listing: full,
        full_sync: resolved.iter().any(|d| d.full_sync)
            || env.as_ref().is_some_and(|e| e.full_sync),
        ..PassReport::default()
    };
    let mut uses: Vec<(PathBuf, BTreeSet<String>, bool)> = Vec::new();
    let mut records: Vec<(PathBuf, Option<state::Record>)> = Vec::new();
    // What a render without the server needs of this listing.
    let mut deps: BTreeSet<String> = resolved.iter().flat_map(|d| d.deps.clone()).collect();
    if let Some(Ok(needs)) = env.as_ref().map(|e| &e.needs) {
        deps.extend(needs.iter().map(|n| n.id.clone()));
    }
    {
        let secrets = Secrets {
            held,
            missing: &downloads.missing,
            failed: &downloads.failed,
        };
        for d in resolved {
            let path = d.target.path().to_path_buf();
            if d.warm {
                tracing::debug!(target_path = %path.display(), "target current as recorded; nothing downloaded");
                uses.push((path.clone(), BTreeSet::new(), d.full_sync));
                report.targets.push(TargetReport {
                    path,
                    status: Status::Unchanged,
                    hook: None,
                });
                continue;
            }
            let (content, read) = render(&listing, &secrets, d.target, d.resolved);
            let digest = content.as_ref().ok().map(|c| state::sha256_hex(c));
            uses.push((path.clone(), read, d.full_sync));
            let applied = apply(d.target, content, opts).await;
            if !opts.dry_run {
                let record = match (&applied.status, digest) {
                    (
                        Status::Created
                        | Status::Updated { .. }
                        | Status::Unchanged
                        | Status::MetadataFixed,
                        Some(digest),
                    ) if !d.deps.iter().any(|id| secrets.held.has_pending(id)) => {
                        new_record(d.target, &listing, &d.deps, digest)
                    }
                    _ => None,
                };
                records.push((path, record));
            }
            report.targets.push(applied);
        }
        if let Some(e) = env {
            let key = e.env.key();
            let (rendered, read) = match e.needs {
                Ok(needs) => (
                    render_env(&listing, &secrets, key, &needs),
                    secret_reads(&needs),
                ),
                Err(err) => (Err(err), BTreeSet::new()),
            };
            if let Err(err) = &rendered {
                tracing::error!(error = %err, "exec environment not updated");
            }
            uses.push((key.to_path_buf(), read, e.full_sync));
            report.env = Some(rendered);
        }
    }
    for (path, record) in records {
        held.set_record(&path, record);
    }
    held.keep_rows(&listing, &deps);
    for (path, read, full_sync) in uses {
        held.record_use(&path, read);
        if full_sync {
            held.mark_full_sync(&path, now);
        }
    }
    report.missed = downloads.missed;
    if report.full_sync {
        log_full_sync(&report, wanted.len());
    }
    report.cost = client.counters() - before;
    Ok(report)
}

/// Renders and writes, without the server, the targets whose last pass
/// read the secret of `id`: from the rows and secrets held (pending
/// rotated values included). A target that cannot be rendered so (a
/// secret not held, a name that no longer resolves among the kept rows)
/// is left as it is for the next pass: nothing here applies `on_missing`.
pub async fn render_held(plan: &Plan, held: &mut Held, id: &str) -> PassReport {
    let listing = held.kept_listing();
    let empty = HashMap::new();
    let failed = HashMap::new();
    let mut report = PassReport::default();
    let mut rendered = Vec::new();
    for path in held.targets_using(id) {
        let Some(t) = plan.target(&path) else {
            continue;
        };
        let resolved = match &t.output {
            Output::Template(file) => file.current(t.path()).map(Resolved::Template),
            _ => requirements(&listing, t).map(Resolved::Values),
        };
        let secrets = Secrets {
            held,
            missing: &empty,
            failed: &failed,
        };
        match render(&listing, &secrets, t, resolved).0 {
            Ok(content) => rendered.push((t, content)),
            Err(e) => {
                tracing::debug!(target_path = %path.display(), error = %e, "not rendered without the server; the next pass renders it");
            }
        }
    }
    for (t, content) in rendered {
        // Its content no longer matches the recorded stamps.
        held.set_record(t.path(), None);
        report
            .targets
            .push(apply(t, Ok(content), PassOptions::default()).await);
    }
    report
}

/// What a target selects before any listing.
struct Selection {
    /// The ids it names: listed by id at every pass.
    ids: BTreeSet<String>,
    /// Whether it also names resources by name, folder or template
    /// reference, which only a full listing resolves.
    dynamic: bool,
}

fn vars_selection(vars: &Vars) -> Selection {
    let mut sel = Selection {
        ids: BTreeSet::new(),
        dynamic: vars.folder.is_some(),
    };
    for v in vars.named.values() {
        match &v.selector {
            Selector::Id(id) => {
                sel.ids.insert(id.clone());
            }
            Selector::Name { .. } => sel.dynamic = true,
        }
    }
    sel
}

fn selection(output: &Output) -> Selection {
    match output {
        Output::Raw(VarSpec {
            selector: Selector::Id(id),
            ..
        }) => Selection {
            ids: BTreeSet::from([id.clone()]),
            dynamic: false,
        },
        Output::Raw(_) | Output::Template(_) => Selection {
            ids: BTreeSet::new(),
            dynamic: true,
        },
        Output::Dotenv { vars, .. } | Output::Json { vars } => vars_selection(vars),
    }
}

/// After a full listing: what each due target's names, folders and
/// template references resolved to, for the scoped passes until the next
/// resolution.
fn record_scope(
    client: &Client,
    held: &mut Held,
    keys: &[(&Path, Selection)],
    resolved: &[DueTarget],
    env: Option<&DueEnv>,
    now: Instant,
) {
    let found = resolved
        .iter()
        .map(|d| {
            (
                d.target.path(),
                d.resolution,
                &d.found,
                match &d.target.output {
                    Output::Dotenv { vars, .. } | Output::Json { vars } => vars.folder.as_deref(),
                    _ => None,
                },
            )
        })
        .chain(env.map(|e| {
            (
                e.env.key(),
                e.resolution,
                &e.found,
                e.env.vars.folder.as_deref(),
            )
        }));
    for (key, resolution, ids, folder) in found {
        if !keys.iter().any(|(k, sel)| *k == key && sel.dynamic) {
            continue;
        }
        let folders: BTreeSet<String> = folder
            .map(|f| client.folder_ids(f).into_iter().collect())
            .unwrap_or_default();
        let outcome = match resolution {
            Resolution::Complete => scope::Outcome::Resolved {
                ids: ids.clone(),
                folders,
            },
            Resolution::Missing => scope::Outcome::Missing {
                ids: ids.clone(),
                folders,
            },
            Resolution::Failed => scope::Outcome::Failed,
        };
        held.scope_mut().record(key, outcome, now);
    }
}

/// How a due target's selectors resolved on the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    Complete,
    /// One named nothing: `on_missing` applies.
    Missing,
    /// Failed otherwise: ambiguous, colliding, undecodable, unreadable.
    Failed,
}

impl Resolution {
    fn of<T>(r: &Result<T, TargetError>) -> Resolution {
        match r {
            Ok(_) => Resolution::Complete,
            Err(e) if e.is_missing() => Resolution::Missing,
            Err(_) => Resolution::Failed,
        }
    }
}

/// A due target, resolved against the listing.
struct DueTarget<'a> {
    target: &'a PlannedTarget,
    resolved: Result<Resolved, TargetError>,
    resolution: Resolution,
    /// Every resource its selectors resolved to (not a folder's members).
    found: BTreeSet<String>,
    /// Every resource its content comes from, folder members included.
    deps: BTreeSet<String>,
    /// Its file holds what the state directory recorded, from resources
    /// whose stamps have not moved: current without a download.
    warm: bool,
    /// Whether its secrets are all downloaded again in this pass.
    full_sync: bool,
    /// The secrets it reads that are not held current (all of them in a
    /// full sync).
    wanted: BTreeSet<String>,
}

fn resolve_due<'a>(
    listing: &Listing,
    held: &mut Held,
    plan: &Plan,
    t: &'a PlannedTarget,
    now: Instant,
) -> DueTarget<'a> {
    let full_sync = held.full_sync_due(t.path(), plan.full_sync_every, now);
    let (resolved, reads, resolution, found, deps) = match &t.output {
        Output::Template(file) => match file.current(t.path()) {
            Ok(tpl) => {
                // A first render names the resources the template reads.
                let lookup = TemplateLookup::new(listing, None, t.path());
                let rendered = tpl.render(&lookup);
                let resolution = match lookup.unresolved.into_inner().expect("not poisoned") {
                    Some(true) => Resolution::Missing,
                    Some(false) => Resolution::Failed,
                    None if rendered.is_err() => Resolution::Failed,
                    None => Resolution::Complete,
                };
                let reads = lookup.read.into_inner().expect("not poisoned");
                let found = lookup.found.into_inner().expect("not poisoned");
                let deps = found.clone();
                (Ok(Resolved::Template(tpl)), reads, resolution, found, deps)
            }
            Err(e) => (
                Err(e),
                BTreeSet::new(),
                Resolution::Failed,
                BTreeSet::new(),
                BTreeSet::new(),
            ),
        },
        _ => {
            let needs = requirements(listing, t);
            let resolution = Resolution::of(&needs);
            match needs {
                Ok(needs) => {
                    let reads = secret_reads(&needs);
                    let found = named_ids(&needs, t_folder_members(listing, &t.output));
                    let deps = needs.iter().map(|n| n.id.clone()).collect();
                    (Ok(Resolved::Values(needs)), reads, resolution, found, deps)
                }
                Err(e) => (
                    Err(e),
                    BTreeSet::new(),
                    resolution,
                    BTreeSet::new(),
                    BTreeSet::new(),
                ),
            }
        }
    };
    // Held secrets are the cheapest evidence; a record is the next one.
    let held_current = reads
        .iter()
        .all(|id| listing.get(id).and_then(|r| held.current(r)).is_some());
    let warm = !full_sync
        && resolution == Resolution::Complete
        && !held_current
        && matches_record(held, t, listing, &deps);
    if !warm && !held_current && held.record(t.path()).is_some() {
        tracing::debug!(target_path = %t.path().display(), "the recorded state does not match; the target is cold");
        held.set_record(t.path(), None);
    }
    let wanted = if warm {
        BTreeSet::new()
    } else {
        to_download(reads, full_sync, listing, held)
    };
    DueTarget {
        target: t,
        resolved,
        resolution,
        found,
        deps,
        warm,
        full_sync,
        wanted,
    }
}

/// Whether `t`'s file still holds what its record says, from resources
/// whose stamps are the recorded ones.
fn matches_record(
    held: &Held,
    t: &PlannedTarget,
    listing: &Listing,
    deps: &BTreeSet<String>,
) -> bool {
    let Some(r) = held.record(t.path()) else {
        return false;
    };
    r.resources.len() == deps.len()
        && deps.iter().all(|id| {
            listing.get(id).and_then(|x| x.modified.as_deref())
                == r.resources.get(id).map(String::as_str)
        })
        && r.form == state::form(t)
        && write::read_current(t.path())
            .ok()
            .flatten()
            .is_some_and(|bytes| state::sha256_hex(&bytes) == r.digest)
}

/// The record of a target whose file now holds `content`: `None` unless
/// every resource it came from has a settled stamp (a later edit in the
/// same second would keep the stamp).
fn new_record(
    t: &PlannedTarget,
    listing: &Listing,
    deps: &BTreeSet<String>,
    digest: String,
) -> Option<state::Record> {
    let now = listing.servertime?;
    let resources = deps
        .iter()
        .map(|id| {
            let m = listing.get(id)?.modified.clone()?;
            let settled = modified_epoch(&m).is_some_and(|e| e + SETTLE_SECONDS <= now);
            settled.then_some((id.clone(), m))
        })
        .collect::<Option<BTreeMap<String, String>>>()?;
    Some(state::Record {
        form: state::form(t),
        digest,
        resources,
        full_sync_at: None,
        scope: None,
    })
}

/// The members of the folder a target's variables take, if any: listed
/// by folder, not by id.
fn t_folder_members(listing: &Listing, output: &Output) -> BTreeSet<String> {
    match output {
        Output::Dotenv { vars, .. } | Output::Json { vars } => folder_members(listing, vars),
        _ => BTreeSet::new(),
    }
}

fn folder_members(listing: &Listing, vars: &Vars) -> BTreeSet<String> {
    let Some(folder) = &vars.folder else {
        return BTreeSet::new();
    };
    listing
        .resources
        .iter()
        .filter(|r| r.folder.as_deref() == Some(folder.as_str()))
        .map(|r| r.id.clone())
        .collect()
}

/// The ids `needs` resolved to, but the folder's members (which the
/// scoped listing finds by folder, so that one moved out is not listed).
fn named_ids(needs: &[Need], members: BTreeSet<String>) -> BTreeSet<String> {
    needs
        .iter()
        .filter(|n| !members.contains(&n.id))
        .map(|n| n.id.clone())
        .collect()
}

/// The exec environment of a pass, resolved against the listing.
struct DueEnv<'a> {
    env: &'a PlannedEnv,
    needs: Result<Vec<Need>, TargetError>,
    resolution: Resolution,
    found: BTreeSet<String>,
    full_sync: bool,
    wanted: BTreeSet<String>,
}

fn resolve_env<'a>(
    listing: &Listing,
    held: &mut Held,
    plan: &Plan,
    env: &'a PlannedEnv,
    now: Instant,
) -> DueEnv<'a> {
    let full_sync = held.full_sync_due(env.key(), plan.full_sync_every, now);
    let needs = checked_vars(listing, env.key(), &env.vars);
    let resolution = Resolution::of(&needs);
    let reads = needs.as_deref().map(secret_reads).unwrap_or_default();
    let found = needs
        .as_deref()
        .map(|n| named_ids(n, folder_members(listing, &env.vars)))
        .unwrap_or_default();
    let wanted = to_download(reads, full_sync, listing, held);
    DueEnv {
        env,
        needs,
        resolution,
        found,
        full_sync,
        wanted,
    }
}

/// The exec environment from its resolved values; never written.
fn render_env(
    listing: &Listing,
    secrets: &Secrets<'_>,
    key: &Path,
    needs: &[Need],
) -> Result<Environment, TargetError> {
    let vars = values(listing, secrets, key, needs)?;
    render::env::render(vars).map_err(|source| TargetError::Render {
        target: key.to_path_buf(),
        source,
    })
}

/// Of the secrets `reads`, those a pass downloads: all of them in a full
/// sync, else those not held as current for the row the listing shows.
fn to_download(
    reads: BTreeSet<String>,
    full_sync: bool,
    listing: &Listing,
    held: &Held,
) -> BTreeSet<String> {
    reads
        .into_iter()
        .filter(|id| full_sync || listing.get(id).and_then(|r| held.current(r)).is_none())
        .collect()
}

fn secret_reads(needs: &[Need]) -> BTreeSet<String> {
    needs
        .iter()
        .filter(|n| n.field.is_secret())
        .map(|n| n.id.clone())
        .collect()
}

/// What a pass's download found, besides the secrets it stored in `held`.
#[derive(Default)]
struct Downloads {
    missing: HashMap<String, Option<DecodeError>>,
    failed: HashMap<String, DecodeError>,
    /// Current held secrets that a download found changed.
    missed: Vec<String>,
}

/// Downloads `wanted` and stores what decrypts in `held`. A resource
/// listed without a secret for this account, or gone since the listing,
/// is missing; one whose secret does not decrypt or parse has failed.
async fn download(
    client: &Client,
    held: &mut Held,
    wanted: &[String],
) -> Result<Downloads, ClientError> {
    let mut out = Downloads::default();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut fetched = client.fetch_secrets(wanted).await?;
    for id in wanted {
        let Some(f) = fetched.remove(id) else {
            held.forget(id);
            out.missing.insert(id.clone(), None);
            continue;
        };
        match &f.fields {
            Err(e @ DecodeError::NoSecret { .. }) => {
                held.forget(id);
                out.missing.insert(id.clone(), Some(e.clone()));
            }
            Err(e) => {
                held.forget(id);
                out.failed.insert(id.clone(), e.clone());
            }
            Ok(_) => {
                if held.store(id, f) == Stored::Missed {
                    out.missed.push(id.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Renders one resolved target; returns its content (or why not) and the
/// resources whose secret it read.
fn render(
    listing: &Listing,
    secrets: &Secrets<'_>,
    t: &PlannedTarget,
    resolved: Result<Resolved, TargetError>,
) -> (
    Result<zeroize::Zeroizing<Vec<u8>>, TargetError>,
    BTreeSet<String>,
) {
    match resolved {
        Err(e) => (Err(e), BTreeSet::new()),
        Ok(Resolved::Values(needs)) => (
            render_values(listing, secrets, t, &needs),
            secret_reads(&needs),
        ),
        Ok(Resolved::Template(tpl)) => {
            let lookup = TemplateLookup::new(listing, Some(secrets), t.path());
            let out = tpl.render(&lookup);
            let read = lookup.read.into_inner().expect("not poisoned");
            // A secret that could not be given is the target's error, not
            // the template's: never write around it.
            let content = match lookup.unavailable.into_inner().expect("not poisoned") {
                Some(e) => Err(e),
                None => out.map_err(|source| TargetError::Render {
                    target: t.path().to_path_buf(),
                    source,
                }),
            };
            (content, read)
        }
    }
}

fn log_full_sync(report: &PassReport, downloaded: usize) {
    if report.missed.is_empty() {
        tracing::info!(
            secrets = downloaded,
            "full sync: every mapped secret downloaded again; the incremental passes had missed nothing"
        );
    } else {
        tracing::warn!(
            resources = ?report.missed,
            "full sync: {} secret(s) had changed although their resource's modified stamp had not; the incremental passes missed them",
            report.missed.len()
        );
    }
}

/// Renders a raw, dotenv or json target from its resolved values.
fn render_values(
    listing: &Listing,
    secrets: &Secrets<'_>,
    t: &PlannedTarget,
    needs: &[Need],
) -> Result<zeroize::Zeroizing<Vec<u8>>, TargetError> {
    let value = |n: &Need| -> Result<Secret, TargetError> {
        let r = listing.get(&n.id).expect("resolved from this listing");
        secrets.value(t.path(), r, &n.field)
    };
    let vars = || -> Result<Vec<(String, Secret)>, TargetError> {
        needs
            .iter()
            .map(|n| Ok((n.var.clone(), value(n)?)))
            .collect()
    };
    match &t.output {
        Output::Dotenv { dialect, .. } => {
            render::dotenv::render(&vars()?, *dialect).map_err(|source| TargetError::Render {
                target: t.path().to_path_buf(),
                source,
            })
        }
        Output::Json { .. } => Ok(render::json::render(&vars()?)),
        // Raw: `requirements` resolved exactly one value.
        _ => Ok(render::raw::render(&value(&needs[0])?)),
    }
}

/// Variable names whose values differ between the file on disk and the
/// new content, for `update` lines. Values are compared, never shown.
fn changed_vars(t: &PlannedTarget, old: &[u8], new: &[u8]) -> Vec<String> {
    let parse = |bytes: &[u8]| -> Option<BTreeMap<String, Secret>> {
        match &t.output {
            Output::Dotenv { dialect, .. } => render::dotenv::parse_with(bytes, *dialect)
                .ok()
                .map(|v| v.into_iter().collect()),
            Output::Json { .. } => {
                serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(bytes)
                    .ok()
                    .map(|m| {
                        m.into_iter()
                            .map(|(k, v)| {
                                let s = match v {
                                    serde_json::Value::String(s) => s,
                                    other => other.to_string(),
                                };
                                (k, Secret::new(s))
                            })
                            .collect()
                    })
            }
            _ => None,
        }
    };
    let (Some(old), Some(new)) = (parse(old), parse(new)) else {
        return Vec::new();
    };
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .cloned()
        .collect()
}

/// Writes (or plans) one target's content and runs its hook.
async fn apply(
    t: &PlannedTarget,
    content: Result<zeroize::Zeroizing<Vec<u8>>, TargetError>,
    opts: PassOptions,
) -> TargetReport {
    let report = |status| TargetReport {
        path: t.path().to_path_buf(),
        status,
        hook: None,
    };
    let content = match content {
        Ok(c) => c,
        Err(e) if e.is_missing() => {
            let mut r = report(apply_on_missing(t, e, opts).await);
            // The service should learn that its file is gone, too.
            if matches!(r.status, Status::Removed) && !opts.dry_run {
                r.hook = run_hook(t).await;
            }
            return r;
        }
        Err(e) => {
            tracing::error!(target_path = %t.path().display(), error = %e, "target not updated");
            return report(Status::Failed(e));
        }
    };
    let spec = t.spec.clone();
    let old = if opts.dry_run || matches!(t.output, Output::Dotenv { .. } | Output::Json { .. }) {
        write::read_current(t.path()).ok().flatten()
    } else {
        None
    };
    let dry = opts.dry_run;
    let (outcome, content) = tokio::task::spawn_blocking(move || {
        let outcome = if dry {
            write::plan(&spec, &content)
        } else {
            write::write_atomic(&spec, &content)
        };
        (outcome, content)
    })
    .await
    .expect("write task");
    let status = match outcome {
        Err(e) => {
            tracing::error!(target_path = %t.path().display(), error = %e, "write failed; the old file is untouched");
            return report(Status::Failed(e.into()));
        }
        Ok(WriteOutcome::Created) => Status::Created,
        Ok(WriteOutcome::Updated) => Status::Updated {
            changed: old
                .as_deref()
                .map(|old| changed_vars(t, old, &content))
                .unwrap_or_default(),
        },
        Ok(WriteOutcome::Unchanged) => Status::Unchanged,
        Ok(WriteOutcome::MetadataFixed) => Status::MetadataFixed,
    };
    let mut r = report(status);
    if opts.dry_run {
        return r;
    }
    match &r.status {
        Status::Created | Status::Updated { .. } => {
            tracing::info!(target_path = %t.path().display(), action = r.status.label(), "target written");
            r.hook = run_hook(t).await;
        }
        Status::MetadataFixed => {
            tracing::info!(target_path = %t.path().display(), "target mode/owner corrected")
        }
        _ => tracing::debug!(target_path = %t.path().display(), "target unchanged"),
    }
    r
}

/// Runs the target's `on_change` hook, if any; returns its failure.
async fn run_hook(t: &PlannedTarget) -> Option<HookError> {
    let cmd = t.on_change.as_ref()?;
    let e = hooks::run(cmd, t.hook_timeout, t.path()).await.err()?;
    tracing::error!(target_path = %t.path().display(), error = %e, "on_change hook failed");
    Some(e)
}

/// The `on_missing` policy of a target whose resource vanished.
async fn apply_on_missing(t: &PlannedTarget, e: TargetError, opts: PassOptions) -> Status {
    match t.on_missing {
        OnMissing::Keep => {
            tracing::error!(target_path = %t.path().display(), error = %e, "resource missing; keeping the file as it is (on_missing: keep)");
            Status::Kept(e)
        }
        OnMissing::Fail => {
            tracing::error!(target_path = %t.path().display(), error = %e, "resource missing (on_missing: fail)");
            Status::Failed(e)
        }
        OnMissing::Remove => {
            if opts.dry_run {
                return if t.path().exists() {
                    Status::Removed
                } else {
                    Status::Unchanged
                };
            }
            let path = t.path().to_path_buf();
            match tokio::task::spawn_blocking(move || write::remove(&path))
                .await
                .expect("remove task")
            {
                Ok(true) => {
                    tracing::warn!(target_path = %t.path().display(), error = %e, "resource missing; file removed (on_missing: remove)");
                    Status::Removed
                }
                Ok(false) => Status::Unchanged,
                Err(err) => Status::Failed(err.into()),
            }
        }
    }
}
