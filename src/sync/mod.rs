//! One sync pass and what it needs: the plan built from a config, the
//! secrets held between passes, the pass itself (resolve, download,
//! render, apply), its report, atomic writes and hooks, and the rotation
//! of one secret (`rotate`).
//! Nothing here knows about schedules, reloads or the command line.

pub mod held;
pub mod hooks;
pub mod pass;
pub mod plan;
pub mod render;
pub mod report;
pub mod rotate;
pub mod scope;
pub mod state;
pub mod write;

pub use pass::{
    PassOptions, fetch_vars, list_for, render_held, resolve_only, resolve_selector, run_pass,
};
pub use report::{LookupError, PassReport, Status, TargetError, TargetReport};
