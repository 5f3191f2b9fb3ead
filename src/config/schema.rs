//! The config's types as the YAML spells them, with their defaults and
//! the checks that span several fields of one target.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self};
use serde::{Deserialize, Deserializer};

use super::checks::*;
use super::*;
use crate::runtime::schedule::Schedule;

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
    /// Where each target's sync state is kept across restarts (ids,
    /// stamps, digests; never a value); `$STATE_DIRECTORY` when absent.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// What `passbolt-sync exec` gives its child, and how it treats it.
    #[serde(default)]
    pub exec: Option<Exec>,
    /// Secrets the daemon rotates: a new value, applied by a command,
    /// then stored in passbolt.
    #[serde(default)]
    pub rotate: Vec<Rotate>,
    /// The daemon's local socket, through which `get` and `env` use its
    /// session.
    #[serde(default, deserialize_with = "de_agent")]
    pub agent: Agent,
}

/// The `agent:` section. Read at start: a change applies at the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Whether the daemon answers `get` and `env` on a Unix socket: by
    /// default `run` does and `exec` does not (see [`Agent::listens`]).
    #[serde(default)]
    pub socket: Option<bool>,
    /// A group whose members may ask too (the socket is then 0660 and
    /// that group's); root and the daemon's own user only when absent.
    #[serde(default, deserialize_with = "de_opt_id_or_name")]
    pub socket_group: Option<String>,
}

/// `agent:` with every key commented out is the defaults, not an error.
fn de_agent<'de, D: Deserializer<'de>>(d: D) -> Result<Agent, D::Error> {
    Ok(Option::<Agent>::deserialize(d)?.unwrap_or_default())
}

impl Agent {
    /// Whether `run` (or, with `exec`, `exec`) listens. `exec` does only
    /// when asked: its child runs as its user, so the socket would give
    /// that child whatever the account reads, not only `exec.env`.
    pub fn listens(&self, exec: bool) -> bool {
        self.socket.unwrap_or(!exec)
    }

    /// Whether `get` and `env` ask a daemon first.
    pub fn asked(&self) -> bool {
        self.socket != Some(false)
    }
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
    pub(super) field: Option<FieldName>,
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

pub(super) fn default_reload_signal() -> Signal {
    Signal::SIGHUP
}

pub(super) fn default_stop_signal() -> Signal {
    Signal::SIGTERM
}

pub(super) fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_debounce() -> Duration {
    Duration::from_secs(2)
}

pub(super) fn default_true() -> bool {
    true
}

/// `SIGHUP`, `HUP` or `hup`.
pub(super) fn de_signal<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
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

pub(super) fn default_full_sync_every() -> Option<Duration> {
    Some(values::DEFAULT_FULL_SYNC_EVERY)
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

pub(super) fn default_max_response_bytes() -> u64 {
    passbolt_client::session::DEFAULT_MAX_RESPONSE_BYTES
}

pub(super) fn default_timeout() -> Duration {
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
pub(super) struct FieldName(Field);

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

pub(super) fn selector(
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

pub const DEFAULT_SCHEDULE: &str = "every 5m";
