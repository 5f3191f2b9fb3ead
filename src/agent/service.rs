//! What every long-running mode shares (`run`, and `exec` beside it):
//! the current generation (config, plan and client, swapped together on
//! reload), passes with health bookkeeping and retry with backoff, the
//! schedule drivers of a generation, config reloads, and the shutdown
//! that lets a pass in flight finish and revokes the refresh token.
//!
//! One task per distinct schedule runs passes for its targets (see
//! `schedule::run_schedule`: no overlap, missed ticks coalesced). Passes are
//! serialized service-wide. Nothing here owns signals, systemd readiness or
//! a main loop: the modes on top do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::{Notify, RwLock, watch};

use crate::agent::AgentError;
use crate::agent::observe::{Observer, Reload};
use crate::agent::rotation;
use crate::agent::setup::{self, parse};
use crate::config::Config;
use crate::runtime::backoff::{Backoff, DEFAULT_INITIAL, DEFAULT_MAX, Health, Transition};
use crate::runtime::schedule::{self, Schedule};
use crate::sync::held::Held;
use crate::sync::plan::{Plan, Vars};
use crate::sync::render::env::Environment;
use crate::sync::report::TargetError;
use crate::sync::{self, PassOptions, PassReport, state};
use passbolt_client::secret::Secret;
use passbolt_client::{Client, ClientError};

/// A pass running longer than this means the service is stuck: the
/// watchdog stops being fed.
pub const STUCK_AFTER: Duration = Duration::from_secs(600);

/// How long SIGTERM waits for a pass in flight to finish its writes.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// The config, its plan and the client built from it, swapped together
/// on reload.
struct Generation {
    config: Arc<Config>,
    plan: Arc<Plan>,
    client: Arc<Client>,
}

pub struct Service {
    path: PathBuf,
    current: RwLock<Generation>,
    /// Serializes passes across schedules, and holds what they share: the
    /// secrets downloaded so far.
    pass_lock: tokio::sync::Mutex<Held>,
    health: Mutex<Health>,
    in_flight: Mutex<Option<Instant>>,
    /// Wakes a retry loop early, e.g. after a config change.
    kick: Notify,
    shutdown: watch::Sender<bool>,
    /// Whether passes resolve the exec environment (only `exec` runs one).
    with_env: bool,
    /// The exec environment as the last pass over it rendered it.
    env: watch::Sender<Option<EnvUpdate>>,
    /// Metrics, health endpoints and the status file.
    observer: Arc<Observer>,
    /// The state directory's file for this config, when there is one.
    state: Mutex<Option<state::Store>>,
    /// What the rotations know between checks.
    rotation_runs: tokio::sync::Mutex<rotation::Runs>,
    /// SHA-256 of the config file bytes last parsed without error: the
    /// local socket answers only peers that read the same.
    config_digest: Mutex<String>,
}

/// The exec environment a pass rendered, or why it could not.
pub type EnvUpdate = Arc<Result<Environment, TargetError>>;

impl Service {
    pub async fn snapshot(&self) -> (Arc<Config>, Arc<Plan>, Arc<Client>) {
        let g = self.current.read().await;
        (g.config.clone(), g.plan.clone(), g.client.clone())
    }

    /// One pass over the targets at `paths` (all when `None`), with health
    /// bookkeeping and one log line per state change.
    pub async fn pass(&self, paths: Option<&[PathBuf]>) -> Result<PassReport, ClientError> {
        let mut held = self.pass_lock.lock().await;
        let (config, plan, client) = self.snapshot().await;
        if paths.is_some_and(|p| !p.iter().any(|p| plan.has(p))) {
            return Ok(PassReport::default());
        }
        self.open_state(&config, &client, &mut held);
        *self.in_flight.lock().expect("not poisoned") = Some(Instant::now());
        let started = Instant::now();
        let watch = self.observer.pass_begins(&client);
        let mut result =
            sync::run_pass(&client, &plan, &mut held, paths, PassOptions::default()).await;
        if let Some(env) = result.as_mut().ok().and_then(|r| r.env.take()) {
            self.env.send_replace(Some(Arc::new(env)));
        }
        *self.in_flight.lock().expect("not poisoned") = None;
        self.observer
            .pass_ends(watch, &client, &plan, paths, &result)
            .await;
        let mut health = self.health.lock().expect("not poisoned");
        match &result {
            Ok(report) => {
                if let Some(t @ Transition::Recovered { .. }) = health.success() {
                    tracing::info!("passbolt server {t}");
                }
                log_pass(report, started.elapsed(), held.len());
                if let Some(store) = self.state.lock().expect("not poisoned").as_mut()
                    && let Err(e) = store.save(&held.records(Instant::now()))
                {
                    tracing::warn!(error = %e, "sync state not saved; the next start is cold");
                }
                if report.cost.response_bytes > TRIM_AFTER_BYTES {
                    release_freed_memory();
                }
                status(&format!(
                    "last sync {}: {}",
                    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
                    report.summary()
                ));
            }
            Err(e) => {
                if let Some(t) = health.failure(e) {
                    tracing::error!(
                        "passbolt server {t}; keeping every file as it is and retrying with backoff"
                    );
                } else {
                    tracing::debug!(error = %e, "sync still failing");
                }
                let down = health.down_for().unwrap_or_default();
                status(&format!(
                    "sync failing for {}: {e}",
                    humantime::format_duration(Duration::from_secs(down.as_secs()))
                ));
            }
        }
        result
    }

    /// Opens the state directory's file for the current config and
    /// account, reading its records into `held` the first time (and after
    /// a reload to another server, account or state directory).
    fn open_state(&self, config: &Config, client: &Client, held: &mut Held) {
        let mut slot = self.state.lock().expect("not poisoned");
        let Some(dir) = state::dir(config.state_dir.as_deref()) else {
            *slot = None;
            return;
        };
        let store = state::Store::new(&dir, &self.path, state::binding(&config.server.url, client));
        if slot
            .as_ref()
            .is_some_and(|s| s.path() == store.path() && s.binding() == store.binding())
        {
            return;
        }
        let mut store = store;
        held.load_records(store.load(), Instant::now());
        *slot = Some(store);
    }

    /// Runs a pass and, while it fails, retries with exponential backoff
    /// and jitter until it succeeds (its report) or the service stops.
    pub async fn pass_with_retry(&self, paths: Option<&[PathBuf]>) -> Option<PassReport> {
        let (initial, max) = backoff_bounds();
        let mut backoff = Backoff::new(initial, max);
        let mut stop = self.shutdown.subscribe();
        loop {
            if *stop.borrow() {
                return None;
            }
            let (asked, misconfigured) = match self.pass(paths).await {
                Ok(report) => return Some(report),
                Err(e) => (e.retry_after(), e.is_misconfiguration()),
            };
            // A server that says when to come back is not asked sooner,
            // but never made to wait past the backoff's own maximum. A
            // rejected TOTP code waits the maximum at once: the server logs
            // the account out after a few, and only a config change (which
            // kicks this loop) can fix it.
            let delay = if misconfigured {
                max
            } else {
                backoff.next_delay().max(asked.unwrap_or_default().min(max))
            };
            tracing::debug!(?delay, "next attempt");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.kick.notified() => {}
                _ = stop.changed() => return None,
            }
        }
    }

    pub fn stuck(&self) -> Option<Duration> {
        self.in_flight
            .lock()
            .expect("not poisoned")
            .map(|t| t.elapsed())
            .filter(|d| *d > STUCK_AFTER)
    }
}

/// Hidden, for tests only: `PASSBOLT_SYNC_TEST_BACKOFF="<initial> <max>"`
/// (humantime durations) replaces the retry backoff's bounds, so fault
/// tests recover in well under a second instead of up to five minutes.
const TEST_BACKOFF_ENV: &str = "PASSBOLT_SYNC_TEST_BACKOFF";

pub(crate) fn backoff_bounds() -> (Duration, Duration) {
    let parsed = std::env::var(TEST_BACKOFF_ENV).ok().and_then(|v| {
        let (a, b) = v.split_once(' ')?;
        Some((
            humantime::parse_duration(a.trim()).ok()?,
            humantime::parse_duration(b.trim()).ok()?,
        ))
    });
    parsed.unwrap_or((DEFAULT_INITIAL, DEFAULT_MAX))
}

/// The pass log line: what happened and what it cost. An idle daemon stays
/// quiet at info level: passes that change nothing are logged at debug.
fn log_pass(report: &PassReport, elapsed: Duration, held: usize) {
    let changed = report
        .targets
        .iter()
        .any(|t| !matches!(t.status, sync::Status::Unchanged));
    let c = &report.cost;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                elapsed_ms = elapsed.as_millis() as u64,
                listing = if report.full_listing {
                    "full"
                } else {
                    "scoped"
                },
                requests = c.requests,
                response_bytes = c.response_bytes,
                secrets_downloaded = c.secrets_downloaded,
                private_key_operations = c.private_key_operations,
                secrets_held = held,
                logins_in_pass = c.logins,
                refreshes_in_pass = c.refreshes,
                "sync: {}",
                report.summary()
            )
        };
    }
    if changed || !report.all_current() {
        line!(info);
    } else {
        line!(debug);
    }
}

/// A pass that read more than this is followed by `release_freed_memory`.
const TRIM_AFTER_BYTES: u64 = 256 * 1024;

/// Hands memory freed by a pass back to the system. glibc keeps freed
/// blocks in its per-thread arenas, so the buffers of one large listing or
/// download (decrypted on several threads) would otherwise stay resident
/// for the life of an idle daemon.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes the
    // arena locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn status(s: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(s)]);
}

/// Schedule tasks of one config generation.
pub struct Schedules {
    stop: watch::Sender<bool>,
}

impl Schedules {
    /// One driver per distinct schedule of `plan`, every scheduled tick
    /// delayed by this host's offset within `splay`.
    pub fn spawn(service: &Arc<Service>, plan: &Plan, splay: Duration) -> Schedules {
        // The host's id does not change while the daemon runs: read it once.
        static HOST: std::sync::OnceLock<(String, schedule::HostIdSource)> =
            std::sync::OnceLock::new();
        let (host_id, source) =
            HOST.get_or_init(|| schedule::identify_host(Path::new(schedule::MACHINE_ID_PATH)));
        let offset = schedule::splay_offset(splay, host_id);
        if !splay.is_zero() {
            // Never the id itself: machine-id(5) asks to keep it confidential.
            let shown = humantime::format_duration(Duration::from_millis(
                u64::try_from(offset.as_millis()).unwrap_or(u64::MAX),
            ));
            let splay = humantime::format_duration(splay);
            match source {
                schedule::HostIdSource::MachineId => tracing::info!(
                    "splay offset {shown} of {splay} (from {})",
                    schedule::MACHINE_ID_PATH
                ),
                schedule::HostIdSource::Hostname => {
                    tracing::info!("splay offset {shown} of {splay} (from the hostname)")
                }
                schedule::HostIdSource::Nothing => tracing::warn!(
                    "splay offset {shown} of {splay}: no machine id and no hostname, \
                     so every such host gets this same offset"
                ),
            }
        }
        let (stop, _) = watch::channel(false);
        let mut groups: BTreeMap<String, (Schedule, Vec<PathBuf>)> = BTreeMap::new();
        for (schedule, path) in plan.scheduled() {
            groups
                .entry(schedule.key())
                .or_insert_with(|| (schedule.clone(), Vec::new()))
                .1
                .push(path.to_path_buf());
        }
        if !plan.rotations.is_empty() {
            tracing::info!(schedule = %plan.rotation_schedule, rotations = plan.rotations.len(), "rotations checked");
            rotation::spawn(service, plan.rotation_schedule.clone(), stop.subscribe());
        }
        for (_, (schedule, paths)) in groups {
            tracing::info!(schedule = %schedule, targets = paths.len(), "scheduled");
            let service = service.clone();
            // Shutdown stops the current generation too (see `Service::shutdown`), so
            // this one signal ends the driver either way.
            let stop_rx = stop.subscribe();
            // Syncs after a reload run as their own pass, so the driver's
            // run-now trigger is not needed: its sender is dropped.
            let (_, run_now_rx) = watch::channel(());
            let paths = Arc::new(paths);
            // Detached: a driver lets a pass in flight finish rather than
            // being aborted mid-write.
            tokio::spawn(schedule::run_schedule(
                schedule,
                offset,
                stop_rx,
                run_now_rx,
                move |_reason| {
                    let service = service.clone();
                    let paths = paths.clone();
                    async move {
                        service.pass_with_retry(Some(&paths)).await;
                    }
                },
            ));
        }
        Schedules { stop }
    }

    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}

impl Service {
    /// Loads the config at `path` from `bytes`, plans it and builds its
    /// client; no request is made yet. With `with_env`, passes resolve and
    /// render the exec environment too (see [`Service::watch_env`]).
    pub async fn start(
        path: &Path,
        bytes: &[u8],
        with_env: bool,
    ) -> Result<Arc<Service>, AgentError> {
        let (config, plan) = parse(path, bytes, with_env)?;
        let observer = Observer::start(&config).await?;
        let client = setup::connect(&config).await?;
        let (shutdown, _) = watch::channel(false);
        let service = Arc::new(Service {
            path: path.to_path_buf(),
            current: RwLock::new(Generation {
                config: Arc::new(config),
                plan: Arc::new(plan),
                client: Arc::new(client),
            }),
            pass_lock: tokio::sync::Mutex::new(Held::new()),
            health: Mutex::new(Health::new()),
            in_flight: Mutex::new(None),
            kick: Notify::new(),
            shutdown,
            with_env,
            env: watch::channel(None).0,
            observer,
            state: Mutex::new(None),
            rotation_runs: tokio::sync::Mutex::new(rotation::Runs::default()),
            config_digest: Mutex::new(state::sha256_hex(bytes)),
        });
        rotation::load(&service).await;
        Ok(service)
    }

    /// What passes hold between them (and serializes them); a rotation
    /// takes it to put a new value in use.
    pub(crate) fn held(&self) -> &tokio::sync::Mutex<Held> {
        &self.pass_lock
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Changes to `true` when the service stops.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn rotation_runs(&self) -> &tokio::sync::Mutex<rotation::Runs> {
        &self.rotation_runs
    }

    /// The config file, as `run` or `exec` was given it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config_digest(&self) -> String {
        self.config_digest.lock().expect("not poisoned").clone()
    }

    pub fn metrics(&self) -> &crate::agent::metrics::Metrics {
        self.observer.metrics()
    }

    /// The values of `vars` for a peer on the local socket: resolved on a
    /// fresh listing, with what the passes hold current (downloading only
    /// the rest), with the session the passes use. Waits for a pass in
    /// flight, as passes wait for each other.
    pub async fn fetch(
        &self,
        key: &Path,
        vars: &Vars,
    ) -> Result<Result<Vec<(String, Secret)>, TargetError>, ClientError> {
        let mut held = self.pass_lock.lock().await;
        let (_, _, client) = self.snapshot().await;
        let watch = self.observer.pass_begins(&client);
        let result = sync::fetch_vars(&client, key, vars, &mut held).await;
        self.observer.work_done(&watch, &client);
        result
    }

    /// The exec environment of the latest pass that rendered it.
    pub fn watch_env(&self) -> watch::Receiver<Option<EnvUpdate>> {
        self.env.subscribe()
    }

    /// Stops every retry loop and the schedules, lets a pass in flight
    /// finish its writes (within `STOP_GRACE`) and revokes the refresh
    /// token.
    pub async fn shutdown(&self, schedules: Option<Schedules>) {
        let _ = self.shutdown.send(true);
        if let Some(s) = schedules {
            s.stop();
        }
        // Let a pass in flight finish its writes, within bounds.
        if tokio::time::timeout(STOP_GRACE, self.pass_lock.lock())
            .await
            .is_err()
        {
            tracing::warn!("a pass was still running after {STOP_GRACE:?}; stopping anyway");
        }
        let (_, _, client) = self.snapshot().await;
        if let Err(e) = client.logout().await {
            tracing::warn!(error = %e, "logout failed; the refresh token will expire on its own");
        }
    }

    /// Feeds the systemd watchdog unless a pass is stuck; `warned` keeps
    /// the stuck pass to one log line.
    pub fn feed_watchdog(&self, warned: &mut bool) {
        match self.stuck() {
            None => {
                *warned = false;
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            Some(d) if !*warned => {
                *warned = true;
                tracing::error!(running_for = ?d, "a sync pass is stuck; no longer feeding the watchdog");
            }
            Some(_) => {}
        }
    }
}

/// Applies a changed config file. On any error the running config stays.
/// Returns new schedules when the service is past startup.
pub async fn reload(service: &Arc<Service>, bytes: &[u8], ready: bool) -> Option<Schedules> {
    let (new, new_plan) = match parse(&service.path, bytes, service.with_env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("config reload failed; keeping the running config: {e}");
            service.observer.reloaded(Reload::Failed).await;
            return None;
        }
    };
    let (old, _, old_client) = service.snapshot().await;
    // Only bytes the running generation was parsed from (or equals) are
    // answered for: a reload that fails keeps the old digest too.
    let digest = || *service.config_digest.lock().expect("not poisoned") = state::sha256_hex(bytes);
    if *old == new {
        digest();
        tracing::info!("config re-read; nothing in it changed");
        service.observer.reloaded(Reload::Unchanged).await;
        return None;
    }
    if old.agent != new.agent {
        tracing::warn!("the agent: section changed; the local socket changes at the next start");
    }
    let relogin = old.server != new.server || old.auth != new.auth;
    let client = if relogin {
        match setup::connect(&new).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!("config reload failed; keeping the running config: {e}");
                service.observer.reloaded(Reload::Failed).await;
                return None;
            }
        }
    } else {
        old_client.clone()
    };
    let mut changed: Vec<PathBuf> = new
        .targets
        .iter()
        .filter(|t| relogin || !old.targets.contains(t) || old.schedule_of(t) != new.schedule_of(t))
        .map(|t| t.path.clone())
        .collect();
    if let Some(env) = &new_plan.exec_env
        && (relogin || old.exec != new.exec || old.exec_schedule() != new.exec_schedule())
    {
        changed.push(env.key().to_path_buf());
    }
    let new = Arc::new(new);
    let new_plan = Arc::new(new_plan);
    {
        // Wait for a pass in flight, so it finishes with the config it began with.
        let mut held = service.pass_lock.lock().await;
        if relogin {
            // Another server or account: nothing held is evidence of it.
            held.clear();
        } else {
            let paths: Vec<&Path> = new_plan.scheduled().into_iter().map(|(_, p)| p).collect();
            held.retain_targets(&paths);
            // Changed selectors are resolved again at config load.
            for p in &changed {
                held.scope_mut().forget(p);
            }
        }
        *service.current.write().await = Generation {
            config: new.clone(),
            plan: new_plan.clone(),
            client,
        };
        digest();
    }
    if relogin {
        tokio::spawn(async move {
            let _ = old_client.logout().await;
        });
    }
    service.observer.reloaded(Reload::Applied(&new)).await;
    tracing::info!(
        targets = new.targets.len(),
        changed = changed.len(),
        relogin,
        "config reloaded"
    );
    service.kick.notify_waiters();
    if !ready {
        return None;
    }
    if !changed.is_empty() {
        let s = service.clone();
        tokio::spawn(async move {
            s.pass_with_retry(Some(&changed)).await;
        });
    }
    Some(Schedules::spawn(service, &new_plan, new.splay))
}
