//! `passbolt-sync run`: the long-running service.
//!
//! One task per distinct schedule runs passes for its targets (see
//! `schedule::run_schedule`: no overlap, missed ticks coalesced). Passes are
//! serialized daemon-wide. The main loop owns signals, config reloads,
//! systemd notifications and the watchdog: it pings only while no pass has
//! been stuck for longer than `STUCK_AFTER`, so a hung daemon is restarted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, RwLock, watch};

use crate::backoff::{Backoff, DEFAULT_INITIAL, DEFAULT_MAX, Health, Transition};
use crate::commands::{self, AppError};
use crate::config::Config;
use crate::held::Held;
use crate::observe::{Observer, Reload};
use crate::passbolt::{Client, ClientError};
use crate::plan::Plan;
use crate::schedule::{self, Schedule};
use crate::sync::{self, PassOptions, PassReport};
use crate::watch::ConfigWatcher;

/// A pass running longer than this means the daemon is stuck: the
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

struct Daemon {
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
    observer: Arc<Observer>,
}

impl Daemon {
    async fn snapshot(&self) -> (Arc<Config>, Arc<Plan>, Arc<Client>) {
        let g = self.current.read().await;
        (g.config.clone(), g.plan.clone(), g.client.clone())
    }

    /// One pass over the targets at `paths` (all when `None`), with health
    /// bookkeeping and one log line per state change.
    async fn pass(&self, paths: Option<&[PathBuf]>) -> Result<PassReport, ClientError> {
        let mut held = self.pass_lock.lock().await;
        let (_, plan, client) = self.snapshot().await;
        if paths.is_some_and(|p| !p.iter().any(|p| plan.target(p).is_some())) {
            return Ok(PassReport::default());
        }
        *self.in_flight.lock().expect("not poisoned") = Some(Instant::now());
        let started = Instant::now();
        let watch = self.observer.pass_begins(&client);
        let result = sync::run_pass(&client, &plan, &mut held, paths, PassOptions::default()).await;
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

    /// Runs a pass and, while it fails, retries with exponential backoff
    /// and jitter until it succeeds or the daemon stops.
    async fn pass_with_retry(&self, paths: Option<&[PathBuf]>) -> bool {
        let (initial, max) = backoff_bounds();
        let mut backoff = Backoff::new(initial, max);
        let mut stop = self.shutdown.subscribe();
        loop {
            if *stop.borrow() {
                return false;
            }
            let (asked, misconfigured) = match self.pass(paths).await {
                Ok(_) => return true,
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
                _ = stop.changed() => return false,
            }
        }
    }

    fn stuck(&self) -> Option<Duration> {
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

fn backoff_bounds() -> (Duration, Duration) {
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

fn status(s: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(s)]);
}

/// Schedule tasks of one config generation.
struct Schedules {
    stop: watch::Sender<bool>,
}

impl Schedules {
    /// One driver per distinct schedule of `plan`, every scheduled tick
    /// delayed by this host's offset within `splay`.
    fn spawn(daemon: &Arc<Daemon>, plan: &Plan, splay: Duration) -> Schedules {
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
        for t in &plan.targets {
            groups
                .entry(t.schedule.key())
                .or_insert_with(|| (t.schedule.clone(), Vec::new()))
                .1
                .push(t.path().to_path_buf());
        }
        for (_, (schedule, paths)) in groups {
            tracing::info!(schedule = %schedule, targets = paths.len(), "scheduled");
            let daemon = daemon.clone();
            // Shutdown stops the current generation too (see `run`), so
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
                    let daemon = daemon.clone();
                    let paths = paths.clone();
                    async move {
                        daemon.pass_with_retry(Some(&paths)).await;
                    }
                },
            ));
        }
        Schedules { stop }
    }

    fn stop(self) {
        let _ = self.stop.send(true);
    }
}

/// Loads a config from its bytes and plans it, for startup and reloads.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Config, Plan), AppError> {
    let text = String::from_utf8_lossy(bytes);
    let config = Config::parse(&text, path)?;
    let plan = commands::plan(&config)?;
    Ok((config, plan))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(path: PathBuf) -> Result<bool, AppError> {
    // Before anything else: a second daemon on this config must not log in
    // or write a file. Held until `run` returns.
    let _instance = crate::lock::InstanceLock::acquire(&path)?;
    let bytes = std::fs::read(&path).map_err(|source| crate::config::ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let (config, plan) = parse(&path, &bytes)?;
    let observer = Observer::start(&config)
        .await
        .map_err(|e| AppError::Other(e.to_string()))?;
    let client = commands::connect(&config).await?;
    let (shutdown, _) = watch::channel(false);
    let daemon = Arc::new(Daemon {
        path: path.clone(),
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
        observer,
    });
    let sig = |kind: SignalKind| {
        signal(kind).map_err(|e| AppError::Other(format!("cannot install a signal handler: {e}")))
    };
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    let (watcher, mut changes) = ConfigWatcher::spawn(path.clone(), &bytes)
        .map_err(|e| AppError::Other(format!("cannot watch {}: {e}", path.display())))?;
    tracing::info!(config = %path.display(), "passbolt-sync starting");

    let startup_daemon = daemon.clone();
    let mut startup = tokio::spawn(async move { startup_daemon.pass_with_retry(None).await });
    let mut ready = false;
    let mut schedules: Option<Schedules> = None;
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping =
        tokio::time::interval(watchdog.map(|d| d / 2).unwrap_or(Duration::from_secs(3600)));
    let mut warned_stuck = false;

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading the config");
                watcher.force_check();
            }
            Some(bytes) = changes.recv() => {
                if let Some(s) = reload(&daemon, &bytes, ready).await {
                    if let Some(old) = schedules.take() { old.stop(); }
                    schedules = Some(s);
                }
            }
            done = &mut startup, if !ready => {
                if !matches!(done, Ok(true)) { break; }
                ready = true;
                let _ = sd_notify::notify(&[NotifyState::Ready]);
                tracing::info!("first sync complete; ready");
                let (config, plan, _) = daemon.snapshot().await;
                schedules = Some(Schedules::spawn(&daemon, &plan, config.splay));
            }
            _ = ping.tick(), if watchdog.is_some() => {
                match daemon.stuck() {
                    None => { warned_stuck = false; let _ = sd_notify::notify(&[NotifyState::Watchdog]); }
                    Some(d) if !warned_stuck => {
                        warned_stuck = true;
                        tracing::error!(running_for = ?d, "a sync pass is stuck; no longer feeding the watchdog");
                    }
                    Some(_) => {}
                }
            }
        }
    }

    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    let _ = daemon.shutdown.send(true);
    if let Some(s) = schedules.take() {
        s.stop();
    }
    // Let a pass in flight finish its writes, within bounds.
    if tokio::time::timeout(STOP_GRACE, daemon.pass_lock.lock())
        .await
        .is_err()
    {
        tracing::warn!("a pass was still running after {STOP_GRACE:?}; stopping anyway");
    }
    let (_, _, client) = daemon.snapshot().await;
    if let Err(e) = client.logout().await {
        tracing::warn!(error = %e, "logout failed; the refresh token will expire on its own");
    }
    drop(watcher);
    tracing::info!("stopped");
    Ok(true)
}

/// Applies a changed config file. On any error the running config stays.
/// Returns new schedules when the daemon is past startup.
async fn reload(daemon: &Arc<Daemon>, bytes: &[u8], ready: bool) -> Option<Schedules> {
    let (new, new_plan) = match parse(&daemon.path, bytes) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("config reload failed; keeping the running config: {e}");
            daemon.observer.reloaded(Reload::Failed).await;
            return None;
        }
    };
    let (old, _, old_client) = daemon.snapshot().await;
    if *old == new {
        tracing::info!("config re-read; nothing in it changed");
        daemon.observer.reloaded(Reload::Unchanged).await;
        return None;
    }
    let relogin = old.server != new.server || old.auth != new.auth;
    let client = if relogin {
        match commands::connect(&new).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!("config reload failed; keeping the running config: {e}");
                daemon.observer.reloaded(Reload::Failed).await;
                return None;
            }
        }
    } else {
        old_client.clone()
    };
    let changed: Vec<PathBuf> = new
        .targets
        .iter()
        .filter(|t| relogin || !old.targets.contains(t) || old.schedule_of(t) != new.schedule_of(t))
        .map(|t| t.path.clone())
        .collect();
    let new = Arc::new(new);
    let new_plan = Arc::new(new_plan);
    {
        // Wait for a pass in flight, so it finishes with the config it began with.
        let mut held = daemon.pass_lock.lock().await;
        if relogin {
            // Another server or account: nothing held is evidence of it.
            held.clear();
        } else {
            let paths: Vec<&Path> = new_plan.targets.iter().map(|t| t.path()).collect();
            held.retain_targets(&paths);
        }
        *daemon.current.write().await = Generation {
            config: new.clone(),
            plan: new_plan.clone(),
            client,
        };
    }
    if relogin {
        tokio::spawn(async move {
            let _ = old_client.logout().await;
        });
    }
    daemon.observer.reloaded(Reload::Applied(&new)).await;
    tracing::info!(
        targets = new.targets.len(),
        changed = changed.len(),
        relogin,
        "config reloaded"
    );
    daemon.kick.notify_waiters();
    if !ready {
        return None;
    }
    if !changed.is_empty() {
        let d = daemon.clone();
        tokio::spawn(async move {
            d.pass_with_retry(Some(&changed)).await;
        });
    }
    Some(Schedules::spawn(daemon, &new_plan, new.splay))
}
