//! passbolt-sync: keeps secrets from a passbolt server in sync with files.
//!
//! Data flows one way: config -> sync plan -> passbolt client -> decoded
//! resources -> rendered bytes -> atomic writes -> hooks.

pub mod account_kit;
pub mod backoff;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod devserver;
pub mod exec;
pub mod get;
pub mod held;
pub mod hooks;
pub mod init;
pub mod lock;
pub mod manpage;
pub mod metrics;
pub mod observe;
pub mod passbolt;
pub mod pgp;
pub mod plan;
pub mod process;
pub mod render;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod status;
pub mod sync;
pub mod watch;
pub mod write;
