//! Generic pieces of a long-running process, with no knowledge of passbolt,
//! targets or configs: schedules, the config-file watcher, retry pacing,
//! child processes, the credential variables taken out of the environment
//! at start-up, who is at the other end of a Unix socket, and files only
//! this process's user may have written.

pub mod backoff;
pub mod captured;
pub mod peer;
pub mod private_file;
pub mod process;
pub mod schedule;
pub mod watch;
