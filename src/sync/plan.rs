//! What a config asks for, worked out once per config load (start, edit,
//! SIGHUP): each target's write spec with its owner and group resolved,
//! its output (format and sources in one), its hook, missing-policy and
//! schedule. A pass reads the plan; nothing re-derives it per pass.
//!
//! Building a plan is also the whole offline `check`: every error it
//! returns is one the operator must fix before anything can sync.

// Errors are per target and rare; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{
    Config, Dialect, EXEC_ENV_KEY, Field, Format, HookCommand, OnMissing, Rotate, Source, Target,
    VarSpec,
};
use crate::runtime::schedule::Schedule;
use crate::sync::render::Template;
use crate::sync::report::TargetError;
use crate::sync::write::{self, WriteSpec};

#[derive(Debug)]
pub struct Plan {
    pub targets: Vec<PlannedTarget>,
    /// How often every mapped secret is downloaded again whatever its
    /// stamps, as a safety net; `None` disables it.
    pub full_sync_every: Option<Duration>,
    /// The variables of the `exec:` section, when the config has one.
    pub exec_env: Option<PlannedEnv>,
    /// The `rotate:` entries, checked at each tick of `rotation_schedule`
    /// (the config's global schedule) and when one falls due.
    pub rotations: Vec<Rotate>,
    pub rotation_schedule: Schedule,
}

/// The exec environment: resolved and rendered by every pass it is due
/// in, exactly as a dotenv target's variables, but never written.
#[derive(Debug)]
pub struct PlannedEnv {
    pub vars: Vars,
    pub schedule: Schedule,
}

impl PlannedEnv {
    /// The `exec:` section's environment, if the config has one: what
    /// `Plan::build` plans, without planning (or reading the templates of)
    /// the targets.
    pub fn of(config: &Config) -> Option<PlannedEnv> {
        config.exec.as_ref().map(|e| PlannedEnv {
            vars: Vars {
                named: e.env.clone().unwrap_or_default(),
                folder: e.folder.clone(),
                folder_field: e.folder_field(),
            },
            schedule: config.exec_schedule(),
        })
    }

    pub fn key(&self) -> &Path {
        Path::new(EXEC_ENV_KEY)
    }
}

#[derive(Debug)]
pub struct PlannedTarget {
    pub spec: WriteSpec,
    pub output: Output,
    pub on_change: Option<HookCommand>,
    pub hook_timeout: Duration,
    pub on_missing: OnMissing,
    pub schedule: Schedule,
}

impl PlannedTarget {
    pub fn path(&self) -> &Path {
        &self.spec.path
    }
}

/// A target's content: its format and where its values come from.
#[derive(Debug)]
pub enum Output {
    /// One field of one resource, written as is.
    Raw(VarSpec),
    Dotenv {
        vars: Vars,
        dialect: Dialect,
    },
    Json {
        vars: Vars,
    },
    Template(TemplateFile),
}

/// Named variables and/or every resource of a folder.
#[derive(Debug, Clone)]
pub struct Vars {
    pub named: BTreeMap<String, VarSpec>,
    pub folder: Option<String>,
    /// The field taken from each resource of `folder`.
    pub folder_field: Field,
}

impl Vars {
    /// One variable, `name`, for `get`.
    pub fn one(name: &str, spec: VarSpec) -> Vars {
        Vars {
            named: BTreeMap::from([(name.to_string(), spec)]),
            folder: None,
            folder_field: Field::Password,
        }
    }
}

/// A template file, parsed when the plan is built and again whenever its
/// content changes: operators edit templates without touching the config.
#[derive(Debug)]
pub struct TemplateFile {
    pub path: PathBuf,
    parsed: Mutex<(Vec<u8>, Arc<Template>)>,
}

impl TemplateFile {
    fn load(target: &Path, path: &Path) -> Result<TemplateFile, TargetError> {
        let source = read_template(target, path)?;
        let parsed = parse_template(target, path, &source)?;
        Ok(TemplateFile {
            path: path.to_path_buf(),
            parsed: Mutex::new((source, Arc::new(parsed))),
        })
    }

    /// The template as the file holds it now.
    pub fn current(&self, target: &Path) -> Result<Arc<Template>, TargetError> {
        let source = read_template(target, &self.path)?;
        let mut parsed = self.parsed.lock().expect("not poisoned");
        if parsed.0 != source {
            let template = Arc::new(parse_template(target, &self.path, &source)?);
            *parsed = (source, template);
        }
        Ok(parsed.1.clone())
    }
}

fn read_template(target: &Path, path: &Path) -> Result<Vec<u8>, TargetError> {
    std::fs::read(path).map_err(|source| TargetError::TemplateRead {
        target: target.to_path_buf(),
        template: path.to_path_buf(),
        source,
    })
}

fn parse_template(target: &Path, path: &Path, source: &[u8]) -> Result<Template, TargetError> {
    let text = String::from_utf8(source.to_vec()).map_err(|_| TargetError::TemplateRead {
        target: target.to_path_buf(),
        template: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })?;
    Template::parse(&path.display().to_string(), text).map_err(|source| TargetError::Render {
        target: target.to_path_buf(),
        source,
    })
}

impl Plan {
    /// Plans every target of `config`; returns every problem found, one
    /// per target at most.
    pub fn build(config: &Config) -> Result<Plan, Vec<TargetError>> {
        let mut targets = Vec::with_capacity(config.targets.len());
        let mut errors = Vec::new();
        for t in &config.targets {
            match plan_target(config, t) {
                Ok(p) => targets.push(p),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Plan {
            targets,
            full_sync_every: config.full_sync_every.filter(|d| !d.is_zero()),
            exec_env: PlannedEnv::of(config),
            rotations: config.rotate.clone(),
            rotation_schedule: config.exec_schedule(),
        })
    }

    /// How often names, folder paths and template references are
    /// resolved again on a full listing: with each full sync, or hourly
    /// when full syncs are off (a name that starts to match, a renamed
    /// folder, are noticed then).
    pub fn resolve_every(&self) -> Duration {
        self.full_sync_every
            .unwrap_or(crate::config::DEFAULT_FULL_SYNC_EVERY)
    }

    pub fn target(&self, path: &Path) -> Option<&PlannedTarget> {
        self.targets.iter().find(|t| t.path() == path)
    }

    /// Whether a pass over `path` does anything: a target's path or the
    /// exec environment's key.
    pub fn has(&self, path: &Path) -> bool {
        self.target(path).is_some() || self.exec_env.as_ref().is_some_and(|e| e.key() == path)
    }

    /// What passes run, by schedule: every target's path and the exec
    /// environment's key, each with its schedule.
    pub fn scheduled(&self) -> Vec<(&Schedule, &Path)> {
        let mut out: Vec<(&Schedule, &Path)> = self
            .targets
            .iter()
            .map(|t| (&t.schedule, t.path()))
            .collect();
        if let Some(e) = &self.exec_env {
            out.push((&e.schedule, e.key()));
        }
        out
    }
}

fn plan_target(config: &Config, t: &Target) -> Result<PlannedTarget, TargetError> {
    let owner_error = |what: &'static str, name: &str| TargetError::Owner {
        target: t.path.clone(),
        what,
        name: name.to_string(),
    };
    let owner = t
        .owner
        .as_deref()
        .map(|o| write::resolve_user(o).map_err(|_| owner_error("user", o)))
        .transpose()?;
    let group = t
        .group
        .as_deref()
        .map(|g| write::resolve_group(g).map_err(|_| owner_error("group", g)))
        .transpose()?;
    // Config validation pairs each format with its one kind of source.
    let output = match &t.source {
        Source::Field(spec) => Output::Raw(spec.clone()),
        Source::Vars {
            vars,
            folder,
            folder_field,
        } => {
            let vars = Vars {
                named: vars.clone(),
                folder: folder.clone(),
                folder_field: folder_field.clone(),
            };
            if t.format == Format::Json {
                Output::Json { vars }
            } else {
                Output::Dotenv {
                    vars,
                    dialect: t.dialect,
                }
            }
        }
        Source::Template(path) => Output::Template(TemplateFile::load(&t.path, path)?),
    };
    Ok(PlannedTarget {
        spec: WriteSpec {
            path: t.path.clone(),
            mode: t.mode,
            owner,
            group,
            create_dirs: t.create_dirs,
        },
        output,
        on_change: t.on_change.clone(),
        hook_timeout: t.hook_timeout,
        on_missing: t.on_missing,
        schedule: config.schedule_of(t),
    })
}
