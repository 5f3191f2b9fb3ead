//! The daemon's rotations: when each `rotate:` entry is checked, and what
//! happens around the rotation step (`crate::sync::rotate`).
//!
//! One task per config generation checks every entry at each tick of the
//! config's schedule and at the time the earliest one falls due; an
//! `every`-only entry whose due time is known costs no request before it. A check
//! and the steps up to putting the new value in use run under the pass
//! lock, one at a time with passes, so that no pass renders passbolt's old
//! value between `apply` and the render. The store then runs outside it
//! and, while the server cannot be reached, is tried again with backoff
//! until passbolt holds the value; any other store failure is tried again
//! at the next check. Values awaiting their store are read from their
//! recovery files before the first pass of the daemon, so that a restart
//! never renders the old value over one in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{MutexGuard, watch};

use crate::agent::metrics::RotationResult;
use crate::agent::service::Service;
use crate::config::{Config, Rotate};
use crate::runtime::backoff::Backoff;
use crate::runtime::schedule::Schedule;
use crate::sync::held::Held;
use crate::sync::plan::Plan;
use crate::sync::rotate::history::History;
use crate::sync::rotate::recovery::{Pending, Phase, Recovery};
use crate::sync::rotate::{self, Begun, RotateError, RotateErrorKind, Stage};
use crate::sync::state;
use passbolt_client::Client;

/// Longest single sleep of the driver: the monotonic clock stands still
/// while the machine sleeps; waking this often notices it.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What the daemon knows of each rotation between checks, by key.
#[derive(Default)]
pub struct Runs {
    runs: HashMap<String, Run>,
}

#[derive(Default)]
struct Run {
    /// Applied (or being applied) and not stored yet.
    pending: Option<Pending>,
    /// The store was refused: someone else changed the resource. Ends
    /// when the operator removes the recovery file.
    conflict: bool,
    /// This host's last rotation of it.
    last: Option<DateTime<Utc>>,
    /// When the last check found it next due, and for which entry (a
    /// reload may change `every`).
    next_due: Option<(DateTime<Utc>, Rotate)>,
}

impl Run {
    /// An `every`-only rotation whose due time is known and ahead needs no
    /// request until then: a secret changed by hand meanwhile only makes
    /// the check at that time find it not due yet.
    fn known_ahead(&self, r: &Rotate, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.next_due {
            Some((at, checked)) if !r.when_expired && checked == r && *at > now => Some(*at),
            _ => None,
        }
    }
}

/// Where a config keeps its recovery files and rotation history: the
/// state directory, for the config's server and account.
fn stores(config: &Config) -> Option<(Recovery, History)> {
    let dir = state::dir(config.state_dir.as_deref())?;
    let (server, user) = (&config.server.url, &config.auth.user_id);
    Some((
        Recovery::new(&dir, server, user),
        History::new(&dir, server, user),
    ))
}

/// Before the first pass: the recorded last rotations, and the values of
/// recovery files whose `apply` succeeded, put in use so that the first
/// pass renders them, not passbolt's old ones.
pub async fn load(service: &Service) {
    let (config, _, _) = service.snapshot().await;
    let Some((recovery, history)) = stores(&config) else {
        return;
    };
    let recorded = history.load();
    let mut runs = service.rotation_runs().lock().await;
    let mut held = service.held().lock().await;
    for r in &config.rotate {
        let run = runs.runs.entry(r.key()).or_default();
        if let Some(at) = recorded.get(&r.key()) {
            run.last = Some(*at);
            service.observer().rotation_recorded(r, *at);
        }
        match recovery.load(r) {
            Ok(Some(p)) => {
                tracing::warn!(rotation = %r.key(), file = %recovery.path(r).display(),
                    phase = ?p.phase, "a rotated value awaits its store; finishing it");
                if p.phase == Phase::Applied {
                    held.set_pending(&p.resource_id, &p.field, p.new.clone());
                }
                run.pending = Some(p);
            }
            Ok(None) => {}
            // Reported at the first check, which waits for the file.
            Err(e) => tracing::error!(rotation = %r.key(), error = %e, "recovery file not usable"),
        }
    }
    warn_strays(&recovery, &config.rotate);
}

fn warn_strays(recovery: &Recovery, rotations: &[Rotate]) {
    for file in recovery.strays(rotations) {
        tracing::warn!(file = %file.display(),
            "a recovery file of no configured rotation: its value is not stored by this daemon; store it with `passbolt-sync set` and remove the file");
    }
}

/// Checks every rotation of the current config, rotating those that are
/// due; returns the earliest time one next falls due.
pub async fn check_all(service: &Service) -> Option<DateTime<Utc>> {
    let (config, plan, client) = service.snapshot().await;
    let (recovery, history) = stores(&config)?;
    let mut runs = service.rotation_runs().lock().await;
    end_removed(service, &mut runs, &config).await;
    let mut next: Option<DateTime<Utc>> = None;
    for r in &config.rotate {
        let run = runs.runs.entry(r.key()).or_default();
        let ctx = Ctx {
            service,
            plan: &plan,
            client: &client,
            recovery: &recovery,
            history: &history,
            r,
        };
        if let Some(at) = ctx.check(run).await {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    next
}

/// Rotations the config no longer has: a value of theirs in use no longer
/// wins over passbolt's (its recovery file stays, and is warned about).
async fn end_removed(service: &Service, runs: &mut Runs, config: &Config) {
    let keep: Vec<String> = config.rotate.iter().map(Rotate::key).collect();
    let gone: Vec<String> = runs
        .runs
        .keys()
        .filter(|k| !keep.contains(k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(p) = runs.runs.remove(&key).and_then(|r| r.pending) {
            service
                .held()
                .lock()
                .await
                .end_pending(&p.resource_id, &p.field);
            tracing::warn!(rotation = %key, "a rotation with a value awaiting its store left the config; its recovery file stays");
        }
    }
}

/// One rotation's check, with what it needs.
struct Ctx<'a> {
    service: &'a Service,
    plan: &'a Plan,
    client: &'a Client,
    recovery: &'a Recovery,
    history: &'a History,
    r: &'a Rotate,
}

impl Ctx<'_> {
    async fn check(&self, run: &mut Run) -> Option<DateTime<Utc>> {
        if run.pending.is_none() {
            match self.recovery.load(self.r) {
                Ok(p) => run.pending = p,
                Err(e) => {
                    // Never overwritten: it may hold the only copy of a value.
                    return self
                        .failed(RotationResult::Failed, self.error(e.into()))
                        .await;
                }
            }
        }
        if let Some(p) = run.pending.clone() {
            return self.finish(run, p).await;
        }
        if let Some(at) = run.known_ahead(self.r, Utc::now()) {
            return Some(at);
        }
        run.next_due = None;
        let held = self.service.held().lock().await;
        match rotate::begin(self.client, self.r, self.recovery, run.last).await {
            Ok(Begun::NotDue(due)) => {
                drop(held);
                run.next_due = due.next.map(|at| (at, self.r.clone()));
                self.service
                    .observer()
                    .rotation_due_at(self.r, due.next)
                    .await;
                due.next
            }
            Ok(Begun::Applied(p)) => {
                self.put_in_use(held, &p).await;
                run.pending = Some(p.clone());
                self.store(run, p).await
            }
            Err(e) => {
                drop(held);
                self.failed(RotationResult::Failed, e).await
            }
        }
    }

    /// Puts `p` in use (`rotate::put_in_use`), releases what the passes
    /// hold, and books the targets it rendered.
    async fn put_in_use(&self, mut held: MutexGuard<'_, Held>, p: &Pending) {
        let report = rotate::put_in_use(self.plan, &mut held, p).await;
        drop(held);
        self.service
            .observer()
            .targets_rendered(self.plan, &report)
            .await;
    }

    /// A value applied (or being applied) and not stored: the conflict
    /// waits for the operator; `apply` runs again if it never finished;
    /// then the store.
    async fn finish(&self, run: &mut Run, p: Pending) -> Option<DateTime<Utc>> {
        if run.conflict {
            if self.recovery.exists(self.r) {
                return None;
            }
            run.conflict = false;
            run.pending = None;
            self.service
                .held()
                .lock()
                .await
                .end_pending(&self.r.resource, &self.r.field);
            tracing::info!(rotation = %self.r.key(), "the recovery file was removed: the conflict is over, passbolt's value is used again and the rotation follows its schedule");
            return None;
        }
        let p = {
            let held = self.service.held().lock().await;
            let p = match rotate::reapply(self.r, self.recovery, p).await {
                Ok(p) => p,
                Err(e) => {
                    drop(held);
                    return self.failed(RotationResult::Pending, e).await;
                }
            };
            if held.pending(&p.resource_id, &p.field).is_none() {
                self.put_in_use(held, &p).await;
            }
            p
        };
        run.pending = Some(p.clone());
        self.store(run, p).await
    }

    /// Stores `p`, trying again with backoff while the server cannot be
    /// reached.
    async fn store(&self, run: &mut Run, p: Pending) -> Option<DateTime<Utc>> {
        let (initial, max) = crate::agent::service::backoff_bounds();
        let mut backoff = Backoff::new(initial, max);
        let mut stop = self.service.stopping();
        loop {
            let e = match rotate::store(self.client, self.r, self.recovery, &p).await {
                Ok(written) => return self.stored(run, written).await,
                Err(e) => e,
            };
            if e.stage() == Stage::Conflict {
                run.conflict = true;
                return self.failed(RotationResult::Conflict, e).await;
            }
            if !e.is_outage() {
                return self.failed(RotationResult::Pending, e).await;
            }
            if backoff.attempts() == 0 {
                tracing::warn!(rotation = %self.r.key(), error = %e,
                    "the rotated value is in use but not stored yet; it stays in the recovery file, retrying with backoff");
            }
            self.service
                .observer()
                .rotation_ended(self.r, RotationResult::Pending, Some(&e))
                .await;
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return None,
            }
        }
    }

    async fn stored(
        &self,
        run: &mut Run,
        written: Option<passbolt_client::write::Written>,
    ) -> Option<DateTime<Utc>> {
        let now = Utc::now();
        self.service
            .held()
            .lock()
            .await
            .end_pending(&self.r.resource, &self.r.field);
        run.pending = None;
        run.last = Some(now);
        if let Err(e) = self.history.record(&self.r.key(), now) {
            tracing::warn!(error = %e, "rotation history not saved; the server's stamps still decide");
        }
        tracing::info!(
            rotation = %self.r.key(),
            recipients = written.map(|w| w.recipients.len()),
            "rotated: the new value is applied and stored in passbolt"
        );
        let observer = self.service.observer();
        observer
            .rotation_ended(self.r, RotationResult::Rotated, None)
            .await;
        let next = self
            .r
            .every
            .and_then(|e| TimeDelta::from_std(e).ok())
            .map(|e| now + e);
        run.next_due = next.map(|at| (at, self.r.clone()));
        observer.rotation_due_at(self.r, next).await;
        next
    }

    fn error(&self, kind: RotateErrorKind) -> RotateError {
        RotateError {
            rotation: self.r.to_string(),
            kind,
        }
    }

    async fn failed(&self, result: RotationResult, e: RotateError) -> Option<DateTime<Utc>> {
        tracing::error!(error = %e, "rotation failed");
        self.service
            .observer()
            .rotation_ended(self.r, result, Some(&e))
            .await;
        None
    }
}

/// Runs the checks of one config generation until `stop`: one at once,
/// then at each tick of `schedule` and when a rotation falls due.
pub fn spawn(service: &Arc<Service>, schedule: Schedule, mut stop: watch::Receiver<bool>) {
    let service = service.clone();
    tokio::spawn(async move {
        let mut wake = Utc::now();
        loop {
            if Utc::now() >= wake {
                let due = check_all(&service).await;
                let now = Utc::now();
                let tick = schedule.next_after(now);
                wake = [due, tick]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(now + TimeDelta::minutes(5));
            }
            let sleep = (wake - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => return,
            }
        }
    });
}
