//! What the daemon tells the outside about itself: it feeds each pass,
//! rotation and reload into the metrics and the per-target and
//! per-rotation status, and after each rewrites the metrics textfile and
//! the status file. The daemon calls in when a pass begins and ends, when
//! a rotation is checked or ends, and on a reload; nothing here changes
//! what a pass or a rotation does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::agent::metrics::{
    self, ClientWork, HookRun, ListenError, Metrics, PassResult, RotationResult, TargetResult,
};
use crate::agent::status::{self, StatusBook};
use crate::config::{Config, Rotate};
use crate::runtime::schedule;
use crate::sync::plan::Plan;
use crate::sync::report::TargetReport;
use crate::sync::report::{PassReport, Status};
use crate::sync::rotate::{RotateError, Stage};
use crate::sync::write::{self, WriteSpec};
use passbolt_client::{Client, ClientError, Counters};

/// Mode of the metrics textfile: node_exporter runs as another user.
pub const TEXTFILE_MODE: u32 = 0o644;

/// Where the files go, from the running config.
#[derive(Debug, Clone, PartialEq)]
struct Outputs {
    textfile: Option<PathBuf>,
    status_file: Option<PathBuf>,
    /// The splay offset of scheduled ticks, for `next_tick`.
    offset: Duration,
}

impl Outputs {
    fn of(config: &Config, host_id: &str) -> Outputs {
        Outputs {
            textfile: config.metrics.as_ref().and_then(|m| m.textfile.clone()),
            status_file: config.status_file.resolve(),
            offset: schedule::splay_offset(config.splay, host_id),
        }
    }
}

pub struct Observer {
    metrics: Arc<Metrics>,
    book: Arc<Mutex<StatusBook>>,
    outputs: Mutex<Outputs>,
    /// The address the endpoint listens on, fixed for the process.
    listen: Option<SocketAddr>,
    /// `metrics.listen` as the config gave it at start.
    configured_listen: Option<SocketAddr>,
    host_id: String,
    /// Files whose last write failed: a failure is logged once, not every
    /// pass.
    failing: Mutex<HashSet<PathBuf>>,
}

/// What a pass began with, for the differences when it ends.
pub struct PassWatch {
    counters: Counters,
    refresh_failures: u64,
    refresh_outages: u64,
    started: Instant,
    started_at: DateTime<Utc>,
}

/// How a config reload ended.
pub enum Reload<'a> {
    Applied(&'a Config),
    Unchanged,
    Failed,
}

impl Observer {
    /// Starts the metrics endpoint when the config has `metrics.listen`.
    pub async fn start(config: &Config) -> Result<Arc<Observer>, ListenError> {
        let (host_id, _) = schedule::identify_host(Path::new(schedule::MACHINE_ID_PATH));
        let mut book = StatusBook::default();
        book.set_targets(targets_of(config));
        let metrics = Arc::new(Metrics::new());
        for t in &config.targets {
            metrics.know_target(&t.path.to_string_lossy());
        }
        let book = Arc::new(Mutex::new(book));
        let mut listen = None;
        let configured_listen = config.metrics.as_ref().and_then(|m| m.listen);
        if let Some(addr) = configured_listen {
            let b = book.clone();
            let ready: metrics::Readiness =
                Arc::new(move || b.lock().expect("not poisoned").readiness());
            let bound = metrics::listen(addr, metrics.clone(), ready).await?;
            tracing::info!(listen = %bound, "serving /metrics, /healthz and /readyz");
            listen = Some(bound);
        }
        let observer = Observer {
            metrics,
            book,
            outputs: Mutex::new(Outputs::of(config, &host_id)),
            listen,
            configured_listen,
            host_id,
            failing: Mutex::new(HashSet::new()),
        };
        observer.set_rotations(config);
        Ok(Arc::new(observer))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    pub fn pass_begins(&self, client: &Client) -> PassWatch {
        let stats = client.stats();
        PassWatch {
            counters: client.counters(),
            refresh_failures: stats.refresh_failures,
            refresh_outages: stats.refresh_outages,
            started: Instant::now(),
            started_at: Utc::now(),
        }
    }

    /// Books what the client did since `watch` began (logins, refreshes,
    /// downloads, key operations): a pass's, or an answer on the local
    /// socket's.
    pub fn work_done(&self, watch: &PassWatch, client: &Client) {
        let spent = client.counters() - watch.counters;
        let stats = client.stats();
        self.metrics.client_work(ClientWork {
            logins: spent.logins,
            refreshes: spent.refreshes,
            refresh_failures: stats
                .refresh_failures
                .saturating_sub(watch.refresh_failures),
            refresh_outages: stats.refresh_outages.saturating_sub(watch.refresh_outages),
            secrets_downloaded: spent.secrets_downloaded,
            private_key_operations: spent.private_key_operations,
        });
    }

    /// Books a pass over `paths` (every target when `None`), then rewrites
    /// the textfile and the status file.
    pub async fn pass_ends(
        &self,
        watch: PassWatch,
        client: &Client,
        plan: &Plan,
        paths: Option<&[PathBuf]>,
        result: &Result<PassReport, ClientError>,
    ) {
        let elapsed = watch.started.elapsed();
        let now = Utc::now();
        self.work_done(&watch, client);
        let offset = self.outputs.lock().expect("not poisoned").offset;
        let next = |path: &Path| {
            plan.target(path)
                .and_then(|t| schedule::next_tick(&t.schedule, offset, watch.started_at, now))
        };
        {
            let mut book = self.book.lock().expect("not poisoned");
            match result {
                Ok(report) => {
                    self.metrics.server_answered(true);
                    self.metrics.pass_done(
                        if report.all_current() {
                            PassResult::Ok
                        } else {
                            PassResult::Degraded
                        },
                        elapsed.as_secs_f64(),
                    );
                    for t in &report.targets {
                        if let Some(state) = self.book_target(&mut book, plan, t, now) {
                            state.next_tick = next(&t.path);
                        }
                    }
                    if paths.is_none() {
                        book.first_sync_done = true;
                    }
                }
                Err(e) => {
                    self.metrics.server_answered(!e.is_outage());
                    self.metrics
                        .pass_done(PassResult::Failed, elapsed.as_secs_f64());
                    if let Some(reason) = login_failure(e) {
                        self.metrics.login_failed(reason);
                    }
                    let reason = status::pass_failure_reason(e);
                    let scope: Vec<PathBuf> = match paths {
                        // Targets only: exec's environment is no file.
                        Some(p) => p
                            .iter()
                            .filter(|p| plan.target(p).is_some())
                            .cloned()
                            .collect(),
                        None => plan
                            .targets
                            .iter()
                            .map(|t| t.path().to_path_buf())
                            .collect(),
                    };
                    for path in scope {
                        self.metrics
                            .target_attempted(&path.to_string_lossy(), TargetResult::Failed);
                        if let Some(state) = book.get_mut(&path) {
                            state.record(now, TargetResult::Failed, Some(reason.clone()));
                            state.next_tick = next(&path);
                        }
                    }
                }
            }
            self.metrics.set_ready(book.readiness().is_ok());
        }
        self.write_files().await;
    }

    /// Books one target of a pass (or of a render outside one) in the
    /// metrics and the status; returns its status entry.
    fn book_target<'b>(
        &self,
        book: &'b mut StatusBook,
        plan: &Plan,
        t: &TargetReport,
        now: DateTime<Utc>,
    ) -> Option<&'b mut status::TargetState> {
        let (outcome, reason) = status::outcome(t);
        let changed = matches!(
            t.status,
            Status::Created | Status::Updated { .. } | Status::Removed
        );
        let hook_ran = changed && plan.target(&t.path).is_some_and(|p| p.on_change.is_some());
        let hook = match (&t.hook, hook_ran) {
            (Some(_), _) => HookRun::Failed,
            (None, true) => HookRun::Succeeded,
            (None, false) => HookRun::None,
        };
        self.metrics
            .target_done(&t.path.to_string_lossy(), outcome, changed, hook);
        let state = book.get_mut(&t.path)?;
        state.record(now, outcome, reason);
        Some(state)
    }

    /// Books targets written outside a pass (a rotated value put in use),
    /// then rewrites the files.
    pub async fn targets_rendered(&self, plan: &Plan, report: &PassReport) {
        if report.targets.is_empty() {
            return;
        }
        {
            let mut book = self.book.lock().expect("not poisoned");
            for t in &report.targets {
                self.book_target(&mut book, plan, t, Utc::now());
            }
        }
        self.write_files().await;
    }

    /// The config's rotations: the state of those that stay is kept, the
    /// series of removed ones go.
    fn set_rotations(&self, config: &Config) {
        let keys: Vec<(String, String)> = config
            .rotate
            .iter()
            .map(|r| (r.resource.clone(), r.field.to_string()))
            .collect();
        let gone = self.book.lock().expect("not poisoned").set_rotations(keys);
        for (id, field) in gone {
            self.metrics.forget_rotation(&id, &field);
        }
        for r in &config.rotate {
            self.metrics
                .know_rotation(&r.resource, &r.field.to_string());
        }
    }

    /// This host's last rotation of `r` as recorded before the start.
    pub fn rotation_recorded(&self, r: &Rotate, at: DateTime<Utc>) {
        let field = r.field.to_string();
        self.metrics
            .rotation_last_success(&r.resource, &field, at.timestamp() as f64);
        if let Some(s) = self
            .book
            .lock()
            .expect("not poisoned")
            .rotation_mut(&r.resource, &field)
        {
            s.last_success = s.last_success.max(Some(at));
        }
    }

    /// When `r` next falls due, as a check found it (not due now).
    pub async fn rotation_due_at(&self, r: &Rotate, next: Option<DateTime<Utc>>) {
        let field = r.field.to_string();
        self.metrics.rotation_next_due(
            &r.resource,
            &field,
            next.map(|t| t.timestamp_millis() as f64 / 1000.0),
        );
        let changed = {
            let mut book = self.book.lock().expect("not poisoned");
            match book.rotation_mut(&r.resource, &field) {
                Some(s) if s.next_due != next => {
                    s.next_due = next;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.write_files().await;
        }
    }

    /// An attempt at `r` ended with `result`; `error` says why it did not
    /// rotate.
    pub async fn rotation_ended(
        &self,
        r: &Rotate,
        result: RotationResult,
        error: Option<&RotateError>,
    ) {
        let field = r.field.to_string();
        self.metrics.rotation_attempted(
            &r.resource,
            &field,
            result,
            error.map(|e| match (result, e.stage()) {
                // A value in use whose store failed, whatever the error.
                (RotationResult::Pending, Stage::Check) => "store",
                (_, stage) => stage.as_str(),
            }),
        );
        if let Some(s) = self
            .book
            .lock()
            .expect("not poisoned")
            .rotation_mut(&r.resource, &field)
        {
            s.record(Utc::now(), result, error.map(status::rotation_reason));
        }
        self.write_files().await;
    }

    /// Books a config reload. An applied one brings in the new targets
    /// (not tried yet), forgets the removed ones and the new file paths.
    pub async fn reloaded(&self, reload: Reload<'_>) {
        let config = match reload {
            Reload::Failed => return self.metrics.reloaded("failed"),
            Reload::Unchanged => return self.metrics.reloaded("unchanged"),
            Reload::Applied(config) => config,
        };
        self.metrics.reloaded("applied");
        let listen = config.metrics.as_ref().and_then(|m| m.listen);
        if listen != self.configured_listen {
            tracing::warn!("metrics.listen changed; the endpoint changes at the next start");
        }
        let gone = {
            let mut book = self.book.lock().expect("not poisoned");
            let gone = book.set_targets(targets_of(config));
            self.metrics.set_ready(book.readiness().is_ok());
            gone
        };
        for p in gone {
            self.metrics.forget_target(&p.to_string_lossy());
        }
        for t in &config.targets {
            self.metrics.know_target(&t.path.to_string_lossy());
        }
        self.set_rotations(config);
        *self.outputs.lock().expect("not poisoned") = Outputs::of(config, &self.host_id);
        self.write_files().await;
    }

    /// Rewrites the textfile and the status file, each atomically.
    async fn write_files(&self) {
        let outputs = self.outputs.lock().expect("not poisoned").clone();
        let text = outputs.textfile.as_ref().map(|_| self.metrics.text());
        let report = outputs
            .status_file
            .as_ref()
            .map(|_| self.book.lock().expect("not poisoned").report());
        let results = tokio::task::spawn_blocking(move || {
            let mut results = Vec::new();
            if let (Some(path), Some(text)) = (outputs.textfile, text) {
                let spec = WriteSpec {
                    mode: TEXTFILE_MODE,
                    ..WriteSpec::new(&path)
                };
                let r = write::write_atomic(&spec, text.as_bytes())
                    .map(drop)
                    .map_err(|e| e.to_string());
                results.push(("metrics textfile", path, r));
            }
            if let (Some(path), Some(report)) = (outputs.status_file, report) {
                let r = status::write_file(&path, &report).map_err(|e| e.to_string());
                results.push(("status file", path, r));
            }
            results
        })
        .await
        .expect("status write task");
        let mut failing = self.failing.lock().expect("not poisoned");
        for (what, path, r) in results {
            match r {
                Ok(()) => {
                    if failing.remove(&path) {
                        tracing::info!(path = %path.display(), "{what} written again");
                    }
                }
                Err(e) => {
                    if failing.insert(path.clone()) {
                        tracing::warn!("cannot write the {what}: {e}");
                    } else {
                        tracing::debug!("cannot write the {what}: {e}");
                    }
                }
            }
        }
    }
}

fn targets_of(config: &Config) -> Vec<(PathBuf, String)> {
    config
        .targets
        .iter()
        .map(|t| (t.path.clone(), t.format.to_string()))
        .collect()
}

/// The `reason` label of a pass that failed at login.
fn login_failure(e: &ClientError) -> Option<&'static str> {
    Some(match e {
        ClientError::LoginRefused { .. } => "refused",
        ClientError::BaseUrlMismatch { .. } => "base_url",
        ClientError::ClockSkew { .. } => "clock",
        ClientError::UserNotFound { .. } => "user_not_found",
        ClientError::MfaRequired { .. } => "mfa_required",
        ClientError::ServerNotAuthenticated(_) => "server_not_authenticated",
        ClientError::PinMismatch { .. }
        | ClientError::ServerKeyInconsistent { .. }
        | ClientError::ServerKeyChanged { .. } => "server_key",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::schedule::Schedule;
    use chrono::TimeDelta;

    #[test]
    fn next_tick_of_an_interval_follows_the_pass_start() {
        let s = Schedule::parse("every 5m", None).unwrap();
        let t0 = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let t1 = t0 + TimeDelta::seconds(2);
        assert_eq!(
            schedule::next_tick(&s, Duration::ZERO, t0, t1),
            Some(t0 + TimeDelta::minutes(5))
        );
    }

    #[test]
    fn next_tick_of_a_cron_schedule_includes_the_splay_offset() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        // 00:10 UTC on some day; the next hour is 01:00, plus 7 minutes.
        let day = DateTime::from_timestamp(86_400 * 20_000, 0).unwrap();
        let t = day + TimeDelta::minutes(10);
        assert_eq!(
            schedule::next_tick(&s, Duration::from_secs(420), t, t),
            Some(day + TimeDelta::minutes(67))
        );
        // 00:05 with a 7-minute offset: the 00:00 occurrence fires at 00:07.
        let t = day + TimeDelta::minutes(5);
        assert_eq!(
            schedule::next_tick(&s, Duration::from_secs(420), t, t),
            Some(day + TimeDelta::minutes(7))
        );
    }
}
