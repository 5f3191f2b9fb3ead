//! One sync pass: resolve the targets' selectors against one listing,
//! decrypt only what they need, render, write what changed, run hooks.
//!
//! Nothing here knows about schedules; the daemon calls `run_pass` with
//! the targets that are due. A failing target never stops the others.

// Errors are per target and rare; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{Config, Field, Format, OnMissing, Selector, Source, Target, VarSpec};
use crate::hooks::{self, HookError};
use crate::passbolt::{Client, ClientError, DecodeError, Listing};
use crate::render::{self, Lookup, RenderError, Template};
use crate::secret::{FieldError, Resource, Secret};
use crate::write::{self, WriteError, WriteOutcome, WriteSpec};

/// Why one target could not be brought up to date. Names the target and
/// the resource; never a value.
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
    pub secrets_decrypted: usize,
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
        format!("{} targets: {}", self.targets.len(), parts.join(", "))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Compute and report, write nothing, run no hook.
    pub dry_run: bool,
}

/// Checks what can be checked without a server: templates parse, owners
/// and groups exist. Returns one error per problem.
pub fn check_offline(config: &Config) -> Vec<TargetError> {
    let mut errors = Vec::new();
    for t in &config.targets {
        if let Err(e) = write_spec(t) {
            errors.push(e);
        }
        if let Source::Template(path) = &t.source {
            match load_template(t, path) {
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    errors
}

fn write_spec(t: &Target) -> Result<WriteSpec, TargetError> {
    let owner = t
        .owner
        .as_deref()
        .map(|o| {
            write::resolve_user(o).map_err(|_| TargetError::Owner {
                target: t.path.clone(),
                what: "user",
                name: o.to_string(),
            })
        })
        .transpose()?;
    let group = t
        .group
        .as_deref()
        .map(|g| {
            write::resolve_group(g).map_err(|_| TargetError::Owner {
                target: t.path.clone(),
                what: "group",
                name: g.to_string(),
            })
        })
        .transpose()?;
    Ok(WriteSpec {
        path: t.path.clone(),
        mode: t.mode,
        owner,
        group,
        create_dirs: t.create_dirs,
    })
}

fn load_template(t: &Target, path: &Path) -> Result<Template, TargetError> {
    let source = std::fs::read_to_string(path).map_err(|source| TargetError::TemplateRead {
        target: t.path.clone(),
        template: path.to_path_buf(),
        source,
    })?;
    Template::parse(&path.display().to_string(), source).map_err(|source| TargetError::Render {
        target: t.path.clone(),
        source,
    })
}

/// Finds the one resource a selector names, or why not.
fn resolve<'a>(
    listing: &'a Listing,
    target: &Path,
    selector: &Selector,
) -> Result<&'a Resource, TargetError> {
    match selector {
        Selector::Id(id) => listing.get(id).ok_or_else(|| TargetError::Missing {
            target: target.to_path_buf(),
            selector: selector.to_string(),
            reason: listing.failure(id).cloned(),
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

/// One value a target reads: `field` of resource `id`, as variable `var`
/// (empty for raw targets).
#[derive(Debug, Clone)]
struct Need {
    var: String,
    id: String,
    field: Field,
}

/// The values of a dotenv/json target, sorted by variable.
fn resolve_vars(
    listing: &Listing,
    t: &Target,
    vars: &BTreeMap<String, VarSpec>,
    folder: Option<&str>,
    folder_field: &Field,
) -> Result<Vec<Need>, TargetError> {
    let mut out: Vec<Need> = Vec::new();
    if let Some(folder) = folder {
        let members: Vec<&Resource> = listing
            .resources
            .iter()
            .filter(|r| r.folder.as_deref() == Some(folder))
            .collect();
        if members.is_empty() {
            return Err(TargetError::Missing {
                target: t.path.clone(),
                selector: format!("folder {folder:?}"),
                reason: None,
            });
        }
        let mut by_var: HashMap<String, &Resource> = HashMap::new();
        for r in members {
            let var = render::dotenv::derive_name(&r.name);
            if let Some(prev) = by_var.insert(var.clone(), r) {
                return Err(TargetError::Collision {
                    target: t.path.clone(),
                    folder: folder.to_string(),
                    var,
                    first: prev.name.clone(),
                    second: r.name.clone(),
                });
            }
        }
        let mut sorted: Vec<_> = by_var.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, r) in sorted {
            // Explicit vars override the folder's variable of the same name.
            if !vars.contains_key(&var) {
                out.push(Need {
                    var,
                    id: r.id.clone(),
                    field: folder_field.clone(),
                });
            }
        }
    }
    for (var, spec) in vars {
        let r = resolve(listing, &t.path, &spec.selector)?;
        out.push(Need {
            var: var.clone(),
            id: r.id.clone(),
            field: spec.field.clone(),
        });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// Every resource a non-template target reads, with the fields. Fails
/// early on selectors that do not resolve and fields the type lacks.
fn requirements(listing: &Listing, t: &Target) -> Result<Vec<Need>, TargetError> {
    let needs = match &t.source {
        Source::Field(spec) => {
            let r = resolve(listing, &t.path, &spec.selector)?;
            vec![Need {
                var: String::new(),
                id: r.id.clone(),
                field: spec.field.clone(),
            }]
        }
        Source::Vars {
            vars,
            folder,
            folder_field,
        } => resolve_vars(listing, t, vars, folder.as_deref(), folder_field)?,
        Source::Template(_) => Vec::new(),
    };
    for Need { id, field, .. } in &needs {
        let r = listing.get(id).expect("resolved from this listing");
        if !crate::secret::type_has_field(&r.type_slug, field) {
            return Err(TargetError::Field {
                target: t.path.clone(),
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
                target: t.path.clone(),
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
    }
    Ok(needs)
}

/// Answers a template's `secret()` calls from the listing. Resources whose
/// secret is not decrypted yet are recorded and answered with a
/// placeholder; the pass decrypts them and renders again.
struct ListingLookup<'a> {
    listing: &'a Listing,
    wanted: Mutex<BTreeSet<String>>,
    target: &'a Path,
}

impl Lookup for ListingLookup<'_> {
    fn field(&self, resource: &str, field: &str) -> Result<Secret, String> {
        let field = Field::parse(field)?;
        let selector = if uuid::Uuid::parse_str(resource).is_ok() {
            Selector::Id(resource.to_ascii_lowercase())
        } else {
            let (folder, name) = match resource.rsplit_once('/') {
                Some((f, n)) => (Some(crate::config::normalize_folder(f)), n.to_string()),
                None => (None, resource.to_string()),
            };
            Selector::Name { name, folder }
        };
        let r = resolve(self.listing, self.target, &selector).map_err(|e| match e {
            TargetError::Missing { .. } => format!("no readable {selector}"),
            other => other.to_string(),
        })?;
        if field.is_secret() && r.secret.is_none() {
            self.wanted
                .lock()
                .expect("not poisoned")
                .insert(r.id.clone());
            return Ok(Secret::new(""));
        }
        r.field(&field).map_err(|e| e.to_string())
    }
}

/// Renders a target whose resources are resolved and decrypted.
fn render_target(
    listing: &Listing,
    t: &Target,
    needs: &[Need],
) -> Result<zeroize::Zeroizing<Vec<u8>>, TargetError> {
    let value = |id: &str, field: &Field| -> Result<Secret, TargetError> {
        let r = listing.get(id).expect("resolved from this listing");
        r.field(field).map_err(|source| TargetError::Field {
            target: t.path.clone(),
            source,
        })
    };
    let render_err = |source| TargetError::Render {
        target: t.path.clone(),
        source,
    };
    match t.format {
        Format::Raw => {
            let n = &needs[0];
            Ok(render::raw::render(&value(&n.id, &n.field)?))
        }
        Format::Dotenv | Format::Json => {
            let vars = needs
                .iter()
                .map(|n| Ok((n.var.clone(), value(&n.id, &n.field)?)))
                .collect::<Result<Vec<_>, TargetError>>()?;
            if t.format == Format::Dotenv {
                render::dotenv::render(&vars, t.dialect).map_err(render_err)
            } else {
                Ok(render::json::render(&vars))
            }
        }
        Format::Template => unreachable!("templates render through render_template"),
    }
}

/// Variable names whose values differ between the file on disk and the
/// new content, for `update` lines. Values are compared, never shown.
fn changed_vars(t: &Target, old: &[u8], new: &[u8]) -> Vec<String> {
    let parse = |bytes: &[u8]| -> Option<BTreeMap<String, Secret>> {
        match t.format {
            Format::Dotenv => render::dotenv::parse_with(bytes, t.dialect)
                .ok()
                .map(|v| v.into_iter().collect()),
            Format::Json => serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(bytes)
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
                }),
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

/// One pass over `targets` (indexes into `config.targets`; all when
/// `None`). A server that cannot be reached is an `Err`: no file is
/// touched. Everything else is reported per target.
pub async fn run_pass(
    client: &Client,
    config: &Config,
    targets: Option<&[usize]>,
    opts: PassOptions,
) -> Result<PassReport, ClientError> {
    let selected: Vec<&Target> = match targets {
        Some(idx) => idx.iter().filter_map(|i| config.targets.get(*i)).collect(),
        None => config.targets.iter().collect(),
    };
    let mut listing = client.list(true).await?;
    let mut report = PassReport {
        resources_listed: listing.resources.len(),
        ..PassReport::default()
    };

    // Resolve first, so that one batch decrypts every secret the pass needs.
    let mut resolved: Vec<Result<Vec<Need>, TargetError>> = Vec::new();
    let mut templates: Vec<Option<Result<Template, TargetError>>> = Vec::new();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for t in &selected {
        let needs = requirements(&listing, t);
        if let Ok(needs) = &needs {
            wanted.extend(
                needs
                    .iter()
                    .filter(|n| n.field.is_secret())
                    .map(|n| n.id.clone()),
            );
        }
        resolved.push(needs);
        templates.push(match &t.source {
            Source::Template(path) => Some(load_template(t, path)),
            _ => None,
        });
    }
    // Templates name their resources as they render: a first render
    // records them.
    for (t, tpl) in selected.iter().zip(&templates) {
        if let Some(Ok(tpl)) = tpl {
            let lookup = ListingLookup {
                listing: &listing,
                wanted: Mutex::new(BTreeSet::new()),
                target: &t.path,
            };
            let _ = tpl.render(&lookup);
            wanted.extend(lookup.wanted.into_inner().expect("not poisoned"));
        }
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let failures = client.decrypt_secrets(&mut listing, &wanted).await;
    report.secrets_decrypted = wanted.len() - failures.len();
    let failed: HashMap<String, DecodeError> = failures
        .into_iter()
        .map(|e| (e.resource_id().to_string(), e))
        .collect();

    for ((t, needs), tpl) in selected.iter().zip(resolved).zip(templates) {
        let content = match (needs, tpl) {
            (_, Some(tpl)) => tpl.and_then(|tpl| render_template(&listing, t, &tpl, &failed)),
            (Ok(needs), None) => match needs.iter().find_map(|n| failed.get(&n.id)) {
                // A secret the account can no longer decrypt is a vanished
                // secret as far as this target is concerned.
                Some(e) => Err(TargetError::Missing {
                    target: t.path.clone(),
                    selector: format!("resource {}", e.resource_id()),
                    reason: Some(e.clone()),
                }),
                None => render_target(&listing, t, &needs),
            },
            (Err(e), None) => Err(e),
        };
        report.targets.push(apply(t, content, opts).await);
    }
    Ok(report)
}

fn render_template(
    listing: &Listing,
    t: &Target,
    tpl: &Template,
    failed: &HashMap<String, DecodeError>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, TargetError> {
    let lookup = ListingLookup {
        listing,
        wanted: Mutex::new(BTreeSet::new()),
        target: &t.path,
    };
    let out = tpl.render(&lookup).map_err(|source| TargetError::Render {
        target: t.path.clone(),
        source,
    });
    // A secret still missing here failed to decrypt (or the template only
    // asked for it on this second render); never write its placeholder.
    if let Some(id) = lookup
        .wanted
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .next()
    {
        return Err(TargetError::Missing {
            target: t.path.clone(),
            selector: format!("resource {id}"),
            reason: failed.get(&id).cloned(),
        });
    }
    out
}

/// Writes (or plans) one target's content and runs its hook.
async fn apply(
    t: &Target,
    content: Result<zeroize::Zeroizing<Vec<u8>>, TargetError>,
    opts: PassOptions,
) -> TargetReport {
    let report = |status| TargetReport {
        path: t.path.clone(),
        status,
        hook: None,
    };
    let content = match content {
        Ok(c) => c,
        Err(e) if e.is_missing() => {
            let mut r = report(missing(t, e, opts).await);
            // The service should learn that its file is gone, too.
            if matches!(r.status, Status::Removed) && !opts.dry_run {
                r.hook = run_hook(t).await;
            }
            return r;
        }
        Err(e) => {
            tracing::error!(target_path = %t.path.display(), error = %e, "target not updated");
            return report(Status::Failed(e));
        }
    };
    let spec = match write_spec(t) {
        Ok(s) => s,
        Err(e) => return report(Status::Failed(e)),
    };
    let old = if opts.dry_run || matches!(t.format, Format::Dotenv | Format::Json) {
        write::read_current(&t.path).ok().flatten()
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
            tracing::error!(target_path = %t.path.display(), error = %e, "write failed; the old file is untouched");
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
            tracing::info!(target_path = %t.path.display(), action = r.status.label(), "target written");
            r.hook = run_hook(t).await;
        }
        Status::MetadataFixed => {
            tracing::info!(target_path = %t.path.display(), "target mode/owner corrected")
        }
        _ => tracing::debug!(target_path = %t.path.display(), "target unchanged"),
    }
    r
}

/// Runs the target's `on_change` hook, if any; returns its failure.
async fn run_hook(t: &Target) -> Option<HookError> {
    let cmd = t.on_change.as_ref()?;
    let e = hooks::run(cmd, t.hook_timeout, &t.path).await.err()?;
    tracing::error!(target_path = %t.path.display(), error = %e, "on_change hook failed");
    Some(e)
}

/// The `on_missing` policy of a target whose resource vanished.
async fn missing(t: &Target, e: TargetError, opts: PassOptions) -> Status {
    match t.on_missing {
        OnMissing::Keep => {
            tracing::error!(target_path = %t.path.display(), error = %e, "resource missing; keeping the file as it is (on_missing: keep)");
            Status::Kept(e)
        }
        OnMissing::Fail => {
            tracing::error!(target_path = %t.path.display(), error = %e, "resource missing (on_missing: fail)");
            Status::Failed(e)
        }
        OnMissing::Remove => {
            if opts.dry_run {
                return if t.path.exists() {
                    Status::Removed
                } else {
                    Status::Unchanged
                };
            }
            let path = t.path.clone();
            match tokio::task::spawn_blocking(move || write::remove(&path))
                .await
                .expect("remove task")
            {
                Ok(true) => {
                    tracing::warn!(target_path = %t.path.display(), error = %e, "resource missing; file removed (on_missing: remove)");
                    Status::Removed
                }
                Ok(false) => Status::Unchanged,
                Err(err) => Status::Failed(err.into()),
            }
        }
    }
}
