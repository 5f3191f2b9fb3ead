//! The peer's side: `get` and `env` ask the daemon of their config before
//! logging in themselves.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use crate::agent::local::{Answer, Ask, Declined, Outcome, Request, VERSION, socket_candidates};
use crate::runtime::peer;
use crate::sync::state::sha256_hex;
use passbolt_client::secret::Secret;

/// How long a peer waits for the answer: a daemon in the middle of a pass
/// answers when the pass ends. Past this, the peer logs in itself.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read: the values of an exec environment.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// What the daemon answered.
#[derive(Debug)]
pub enum Answered {
    Values(Vec<(String, Secret)>),
    /// As the command itself would have failed: print and exit.
    Error {
        message: String,
        exit_code: i32,
    },
}

/// Why no daemon answered; the peer then logs in itself.
#[derive(Debug, thiserror::Error)]
pub enum NoAnswer {
    #[error("no daemon listens for this config")]
    NoDaemon,
    #[error("{}: cannot connect: {source}", .path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("{}: the process listening there runs as uid {uid}, neither root nor this user", .path.display())]
    Untrusted { path: PathBuf, uid: u32 },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: no answer within {ANSWER_TIMEOUT:?}", .path.display())]
    Timeout { path: PathBuf },
    #[error("{}: the daemon closed the connection without an answer", .path.display())]
    Gone { path: PathBuf },
    /// Only where: serde's message may quote the answer, values included.
    #[error("{}: not an answer of this protocol (at byte {column} of line {line})", .path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{}: {reason}", .path.display())]
    Declined { path: PathBuf, reason: Declined },
}

/// Asks the daemon of the config at `config_path`, whose file held
/// `config_bytes` when it was loaded.
pub async fn ask(config_path: &Path, config_bytes: &[u8], ask: Ask) -> Result<Answered, NoAnswer> {
    let request = Request {
        version: VERSION,
        config: sha256_hex(config_bytes),
        ask,
    };
    let (path, stream) = connect(config_path).await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange(&path, stream, &request)).await {
        Ok(answer) => answer,
        Err(_) => Err(NoAnswer::Timeout { path }),
    }
}

/// The first candidate socket that accepts, checked to be served by root
/// or this user.
async fn connect(config_path: &Path) -> Result<(PathBuf, UnixStream), NoAnswer> {
    let mut last = NoAnswer::NoDaemon;
    for path in socket_candidates(config_path) {
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            // Nothing there, or a socket left by a daemon that is gone.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(source) => {
                last = NoAnswer::Connect { path, source };
                continue;
            }
        };
        let cred = stream.peer_cred().map_err(|source| NoAnswer::Io {
            path: path.clone(),
            source,
        })?;
        if !peer::trusted_server(cred.uid()) {
            return Err(NoAnswer::Untrusted {
                path,
                uid: cred.uid(),
            });
        }
        return Ok((path, stream));
    }
    Err(last)
}

async fn exchange(
    path: &Path,
    mut stream: UnixStream,
    request: &Request,
) -> Result<Answered, NoAnswer> {
    let io_error = |source| NoAnswer::Io {
        path: path.to_owned(),
        source,
    };
    let mut line = serde_json::to_vec(request).expect("a request serializes");
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io_error)?;
    stream.shutdown().await.map_err(io_error)?;
    let mut buf = Zeroizing::new(Vec::new());
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut buf)
        .await
        .map_err(io_error)?;
    if buf.is_empty() {
        return Err(NoAnswer::Gone {
            path: path.to_owned(),
        });
    }
    let answer: Answer = serde_json::from_slice(&buf).map_err(|e| NoAnswer::Malformed {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
    })?;
    if answer.version != VERSION {
        return Err(NoAnswer::Declined {
            path: path.to_owned(),
            reason: Declined::Version,
        });
    }
    match answer.outcome {
        Outcome::Ok { values } => Ok(Answered::Values(
            values.into_iter().map(|(k, v)| (k, v.0)).collect(),
        )),
        Outcome::Error { message, exit_code } => Ok(Answered::Error { message, exit_code }),
        Outcome::Declined { reason } => Err(NoAnswer::Declined {
            path: path.to_owned(),
            reason,
        }),
    }
}
