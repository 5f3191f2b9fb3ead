//! The `apply` command of a rotation: the child that puts a new value in
//! place (changes a database user's password, reloads a service).
//!
//! It runs under the hooks' rules (`crate::runtime::process`: its own
//! process group, killed as a whole on timeout; this process's environment
//! minus its secrets; no inherited descriptor) and gets the old and the
//! new value as one JSON object on its stdin, never in its arguments or
//! environment, which other users can read in `/proc`. Its stdout and
//! stderr are read and thrown away, only their sizes logged: a script
//! that echoes its input would otherwise put both values in the journal.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::config::{Apply, Field};
use crate::runtime::process::{self, WaitError};
use crate::sync::hooks;
use passbolt_client::secret::Secret;

/// The version of the JSON `apply` reads.
pub const INPUT_VERSION: u32 = 1;

/// Variables `apply` gets besides the daemon's environment: what is being
/// rotated, never a value.
pub const RESOURCE_ENV: &str = "PASSBOLT_SYNC_RESOURCE_ID";
pub const FIELD_ENV: &str = "PASSBOLT_SYNC_FIELD";

/// What `apply` is told.
pub struct ApplyInput<'a> {
    pub resource_id: &'a str,
    pub field: &'a Field,
    /// `None` when the field had no value.
    pub old: Option<&'a Secret>,
    pub new: &'a Secret,
    /// Run again after the daemon stopped during an earlier run with the
    /// same values, whose outcome it never learnt.
    pub resumed: bool,
}

#[derive(Serialize)]
struct Wire<'a> {
    version: u32,
    resource_id: &'a str,
    field: String,
    old: Option<&'a str>,
    new: &'a str,
    resumed: bool,
}

impl ApplyInput<'_> {
    /// The JSON on `apply`'s stdin, in a buffer wiped when dropped.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(256));
        let wire = Wire {
            version: INPUT_VERSION,
            resource_id: self.resource_id,
            field: self.field.to_string(),
            old: self.old.map(Secret::expose),
            new: self.new.expose(),
            resumed: self.resumed,
        };
        serde_json::to_writer(&mut *out, &wire).expect("serializes");
        out.push(b'\n');
        out
    }
}

/// Why `apply` did not succeed. No variant carries its output or input.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot start apply program {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for apply: {0}")]
    Wait(#[source] std::io::Error),
    #[error("apply timed out after {0:?}; its process group was killed")]
    TimedOut(Duration),
    #[error("apply failed: {}", process::describe(.0))]
    Failed(ExitStatus),
}

/// Runs `apply` with `input` on its stdin; `Ok` once it exited 0.
pub async fn run(apply: &Apply, input: &ApplyInput<'_>) -> Result<Duration, ApplyError> {
    let mut command = hooks::command(&apply.command).expect("checked when the config is read");
    command
        .env(RESOURCE_ENV, input.resource_id)
        .env(FIELD_ENV, input.field.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = process::Child::spawn(&mut command).map_err(|source| ApplyError::Spawn {
        program: apply.command.program().to_owned(),
        source,
    })?;
    let json = input.to_json();
    let stdin = child.take_stdin();
    let feed = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A child that exits without reading is judged by its status.
            let _ = stdin.write_all(&json).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stdout = tokio::spawn(count(child.take_stdout()));
    let stderr = tokio::spawn(count(child.take_stderr()));
    let waited = child.wait_or_kill(apply.timeout).await;
    feed.abort();
    log_output(stdout, stderr).await;
    match waited {
        Ok(status) if status.success() => Ok(started.elapsed()),
        Ok(status) => Err(ApplyError::Failed(status)),
        Err(WaitError::TimedOut(after)) => Err(ApplyError::TimedOut(after)),
        Err(WaitError::Io(e)) => Err(ApplyError::Wait(e)),
    }
}

/// Reads a stream to its end and counts its bytes, keeping none.
async fn count<R: AsyncRead + Unpin>(stream: Option<R>) -> u64 {
    let Some(mut stream) = stream else { return 0 };
    let mut chunk = Zeroizing::new([0u8; 8192]);
    let mut total = 0u64;
    loop {
        match stream.read(&mut chunk[..]).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

async fn log_output(stdout: tokio::task::JoinHandle<u64>, stderr: tokio::task::JoinHandle<u64>) {
    let deadline = tokio::time::Instant::now() + hooks::DRAIN_GRACE;
    let mut sizes = [None, None];
    for (slot, handle) in sizes.iter_mut().zip([stdout, stderr]) {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(n)) => *slot = Some(n),
            Ok(Err(_)) => {}
            // A child left behind still holds the pipe; stop reading.
            Err(_) => abort.abort(),
        }
    }
    if sizes.iter().flatten().any(|n| *n > 0) {
        tracing::debug!(
            stdout_bytes = sizes[0],
            stderr_bytes = sizes[1],
            "apply output discarded unread: it may echo the values"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_one_json_line() {
        let (old, new) = (Secret::new("o\"ld"), Secret::new("n\\ew"));
        let input = ApplyInput {
            resource_id: "9f1c5d3e-0000-4000-8000-000000000001",
            field: &Field::Custom("api key".into()),
            old: Some(&old),
            new: &new,
            resumed: false,
        };
        let json = input.to_json();
        assert!(json.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": 1, "resource_id": "9f1c5d3e-0000-4000-8000-000000000001",
                "field": "custom:api key", "old": "o\"ld", "new": "n\\ew", "resumed": false})
        );
    }
}
