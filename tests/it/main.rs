//! All integration tests, as one binary: sequoia, reqwest and axum are
//! linked once, and the fixture keys are unlocked once per run.

mod common;

mod agent_socket;
mod backoff;
mod check_offline;
mod config;
mod config_errors;
mod config_watch;
mod create;
mod daemon;
mod demo;
mod devserver_incremental;
mod dotenv_consumers;
mod endurance;
mod exec;
mod faults;
mod get_env;
mod hardening;
mod hooks;
mod image;
mod incremental;
mod init;
mod layers;
mod login_cause;
mod metrics;
mod mfa;
mod no_secret_in_errors;
mod no_secret_in_logs;
mod package;
mod props;
mod rotate;
mod schedule_driver;
mod schedule_parse;
mod scoped;
mod server_versions;
mod set;
mod sync_e2e;
mod systemd_units;
mod template;
mod tls;
mod warm;
mod write;
