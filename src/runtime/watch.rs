//! Live reload: reports when the content of the config file changes.
//!
//! The watch is on the file's parent directory, not on the file. Editors,
//! `sed -i` and configuration management replace a file by writing a new one
//! and renaming it over the old, which silently ends a watch on the old
//! inode; a Kubernetes ConfigMap update does not touch the config path at
//! all, it only swaps the `..data` symlink next to it. So any event in the
//! directory (except plain reads, which our own reads would cause) triggers
//! a re-read through the symlinks, and only a real content change is passed
//! on. When the config path is a symlink into another directory, that
//! directory is watched too so in-place edits of the target are noticed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::{Notify, mpsc};

/// Quiet time before a burst of events is acted on; long enough to cover a
/// multi-step replace, short enough that a reload feels immediate.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Changes queue here when the daemon is busy applying an earlier one.
const CHANNEL_CAPACITY: usize = 8;

type DirWatcher = Debouncer<RecommendedWatcher, RecommendedCache>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("config path {path:?} does not name a file")]
    NotAFile { path: PathBuf },

    #[error("cannot make config path {path:?} absolute: {source}")]
    Absolute {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot start the file watcher: {source}")]
    Start {
        #[source]
        source: notify::Error,
    },

    #[error("cannot watch directory {dir:?} for changes to {path:?}: {source}")]
    WatchDir {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: notify::Error,
    },

    #[error("the config watcher must be started from within a tokio runtime")]
    NoRuntime,
}

/// Handle of a running watcher. Dropping it stops watching and closes the
/// change channel.
#[derive(Debug)]
pub struct ConfigWatcher {
    path: PathBuf,
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl ConfigWatcher {
    /// Starts watching `path`, whose current content the caller has already
    /// loaded as `initial`. The receiver yields the complete new content each
    /// time it differs from what was last seen. Must be called within a
    /// tokio runtime.
    ///
    /// The file is read once more (blocking, before this returns) after the
    /// watch is in place, so a change made between the caller's read and the
    /// start of the watch is not lost.
    pub fn spawn(
        path: PathBuf,
        initial: &[u8],
    ) -> Result<(ConfigWatcher, mpsc::Receiver<Vec<u8>>), WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let path = std::path::absolute(&path).map_err(|source| WatchError::Absolute {
            path: path.clone(),
            source,
        })?;
        let dir = match (path.parent(), path.file_name()) {
            (Some(dir), Some(_)) => dir.to_path_buf(),
            _ => return Err(WatchError::NotAFile { path }),
        };

        let kick = Arc::new(Notify::new());
        let dir_canonical = std::fs::canonicalize(&dir).ok();
        let target_dir = target_dir(&path, dir_canonical.as_deref());
        let watcher = build_watcher(&path, &dir, target_dir.as_deref(), &kick)?;
        tracing::debug!(path = %path.display(), dir = %dir.display(),
            target_dir = ?target_dir, "watching config directory");

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut last = initial.to_vec();
        // Read once now that the watch is in place, so a change made between
        // the caller's read and this point is reported rather than lost.
        match std::fs::read(&path) {
            Ok(content) if content != last => {
                tracing::debug!(path = %path.display(), "config changed before the watch started");
                last.clone_from(&content);
                // The channel is new and empty, so there is room.
                let _ = tx.try_send(content);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(path = %path.display(), error = %err, "config not readable yet, waiting for changes");
            }
        }
        let worker = Worker {
            path: path.clone(),
            dir,
            dir_canonical,
            target_dir,
            last,
            kick: Arc::clone(&kick),
            tx,
            _watcher: watcher,
        };
        let task = runtime.spawn(worker.run());
        Ok((ConfigWatcher { path, kick, task }, rx))
    }

    /// Re-reads the file now even if no event was seen (for SIGHUP). A
    /// change is reported through the channel as usual; identical content is
    /// not.
    pub fn force_check(&self) {
        self.kick.notify_one();
    }

    /// The absolute config path being watched.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Worker {
    path: PathBuf,
    dir: PathBuf,
    dir_canonical: Option<PathBuf>,
    /// Extra directory watched because the config resolves into it.
    target_dir: Option<PathBuf>,
    last: Vec<u8>,
    kick: Arc<Notify>,
    tx: mpsc::Sender<Vec<u8>>,
    /// Kept only so the watch lives as long as the worker.
    _watcher: DirWatcher,
}

impl Worker {
    async fn run(mut self) {
        loop {
            tokio::select! {
                () = self.kick.notified() => {}
                () = self.tx.closed() => return,
            }
            if !self.check().await {
                return;
            }
        }
    }

    /// Returns `false` once nobody listens any more.
    async fn check(&mut self) -> bool {
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            Ok(Ok(content)) if content == self.last => {
                tracing::debug!(path = %self.path.display(), "config content unchanged");
            }
            Ok(Ok(content)) => {
                tracing::debug!(path = %self.path.display(), bytes = content.len(), "config content changed");
                self.last.clone_from(&content);
                if self.tx.send(content).await.is_err() {
                    return false;
                }
            }
            Ok(Err(err)) if err.kind() == io::ErrorKind::NotFound => {
                // Normal in the middle of a delete-and-recreate or symlink
                // swap; the step that completes it produces another event.
                tracing::debug!(path = %self.path.display(), "config file missing, waiting for it to reappear");
            }
            Ok(Err(err)) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot read config file, keeping the current config");
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "config read task failed");
            }
        }
        self.follow_target();
        true
    }

    /// Re-targets the extra watch when the config symlink now resolves into
    /// a different directory (every ConfigMap update does this). The watcher
    /// is rebuilt rather than adjusted: the old target directory is usually
    /// gone already, and unwatching a vanished directory fails halfway.
    fn follow_target(&mut self) {
        let wanted = target_dir(&self.path, self.dir_canonical.as_deref());
        if wanted == self.target_dir {
            return;
        }
        match build_watcher(&self.path, &self.dir, wanted.as_deref(), &self.kick) {
            Ok(watcher) => {
                tracing::debug!(path = %self.path.display(), target_dir = ?wanted, "config symlink target moved, watch updated");
                self._watcher = watcher;
                self.target_dir = wanted;
                // Anything that happened while no watcher existed is caught
                // by one more read.
                self.kick.notify_one();
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot update config watch, keeping the old one");
            }
        }
    }
}

/// The directory the config resolves into, when that is not `dir` itself.
fn target_dir(path: &Path, dir_canonical: Option<&Path>) -> Option<PathBuf> {
    let resolved = std::fs::canonicalize(path).ok()?;
    let parent = resolved.parent()?;
    (Some(parent) != dir_canonical).then(|| parent.to_path_buf())
}

fn build_watcher(
    path: &Path,
    dir: &Path,
    target_dir: Option<&Path>,
    kick: &Arc<Notify>,
) -> Result<DirWatcher, WatchError> {
    let handler_kick = Arc::clone(kick);
    let mut watcher = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        on_events(result, &handler_kick);
    })
    .map_err(|source| WatchError::Start { source })?;

    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::WatchDir {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            source,
        })?;
    if let Some(target_dir) = target_dir {
        // The main directory watch already covers renames and symlink swaps;
        // this one only adds in-place edits of the target, so failing it is
        // not fatal.
        if let Err(err) = watcher.watch(target_dir, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %target_dir.display(), error = %err, "cannot watch config symlink target directory");
        }
    }
    Ok(watcher)
}

/// Runs on the debouncer's thread: only wakes the worker, which does the
/// reading on the runtime.
fn on_events(result: DebounceEventResult, kick: &Notify) {
    match result {
        Ok(events) => {
            let mut relevant = false;
            for event in events.iter().filter(|event| !is_read_only(event.kind)) {
                tracing::debug!(kind = ?event.kind, paths = ?event.paths, "config directory event");
                relevant = true;
            }
            if relevant {
                kick.notify_one();
            }
        }
        Err(errors) => {
            for err in &errors {
                tracing::warn!(error = %err, "config watcher error, re-reading config");
            }
            // An error such as a queue overflow can mean lost events.
            kick.notify_one();
        }
    }
}

/// Opening or reading a file changes nothing; reacting to it would make
/// every re-read trigger the next one.
fn is_read_only(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        _ => false,
    }
}
