//! When a rotation is due.
//!
//! `every` is measured from when the current secret was set, as the server
//! records it: the active secret revision's `created` (passbolt 5.7 and
//! later), else the resource's `modified` (which moves with every edit, so
//! it can only make a rotation late, never early), or this host's last
//! rotation of it if that is later. So a restart neither rotates early nor
//! forgets a due rotation, every host sees the same age, and a password
//! someone changes by hand in passbolt starts a new period, as an operator
//! expects. `when: expired` is due once passbolt's expiry mark is in the
//! past; a mark in the future makes that date the next due time.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Rotate;
use passbolt_client::revisions::SecretStamps;

/// Why a rotation is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The current secret was set at `since`, `every` ago or longer.
    Age {
        since: Option<DateTime<Utc>>,
        every: Duration,
    },
    /// passbolt marked the password expired at `at`.
    Expired { at: DateTime<Utc> },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Age {
                since: Some(since),
                every,
            } => write!(
                f,
                "the secret was set {} (every {})",
                since.format("%Y-%m-%d %H:%M:%S UTC"),
                humantime::format_duration(*every)
            ),
            Reason::Age { since: None, every } => write!(
                f,
                "the server does not say when the secret was set (every {})",
                humantime::format_duration(*every)
            ),
            Reason::Expired { at } => write!(
                f,
                "passbolt marks the password expired since {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Set when the rotation is due now.
    pub now: Option<Reason>,
    /// The next time it falls due, when that can be told (an expiry-only
    /// rotation without a mark cannot).
    pub next: Option<DateTime<Utc>>,
}

fn parse(stamp: Option<&str>) -> Option<DateTime<Utc>> {
    stamp
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Whether `r` is due at `now`, given the resource's stamps and this
/// host's last rotation of it.
pub fn check(
    r: &Rotate,
    stamps: &SecretStamps,
    last_rotation: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Due {
    let set = parse(stamps.secret_set.as_deref()).or_else(|| parse(stamps.modified.as_deref()));
    let since = set.max(last_rotation);
    let by_age = r.every.map(|every| {
        let at = since.map(|s| s + TimeDelta::from_std(every).unwrap_or(TimeDelta::MAX));
        (at, Reason::Age { since, every })
    });
    let by_mark = r
        .when_expired
        .then(|| parse(stamps.expired.as_deref()))
        .flatten()
        .map(|at| (Some(at), Reason::Expired { at }));
    let mut next = None;
    let mut reason = None;
    // Expiry first: it is the reason passbolt shows its users.
    for (at, why) in by_mark.into_iter().chain(by_age) {
        match at {
            Some(at) if at > now => next = Some(next.map_or(at, |n: DateTime<Utc>| n.min(at))),
            _ => {
                reason.get_or_insert(why);
            }
        }
    }
    Due { now: reason, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Apply, Field, Generator, HookCommand};

    fn rotation(every: Option<u64>, when_expired: bool) -> Rotate {
        Rotate {
            resource: "9f1c5d3e-0000-4000-8000-000000000001".into(),
            field: Field::Password,
            every: every.map(Duration::from_secs),
            when_expired,
            generate: Generator::Policy,
            apply: Apply {
                command: HookCommand::Argv(vec!["true".into()]),
                timeout: Duration::from_secs(1),
            },
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse(Some(s)).unwrap()
    }

    fn stamps(set: Option<&str>, modified: &str, expired: Option<&str>) -> SecretStamps {
        SecretStamps {
            modified: Some(modified.into()),
            expired: expired.map(str::to_string),
            secret_set: set.map(str::to_string),
            permission: None,
        }
    }

    #[test]
    fn every_counts_from_when_the_secret_was_set() {
        let r = rotation(Some(3600), false);
        let s = stamps(
            Some("2026-01-01T10:00:00+00:00"),
            "2026-01-01T10:30:00+00:00",
            None,
        );
        let d = check(&r, &s, None, t("2026-01-01T10:59:59+00:00"));
        assert_eq!(d.now, None);
        assert_eq!(d.next, Some(t("2026-01-01T11:00:00+00:00")));
        let d = check(&r, &s, None, t("2026-01-01T11:00:00+00:00"));
        assert!(matches!(d.now, Some(Reason::Age { .. })));
        // Without revisions, `modified`: later, never earlier.
        let s = stamps(None, "2026-01-01T10:30:00+00:00", None);
        let d = check(&r, &s, None, t("2026-01-01T11:00:00+00:00"));
        assert_eq!(d.next, Some(t("2026-01-01T11:30:00+00:00")));
        // A later rotation by this host wins.
        let d = check(
            &r,
            &s,
            Some(t("2026-01-01T10:45:00+00:00")),
            t("2026-01-01T11:00:00+00:00"),
        );
        assert_eq!(d.next, Some(t("2026-01-01T11:45:00+00:00")));
    }

    #[test]
    fn an_expiry_mark_is_due_once_past_and_a_future_one_is_the_next_date() {
        let r = rotation(None, true);
        let now = t("2026-06-01T00:00:00+00:00");
        let unmarked = check(
            &r,
            &stamps(None, "2026-01-01T00:00:00+00:00", None),
            None,
            now,
        );
        assert_eq!(
            unmarked,
            Due {
                now: None,
                next: None
            }
        );
        let past = check(
            &r,
            &stamps(
                None,
                "2026-01-01T00:00:00+00:00",
                Some("2026-05-01T00:00:00+00:00"),
            ),
            None,
            now,
        );
        assert!(matches!(past.now, Some(Reason::Expired { .. })));
        let future = check(
            &r,
            &stamps(
                None,
                "2026-01-01T00:00:00+00:00",
                Some("2026-07-01T00:00:00+00:00"),
            ),
            None,
            now,
        );
        assert_eq!(future.now, None);
        assert_eq!(future.next, Some(t("2026-07-01T00:00:00+00:00")));
        // Both: the earlier of the two dates.
        let both = rotation(Some(86_400), true);
        let d = check(
            &both,
            &stamps(
                None,
                "2026-05-31T12:00:00+00:00",
                Some("2026-07-01T00:00:00+00:00"),
            ),
            None,
            now,
        );
        assert_eq!(d.next, Some(t("2026-06-01T12:00:00+00:00")));
    }
}
