//! `passbolt-sync exec`: runs one program with the exec environment in
//! its environment, beside the same passes, schedules and reloads as `run`
//! (`crate::agent::service`), and exits with the program's status.
//!
//! The child starts once the first pass has rendered every variable and
//! brought every file target up to date; nothing starts otherwise. A later
//! pass whose rendered environment differs from the one the child got
//! (values compared, never logged) restarts it, signals it or is only
//! logged, as `exec.on_change` says, after `exec.debounce`. A pass that
//! fails (a server outage) changes nothing for the child. Signals an
//! operator or a container runtime sends are forwarded to the child,
//! except SIGHUP, which reloads this process's own config as in `run`.
//! As PID 1 it also reaps the orphans it inherits.
//!
//! The child is a `crate::runtime::process` child: no passphrase variable, no
//! inherited descriptor, its own process group; here it also keeps this
//! process's stdin, stdout and stderr.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::time::Instant;

use crate::agent::AgentError;
use crate::agent::local::serve::LocalSocket;
use crate::agent::service::{self, EnvUpdate, Schedules, Service};
use crate::config::values::SHELL;
use crate::config::{Config, OnChange};
use crate::runtime::process::{self, Child};
use crate::runtime::watch::ConfigWatcher;
use crate::sync::hooks::HookCommand;
use crate::sync::render::env::Environment;

/// Variables of this process's own supervisor: systemd would take a
/// child's messages on them for ours.
const SUPERVISOR_VARS: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(
        "no command to run: give it after `--` (passbolt-sync exec -c sync.yaml -- COMMAND ...) or as exec.command in the config"
    )]
    NoCommand,
    #[error("exec.command is empty")]
    EmptyCommand,
    #[error("nothing started: the first sync did not bring everything up to date:\n{}", .0.join("\n"))]
    Incomplete(Vec<String>),
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the child: {0}")]
    Wait(#[source] std::io::Error),
    #[error("the first sync did not finish")]
    FirstPass,
    #[error("stopped by {0} before the child was started")]
    Stopped(Signal),
}

impl ExecError {
    /// As a shell reports them: 127 for a program not found, 126 for one
    /// that cannot run, 128+N when stopped by signal N; 2 for a config to
    /// fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Agent(e) => e.exit_code(),
            ExecError::NoCommand | ExecError::EmptyCommand => 2,
            ExecError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            ExecError::Spawn { .. } => 126,
            ExecError::Stopped(sig) => 128 + *sig as i32,
            _ => 1,
        }
    }
}

/// The program and its arguments.
struct Program {
    argv: Vec<OsString>,
}

impl Program {
    fn choose(given: Vec<OsString>, config: &Config) -> Result<Program, ExecError> {
        if !given.is_empty() {
            return Ok(Program { argv: given });
        }
        match config.exec.as_ref().and_then(|e| e.command.as_ref()) {
            None => Err(ExecError::NoCommand),
            Some(HookCommand::Argv(argv)) if argv.is_empty() => Err(ExecError::EmptyCommand),
            Some(HookCommand::Argv(argv)) => Ok(Program {
                argv: argv.iter().map(OsString::from).collect(),
            }),
            Some(HookCommand::Shell(script)) => Ok(Program {
                argv: vec![SHELL.into(), "-c".into(), script.into()],
            }),
        }
    }

    fn name(&self) -> String {
        self.argv[0].to_string_lossy().into_owned()
    }

    /// Starts the program with `env` added to its environment, or in place
    /// of it without `exec.inherit_env`.
    fn start(&self, env: &Environment, inherit_env: bool) -> Result<Child, ExecError> {
        let mut command = process::command(&self.argv[0]);
        command.args(&self.argv[1..]);
        if !inherit_env {
            command.env_clear();
        }
        for name in SUPERVISOR_VARS {
            command.env_remove(name);
        }
        for (name, value) in env.vars() {
            command.env(name, value.expose());
        }
        command
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        process::give_terminal(&mut command);
        Child::spawn(&mut command).map_err(|source| ExecError::Spawn {
            program: self.name(),
            source,
        })
    }
}

/// The signals forwarded to the child.
struct Forwarded {
    term: SignalStream,
    int: SignalStream,
    quit: SignalStream,
    usr1: SignalStream,
    usr2: SignalStream,
    winch: SignalStream,
}

fn install(kind: SignalKind) -> Result<SignalStream, ExecError> {
    signal(kind).map_err(|e| ExecError::Agent(AgentError::Signal(e)))
}

impl Forwarded {
    fn install() -> Result<Forwarded, ExecError> {
        let sig = install;
        Ok(Forwarded {
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
            quit: sig(SignalKind::quit())?,
            usr1: sig(SignalKind::user_defined1())?,
            usr2: sig(SignalKind::user_defined2())?,
            winch: sig(SignalKind::window_change())?,
        })
    }

    /// The next signal to forward to the child.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.quit.recv() => Signal::SIGQUIT,
            _ = self.usr1.recv() => Signal::SIGUSR1,
            _ = self.usr2.recv() => Signal::SIGUSR2,
            _ = self.winch.recv() => Signal::SIGWINCH,
        }
    }
}

/// The next SIGCHLD, when there is a stream for it (as PID 1).
async fn next_sigchld(stream: &mut Option<SignalStream>) {
    match stream {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// What the main loop is doing.
enum State {
    /// The first pass is running; nothing is started yet.
    Starting(tokio::task::JoinHandle<Option<crate::sync::PassReport>>),
    /// The child runs with `env`; a change seen at `pending` is acted on
    /// `debounce` later.
    Running {
        // Boxed: a child is much larger than a join handle.
        child: Box<Child>,
        env: Arc<Environment>,
        pending: Option<Instant>,
    },
}

/// Runs `command` (or `exec.command`) under the config at `path`; returns
/// the child's exit status (128+N for signal N).
pub async fn run(path: PathBuf, command: Vec<OsString>) -> Result<i32, ExecError> {
    // One process per config, as `run`: exec writes the same targets.
    let instance = crate::agent::lock::InstanceLock::acquire(&path).map_err(AgentError::from)?;
    let bytes = std::fs::read(&path).map_err(|source| {
        AgentError::from(crate::config::ConfigError::Read {
            path: path.clone(),
            source,
        })
    })?;
    let service = Service::start(&path, &bytes, true).await?;
    let (config, _, _) = service.snapshot().await;
    let socket = LocalSocket::start(&service, instance.dir(), &config.agent, true)
        .map_err(AgentError::from)?;
    let program = Program::choose(command, &config)?;
    let reaper = nix::unistd::getpid().as_raw() == 1;
    let mut forwarded = Forwarded::install()?;
    let mut hup = install(SignalKind::hangup())?;
    // Only as PID 1, which inherits every orphan of its namespace.
    let mut sigchld = reaper.then(|| install(SignalKind::child())).transpose()?;
    let (watcher, mut changes) =
        ConfigWatcher::spawn(path.clone(), &bytes).map_err(|source| AgentError::Watch {
            path: path.clone(),
            source: Box::new(source),
        })?;
    tracing::info!(config = %path.display(), program = %program.name(), pid1 = reaper, "passbolt-sync exec starting");

    let mut env_updates = service.watch_env();
    let first = service.clone();
    let mut state = State::Starting(tokio::spawn(
        async move { first.pass_with_retry(None).await },
    ));
    let mut schedules: Option<Schedules> = None;
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping =
        tokio::time::interval(watchdog.map(|d| d / 2).unwrap_or(Duration::from_secs(3600)));
    let mut warned_stuck = false;

    let outcome: Result<i32, ExecError> = loop {
        let pending = match &state {
            State::Running { pending, .. } => *pending,
            State::Starting(_) => None,
        };
        tokio::select! {
            sig = forwarded.next() => match &state {
                State::Running { child, .. } => {
                    tracing::info!("{sig}: forwarded to the child");
                    let _ = child.signal(sig);
                }
                State::Starting(_) if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) => {
                    tracing::info!("{sig}: stopping before the child was started");
                    break Err(ExecError::Stopped(sig));
                }
                State::Starting(_) => tracing::debug!("{sig}: no child to forward it to yet"),
            },
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading the config");
                watcher.force_check();
            }
            _ = next_sigchld(&mut sigchld) => {
                let reaped = process::reap_orphans();
                if reaped > 0 {
                    tracing::debug!(reaped, "reaped orphaned processes");
                }
            }
            Some(bytes) = changes.recv() => {
                let ready = matches!(state, State::Running { .. });
                if let Some(s) = service::reload(&service, &bytes, ready).await {
                    if let Some(old) = schedules.take() { old.stop(); }
                    schedules = Some(s);
                }
            }
            event = next_event(&mut state) => match event {
                Event::FirstPass(done) => {
                    let env = env_updates.borrow_and_update().clone();
                    match start_first(&service, &program, *done, env).await {
                        Ok((running, s)) => {
                            state = running;
                            schedules = Some(s);
                        }
                        Err(e) => break Err(e),
                    }
                }
                Event::Exited(status) => break exit_status(status),
            },
            Ok(()) = env_updates.changed() => {
                let update = env_updates.borrow_and_update().clone();
                if let State::Running { env, pending, .. } = &mut state {
                    note_update(update, env, pending, &service).await;
                }
            }
            _ = sleep_until(pending) => {
                let (config, _, _) = service.snapshot().await;
                let latest = env_updates.borrow().clone();
                if let Err(e) = apply_change(&mut state, latest, &config, &program).await {
                    break Err(e);
                }
            }
            _ = ping.tick(), if watchdog.is_some() => service.feed_watchdog(&mut warned_stuck),
        }
    };

    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    if let State::Starting(first) = &state {
        first.abort();
    }
    // A child still running here (an error above) is killed with its
    // group when `state` is dropped.
    drop(state);
    // No peer is answered with a session about to be revoked.
    drop(socket);
    service.shutdown(schedules.take()).await;
    drop(watcher);
    tracing::info!("stopped");
    outcome
}

/// After the first pass: starts the child when the pass brought
/// everything up to date, then READY and the schedules.
async fn start_first(
    service: &Arc<Service>,
    program: &Program,
    done: Result<Option<crate::sync::PassReport>, tokio::task::JoinError>,
    env: Option<EnvUpdate>,
) -> Result<(State, Schedules), ExecError> {
    let Ok(Some(report)) = done else {
        // The service stopped, or the pass panicked.
        return Err(ExecError::FirstPass);
    };
    let env = first_environment(&report, &env)?;
    let (config, plan, _) = service.snapshot().await;
    let inherit = config.exec.as_ref().is_none_or(|e| e.inherit_env);
    let child = program.start(&env, inherit)?;
    tracing::info!(
        pid = child.pid().map(|p| p.as_raw()),
        variables = %names(&env),
        "child started: the first sync is complete"
    );
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    let schedules = Schedules::spawn(service, &plan, config.splay);
    let running = State::Running {
        child: Box::new(child),
        env,
        pending: None,
    };
    Ok((running, schedules))
}

fn exit_status(status: std::io::Result<std::process::ExitStatus>) -> Result<i32, ExecError> {
    let status = status.map_err(ExecError::Wait)?;
    let code = process::exit_code(status);
    tracing::info!(status = code, "the child exited; stopping");
    Ok(code)
}

/// What ends a state: the first pass, or the child's exit.
enum Event {
    FirstPass(Box<Result<Option<crate::sync::PassReport>, tokio::task::JoinError>>),
    Exited(std::io::Result<std::process::ExitStatus>),
}

async fn next_event(state: &mut State) -> Event {
    match state {
        State::Starting(handle) => Event::FirstPass(Box::new(handle.await)),
        State::Running { child, .. } => Event::Exited(child.wait().await),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn names(env: &Environment) -> String {
    env.names().collect::<Vec<_>>().join(", ")
}

/// The environment of the first child: the first pass must have brought
/// every file target up to date and rendered every variable.
fn first_environment(
    report: &crate::sync::PassReport,
    env: &Option<EnvUpdate>,
) -> Result<Arc<Environment>, ExecError> {
    let mut problems: Vec<String> = report
        .targets
        .iter()
        .filter_map(|t| match (&t.status, &t.hook) {
            (crate::sync::Status::Failed(e) | crate::sync::Status::Kept(e), _) => {
                Some(e.to_string())
            }
            (_, Some(h)) => Some(h.to_string()),
            _ => None,
        })
        .collect();
    let env = match env.as_deref() {
        // No `exec:` section: the child gets no variables of ours.
        None => Some(Environment::default()),
        Some(Ok(env)) => Some(env.clone()),
        Some(Err(e)) => {
            problems.push(e.to_string());
            None
        }
    };
    match env {
        Some(env) if problems.is_empty() => Ok(Arc::new(env)),
        _ => Err(ExecError::Incomplete(problems)),
    }
}

/// A pass rendered the environment again: a change starts the debounce
/// window; a failure leaves the child as it is.
async fn note_update(
    update: Option<EnvUpdate>,
    current: &Environment,
    pending: &mut Option<Instant>,
    service: &Service,
) {
    match update.as_deref() {
        None => {}
        Some(Err(_)) => tracing::warn!(
            "the exec environment could not be rendered (see above); the child keeps running with its environment"
        ),
        Some(Ok(new)) if new != current && pending.is_none() => {
            let (config, _, _) = service.snapshot().await;
            let debounce = config.exec.as_ref().map(|e| e.debounce).unwrap_or_default();
            tracing::debug!(changed = %current.changed(new).join(", "), ?debounce, "the exec environment changed; acting after the debounce window");
            *pending = Some(Instant::now() + debounce);
        }
        Some(Ok(_)) => {}
    }
}

/// The debounce window of a change is over: acts on the latest rendered
/// environment if it still differs from the child's.
async fn apply_change(
    state: &mut State,
    latest: Option<EnvUpdate>,
    config: &Config,
    program: &Program,
) -> Result<(), ExecError> {
    let State::Running {
        child,
        env,
        pending,
    } = state
    else {
        return Ok(());
    };
    *pending = None;
    let Some(Ok(new)) = latest.as_deref() else {
        return Ok(());
    };
    let changed = env.changed(new);
    if changed.is_empty() {
        return Ok(());
    }
    let changed = changed.join(", ");
    let Some(exec) = &config.exec else {
        return Ok(());
    };
    match exec.on_change {
        OnChange::Restart => {
            tracing::info!(variables = %changed, "restarting the child: its variables changed");
            let stopped = child
                .stop(exec.stop_signal, exec.stop_timeout)
                .await
                .map_err(ExecError::Wait)?;
            if stopped.killed {
                tracing::warn!(
                    timeout = ?exec.stop_timeout,
                    "the child outlived {} and was killed", exec.stop_signal
                );
            }
            let next = program.start(new, exec.inherit_env)?;
            tracing::info!(
                pid = next.pid().map(|p| p.as_raw()),
                variables = %changed,
                "child restarted with the new values"
            );
            **child = next;
        }
        OnChange::Signal => {
            tracing::info!(variables = %changed, "sending {} to the child: its variables changed", exec.signal);
            let _ = child.signal(exec.signal);
        }
        OnChange::None => tracing::info!(
            variables = %changed,
            "variables changed; on_change: none, so the child keeps its environment"
        ),
    }
    *env = Arc::new(new.clone());
    Ok(())
}
