//! The harness the benches share: a sampler with a time budget, order
//! statistics, the table they print, process CPU time, and the fixture
//! accounts recorded from a real passbolt server (admin RSA-4096, bob
//! RSA-3072, alice Curve25519).
//!
//! A hand-rolled loop rather than criterion: the rows measure tens of
//! microseconds to tens of seconds of mostly network and OpenPGP work,
//! where criterion's statistics buy little, and this keeps
//! dev-dependencies empty.
//!
//! `PASSBOLT_SYNC_BENCH_QUICK=1` scales every bench down (a fifth of the
//! time budgets, fewer samples, smaller sets) for a quick try; its numbers
//! are not for comparison.

// Each bench binary uses its own part of the harness.
#![allow(dead_code)]

#[path = "../../tests/it/common.rs"]
pub mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use passbolt_client::pgp::PrivateKey;
use passbolt_client::{Client, SessionOptions, session};
use passbolt_devserver::DevServer;

pub use common::{Fixture, fixture};

/// The fixture accounts, with their key type and the reference cost in
/// milliseconds of one decrypt+verify with nettle.
pub const ACCOUNTS: &[(&str, &str, f64)] = &[
    ("admin", "RSA-4096", 6.1),
    ("bob", "RSA-3072", 3.1),
    ("alice", "Curve25519", 0.10),
];

pub fn key_type(name: &str) -> &'static str {
    ACCOUNTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, _)| *t)
        .expect("a fixture account")
}

/// Whether `PASSBOLT_SYNC_BENCH_QUICK` asks for a scaled-down run.
pub fn quick() -> bool {
    std::env::var("PASSBOLT_SYNC_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `full` normally, `small` in a quick run.
pub fn scaled<T>(full: T, small: T) -> T {
    if quick() { small } else { full }
}

/// Prints what the numbers were taken on.
pub fn banner(what: &str) {
    println!(
        "passbolt-sync benchmarks: {what}; {} cores, {} build{}, temp dir {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "optimized"
        },
        if quick() {
            ", QUICK (scaled down, not for comparison)"
        } else {
            ""
        },
        std::env::temp_dir().display()
    );
    println!("The machine may be shared: compare mins when medians look noisy.");
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------- timing

/// Collects samples until it has `max` of them, or at least `min` and its
/// time budget is spent.
pub struct Sampler {
    samples: Vec<Duration>,
    min: usize,
    max: usize,
    budget: Duration,
    started: Instant,
}

impl Sampler {
    /// At least 3 samples, at most `max`, for about `budget_ms`.
    pub fn new(max: usize, budget_ms: u64) -> Sampler {
        Sampler::with_min(3, max, budget_ms)
    }

    pub fn with_min(min: usize, max: usize, budget_ms: u64) -> Sampler {
        let (max, budget_ms) = if quick() {
            (max.div_ceil(4).max(min), budget_ms / 5)
        } else {
            (max, budget_ms)
        };
        Sampler {
            samples: Vec::with_capacity(max),
            min: min.min(max),
            max,
            budget: Duration::from_millis(budget_ms),
            started: Instant::now(),
        }
    }

    pub fn more(&self) -> bool {
        let n = self.samples.len();
        n < self.max && (n < self.min || self.started.elapsed() < self.budget)
    }

    pub fn push(&mut self, d: Duration) {
        self.samples.push(d);
    }

    pub fn stats(&self) -> Stats {
        Stats::of(&self.samples)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub n: usize,
    pub median: Duration,
    pub p90: Duration,
    pub min: Duration,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort();
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        };
        // Nearest rank.
        let p90 = s[(n * 9).div_ceil(10).max(1) - 1];
        Stats {
            n,
            median,
            p90,
            min: s[0],
        }
    }

    /// The same statistics for `n` items when `m` were measured.
    pub fn scaled(self, m: usize, n: usize) -> Stats {
        let f = |d: Duration| d.mul_f64(n as f64 / m as f64);
        Stats {
            n: self.n,
            median: f(self.median),
            p90: f(self.p90),
            min: f(self.min),
        }
    }
}

/// Times one synchronous call.
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

/// User plus system CPU time of this whole process so far: the client, the
/// in-process dev server and every thread either started.
pub fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    d(u.user_time()) + d(u.system_time())
}

pub fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 100.0 {
        format!("{us:.1} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

pub fn fmt_ms(ms: f64) -> String {
    fmt_d(Duration::from_secs_f64(ms / 1e3))
}

pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    }
}

// ----------------------------------------------------------------- table

pub const LABEL_W: usize = 62;

pub fn table_header() {
    println!();
    println!(
        "{:<LABEL_W$} {:>4} {:>10} {:>10} {:>10}  note",
        "benchmark", "n", "median", "p90", "min"
    );
    println!("{}", "=".repeat(LABEL_W + 4 + 3 * 11 + 2 + 40));
}

pub fn section(title: &str) {
    println!();
    println!("-- {title}");
}

pub fn row(label: &str, s: &Stats, note: &str) {
    println!(
        "{:<LABEL_W$} {:>4} {:>10} {:>10} {:>10}  {note}",
        label,
        s.n,
        fmt_d(s.median),
        fmt_d(s.p90),
        fmt_d(s.min)
    );
}

// -------------------------------------------------------------- fixtures

/// A fixture account with its key unlocked (once per process).
pub struct Who {
    pub f: Fixture,
    pub key: Arc<PrivateKey>,
}

impl Who {
    pub fn load(name: &'static str) -> Who {
        let f = fixture(name);
        let key = common::shared_key(&f);
        Who { f, key }
    }

    /// Every fixture account, in the order of `ACCOUNTS`.
    pub fn all() -> Vec<Who> {
        ACCOUNTS
            .iter()
            .map(|(name, _, _)| Who::load(name))
            .collect()
    }

    pub fn name(&self) -> &'static str {
        self.f.name
    }

    pub fn key_type(&self) -> &'static str {
        key_type(self.f.name)
    }

    pub fn label(&self, what: &str) -> String {
        format!("{what} [{} {}]", self.f.name, self.key_type())
    }
}

/// A client of `server` for `who`, not logged in. The timeout is generous:
/// a large download on a loaded machine must not fail a bench.
pub fn new_client(server: &DevServer, who: &Who) -> Client {
    Client::new(
        SessionOptions {
            base_url: server.url(),
            user_id: who.f.id.clone(),
            fingerprint: Some(server.server_fingerprint()),
            ca_pem: None,
            timeout: Duration::from_secs(120),
            max_response_bytes: session::DEFAULT_MAX_RESPONSE_BYTES,
            client_identity: None,
        },
        who.key.clone(),
    )
    .expect("client")
}
