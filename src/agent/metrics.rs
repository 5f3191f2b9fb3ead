//! The Prometheus registry of the daemon and its HTTP endpoint.
//!
//! Every label is a target path, a resource id, a field as the config
//! names it, a fixed word or the version: never a resource name, a
//! username or a value, so a scrape shows nothing that the config file
//! does not. Both exposition formats come from the
//! `prometheus-client` crate: OpenMetrics for scrapers that ask for it,
//! the classic text format (0.0.4) otherwise and for node_exporter's
//! textfile collector.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// What `/metrics` answers when the scraper accepts OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A target's last result, as the `result` label of
/// `passbolt_sync_target_last_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetResult {
    Current,
    Failed,
    Kept,
    Removed,
}

impl TargetResult {
    pub const ALL: [TargetResult; 4] = [
        TargetResult::Current,
        TargetResult::Failed,
        TargetResult::Kept,
        TargetResult::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetResult::Current => "current",
            TargetResult::Failed => "failed",
            TargetResult::Kept => "kept",
            TargetResult::Removed => "removed",
        }
    }
}

/// How a rotation's last attempt ended, as the `result` label of
/// `passbolt_sync_rotation_last_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationResult {
    /// The new value was applied and stored.
    Rotated,
    /// It failed before anything changed (a check, or `apply`).
    Failed,
    /// The new value is in use but not stored in passbolt yet.
    Pending,
    /// Someone else changed the resource: the store waits for the operator.
    Conflict,
}

impl RotationResult {
    pub const ALL: [RotationResult; 4] = [
        RotationResult::Rotated,
        RotationResult::Failed,
        RotationResult::Pending,
        RotationResult::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RotationResult::Rotated => "rotated",
            RotationResult::Failed => "failed",
            RotationResult::Pending => "pending",
            RotationResult::Conflict => "conflict",
        }
    }
}

/// Where a rotation failed, as the `stage` label of
/// `passbolt_sync_rotation_failures_total`.
pub const ROTATION_STAGES: [&str; 4] = ["check", "apply", "store", "conflict"];

/// How a whole pass ended, as the `result` label of `passbolt_sync_passes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassResult {
    /// Every target of the pass is current.
    Ok,
    /// The server answered, but some target is not current.
    Degraded,
    /// The pass failed as a whole (server unreachable, login refused):
    /// no file was touched.
    Failed,
}

impl PassResult {
    fn as_str(self) -> &'static str {
        match self {
            PassResult::Ok => "ok",
            PassResult::Degraded => "degraded",
            PassResult::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathResultLabels {
    path: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    resource: String,
    field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationResultLabels {
    resource: String,
    field: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationStageLabels {
    resource: String,
    field: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpResultLabels {
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Pass durations span a no-op incremental pass (milliseconds) to a cold
/// pass over thousands of secrets (minutes).
const PASS_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The daemon's metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    last_success: Family<PathLabel, FloatGauge>,
    last_attempt: Family<PathLabel, FloatGauge>,
    last_result: Family<PathResultLabels, Gauge>,
    content_changes: Family<PathLabel, Counter>,
    hook_runs: Family<PathLabel, Counter>,
    hook_failures: Family<PathLabel, Counter>,
    passes: Family<ResultLabel, Counter>,
    pass_duration: Histogram,
    logins: Counter,
    refreshes: Counter,
    login_failures: Family<ReasonLabel, Counter>,
    refresh_failures: Family<ReasonLabel, Counter>,
    server_up: Gauge,
    last_contact: FloatGauge,
    since_last_contact: FloatGauge,
    /// When the server last answered, for `since_last_contact` at scrape time.
    contact: Mutex<Option<Instant>>,
    secrets_downloaded: Counter,
    private_key_operations: Counter,
    reloads: Family<ResultLabel, Counter>,
    ready: Gauge,
    rotation_last_success: Family<RotationLabels, FloatGauge>,
    rotation_next_due: Family<RotationLabels, FloatGauge>,
    rotation_last_result: Family<RotationResultLabels, Gauge>,
    rotations: Family<RotationLabels, Counter>,
    rotation_failures: Family<RotationStageLabels, Counter>,
    rotation_pending: Family<RotationLabels, Gauge>,
    agent_requests: Family<OpResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("passbolt_sync");
        let m = Metrics {
            registry: Registry::default(),
            last_success: Family::default(),
            last_attempt: Family::default(),
            last_result: Family::default(),
            content_changes: Family::default(),
            hook_runs: Family::default(),
            hook_failures: Family::default(),
            passes: Family::default(),
            pass_duration: Histogram::new(PASS_BUCKETS),
            logins: Counter::default(),
            refreshes: Counter::default(),
            login_failures: Family::default(),
            refresh_failures: Family::default(),
            server_up: Gauge::default(),
            last_contact: FloatGauge::default(),
            since_last_contact: FloatGauge::default(),
            contact: Mutex::new(None),
            secrets_downloaded: Counter::default(),
            private_key_operations: Counter::default(),
            reloads: Family::default(),
            ready: Gauge::default(),
            rotation_last_success: Family::default(),
            rotation_next_due: Family::default(),
            rotation_last_result: Family::default(),
            rotations: Family::default(),
            rotation_failures: Family::default(),
            rotation_pending: Family::default(),
            agent_requests: Family::default(),
        };
        let r = &mut registry;
        r.register_with_unit(
            "target_last_success_timestamp",
            "When the target was last brought up to date (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        r.register_with_unit(
            "target_last_attempt_timestamp",
            "When a pass last tried the target (Unix time)",
            Unit::Seconds,
            m.last_attempt.clone(),
        );
        r.register(
            "target_last_result",
            "The target's last result: 1 for the one that holds (current, failed, kept or removed)",
            m.last_result.clone(),
        );
        r.register(
            "target_content_changes",
            "Times the target's file was created, changed or removed",
            m.content_changes.clone(),
        );
        r.register(
            "target_hook_runs",
            "Runs of the target's on_change hook",
            m.hook_runs.clone(),
        );
        r.register(
            "target_hook_failures",
            "Runs of the target's on_change hook that failed or timed out",
            m.hook_failures.clone(),
        );
        r.register(
            "passes",
            "Sync passes by result: ok (every target current), degraded (some target not), failed (nothing written)",
            m.passes.clone(),
        );
        r.register_with_unit(
            "pass_duration",
            "Duration of sync passes",
            Unit::Seconds,
            m.pass_duration.clone(),
        );
        r.register("logins", "Logins to the passbolt server", m.logins.clone());
        r.register("refreshes", "Access token refreshes", m.refreshes.clone());
        r.register(
            "login_failures",
            "Passes that failed at login, by reason",
            m.login_failures.clone(),
        );
        r.register(
            "refresh_failures",
            "Token refreshes that failed, by reason: refused (a login follows) or unreachable (the server is down or failing)",
            m.refresh_failures.clone(),
        );
        r.register(
            "server_up",
            "Whether the passbolt server answered the last pass (1) or could not be reached (0)",
            m.server_up.clone(),
        );
        r.register_with_unit(
            "server_last_contact_timestamp",
            "When the passbolt server last answered (Unix time)",
            Unit::Seconds,
            m.last_contact.clone(),
        );
        r.register_with_unit(
            "server_since_last_contact",
            "Time since the passbolt server last answered, at scrape time",
            Unit::Seconds,
            m.since_last_contact.clone(),
        );
        r.register(
            "secrets_downloaded",
            "Secrets downloaded from the server",
            m.secrets_downloaded.clone(),
        );
        r.register(
            "private_key_operations",
            "Operations with the account's private key (decryptions and signatures)",
            m.private_key_operations.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads by result: applied, unchanged, failed (the running config stays)",
            m.reloads.clone(),
        );
        r.register(
            "ready",
            "1 once the first complete sync is done and every target is current or kept, as /readyz",
            m.ready.clone(),
        );
        r.register_with_unit(
            "rotation_last_success_timestamp",
            "When the rotation last stored a new value (Unix time)",
            Unit::Seconds,
            m.rotation_last_success.clone(),
        );
        r.register_with_unit(
            "rotation_next_due_timestamp",
            "When the rotation next falls due, as far as the daemon can tell (Unix time)",
            Unit::Seconds,
            m.rotation_next_due.clone(),
        );
        r.register(
            "rotation_last_result",
            "The rotation's last attempt: 1 for the result that holds (rotated, failed, pending, conflict)",
            m.rotation_last_result.clone(),
        );
        r.register(
            "rotations",
            "Rotations whose new value was applied and stored",
            m.rotations.clone(),
        );
        r.register(
            "rotation_failures",
            "Failed rotation attempts by stage: check, apply (nothing changed), store (the value is in use, not stored yet), conflict",
            m.rotation_failures.clone(),
        );
        r.register(
            "rotation_pending",
            "1 while an applied value awaits its store in passbolt (it is kept in the recovery file)",
            m.rotation_pending.clone(),
        );
        r.register(
            "agent_requests",
            "Requests on the local socket (get, env) by result: ok, error (answered: no such value), refused, version, config, malformed, server",
            m.agent_requests.clone(),
        );
        r.register(
            "build",
            "The passbolt-sync build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        for result in [PassResult::Ok, PassResult::Degraded, PassResult::Failed] {
            drop(m.passes.get_or_create(&ResultLabel {
                result: result.as_str().into(),
            }));
        }
        for reason in ["refused", "unreachable"] {
            drop(m.refresh_failures.get_or_create(&ReasonLabel {
                reason: reason.into(),
            }));
        }
        for result in ["applied", "unchanged", "failed"] {
            drop(m.reloads.get_or_create(&ResultLabel {
                result: result.into(),
            }));
        }
        Metrics { registry, ..m }
    }

    /// Counts one request on the local socket; `op` is `get`, `env` or
    /// `unknown`.
    pub fn agent_request(&self, op: &str, result: &str) {
        self.agent_requests
            .get_or_create(&OpResultLabels {
                op: op.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Records one target's outcome in a pass that reached the server.
    pub fn target_done(&self, path: &str, result: TargetResult, changed: bool, hook: HookRun) {
        let label = PathLabel { path: path.into() };
        let now = unix_now();
        self.attempted_at(path, result, now);
        if matches!(result, TargetResult::Current | TargetResult::Removed) {
            self.last_success.get_or_create(&label).set(now);
        }
        if changed {
            self.content_changes.get_or_create(&label).inc();
        }
        if hook != HookRun::None {
            self.hook_runs.get_or_create(&label).inc();
        }
        if hook == HookRun::Failed {
            self.hook_failures.get_or_create(&label).inc();
        }
    }

    /// Records an attempt at a target and its result, nothing else.
    pub fn target_attempted(&self, path: &str, result: TargetResult) {
        self.attempted_at(path, result, unix_now());
    }

    fn attempted_at(&self, path: &str, result: TargetResult, now: f64) {
        let label = PathLabel { path: path.into() };
        self.last_attempt.get_or_create(&label).set(now);
        for r in TargetResult::ALL {
            self.last_result
                .get_or_create(&PathResultLabels {
                    path: path.into(),
                    result: r.as_str().into(),
                })
                .set(i64::from(r == result));
        }
    }

    /// A target of the config: its counters exist from the start, at 0,
    /// so that `rate()` and `increase()` see their first change.
    pub fn know_target(&self, path: &str) {
        let label = PathLabel { path: path.into() };
        // Creating the series is the point; the guards are dropped at once.
        drop(self.content_changes.get_or_create(&label));
        drop(self.hook_runs.get_or_create(&label));
        drop(self.hook_failures.get_or_create(&label));
    }

    /// A target that the config no longer has: its series go away.
    pub fn forget_target(&self, path: &str) {
        let label = PathLabel { path: path.into() };
        self.last_success.remove(&label);
        self.last_attempt.remove(&label);
        self.content_changes.remove(&label);
        self.hook_runs.remove(&label);
        self.hook_failures.remove(&label);
        for r in TargetResult::ALL {
            self.last_result.remove(&PathResultLabels {
                path: path.into(),
                result: r.as_str().into(),
            });
        }
    }

    /// A rotation of the config: its counters exist from the start, at 0.
    pub fn know_rotation(&self, resource: &str, field: &str) {
        let label = rotation_label(resource, field);
        drop(self.rotations.get_or_create(&label));
        drop(self.rotation_pending.get_or_create(&label));
        for stage in ROTATION_STAGES {
            drop(self.rotation_failures.get_or_create(&RotationStageLabels {
                resource: resource.into(),
                field: field.into(),
                stage: stage.into(),
            }));
        }
    }

    /// A rotation the config no longer has: its series go away.
    pub fn forget_rotation(&self, resource: &str, field: &str) {
        let label = rotation_label(resource, field);
        self.rotation_last_success.remove(&label);
        self.rotation_next_due.remove(&label);
        self.rotations.remove(&label);
        self.rotation_pending.remove(&label);
        for stage in ROTATION_STAGES {
            self.rotation_failures.remove(&RotationStageLabels {
                resource: resource.into(),
                field: field.into(),
                stage: stage.into(),
            });
        }
        for r in RotationResult::ALL {
            self.rotation_last_result.remove(&RotationResultLabels {
                resource: resource.into(),
                field: field.into(),
                result: r.as_str().into(),
            });
        }
    }

    /// When the rotation last stored a value, as recorded before a restart.
    pub fn rotation_last_success(&self, resource: &str, field: &str, at: f64) {
        self.rotation_last_success
            .get_or_create(&rotation_label(resource, field))
            .set(at);
    }

    /// When the rotation next falls due (`None`: unknown, the series goes).
    pub fn rotation_next_due(&self, resource: &str, field: &str, at: Option<f64>) {
        let label = rotation_label(resource, field);
        match at {
            Some(at) => {
                self.rotation_next_due.get_or_create(&label).set(at);
            }
            None => {
                self.rotation_next_due.remove(&label);
            }
        }
    }

    /// A rotation attempt ended with `result`; `stage` names where a
    /// failure happened.
    pub fn rotation_attempted(
        &self,
        resource: &str,
        field: &str,
        result: RotationResult,
        stage: Option<&str>,
    ) {
        let label = rotation_label(resource, field);
        for r in RotationResult::ALL {
            self.rotation_last_result
                .get_or_create(&RotationResultLabels {
                    resource: resource.into(),
                    field: field.into(),
                    result: r.as_str().into(),
                })
                .set(i64::from(r == result));
        }
        self.rotation_pending
            .get_or_create(&label)
            .set(i64::from(matches!(
                result,
                RotationResult::Pending | RotationResult::Conflict
            )));
        if result == RotationResult::Rotated {
            self.rotations.get_or_create(&label).inc();
            self.rotation_last_success
                .get_or_create(&label)
                .set(unix_now());
        }
        if let Some(stage) = stage {
            self.rotation_failures
                .get_or_create(&RotationStageLabels {
                    resource: resource.into(),
                    field: field.into(),
                    stage: stage.into(),
                })
                .inc();
        }
    }

    pub fn pass_done(&self, result: PassResult, seconds: f64) {
        self.passes
            .get_or_create(&ResultLabel {
                result: result.as_str().into(),
            })
            .inc();
        self.pass_duration.observe(seconds);
    }

    /// What the client did in a pass: differences of its counters.
    pub fn client_work(&self, work: ClientWork) {
        self.logins.inc_by(work.logins);
        self.refreshes.inc_by(work.refreshes);
        let refused = work.refresh_failures.saturating_sub(work.refresh_outages);
        for (reason, n) in [("refused", refused), ("unreachable", work.refresh_outages)] {
            self.refresh_failures
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(n);
        }
        self.secrets_downloaded.inc_by(work.secrets_downloaded);
        self.private_key_operations
            .inc_by(work.private_key_operations);
    }

    pub fn login_failed(&self, reason: &'static str) {
        self.login_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Whether the server answered: `true` is a contact, even when what it
    /// answered was a refusal.
    pub fn server_answered(&self, answered: bool) {
        self.server_up.set(i64::from(answered));
        if answered {
            self.last_contact.set(unix_now());
            *self.contact.lock().expect("not poisoned") = Some(Instant::now());
        }
    }

    pub fn reloaded(&self, result: &'static str) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    fn refresh_scrape_time(&self) {
        if let Some(t) = *self.contact.lock().expect("not poisoned") {
            self.since_last_contact.set(t.elapsed().as_secs_f64());
        }
    }

    /// The OpenMetrics text, ending with `# EOF`.
    pub fn openmetrics(&self) -> String {
        self.refresh_scrape_time();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The classic Prometheus text format (0.0.4), which node_exporter's
    /// textfile collector reads.
    pub fn text(&self) -> String {
        self.refresh_scrape_time();
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Whether a target's hook ran in a pass, and how it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookRun {
    None,
    Succeeded,
    Failed,
}

/// Client counters accumulated over one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientWork {
    pub logins: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
    /// Of `refresh_failures`, those the server could not answer.
    pub refresh_outages: u64,
    pub secrets_downloaded: u64,
    pub private_key_operations: u64,
}

fn rotation_label(resource: &str, field: &str) -> RotationLabels {
    RotationLabels {
        resource: resource.into(),
        field: field.into(),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("metrics.listen {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Whether the daemon is ready, and why not: `/readyz`'s answer.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Binds `addr` now, so that a taken port fails the start, and serves
/// `/metrics`, `/healthz` and `/readyz` (and a 404 for anything else) on a
/// task of its own until the process ends.
pub async fn listen(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Readiness,
) -> Result<SocketAddr, ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError::Bind { addr, source })?;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move { scrape(&metrics, &headers) }
            }),
        )
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

fn scrape(metrics: &Metrics, headers: &HeaderMap) -> impl IntoResponse + use<> {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            metrics.openmetrics(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            metrics.text(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_failures_are_split_by_reason_and_both_exist_from_the_start() {
        let m = Metrics::new();
        let text = m.text();
        for reason in ["refused", "unreachable"] {
            let line = format!("passbolt_sync_refresh_failures_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "{text}");
        }
        m.client_work(ClientWork {
            refresh_failures: 3,
            refresh_outages: 1,
            ..ClientWork::default()
        });
        let text = m.text();
        assert!(
            text.contains("passbolt_sync_refresh_failures_total{reason=\"refused\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("passbolt_sync_refresh_failures_total{reason=\"unreachable\"} 1"),
            "{text}"
        );
    }
}
