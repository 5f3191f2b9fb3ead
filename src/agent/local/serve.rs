//! The daemon's side of the local socket: it listens beside its instance
//! lock, checks each peer with `SO_PEERCRED`, and answers from its
//! service.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::agent::local::{
    Answer, Ask, Declined, MAX_REQUEST, Outcome, Request, VERSION, WireSecret, socket_path,
};
use crate::agent::service::Service;
use crate::config::{self, EXEC_ENV_KEY, Field, Selector, VarSpec};
use crate::runtime::peer::{PeerPolicy, UnknownGroup};
use crate::sync::LookupError;
use crate::sync::plan::{PlannedEnv, Vars};

/// A peer has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests answered at once; more wait for a slot. Answers wait for the
/// passes anyway: this only bounds the tasks an authorised peer can pile
/// up.
const CONCURRENT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("agent.socket_group: {0}")]
    Group(#[from] UnknownGroup),
    #[error(
        "cannot listen on {}: {source} (agent.socket: false runs the daemon without it)",
        .path.display()
    )]
    Listen { path: PathBuf, source: io::Error },
}

/// The listening socket; closed and removed when dropped.
pub struct LocalSocket {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl LocalSocket {
    /// Listens in `dir` (the instance lock's directory) for `service` of
    /// `run` (or, with `exec`, of `exec`), unless the config says not to.
    pub fn start(
        service: &Arc<Service>,
        dir: &Path,
        agent: &config::Agent,
        exec: bool,
    ) -> Result<Option<LocalSocket>, SocketError> {
        if !agent.listens(exec) {
            return Ok(None);
        }
        let mut policy = PeerPolicy::own_user();
        if let Some(group) = &agent.socket_group {
            policy = policy.with_group(group)?;
        }
        let path = socket_path(dir, service.path());
        let listen_error = |source| SocketError::Listen {
            path: path.clone(),
            source,
        };
        let bound = bind(dir, &path, policy.group())
            .and_then(UnixListener::from_std)
            .map_err(listen_error);
        let listener = match bound {
            Ok(listener) => listener,
            // On by default, it only saves work: a host where it cannot be
            // bound (a path too long for a socket, say) still syncs, and
            // `get` logs in itself. Asked for, it must be there.
            Err(e) if agent.socket.is_none() => {
                tracing::warn!("{e}; get and env log in themselves");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        tracing::info!(socket = %path.display(), "answering get and env on the local socket");
        let accept = tokio::spawn(accept_loop(listener, service.clone(), Arc::new(policy)));
        Ok(Some(LocalSocket { path, accept }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalSocket {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds in a private directory, sets the mode (0600, or 0660 and the
/// group's with a group) and only then renames the socket into place:
/// it is never reachable with the umask's mode. A socket already at
/// `path` is a dead daemon's (the instance lock is held), and is replaced.
fn bind(
    dir: &Path,
    path: &Path,
    group: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    let staging = dir.join(format!(".sock-{}", std::process::id()));
    let _ = std::fs::remove_file(staging.join("s"));
    let _ = std::fs::remove_dir(&staging);
    DirBuilder::new().mode(0o700).create(&staging)?;
    let result = (|| {
        let fresh = staging.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&fresh)?;
        if let Some(gid) = group {
            nix::unistd::chown(&fresh, None, Some(nix::unistd::Gid::from_raw(gid)))?;
        }
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&fresh, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(staging.join("s"));
    let _ = std::fs::remove_dir(&staging);
    if result.is_ok() && group.is_some() {
        // The group's members must reach the socket: search, not listing.
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
        }
    }
    result
}

async fn accept_loop(listener: UnixListener, service: Arc<Service>, policy: Arc<PeerPolicy>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "local socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (service, policy) = (service.clone(), policy.clone());
        tokio::spawn(async move {
            handle(&service, &policy, stream).await;
            drop(slot);
        });
    }
}

/// One connection: check the peer, read its request, answer, close.
async fn handle(service: &Service, policy: &PeerPolicy, mut stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "local socket: no peer credentials; closing");
            return;
        }
    };
    let (uid, gid) = (cred.uid(), cred.gid());
    // Read before any answer, also a refusal: closing on a peer that is
    // still writing would fail its write instead of giving it the reason.
    let request = read_request(&mut stream).await;
    let (op, outcome) = if !policy.allows(uid, gid) {
        tracing::warn!(
            uid,
            gid,
            pid = cred.pid(),
            "local socket: refused a peer that is not root, this user or in agent.socket_group"
        );
        ("unknown", declined(Declined::Refused))
    } else {
        match request {
            Some(request) => (request.ask.op(), answer(service, request).await),
            None => ("unknown", declined(Declined::Malformed)),
        }
    };
    let result = match &outcome {
        Outcome::Ok { .. } => "ok",
        Outcome::Error { .. } => "error",
        Outcome::Declined { reason } => reason.as_str(),
    };
    service.metrics().agent_request(op, result);
    tracing::debug!(op, result, uid, "local socket: answered");
    let answer = Answer {
        version: VERSION,
        outcome,
    };
    let mut line = Zeroizing::new(serde_json::to_vec(&answer).expect("an answer serializes"));
    line.push(b'\n');
    // A peer gone before reading its answer loses only that.
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// The request line, if a whole one of this protocol arrives in time.
async fn read_request(stream: &mut UnixStream) -> Option<Request> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream).take(MAX_REQUEST as u64);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&line).ok()
}

async fn answer(service: &Service, request: Request) -> Outcome {
    if request.version != VERSION {
        return declined(Declined::Version);
    }
    if request.config != service.config_digest() {
        return declined(Declined::Config);
    }
    let (key, vars) = match lookup(service, &request.ask).await {
        Ok(lookup) => lookup,
        Err(outcome) => return outcome,
    };
    match service.fetch(&key, &vars).await {
        Ok(Ok(values)) => Outcome::Ok {
            values: values
                .into_iter()
                .map(|(k, v)| (k, WireSecret(v)))
                .collect(),
        },
        Ok(Err(e)) => Outcome::Error {
            message: LookupError::from(e).to_string(),
            exit_code: 1,
        },
        Err(e) => {
            tracing::debug!(error = %e, "local socket: the server did not answer; the peer logs in itself");
            declined(Declined::Server)
        }
    }
}

/// What to look up for `ask`, named as the command names it in errors.
async fn lookup(service: &Service, ask: &Ask) -> Result<(PathBuf, Vars), Outcome> {
    match ask {
        Ask::Get { selector, field } => {
            let field = field
                .as_deref()
                .map(Field::parse)
                .transpose()
                .map_err(|message| Outcome::Error {
                    message,
                    exit_code: 2,
                })?
                .unwrap_or(Field::Password);
            let spec = VarSpec {
                selector: Selector::from_reference(selector),
                field,
            };
            Ok((PathBuf::from(selector), Vars::one("value", spec)))
        }
        Ask::Env => {
            // `run` plans without the exec environment; `env` asks for it.
            let (config, _, _) = service.snapshot().await;
            let env = PlannedEnv::of(&config).ok_or_else(|| Outcome::Error {
                message: LookupError::NoExecSection.to_string(),
                exit_code: 1,
            })?;
            Ok((PathBuf::from(EXEC_ENV_KEY), env.vars))
        }
    }
}

fn declined(reason: Declined) -> Outcome {
    Outcome::Declined { reason }
}
