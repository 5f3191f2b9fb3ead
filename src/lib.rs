//! passbolt-sync: keeps secrets from a passbolt server in sync with files.
//!
//! Data flows one way: config -> sync plan -> passbolt client -> decoded
//! resources -> rendered bytes -> atomic writes -> hooks.
//!
//! One folder per layer, each importing only from those below it:
//! `cli` (the commands) -> `agent` (what runs for a long time) -> `sync`
//! (one pass) -> `config` -> `runtime` (generic pieces), and the passbolt
//! client crate beneath all of them. `tests/it/layers.rs` checks the order.

pub mod agent;
pub mod cli;
pub mod config;
pub mod runtime;
pub mod sync;
