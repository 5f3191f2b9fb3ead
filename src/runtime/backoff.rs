//! Retry pacing and outage bookkeeping for talking to the passbolt server.
//!
//! [`Backoff`] spaces out retries so a struggling server is not hammered and
//! several daemons do not retry in lockstep. [`Health`] turns a stream of
//! per-attempt results into two log-worthy events per outage, so a server
//! that is down for an hour produces two lines instead of hundreds.

use std::fmt;
use std::time::{Duration, Instant};

/// First retry ceiling when none is configured.
pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
/// Upper bound for any single delay when none is configured.
pub const DEFAULT_MAX: Duration = Duration::from_secs(5 * 60);

/// How randomness is applied to the exponential curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, min(max, initial * 2^n)]`: spreads clients the most,
    /// but an individual delay may be short.
    #[default]
    Full,
    /// Uniform in `[initial, min(max, 3 * previous)]`: never shorter than
    /// `initial`, still grows roughly exponentially and decorrelates clients.
    Decorrelated,
}

/// Exponential backoff with jitter. Call [`next_delay`](Self::next_delay)
/// after each failure and [`reset`](Self::reset) after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    attempts: u32,
    previous: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `max`. An `initial` above `max`
    /// is lowered to `max`, so the cap always holds.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            jitter: Jitter::default(),
            attempts: 0,
            previous: initial,
            rng: fastrand::Rng::new(),
        }
    }

    pub fn with_jitter(mut self, jitter: Jitter) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// Makes the sequence reproducible, for tests.
    pub fn with_seed(mut self, seed: u64) -> Backoff {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// Delay to wait before the next attempt; counts one attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match self.jitter {
            Jitter::Full => {
                let ceiling = self.ceiling();
                self.uniform(Duration::ZERO, ceiling)
            }
            Jitter::Decorrelated => {
                let upper = self.previous.saturating_mul(3).min(self.max);
                self.uniform(self.initial, upper.max(self.initial))
            }
        };
        self.previous = delay;
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// The largest delay the next call to [`next_delay`](Self::next_delay)
    /// can return, for "retrying in at most ..." messages.
    pub fn ceiling(&self) -> Duration {
        match self.jitter {
            Jitter::Full => {
                // Past 2^31 the cap has long been reached for any sane input.
                let factor = 1u32 << self.attempts.min(31);
                self.initial.saturating_mul(factor).min(self.max)
            }
            Jitter::Decorrelated => self
                .previous
                .saturating_mul(3)
                .min(self.max)
                .max(self.initial),
        }
    }

    /// Back to the first, shortest delay.
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.previous = self.initial;
    }

    /// Delays handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn uniform(&mut self, low: Duration, high: Duration) -> Duration {
        let to_nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let (low, high) = (to_nanos(low), to_nanos(high));
        if low >= high {
            return Duration::from_nanos(high);
        }
        Duration::from_nanos(self.rng.u64(low..=high))
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(DEFAULT_INITIAL, DEFAULT_MAX)
    }
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The first failure after a healthy period (or at start-up).
    Down { error: String },
    /// The first success after an outage.
    Recovered {
        /// From the first failure to this success.
        down_for: Duration,
        /// Failed attempts during the outage.
        attempts: u32,
    },
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transition::Down { error } => write!(f, "down: {error}"),
            Transition::Recovered { down_for, attempts } => {
                // Sub-second precision is noise in an outage report.
                let rounded = Duration::from_secs(down_for.as_secs());
                write!(
                    f,
                    "recovered after {} ({attempts} failed attempt{})",
                    humantime::format_duration(rounded),
                    if *attempts == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// Tracks whether the server is currently failing, reporting only the edges.
#[derive(Debug, Default)]
pub struct Health {
    outage: Option<Outage>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u32,
    last_error: String,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Records a failed attempt. `Some(Down)` only for the first failure of
    /// an outage; later failures just update the counters.
    pub fn failure(&mut self, err: &dyn fmt::Display) -> Option<Transition> {
        let error = err.to_string();
        match &mut self.outage {
            Some(outage) => {
                outage.failures = outage.failures.saturating_add(1);
                outage.last_error = error;
                None
            }
            None => {
                self.outage = Some(Outage {
                    since: Instant::now(),
                    failures: 1,
                    last_error: error.clone(),
                });
                Some(Transition::Down { error })
            }
        }
    }

    /// Records a successful attempt. `Some(Recovered)` only when it ends an
    /// outage.
    pub fn success(&mut self) -> Option<Transition> {
        self.outage.take().map(|outage| Transition::Recovered {
            down_for: outage.since.elapsed(),
            attempts: outage.failures,
        })
    }

    pub fn is_down(&self) -> bool {
        self.outage.is_some()
    }

    /// Consecutive failures in the current outage (0 when healthy).
    pub fn failures(&self) -> u32 {
        self.outage.as_ref().map_or(0, |outage| outage.failures)
    }

    /// How long the current outage has lasted.
    pub fn down_for(&self) -> Option<Duration> {
        self.outage.as_ref().map(|outage| outage.since.elapsed())
    }

    /// The most recent error of the current outage, for status output.
    pub fn last_error(&self) -> Option<&str> {
        self.outage
            .as_ref()
            .map(|outage| outage.last_error.as_str())
    }
}
