//! `passbolt-sync run`: the long-running service.
//!
//! The main loop owns signals, config reloads, systemd notifications and
//! the watchdog: it pings only while no pass has been stuck for longer
//! than `service::STUCK_AFTER`, so a hung daemon is restarted. Passes,
//! schedules and reloads are `crate::agent::service`'s.

use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

use crate::agent::AgentError;
use crate::agent::local::serve::LocalSocket;
use crate::agent::service::{self, Schedules, Service};
use crate::runtime::watch::ConfigWatcher;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(path: PathBuf) -> Result<bool, AgentError> {
    // Before anything else: a second daemon on this config must not log in
    // or write a file. Held until `run` returns.
    let instance = crate::agent::lock::InstanceLock::acquire(&path)?;
    let bytes = std::fs::read(&path).map_err(|source| crate::config::ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let daemon = Service::start(&path, &bytes, false).await?;
    let (config, _, _) = daemon.snapshot().await;
    let socket = LocalSocket::start(&daemon, instance.dir(), &config.agent, false)?;
    let sig = |kind: SignalKind| signal(kind).map_err(AgentError::Signal);
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    let (watcher, mut changes) =
        ConfigWatcher::spawn(path.clone(), &bytes).map_err(|source| AgentError::Watch {
            path: path.clone(),
            source: Box::new(source),
        })?;
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
                if let Some(s) = service::reload(&daemon, &bytes, ready).await {
                    if let Some(old) = schedules.take() { old.stop(); }
                    schedules = Some(s);
                }
            }
            done = &mut startup, if !ready => {
                if !matches!(done, Ok(Some(_))) { break; }
                ready = true;
                let _ = sd_notify::notify(&[NotifyState::Ready]);
                tracing::info!("first sync complete; ready");
                let (config, plan, _) = daemon.snapshot().await;
                schedules = Some(Schedules::spawn(&daemon, &plan, config.splay));
            }
            _ = ping.tick(), if watchdog.is_some() => daemon.feed_watchdog(&mut warned_stuck),
        }
    }

    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    // No peer is answered with a session about to be revoked.
    drop(socket);
    daemon.shutdown(schedules.take()).await;
    drop(watcher);
    tracing::info!("stopped");
    Ok(true)
}
