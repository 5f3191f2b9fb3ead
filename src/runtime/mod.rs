//! Generic pieces of a long-running process, with no knowledge of passbolt,
//! targets or configs: schedules, the config-file watcher, retry pacing,
//! child processes and the credential variables taken out of the
//! environment at start-up.

pub mod backoff;
pub mod captured;
pub mod process;
pub mod schedule;
pub mod watch;
