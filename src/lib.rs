//! passbolt-sync: keeps secrets from a passbolt server in sync with files.
//!
//! Data flows one way: config -> sync plan -> passbolt client -> decoded
//! resources -> rendered bytes -> atomic writes -> hooks.

pub mod config;
pub mod devserver;
pub mod hooks;
pub mod passbolt;
pub mod pgp;
pub mod render;
pub mod schedule;
pub mod secret;
pub mod write;
