//! The dev server's clock: the real one, or a time a test froze.
//!
//! It is the one clock for everything the server stamps or checks:
//! `header.servertime`, `created`/`modified` stamps, access token `exp`,
//! the login's verify token window, refresh token age and cookie expiry. A
//! real server whose clock is off uses that clock for all of these too, and
//! a client that corrects for skew from `header.servertime` must keep
//! working against it. While frozen, time does not pass: a token issued
//! then does not expire until the clock is moved past its `exp` or
//! released.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub(crate) struct Clock {
    frozen: Mutex<Option<i64>>,
    /// Added to the time, frozen or not: a server whose clock is off.
    offset: AtomicI64,
}

impl Clock {
    /// Freezes the clock at `at` (unix seconds), or releases it with `None`.
    pub fn set(&self, at: Option<i64>) {
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn set_offset(&self, seconds: i64) {
        self.offset.store(seconds, Ordering::Relaxed);
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        self.frozen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| chrono::Utc::now().timestamp())
            + self.offset.load(Ordering::Relaxed)
    }

    /// Now as passbolt writes datetimes: RFC 3339 to the second, `+00:00`.
    pub fn stamp(&self) -> String {
        stamp(self.now())
    }

    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.now().max(0) as u64)
    }
}

/// `2026-12-01T13:22:24+00:00` for a unix time.
pub fn stamp(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_stands_still_and_stamps_to_the_second() {
        let clock = Clock::default();
        clock.set(Some(1_796_131_344));
        assert_eq!(clock.now(), 1_796_131_344);
        assert_eq!(clock.stamp(), "2026-12-01T13:22:24+00:00");
        clock.set(None);
        assert!((clock.now() - chrono::Utc::now().timestamp()).abs() <= 1);
    }
}
