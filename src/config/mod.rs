//! The YAML config: schema, defaults and validation.
//!
//! Field-level checks run inside deserialization, so that serde reports them
//! with the line and column of the offending value. Checks that span several
//! fields of a target run on the whole target and name it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

pub mod captured;

use crate::hooks::HookCommand;
use crate::render::dotenv::Dialect;
use crate::schedule::Schedule;
pub use crate::secret::Field;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    InvalidNoPosition { path: PathBuf, message: String },
    #[error("cannot read {what} {path}: {source}")]
    ReadCredential {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the environment variable {name} (auth.passphrase_env) is not set")]
    PassphraseEnvMissing { name: String },
    #[error("the environment variable {name} (auth.totp_secret_env) is not set")]
    TotpEnvMissing { name: String },
    #[error("{what}: {source}")]
    TotpSeed {
        what: String,
        source: crate::passbolt::mfa::TotpSeedError,
    },
    #[error(
        "{path} uses ${{CREDENTIALS_DIRECTORY}}, which is not set (it is set by systemd's LoadCredential=)"
    )]
    NoCredentialsDirectory { path: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub auth: Auth,
    /// Default schedule of every target.
    #[serde(default)]
    pub schedule: Option<ScheduleExpr>,
    /// IANA time zone of cron schedules; UTC when absent.
    #[serde(default, deserialize_with = "de_timezone")]
    pub timezone: Option<String>,
    /// Upper bound of this host's fixed delay of every scheduled tick, so
    /// that a fleet does not poll the server all at once; zero (the
    /// default) delays nothing. See `schedule::splay_offset`.
    #[serde(default, deserialize_with = "de_splay")]
    pub splay: Duration,
    /// Every mapped secret is downloaded again this often whatever its
    /// stamps, as a safety net; `None` (`0`) disables it.
    #[serde(
        default = "default_full_sync_every",
        deserialize_with = "de_full_sync_every"
    )]
    pub full_sync_every: Option<Duration>,
    /// Prometheus metrics and health endpoints; off when absent.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Where the daemon writes each target's state after every pass.
    #[serde(default)]
    pub status_file: StatusFile,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// What `passbolt-sync exec` gives its child, and how it treats it.
    #[serde(default)]
    pub exec: Option<Exec>,
}

/// The `exec:` section: the child's environment, mapped as a dotenv
/// target's variables are, and what a change of it does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    #[serde(default, deserialize_with = "de_vars")]
    pub env: Option<BTreeMap<String, VarSpec>>,
    /// Every resource of this folder, as a variable named after it.
    #[serde(default, deserialize_with = "de_opt_folder")]
    pub folder: Option<String>,
    /// The field taken from each resource of `folder`.
    #[serde(default)]
    field: Option<FieldName>,
    /// The command when none is given after `--`.
    #[serde(default)]
    pub command: Option<HookCommand>,
    #[serde(default)]
    pub on_change: OnChange,
    /// Sent on a change with `on_change: signal`.
    #[serde(default = "default_reload_signal", deserialize_with = "de_signal")]
    pub signal: Signal,
    /// How a restart stops the child, before SIGKILL.
    #[serde(default = "default_stop_signal", deserialize_with = "de_signal")]
    pub stop_signal: Signal,
    #[serde(default = "default_stop_timeout", deserialize_with = "de_duration")]
    pub stop_timeout: Duration,
    /// Changes within this window after the first make one restart.
    #[serde(default = "default_debounce", deserialize_with = "de_duration")]
    pub debounce: Duration,
    /// Whether the child gets this process's environment (minus the
    /// passphrase variables) besides its mapped variables.
    #[serde(default = "default_true")]
    pub inherit_env: bool,
}

impl Exec {
    /// The field taken from each resource of `folder`.
    pub fn folder_field(&self) -> Field {
        self.field
            .as_ref()
            .map(|f| f.0.clone())
            .unwrap_or(Field::Password)
    }
}

/// What `exec` does when its child's environment changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Stop the child (`stop_signal`, then SIGKILL) and start it again.
    #[default]
    Restart,
    /// Send it `signal`; it keeps its environment (and re-reads files).
    Signal,
    /// Leave it alone; only the files are updated.
    None,
}

/// As the config spells it.
impl fmt::Display for OnChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnChange::Restart => "restart",
            OnChange::Signal => "signal",
            OnChange::None => "none",
        })
    }
}

pub use nix::sys::signal::Signal;

fn default_reload_signal() -> Signal {
    Signal::SIGHUP
}

fn default_stop_signal() -> Signal {
    Signal::SIGTERM
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_debounce() -> Duration {
    Duration::from_secs(2)
}

fn default_true() -> bool {
    true
}

/// `SIGHUP`, `HUP` or `hup`.
fn de_signal<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
    checked(d, "a signal name such as SIGHUP", |s| {
        let upper = s.trim().to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        match name.parse::<Signal>() {
            Ok(Signal::SIGKILL | Signal::SIGSTOP) => Err(format!(
                "{s}: a signal the child cannot handle; pick another"
            )),
            Ok(sig) => Ok(sig),
            Err(_) => Err(format!("unknown signal {s:?}: use a name such as SIGHUP")),
        }
    })
}

/// The `metrics:` section. At least one of `listen` and `textfile`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawMetrics")]
pub struct Metrics {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub listen: Option<std::net::SocketAddr>,
    /// node_exporter textfile collector file, rewritten after each pass.
    pub textfile: Option<PathBuf>,
    pub allow_remote: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default, deserialize_with = "de_opt_path")]
    textfile: Option<PathBuf>,
    #[serde(default)]
    allow_remote: bool,
}

impl TryFrom<RawMetrics> for Metrics {
    type Error = String;

    fn try_from(r: RawMetrics) -> Result<Metrics, String> {
        let listen = match r.listen {
            None => None,
            Some(s) => {
                let addr: std::net::SocketAddr = s.parse().map_err(|_| {
                    format!(
                        "metrics.listen {s:?} is not an IP address and port (e.g. 127.0.0.1:9792)"
                    )
                })?;
                // The endpoint needs no authentication, so it is not
                // reachable from other hosts unless that is asked for.
                if !addr.ip().is_loopback() && !r.allow_remote {
                    return Err(format!(
                        "metrics.listen {addr} is not a loopback address; set metrics.allow_remote: true to serve other hosts"
                    ));
                }
                Some(addr)
            }
        };
        if listen.is_none() && r.textfile.is_none() {
            return Err("metrics: give `listen`, `textfile` or both".into());
        }
        Ok(Metrics {
            listen,
            textfile: r.textfile,
            allow_remote: r.allow_remote,
        })
    }
}

/// The `status_file:` setting: a path, `false` for none, or absent for
/// the default ([`StatusFile::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StatusFile {
    #[default]
    Default,
    Off,
    Path(PathBuf),
}

/// The file name of the default status file in `$RUNTIME_DIRECTORY`.
pub const STATUS_FILE_NAME: &str = "status.json";

impl StatusFile {
    /// Where the status file goes: the configured path, else
    /// `$RUNTIME_DIRECTORY/status.json` when systemd set up a runtime
    /// directory (`RuntimeDirectory=`), else nowhere.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            StatusFile::Path(p) => Some(p.clone()),
            StatusFile::Off => None,
            StatusFile::Default => runtime_directory().map(|d| d.join(STATUS_FILE_NAME)),
        }
    }
}

/// The first directory of `$RUNTIME_DIRECTORY` (systemd separates several
/// with `:`).
pub fn runtime_directory() -> Option<PathBuf> {
    let v = std::env::var_os("RUNTIME_DIRECTORY")?;
    let first = v.to_str()?.split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

impl<'de> Deserialize<'de> for StatusFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Path(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(StatusFile::Off),
            Raw::Bool(true) => Ok(StatusFile::Default),
            Raw::Path(s) => check_path(&s)
                .map(StatusFile::Path)
                .map_err(de::Error::custom),
        }
    }
}

fn default_full_sync_every() -> Option<Duration> {
    Some(crate::plan::DEFAULT_FULL_SYNC_EVERY)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The exact base URL the server believes it has, without trailing slash.
    #[serde(deserialize_with = "de_url")]
    pub url: String,
    /// Pin of the server's OpenPGP key; normalized upper-case hex.
    #[serde(default, deserialize_with = "de_fingerprint")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "de_opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a server behind an mTLS proxy; with
    /// `client_key_file`.
    #[serde(default, deserialize_with = "de_opt_path")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_opt_path")]
    pub client_key_file: Option<PathBuf>,
    /// HTTP timeout for one request.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Largest response body read, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

fn default_max_response_bytes() -> u64 {
    crate::passbolt::session::DEFAULT_MAX_RESPONSE_BYTES
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(deserialize_with = "de_uuid")]
    pub user_id: String,
    #[serde(deserialize_with = "de_path")]
    pub private_key_file: PathBuf,
    #[serde(default, deserialize_with = "de_opt_path")]
    pub passphrase_file: Option<PathBuf>,
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// The account's TOTP seed (base32 or an `otpauth://` URI), for an
    /// account under an MFA policy.
    #[serde(default, deserialize_with = "de_opt_path")]
    pub totp_secret_file: Option<PathBuf>,
    /// The same, from an environment variable (taken out of the
    /// environment at start-up, like `passphrase_env`).
    #[serde(default)]
    pub totp_secret_env: Option<String>,
}

/// A schedule as written, checked for syntax when read. The time zone is
/// applied when the daemon builds its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleExpr(pub String);

impl<'de> Deserialize<'de> for ScheduleExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "a schedule: every <duration> or a cron expression",
            |s| {
                Schedule::parse(s, None)
                    .map(|_| ScheduleExpr(s.to_string()))
                    .map_err(|e| e.to_string())
            },
        )
    }
}

/// A field name, checked where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldName(Field);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "a field name", |s| Field::parse(s).map(FieldName))
    }
}

impl fmt::Display for ScheduleExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Dotenv,
    Json,
    Template,
}

/// As the config spells it.
impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Dotenv => "dotenv",
            Format::Json => "json",
            Format::Template => "template",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Leave the file as it is and log an error.
    #[default]
    Keep,
    Remove,
    Fail,
}

/// How a target or variable names its resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// By id: stable across renames, the recommended form.
    Id(String),
    /// By name, optionally narrowed to a folder path.
    Name {
        name: String,
        folder: Option<String>,
    },
}

impl Selector {
    /// A resource as a template or the command line names it: an id, a
    /// name, or `Folder/Path/Name`.
    pub fn from_reference(reference: &str) -> Selector {
        if uuid::Uuid::parse_str(reference).is_ok() {
            return Selector::Id(reference.to_ascii_lowercase());
        }
        match reference.rsplit_once('/') {
            Some((folder, name)) => Selector::Name {
                name: name.to_string(),
                folder: Some(normalize_folder(folder)),
            },
            None => Selector::Name {
                name: reference.to_string(),
                folder: None,
            },
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Id(id) => write!(f, "resource {id}"),
            Selector::Name { name, folder: None } => write!(f, "resource named {name:?}"),
            Selector::Name {
                name,
                folder: Some(folder),
            } => write!(f, "resource named {name:?} in folder {folder:?}"),
        }
    }
}

/// One variable of a dotenv or json target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    pub selector: Selector,
    pub field: Field,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVar {
    #[serde(default, deserialize_with = "de_opt_uuid")]
    resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_folder")]
    folder: Option<String>,
    #[serde(default)]
    field: Option<FieldName>,
}

impl<'de> Deserialize<'de> for VarSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawVar::deserialize(d)?;
        let selector = selector(raw.resource, raw.name, raw.folder, false)
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| {
                serde::de::Error::custom("a variable needs `resource` (an id) or `name`")
            })?;
        Ok(VarSpec {
            selector,
            field: raw.field.map(|f| f.0).unwrap_or(Field::Password),
        })
    }
}

fn selector(
    resource: Option<String>,
    name: Option<String>,
    folder: Option<String>,
    folder_alone_ok: bool,
) -> Result<Option<Selector>, String> {
    match (resource, name, folder) {
        (Some(_), Some(_), _) => Err("give either `resource` or `name`, not both".into()),
        (Some(_), None, Some(_)) => {
            Err("`folder` narrows a `name`; a `resource` id needs no folder".into())
        }
        (Some(id), None, None) => Ok(Some(Selector::Id(id))),
        (None, Some(name), folder) => Ok(Some(Selector::Name { name, folder })),
        (None, None, Some(_)) if folder_alone_ok => Ok(None),
        (None, None, Some(_)) => Err("`folder` alone selects nothing here; add `name`".into()),
        (None, None, None) => Ok(None),
    }
}

/// Where the content of a target comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One field of one resource (`raw`).
    Field(VarSpec),
    /// Named variables and/or every resource of a folder (`dotenv`, `json`).
    Vars {
        vars: BTreeMap<String, VarSpec>,
        folder: Option<String>,
        /// Field taken from each resource of `folder`.
        folder_field: Field,
    },
    /// A template file (`template`).
    Template(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub format: Format,
    pub source: Source,
    pub dialect: Dialect,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub create_dirs: bool,
    pub on_change: Option<HookCommand>,
    pub hook_timeout: Duration,
    pub on_missing: OnMissing,
    pub schedule: Option<ScheduleExpr>,
    pub timezone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(deserialize_with = "de_path")]
    path: PathBuf,
    format: Format,
    #[serde(default, deserialize_with = "de_opt_uuid")]
    resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_folder")]
    folder: Option<String>,
    #[serde(default)]
    field: Option<FieldName>,
    #[serde(default, deserialize_with = "de_vars")]
    vars: Option<BTreeMap<String, VarSpec>>,
    #[serde(default, deserialize_with = "de_opt_path")]
    template: Option<PathBuf>,
    #[serde(default)]
    dialect: Option<Dialect>,
    #[serde(default, deserialize_with = "de_mode")]
    mode: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_id_or_name")]
    owner: Option<String>,
    #[serde(default, deserialize_with = "de_opt_id_or_name")]
    group: Option<String>,
    #[serde(default)]
    create_dirs: bool,
    #[serde(default)]
    on_change: Option<HookCommand>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    hook_timeout: Option<Duration>,
    #[serde(default)]
    on_missing: OnMissing,
    #[serde(default)]
    schedule: Option<ScheduleExpr>,
    #[serde(default, deserialize_with = "de_timezone")]
    timezone: Option<String>,
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawTarget::deserialize(d)?;
        Target::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawTarget> for Target {
    type Error = String;

    fn try_from(r: RawTarget) -> Result<Self, String> {
        let at = r.path.display().to_string();
        let fail = |msg: String| Err(format!("target {at}: {msg}"));
        let source = match r.format {
            Format::Raw => {
                if r.vars.is_some() || r.template.is_some() {
                    return fail("a raw target takes one `resource` (or `name`) and a `field`, not `vars` or `template`".into());
                }
                match selector(r.resource, r.name, r.folder, false) {
                    Ok(Some(selector)) => Source::Field(VarSpec {
                        selector,
                        field: r.field.map(|f| f.0).unwrap_or(Field::Password),
                    }),
                    Ok(None) => {
                        return fail("a raw target needs `resource` (an id) or `name`".into());
                    }
                    Err(e) => return fail(e),
                }
            }
            Format::Dotenv | Format::Json => {
                if r.resource.is_some() || r.name.is_some() || r.template.is_some() {
                    return fail(format!(
                        "a {} target takes `vars` and/or a whole `folder`, not `resource`, `name` or `template`",
                        if r.format == Format::Dotenv {
                            "dotenv"
                        } else {
                            "json"
                        }
                    ));
                }
                let vars = r.vars.unwrap_or_default();
                if vars.is_empty() && r.folder.is_none() {
                    return fail("give `vars` or a `folder` to take every resource from".into());
                }
                if r.field.is_some() && r.folder.is_none() {
                    return fail(
                        "`field` applies to a whole `folder`; each variable has its own `field`"
                            .into(),
                    );
                }
                Source::Vars {
                    vars,
                    folder: r.folder,
                    folder_field: r.field.map(|f| f.0).unwrap_or(Field::Password),
                }
            }
            Format::Template => {
                if r.resource.is_some()
                    || r.name.is_some()
                    || r.vars.is_some()
                    || r.folder.is_some()
                    || r.field.is_some()
                {
                    return fail("a template target takes only `template` (the template file); the template names its resources".into());
                }
                match r.template {
                    Some(t) => Source::Template(t),
                    None => {
                        return fail(
                            "a template target needs `template`, the path of the template file"
                                .into(),
                        );
                    }
                }
            }
        };
        if r.dialect.is_some() && r.format != Format::Dotenv {
            return fail("`dialect` applies to dotenv targets only".into());
        }
        Ok(Target {
            path: r.path,
            format: r.format,
            source,
            dialect: r.dialect.unwrap_or_default(),
            mode: r.mode.unwrap_or(0o600),
            owner: r.owner,
            group: r.group,
            create_dirs: r.create_dirs,
            on_change: r.on_change,
            hook_timeout: r.hook_timeout.unwrap_or(Duration::from_secs(30)),
            on_missing: r.on_missing,
            schedule: r.schedule,
            timezone: r.timezone,
        })
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative
    /// paths (a template next to the config).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            serde_yaml::from_str(text).map_err(|e| yaml_error(path, text, &e))?;
        config.check_targets(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Relative paths are relative to the config file; paths under
        // ${CREDENTIALS_DIRECTORY} are expanded when read.
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() && !p.starts_with("${CREDENTIALS_DIRECTORY}") {
                *p = base.join(&*p);
            }
        };
        for t in &mut config.targets {
            if let Source::Template(tpl) = &mut t.source {
                anchor(tpl);
            }
        }
        anchor(&mut config.auth.private_key_file);
        if let Some(p) = &mut config.auth.passphrase_file {
            anchor(p);
        }
        if let Some(p) = &mut config.auth.totp_secret_file {
            anchor(p);
        }
        if let Some(p) = &mut config.server.ca_file {
            anchor(p);
        }
        if let Some(p) = config.metrics.as_mut().and_then(|m| m.textfile.as_mut()) {
            anchor(p);
        }
        if let StatusFile::Path(p) = &mut config.status_file {
            anchor(p);
        }
        for p in [
            &mut config.server.client_cert_file,
            &mut config.server.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            anchor(p);
        }
        Ok(config)
    }

    fn check_targets(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::InvalidNoPosition {
            path: path.to_path_buf(),
            message,
        };
        if self.server.client_cert_file.is_some() != self.server.client_key_file.is_some() {
            return Err(invalid(
                "server: give both `client_cert_file` and `client_key_file`, or neither".into(),
            ));
        }
        if self.auth.passphrase_file.is_some() && self.auth.passphrase_env.is_some() {
            return Err(invalid(
                "auth: give `passphrase_file` or `passphrase_env`, not both".into(),
            ));
        }
        if self.auth.totp_secret_file.is_some() && self.auth.totp_secret_env.is_some() {
            return Err(invalid(
                "auth: give `totp_secret_file` or `totp_secret_env`, not both".into(),
            ));
        }
        if let Some(exec) = &self.exec
            && exec.field.is_some()
            && exec.folder.is_none()
        {
            return Err(invalid(
                "exec: `field` applies to a whole `folder`; each variable has its own `field`"
                    .into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.targets {
            if t.path == Path::new(crate::plan::EXEC_ENV_KEY) {
                return Err(invalid(format!(
                    "target {}: that name is taken by the exec environment; give the file another path",
                    t.path.display()
                )));
            }
            if !seen.insert(&t.path) {
                return Err(invalid(format!(
                    "target {} appears twice: two targets cannot write one file",
                    t.path.display()
                )));
            }
            let expr = t.schedule.as_ref().or(self.schedule.as_ref());
            let tz = t.timezone.as_deref().or(self.timezone.as_deref());
            if let Some(expr) = expr {
                Schedule::parse(&expr.0, tz)
                    .map_err(|e| invalid(format!("target {}: schedule: {e}", t.path.display())))?;
            }
        }
        Ok(())
    }

    /// The schedule of a target: its own, else the global one, else every 5 minutes.
    pub fn schedule_of(&self, target: &Target) -> Schedule {
        let expr = target
            .schedule
            .as_ref()
            .or(self.schedule.as_ref())
            .map(|s| s.0.as_str())
            .unwrap_or(DEFAULT_SCHEDULE);
        let tz = target.timezone.as_deref().or(self.timezone.as_deref());
        Schedule::parse(expr, tz).expect("schedules are validated when the config is loaded")
    }

    /// The schedule of the exec environment: the global one, else every 5
    /// minutes.
    pub fn exec_schedule(&self) -> Schedule {
        let expr = self
            .schedule
            .as_ref()
            .map(|s| s.0.as_str())
            .unwrap_or(DEFAULT_SCHEDULE);
        Schedule::parse(expr, self.timezone.as_deref())
            .expect("schedules are validated when the config is loaded")
    }
}

pub const DEFAULT_SCHEDULE: &str = "every 5m";

impl Server {
    /// The client certificate and key for mTLS, read now, when both are
    /// configured (the config loader refuses one without the other).
    pub fn read_client_identity(
        &self,
    ) -> Result<Option<crate::passbolt::ClientIdentity>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key_file) else {
            return Ok(None);
        };
        let read = |what: &'static str, file: &Path| {
            let path = expand(file)?;
            std::fs::read(&path)
                .map(zeroize::Zeroizing::new)
                .map_err(|source| ConfigError::ReadCredential { what, path, source })
        };
        let cert = read("the client certificate file", cert)?;
        let key = read("the client key file", key)?;
        Ok(Some(crate::passbolt::ClientIdentity::from_pem(&cert, &key)))
    }
}

impl Auth {
    /// Reads the private key file (armored).
    pub fn read_private_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ConfigError> {
        let path = expand(&self.private_key_file)?;
        std::fs::read(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| ConfigError::ReadCredential {
                what: "the private key file",
                path,
                source,
            })
    }

    /// The passphrase, from its file (one trailing newline dropped) or
    /// its environment variable (as captured at start-up, see
    /// [`captured`]); `None` for an unprotected key.
    pub fn read_passphrase(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ConfigError> {
        if let Some(file) = &self.passphrase_file {
            let path = expand(file)?;
            let mut data = std::fs::read(&path).map_err(|source| ConfigError::ReadCredential {
                what: "the passphrase file",
                path,
                source,
            })?;
            strip_line_end(&mut data);
            return Ok(Some(zeroize::Zeroizing::new(data)));
        }
        if let Some(name) = &self.passphrase_env {
            if let Some(value) = captured::value(name) {
                return Ok(Some(value));
            }
            // Named only by a reload: it stays in the environment, which
            // cannot be changed soundly now that threads run; children are
            // still kept from it.
            captured::note(name);
            return match std::env::var_os(name) {
                Some(v) => Ok(Some(zeroize::Zeroizing::new(v.into_encoded_bytes()))),
                None => Err(ConfigError::PassphraseEnvMissing { name: name.clone() }),
            };
        }
        Ok(None)
    }
}

impl Auth {
    /// The TOTP seed, from its file or its environment variable (as
    /// captured at start-up); `None` for an account without MFA.
    pub fn read_totp_secret(&self) -> Result<Option<crate::passbolt::TotpSeed>, ConfigError> {
        let (what, data) = if let Some(file) = &self.totp_secret_file {
            let path = expand(file)?;
            let data = std::fs::read(&path)
                .map(zeroize::Zeroizing::new)
                .map_err(|source| ConfigError::ReadCredential {
                    what: "the TOTP secret file",
                    path: path.clone(),
                    source,
                })?;
            (format!("auth.totp_secret_file {}", path.display()), data)
        } else if let Some(name) = &self.totp_secret_env {
            let data = match captured::value(name) {
                Some(v) => v,
                None => {
                    // Named only by a reload: see `read_passphrase`.
                    captured::note(name);
                    std::env::var_os(name)
                        .map(|v| zeroize::Zeroizing::new(v.into_encoded_bytes()))
                        .ok_or_else(|| ConfigError::TotpEnvMissing { name: name.clone() })?
                }
            };
            (format!("auth.totp_secret_env {name}"), data)
        } else {
            return Ok(None);
        };
        crate::passbolt::TotpSeed::parse(&data)
            .map(Some)
            .map_err(|source| ConfigError::TotpSeed { what, source })
    }
}

/// Drops one trailing newline (`\n` or `\r\n`): editors and `echo` add
/// it to a passphrase file, and it is never part of the passphrase.
pub fn strip_line_end(data: &mut Vec<u8>) {
    if data.last() == Some(&b'\n') {
        data.pop();
        if data.last() == Some(&b'\r') {
            data.pop();
        }
    }
}

/// Expands `${CREDENTIALS_DIRECTORY}`, which systemd sets for units with
/// `LoadCredential=`. Other `$` sequences are left alone: they may be part
/// of a real file name.
pub fn expand(path: &Path) -> Result<PathBuf, ConfigError> {
    const VAR: &str = "${CREDENTIALS_DIRECTORY}";
    let s = path.to_string_lossy();
    if !s.contains(VAR) {
        return Ok(path.to_path_buf());
    }
    let dir = std::env::var("CREDENTIALS_DIRECTORY").map_err(|_| {
        ConfigError::NoCredentialsDirectory {
            path: s.to_string(),
        }
    })?;
    Ok(PathBuf::from(s.replace(VAR, &dir)))
}

/// "unknown field `mdoe`, expected one of `path`, `mode`, ..." (serde's
/// wording, also for enum variants) as "unknown field `mdoe`; did you mean
/// `mode`?" when one valid name is close; `None` to keep the message.
fn suggest(message: &str) -> Option<String> {
    let (head, expected) = message.split_once(", expected ")?;
    let start = head
        .find("unknown field `")
        .or_else(|| head.find("unknown variant `"))?;
    let given = head[start..].split('`').nth(1)?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|valid| (strsim::damerau_levenshtein(given, valid), valid))
        .min_by_key(|(distance, _)| *distance)?;
    // Close enough to be the same word mistyped (`mdoe`, `formt`, `rwa`):
    // a third of its letters; otherwise serde's list stays.
    (best.0 <= (best.1.chars().count() / 3).max(1))
        .then(|| format!("{head}; did you mean `{}`?", best.1))
}

/// A target's own checks run once the whole target is read, and serde
/// then reports the position of the list: the error names the target's
/// path, so point at that target's `path:` line instead.
fn target_position(text: &str, message: &str) -> Option<(usize, usize)> {
    let rest = message.split_once("target ")?.1;
    text.lines().enumerate().find_map(|(n, line)| {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
        let value = body.strip_prefix("path:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        let named = rest.strip_prefix(value)?;
        named
            .starts_with(": ")
            .then(|| (n + 1, line.len() - body.len() + 1))
    })
}

fn yaml_error(path: &Path, source: &str, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            // serde_yaml appends " at line L column C"; we put the position first.
            let message = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let message = suggest(&message).unwrap_or(message);
            let (line, column) = message
                .starts_with("targets: target ")
                .then(|| target_position(source, &message))
                .flatten()
                .unwrap_or((loc.line(), loc.column()));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        }
        None => ConfigError::InvalidNoPosition {
            path: path.to_path_buf(),
            message: text,
        },
    }
}

// Each check runs inside the visitor of the scalar it checks, so that
// serde_yaml reports the error at that scalar's line and column (an error
// raised after the value was read would point at the enclosing mapping).

struct Checked<F>(F, &'static str);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Checked<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

fn checked<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_str(Checked(f, expecting))
}

/// Like `checked` for an optional value (`~` or `null` give `None`).
struct OptChecked<F>(F, &'static str);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for OptChecked<F> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        checked(d, self.1, self.0).map(Some)
    }
}

fn opt_checked<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptChecked(f, expecting))
}

fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "a URL", check_url)
}

/// Checks a server URL and returns it without trailing slash.
pub fn check_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("invalid server URL {s:?}: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "server URL {s:?} must not have a query or fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("server URL {s:?} must not carry credentials"));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(format!(
                    "server URL {s:?}: http:// is refused except on loopback; use https://"
                ));
            }
        }
        other => return Err(format!("server URL {s:?}: unsupported scheme {other:?}")),
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn de_fingerprint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "a fingerprint", |s| {
        let fp = crate::pgp::normalize_fingerprint(s);
        if fp.len() != 40 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("fingerprint {s:?} is not 40 hexadecimal digits"));
        }
        Ok(fp)
    })
}

fn check_uuid(s: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{s:?} is not a UUID"))
}

fn de_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "a UUID", check_uuid)
}

fn de_opt_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "a UUID", check_uuid)
}

fn check_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

fn de_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    checked(d, "a path", check_path)
}

fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    opt_checked(d, "a path", check_path)
}

fn de_opt_folder<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "a folder path", |s| {
        let norm = normalize_folder(s);
        if norm.is_empty() {
            return Err("empty folder path".into());
        }
        Ok(norm)
    })
}

/// `"/Production//myapp/"` and `"Production/myapp"` name the same folder.
pub fn normalize_folder(s: &str) -> String {
    s.split('/')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// A dotenv/json variable name, checked where it is written.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct VarName(String);

impl<'de> Deserialize<'de> for VarName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "a variable name", |s| {
            crate::render::dotenv::validate_name(s)
                .map(|()| VarName(s.to_string()))
                .map_err(|e| e.to_string())
        })
    }
}

fn de_vars<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, VarSpec>>, D::Error> {
    let vars = Option::<BTreeMap<VarName, VarSpec>>::deserialize(d)?;
    Ok(vars.map(|v| v.into_iter().map(|(k, v)| (k.0, v)).collect()))
}

struct ModeVisitor;

impl<'de> Visitor<'de> for ModeVisitor {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted octal file mode such as \"0640\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u32>, E> {
        crate::write::parse_mode(v).map(Some).map_err(E::custom)
    }

    // An unquoted 0640 is octal in YAML 1.1 and decimal 640 in serde_yaml:
    // refuse the ambiguity rather than guess.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u32>, E> {
        Err(E::custom(format!(
            "mode {v}: quote file modes, e.g. mode: \"0640\""
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u32>, E> {
        Err(E::custom(format!(
            "mode {v}: quote file modes, e.g. mode: \"0640\""
        )))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u32>, E> {
        Ok(None)
    }
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_any(ModeVisitor)
}

struct IdOrName;

impl<'de> Visitor<'de> for IdOrName {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user or group name, or a numeric id")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        if v.is_empty() {
            return Err(E::custom("empty user or group name"));
        }
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<String>, E> {
        u32::try_from(v)
            .map(|id| Some(id.to_string()))
            .map_err(|_| E::custom(format!("id {v} is out of range")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
}

fn de_opt_id_or_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(IdOrName)
}

fn check_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("duration {s:?}: {e}"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked(d, "a duration such as 30s", check_duration)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    opt_checked(d, "a duration such as 30s", check_duration)
}

/// A duration, or `0` (a number or a string) to disable.
fn de_full_sync_every<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 1h, or 0 to disable")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(None),
                _ => Err(E::custom(format!(
                    "{v} has no unit: write a duration such as 1h, or 0 to disable"
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_u64(
                u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?,
            )
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if s.trim() == "0" {
                return Ok(None);
            }
            check_duration(s)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// A duration up to `schedule::MAX_SPLAY`, or `0` (a number or a string).
fn de_splay<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 5m, or 0")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            match v {
                0 => Ok(Duration::ZERO),
                _ => Err(E::custom(format!(
                    "splay {v} has no unit: write a duration such as 5m"
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_u64(u64::try_from(v).map_err(|_| E::custom("splay cannot be negative"))?)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            let splay = check_duration(s).map_err(|e| E::custom(format!("splay: {e}")))?;
            if splay > crate::schedule::MAX_SPLAY {
                return Err(E::custom(format!(
                    "splay {s:?} is longer than the maximum of {}h",
                    crate::schedule::MAX_SPLAY.as_secs() / 3600
                )));
            }
            Ok(splay)
        }
    }
    d.deserialize_any(V)
}

fn de_timezone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "an IANA time zone name", |s| {
        match s.parse::<chrono_tz::Tz>() {
            Ok(_) => Ok(s.to_string()),
            Err(_) => Err(format!(
                "unknown time zone {s:?}: use an IANA name such as Europe/Berlin"
            )),
        }
    })
}
