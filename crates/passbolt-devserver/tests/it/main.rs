//! The dev server's tests, as one binary: it must answer as the real
//! passbolt 5.12 server did in the recorded captures.

mod common {
    pub use passbolt_devserver::fixtures::*;
}

mod fidelity;
mod revisions;
mod write;
