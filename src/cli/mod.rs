//! The commands of the binary, as library functions: each prints its
//! report and returns whether everything was current, and the one place
//! where errors become messages and exit statuses (`AppError`).

pub mod create;
pub mod demo;
pub mod get;
pub mod init;
pub mod manpage;
pub mod set;
pub mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{AgentError, SetupError, setup};
use crate::config::{self, Config, ConfigError};
use crate::sync::held::Held;
use crate::sync::plan::Plan;
use crate::sync::{self, PassOptions, Status, TargetError};
use passbolt_client::pgp::PgpError;
use passbolt_client::{Client, ClientError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Targets(Vec<TargetError>),
    #[error("private key {path}: {source}")]
    Key { path: PathBuf, source: PgpError },
    #[error("server.ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Lock(#[from] crate::agent::lock::LockError),
    #[error(transparent)]
    Init(#[from] crate::cli::init::InitError),
    #[error(transparent)]
    Status(#[from] crate::agent::status::StatusError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Local(Vec<LocalProblem>),
    #[error(transparent)]
    Agent(AgentError),
    #[error("{0}")]
    Other(String),
}

impl From<SetupError> for AppError {
    fn from(e: SetupError) -> AppError {
        match e {
            SetupError::Config(e) => AppError::Config(e),
            SetupError::Targets(e) => AppError::Targets(e),
            SetupError::Key { path, source } => AppError::Key { path, source },
            SetupError::CaFile { path, source } => AppError::CaFile { path, source },
            SetupError::Client(e) => AppError::Client(e),
        }
    }
}

impl From<AgentError> for AppError {
    fn from(e: AgentError) -> AppError {
        match e {
            AgentError::Setup(e) => e.into(),
            AgentError::Lock(e) => AppError::Lock(e),
            other => AppError::Agent(other),
        }
    }
}

impl AppError {
    /// 2 for a config (or an MFA set-up) the operator must fix, 3 for no status to show
    /// (`status`), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) | AppError::Targets(_) | AppError::Local(_) => 2,
            AppError::Status(e) => e.exit_code(),
            AppError::Agent(e) => e.exit_code(),
            // A wrong TOTP seed or an MFA the daemon cannot answer: the
            // operator must fix the config; retrying would only add failed
            // attempts on the server.
            AppError::Client(e) if e.is_misconfiguration() => 2,
            _ => 1,
        }
    }
}

/// Loads and unlocks the account's key and builds a client for the config,
/// for a command that logs in at once (see `setup::connect_to_log_in`).
pub async fn connect(config: &Config) -> Result<Client, AppError> {
    Ok(setup::connect_to_log_in(config).await?)
}

/// Plans a config: every target's problems at once, as a config error.
pub fn plan(config: &Config) -> Result<Plan, AppError> {
    Ok(setup::plan(config)?)
}

/// `passbolt-sync resources`: what the account can read. Never a secret.
pub async fn resources(config: &Config, json: bool, out: &mut dyn Write) -> Result<(), AppError> {
    let client = connect(config).await?;
    let listing = client.list(true).await?;
    let mut rows: Vec<_> = listing.resources.iter().collect();
    rows.sort_by(|a, b| (&a.folder, &a.name).cmp(&(&b.folder, &b.name)));
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "name": r.name, "username": r.username, "type": r.type_slug,
                    "folder": r.folder, "uris": r.uris,
                    "custom_fields": r.custom_field_labels.iter().map(|(_, l)| l).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&items).expect("serializable")
        )
        .map_err(w)?;
    } else {
        let width = |f: &dyn Fn(&passbolt_client::secret::Resource) -> String, title: &str| {
            rows.iter()
                .map(|r| f(r).chars().count())
                .max()
                .unwrap_or(0)
                .max(title.len())
        };
        let user = |r: &passbolt_client::secret::Resource| r.username.clone().unwrap_or_default();
        let folder =
            |r: &passbolt_client::secret::Resource| r.folder.clone().unwrap_or_else(|| "/".into());
        let name = |r: &passbolt_client::secret::Resource| r.name.clone();
        let slug = |r: &passbolt_client::secret::Resource| r.type_slug.clone();
        let (wn, wu, wt) = (
            width(&name, "NAME"),
            width(&user, "USERNAME"),
            width(&slug, "TYPE"),
        );
        writeln!(
            out,
            "{:<36}  {:<wn$}  {:<wu$}  {:<wt$}  FOLDER",
            "ID", "NAME", "USERNAME", "TYPE"
        )
        .map_err(w)?;
        for r in &rows {
            writeln!(
                out,
                "{:<36}  {:<wn$}  {:<wu$}  {:<wt$}  {}",
                r.id,
                name(r),
                user(r),
                slug(r),
                folder(r)
            )
            .map_err(w)?;
        }
    }
    for f in &listing.failures {
        tracing::warn!(error = %f, "resource not readable");
    }
    Ok(())
}

/// What `check` finds wrong on this host without asking the server.
#[derive(Debug, thiserror::Error)]
pub enum LocalProblem {
    #[error(transparent)]
    Credential(ConfigError),
    #[error("auth.private_key_file {path}: {source}")]
    Key { path: PathBuf, source: PgpError },
    #[error(
        "target {target}: the directory {dir} does not exist; create it, or set create_dirs: true"
    )]
    TargetDir { target: PathBuf, dir: PathBuf },
    #[error("{0}")]
    StateDir(String),
}

/// The key file and the passphrase can be read (the key parses; it is not
/// unlocked, which costs the passphrase KDF) and every target's directory
/// exists or may be created. Templates, owners and groups are checked by
/// [`Plan::build`].
pub fn local_problems(config: &Config) -> Vec<LocalProblem> {
    let mut problems = Vec::new();
    match config.auth.read_private_key() {
        Ok(data) => {
            if let Err(source) = passbolt_client::pgp::secret_key_fingerprint(&data) {
                problems.push(LocalProblem::Key {
                    path: config::expand(&config.auth.private_key_file)
                        .unwrap_or_else(|_| config.auth.private_key_file.clone()),
                    source,
                });
            }
        }
        Err(e) => problems.push(LocalProblem::Credential(e)),
    }
    if let Err(e) = config.auth.read_passphrase() {
        problems.push(LocalProblem::Credential(e));
    }
    if let Err(e) = config.auth.read_totp_secret() {
        problems.push(LocalProblem::Credential(e));
    }
    if let Some(message) = setup::rotation_without_state_dir(config) {
        problems.push(LocalProblem::StateDir(message));
    }
    for t in &config.targets {
        let dir = match t.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !t.create_dirs && !dir.is_dir() {
            problems.push(LocalProblem::TargetDir {
                target: t.path.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    problems
}

/// `passbolt-sync check`: validates the config; with `online`, logs in and
/// resolves every mapping (a dry-run pass).
pub async fn check(
    config: &Config,
    path: &Path,
    online: bool,
    out: &mut dyn Write,
) -> Result<bool, AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let plan = plan(config)?;
    let problems = local_problems(config);
    if !problems.is_empty() {
        return Err(AppError::Local(problems));
    }
    writeln!(
        out,
        "{}: valid, {} target(s)",
        path.display(),
        config.targets.len()
    )
    .map_err(w)?;
    for t in &config.targets {
        writeln!(
            out,
            "  {}  {}  schedule {}",
            t.path.display(),
            t.format,
            config.schedule_of(t)
        )
        .map_err(w)?;
    }
    if let Some(e) = &config.exec {
        writeln!(
            out,
            "  exec: {} variable(s){}, on_change {}, schedule {}",
            e.env.as_ref().map_or(0, |v| v.len()),
            e.folder
                .as_ref()
                .map(|f| format!(" and folder {f}"))
                .unwrap_or_default(),
            e.on_change,
            config.exec_schedule()
        )
        .map_err(w)?;
    }
    for r in &config.rotate {
        let when: Vec<String> = r
            .every
            .map(|e| format!("every {}", humantime::format_duration(e)))
            .into_iter()
            .chain(r.when_expired.then(|| "when expired".to_string()))
            .collect();
        writeln!(
            out,
            "  rotate {} of resource {}: {}, apply {} (timeout {})",
            r.field,
            r.resource,
            when.join(" and "),
            r.apply.command.program(),
            humantime::format_duration(r.apply.timeout)
        )
        .map_err(w)?;
    }
    if !online {
        return Ok(true);
    }
    check_online(config, &plan, out).await
}

/// `check --online`: logs in, reports the server's key, MFA and v5
/// metadata keys, and resolves every mapping without reading a secret.
async fn check_online(config: &Config, plan: &Plan, out: &mut dyn Write) -> Result<bool, AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let client = connect(config).await?;
    client.login().await?;
    let server_key = client
        .session()
        .server_key()
        .map(|k| k.fingerprint())
        .unwrap_or_default();
    writeln!(
        out,
        "logged in to {} as {} (server key {server_key})",
        config.server.url, config.auth.user_id
    )
    .map_err(w)?;
    if client.stats().mfa_verifications > 0 {
        writeln!(
            out,
            "  MFA: the TOTP code was accepted (the passbolt_mfa cookie is held in memory only)"
        )
        .map_err(w)?;
    }
    if config.server.fingerprint.is_none() {
        writeln!(
            out,
            "  note: server.fingerprint is not set; pin it: fingerprint: {server_key}"
        )
        .map_err(w)?;
    }
    let keys = client.load_metadata_keys().await?;
    let mut fps: Vec<&String> = keys.fingerprints().values().collect();
    fps.sort();
    if client.pre_v5() {
        writeln!(
            out,
            "v5 metadata: none on this server (passbolt before v5); v4 resources only"
        )
        .map_err(w)?;
    } else {
        writeln!(
            out,
            "v5 metadata keys shared with this account: {}{}",
            keys.len(),
            if fps.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    fps.iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
        .map_err(w)?;
        for fpr in keys.unshared() {
            writeln!(
                out,
                "  the metadata key {fpr} is not shared with this account yet; an administrator must share it"
            )
            .map_err(w)?;
        }
    }
    // Resolving needs names, types and custom field labels, all in the
    // metadata: a check reads no secret (each one read is an audit row).
    let listing = sync::list_for(&client, plan).await?;
    writeln!(
        out,
        "the account can read {} resource(s)",
        listing.resources.len()
    )
    .map_err(w)?;
    let mut ok = true;
    for (target, result) in sync::resolve_only(plan, &listing) {
        match result {
            Err(e) => {
                ok = false;
                writeln!(out, "  FAIL {}: {e}", target.display()).map_err(w)?;
            }
            Ok(()) => writeln!(out, "  ok   {}", target.display()).map_err(w)?,
        }
    }
    // A check must not leave a live refresh token behind.
    let _ = client.logout().await;
    Ok(ok)
}

/// Prints one line per target of a pass.
pub fn print_report(report: &sync::PassReport, out: &mut dyn Write) -> std::io::Result<()> {
    for t in &report.targets {
        match &t.status {
            Status::Updated { changed } if !changed.is_empty() => writeln!(
                out,
                "update     {} ({})",
                t.path.display(),
                changed.join(", ")
            )?,
            Status::Failed(e) => writeln!(out, "failed     {}: {e}", t.path.display())?,
            Status::Kept(e) => writeln!(out, "kept       {}: {e}", t.path.display())?,
            s => writeln!(out, "{:<10} {}", s.label(), t.path.display())?,
        }
        if let Some(h) = &t.hook {
            writeln!(out, "           hook: {h}")?;
        }
    }
    Ok(())
}

/// `passbolt-sync once`: one pass. Returns whether every target is current.
pub async fn once(config: &Config, dry_run: bool, out: &mut dyn Write) -> Result<bool, AppError> {
    once_with_state(config, None, dry_run, out).await
}

/// `once` for the config at `path`: with a state directory, targets whose
/// file and stamps match what the last run recorded are current without a
/// download, and the records are brought up to date.
pub async fn once_with_state(
    config: &Config,
    path: Option<&Path>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<bool, AppError> {
    let mut plan = plan(config)?;
    // Only `exec` has a child to give the environment to.
    plan.exec_env = None;
    let client = connect(config).await?;
    let started = Instant::now();
    // Nothing is held, so only the mapped secrets are read, and of those
    // only what the state directory does not show current.
    let mut held = Held::new();
    let mut store = path
        .zip(sync::state::dir(config.state_dir.as_deref()))
        .map(|(path, dir)| {
            sync::state::Store::new(
                &dir,
                path,
                sync::state::binding(&config.server.url, &client),
            )
        });
    if let Some(store) = &mut store {
        held.load_records(store.load(), Instant::now());
    }
    let report = sync::run_pass(&client, &plan, &mut held, None, PassOptions { dry_run }).await?;
    if let Some(store) = &mut store
        && !dry_run
        && let Err(e) = store.save(&held.records(Instant::now()))
    {
        tracing::warn!(error = %e, "sync state not saved; the next run is cold");
    }
    print_report(&report, out).map_err(|e| AppError::Other(format!("cannot write output: {e}")))?;
    if dry_run {
        print_rotations(config, &client, out).await?;
    } else if !config.rotate.is_empty() {
        tracing::info!(
            rotations = config.rotate.len(),
            "rotations run in the daemon only: `once` rotates nothing (`once --dry-run` shows when each is due)"
        );
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        listing = if report.full_listing {
            "full"
        } else {
            "scoped"
        },
        requests = report.cost.requests,
        response_bytes = report.cost.response_bytes,
        secrets_downloaded = report.cost.secrets_downloaded,
        private_key_operations = report.cost.private_key_operations,
        // The daemon's pass line reads the same: the result first.
        "sync: {}",
        report.summary()
    );
    let _ = client.logout().await;
    Ok(report.all_current())
}

/// `--dry-run`'s lines for the rotations: what each would do now, from
/// the server's stamps and the state directory; nothing is changed.
async fn print_rotations(
    config: &Config,
    client: &Client,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    use sync::rotate::{self, Preview, history::History, recovery::Recovery};
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let dir = sync::state::dir(config.state_dir.as_deref());
    let (server, user) = (&config.server.url, &config.auth.user_id);
    let recovery = dir.as_ref().map(|d| Recovery::new(d, server, user));
    let last = dir
        .as_ref()
        .map(|d| History::new(d, server, user).load())
        .unwrap_or_default();
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    for r in &config.rotate {
        let what = format!("{} of resource {}", r.field, r.resource);
        let line = match rotate::preview(client, r, recovery.as_ref(), last.get(&r.key()).copied())
            .await
        {
            Ok(Preview::Pending { phase, since }) => format!(
                "{what}: a value rotated {} awaits its store ({}; recovery file {})",
                when(since),
                match phase {
                    rotate::recovery::Phase::Applying => "apply runs again first",
                    rotate::recovery::Phase::Applied => "applied",
                },
                recovery
                    .as_ref()
                    .map(|rec| rec.path(r).display().to_string())
                    .unwrap_or_default()
            ),
            Ok(Preview::Due(reason)) => format!("{what}: due now ({reason})"),
            Ok(Preview::NotDue(Some(next))) => format!("{what}: next due {}", when(next)),
            Ok(Preview::NotDue(None)) => {
                format!("{what}: due when passbolt marks the password expired (not marked)")
            }
            Err(e) => format!("{what}: cannot tell: {}", e.kind),
        };
        writeln!(out, "rotate     {line}").map_err(w)?;
    }
    Ok(())
}

/// Loads a config, for the binary.
pub fn load_config(path: &Path) -> Result<Config, AppError> {
    Ok(Config::load(path)?)
}

/// A config with the bytes it was parsed from: `get` and `env` show the
/// daemon which config they read.
pub struct ConfigFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub config: Config,
}

pub fn load_config_file(path: &Path) -> Result<ConfigFile, AppError> {
    let bytes = std::fs::read(path).map_err(|source| crate::config::ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = Config::parse(&String::from_utf8_lossy(&bytes), path)?;
    Ok(ConfigFile {
        path: path.to_path_buf(),
        bytes,
        config,
    })
}

pub const DEMO_PASSPHRASE: &str = "demo-passphrase";

/// A short HTTP timeout for demo configs: everything is on loopback.
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(10);
