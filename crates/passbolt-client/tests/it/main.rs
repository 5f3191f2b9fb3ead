//! The client's tests, as one binary: against the dev server of the
//! workspace, and against the recorded answers of a real passbolt 5.12
//! server and GnuPG.

mod common {
    pub use passbolt_devserver::fixtures::*;
}

mod interop;
mod session;
mod write;
