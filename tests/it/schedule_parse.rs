use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use passbolt_sync::runtime::schedule::{
    HostIdSource, MACHINE_ID_PATH, Schedule, ScheduleError, host_identity, identify_host,
    splay_offset,
};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn parse(expr: &str) -> Schedule {
    Schedule::parse(expr, None).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
}

/// The first `n` occurrences after `start`, checking they strictly increase.
fn occurrences(schedule: &Schedule, start: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(n);
    let mut at = start;
    for _ in 0..n {
        let next = schedule.next_after(at).expect("schedule ran dry");
        assert!(next > at, "{next} is not after {at}");
        out.push(next);
        at = next;
    }
    out
}

fn err(expr: &str, tz: Option<&str>) -> ScheduleError {
    match Schedule::parse(expr, tz) {
        Ok(s) => panic!("{expr:?} parsed as {s}"),
        Err(e) => e,
    }
}

#[test]
fn five_field_has_minute_precision() {
    let s = parse("30 4 * * *");
    assert_eq!(
        occurrences(&s, utc(2027, 1, 1, 0, 0, 0), 2),
        [utc(2027, 1, 1, 4, 30, 0), utc(2027, 1, 2, 4, 30, 0)]
    );
    assert_eq!(s.to_string(), "30 4 * * * (UTC)");
}

#[test]
fn six_field_has_seconds_first() {
    let s = parse("15 30 4 * * *");
    assert_eq!(
        s.next_after(utc(2027, 1, 1, 0, 0, 0)),
        Some(utc(2027, 1, 1, 4, 30, 15))
    );
    let every_10s = parse("*/10 * * * * *");
    assert_eq!(
        occurrences(&every_10s, utc(2027, 1, 1, 0, 0, 3), 3),
        [
            utc(2027, 1, 1, 0, 0, 10),
            utc(2027, 1, 1, 0, 0, 20),
            utc(2027, 1, 1, 0, 0, 30)
        ]
    );
}

#[test]
fn every_five_minutes() {
    let s = parse("*/5 * * * *");
    assert_eq!(
        occurrences(&s, utc(2027, 6, 1, 11, 58, 12), 4),
        [
            utc(2027, 6, 1, 12, 0, 0),
            utc(2027, 6, 1, 12, 5, 0),
            utc(2027, 6, 1, 12, 10, 0),
            utc(2027, 6, 1, 12, 15, 0)
        ]
    );
}

#[test]
fn next_after_is_strict() {
    let s = parse("*/5 * * * *");
    let tick = utc(2027, 6, 1, 12, 0, 0);
    assert_eq!(s.next_after(tick), Some(utc(2027, 6, 1, 12, 5, 0)));
    let just_before = tick - chrono::TimeDelta::milliseconds(1);
    assert_eq!(s.next_after(just_before), Some(tick));
    let just_after = tick + chrono::TimeDelta::milliseconds(1);
    assert_eq!(s.next_after(just_after), Some(utc(2027, 6, 1, 12, 5, 0)));
}

#[test]
fn day_of_month_or_day_of_week_when_both_restricted() {
    // The 13th of each month, and every Friday (Vixie cron).
    let s = parse("0 0 13 * 5");
    let days: Vec<NaiveDate> = occurrences(&s, utc(2027, 8, 1, 0, 0, 0), 6)
        .iter()
        .map(|t| t.date_naive())
        .collect();
    let expected: Vec<NaiveDate> = [(8, 6), (8, 13), (8, 20), (8, 27), (9, 3), (9, 10)]
        .iter()
        .map(|(m, d)| NaiveDate::from_ymd_opt(2027, *m, *d).unwrap())
        .collect();
    // 2027-08-13 is itself a Friday, so it appears once.
    assert_eq!(days, expected);
    // 2027-09-13 is a Monday: it fires through the day-of-month alone.
    let later: Vec<NaiveDate> = occurrences(&s, utc(2027, 9, 10, 0, 0, 0), 2)
        .iter()
        .map(|t| t.date_naive())
        .collect();
    assert_eq!(
        later,
        [
            NaiveDate::from_ymd_opt(2027, 9, 13).unwrap(),
            NaiveDate::from_ymd_opt(2027, 9, 17).unwrap()
        ]
    );
}

#[test]
fn one_starred_day_field_means_only_the_other_counts() {
    let fridays = parse("0 0 * * FRI");
    for t in occurrences(&fridays, utc(2027, 1, 1, 0, 0, 0), 10) {
        assert_eq!(t.weekday(), chrono::Weekday::Fri);
    }
    let firsts = parse("0 0 1 * *");
    for t in occurrences(&firsts, utc(2027, 1, 1, 0, 0, 0), 10) {
        assert_eq!(t.day(), 1);
    }
}

#[test]
fn stepped_star_day_field_ands_like_vixie() {
    // Vixie treats a field starting with `*` as unrestricted, so this is
    // "odd days of the month that are Mondays", not "odd days or Mondays".
    let s = parse("0 0 */2 * MON");
    for t in occurrences(&s, utc(2027, 1, 1, 0, 0, 0), 12) {
        assert_eq!(t.weekday(), chrono::Weekday::Mon, "{t}");
        assert_eq!(t.day() % 2, 1, "{t}");
    }
}

#[test]
fn names_and_nicknames() {
    let weekdays = parse("0 9 * * mon-fri");
    for t in occurrences(&weekdays, utc(2027, 1, 1, 0, 0, 0), 15) {
        assert!(t.weekday().num_days_from_monday() < 5);
        assert_eq!((t.hour(), t.minute()), (9, 0));
    }
    assert_eq!(parse("@hourly"), parse("0 * * * *"));
    assert_eq!(parse("@daily"), parse("0 0 * * *"));
    assert_eq!(parse("0 0 1 jan *"), parse("0 0 1 1 *"));
}

#[test]
fn every_interval() {
    let s = parse("every 90s");
    assert_eq!(s.interval(), Some(Duration::from_secs(90)));
    assert_eq!(s.to_string(), "every 1m 30s");
    let start = utc(2027, 1, 1, 0, 0, 0);
    assert_eq!(
        occurrences(&s, start, 3),
        [
            utc(2027, 1, 1, 0, 1, 30),
            utc(2027, 1, 1, 0, 3, 0),
            utc(2027, 1, 1, 0, 4, 30)
        ]
    );
    assert_eq!(parse("every 5m").interval(), Some(Duration::from_secs(300)));
    assert_eq!(parse("every 30s").interval(), Some(Duration::from_secs(30)));
    assert_eq!(
        parse("every 1h 30m").interval(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        parse("  EVERY   2h ").interval(),
        Some(Duration::from_secs(7200))
    );
    assert_eq!(parse("every 1h 30m").timezone(), None);
}

#[test]
fn equivalent_spellings_share_a_key() {
    let keys: HashSet<String> = ["every 90s", "every 1m 30s", "every 1m30s"]
        .iter()
        .map(|e| parse(e).key())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");

    let same: HashSet<Schedule> = ["*/5 * * * *", "0 */5 * * * *", "*/5  *  * * *"]
        .iter()
        .map(|e| parse(e))
        .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(parse("0 * * * MON"), parse("0 0 * * * 1"));
    assert_ne!(parse("0 * * * MON"), parse("30 0 * * * 1"));

    let berlin = Schedule::parse("*/5 * * * *", Some("Europe/Berlin")).unwrap();
    assert_ne!(berlin, parse("*/5 * * * *"));
    assert_ne!(berlin.key(), parse("*/5 * * * *").key());
    assert_eq!(berlin.to_string(), "*/5 * * * * (Europe/Berlin)");
    assert_eq!(berlin.timezone(), Some(Tz::Europe__Berlin));
}

#[test]
fn wrong_field_count() {
    for (expr, found) in [("* * * *", 4), ("0 0 0 * * * 2027", 7), ("5", 1)] {
        let e = err(expr, None);
        assert_eq!(
            e,
            ScheduleError::FieldCount {
                expr: expr.to_owned(),
                found
            }
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("{expr:?}")), "{msg}");
        assert!(msg.contains(&format!("has {found} field")), "{msg}");
    }
}

#[test]
fn bad_values_name_the_field() {
    let cases = [
        ("61 * * * *", "minute", "61"),
        ("* 24 * * *", "hour", "24"),
        ("* * 32 * *", "day-of-month", "32"),
        ("* * 0 * *", "day-of-month", "0"),
        ("* * * 13 *", "month", "13"),
        ("* * * * 8", "day-of-week", "8"),
        ("60 * * * * *", "second", "60"),
        ("*/0 * * * *", "minute", "*/0"),
        ("5-1 * * * *", "minute", "5-1"),
        ("x * * * *", "minute", "x"),
        ("* * * * JAN", "day-of-week", "JAN"),
        ("* * * MON *", "month", "MON"),
    ];
    for (expr, field, value) in cases {
        match err(expr, None) {
            ScheduleError::InvalidField {
                expr: e,
                field: f,
                value: v,
                ..
            } => {
                assert_eq!((e.as_str(), f, v.as_str()), (expr, field, value), "{expr}");
            }
            other => panic!("{expr:?}: unexpected {other:?}"),
        }
        let msg = err(expr, None).to_string();
        assert!(msg.contains(&format!("{expr:?}")), "{msg}");
        assert!(msg.contains(field), "{msg}");
    }
    assert_eq!(
        err("61 * * * *", None).to_string(),
        "cron expression \"61 * * * *\": invalid minute field \"61\" \
         (number out of bounds; allowed: 0-59)"
    );
}

#[test]
fn never_firing_expression_is_rejected() {
    assert_eq!(
        err("0 0 30 2 *", None),
        ScheduleError::NeverFires {
            expr: "0 0 30 2 *".to_owned(),
            tz: "UTC".to_owned()
        }
    );
    // Leap days are rare, not impossible.
    let leap = parse("0 0 29 2 *");
    assert_eq!(
        leap.next_after(utc(2027, 1, 1, 0, 0, 0)),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
}

#[test]
fn unknown_nickname() {
    let e = err("@reboot", None);
    assert!(matches!(e, ScheduleError::UnknownNickname { .. }), "{e:?}");
    assert!(e.to_string().contains("\"@reboot\""), "{e}");
}

#[test]
fn unknown_time_zone_is_named() {
    let e = err("0 * * * *", Some("Mars/Olympus_Mons"));
    assert_eq!(
        e,
        ScheduleError::UnknownTimeZone {
            expr: "0 * * * *".to_owned(),
            tz: "Mars/Olympus_Mons".to_owned()
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("\"Mars/Olympus_Mons\""), "{msg}");
    assert!(msg.contains("\"0 * * * *\""), "{msg}");
    // Also for intervals, so a typo never hides until the schedule changes.
    assert!(matches!(
        err("every 5m", Some("Europe/Berln")),
        ScheduleError::UnknownTimeZone { .. }
    ));
}

#[test]
fn bad_intervals() {
    assert_eq!(
        err("every 0s", None),
        ScheduleError::IntervalTooShort {
            expr: "every 0s".to_owned(),
            min: Duration::from_secs(1)
        }
    );
    assert_eq!(
        err("every 0s", None).to_string(),
        "schedule \"every 0s\": interval must be at least 1s"
    );
    assert!(matches!(
        err("every 500ms", None),
        ScheduleError::IntervalTooShort { .. }
    ));
    assert!(matches!(
        err("every", None),
        ScheduleError::MissingInterval { .. }
    ));
    match err("every 5 parsecs", None) {
        ScheduleError::InvalidInterval { expr, duration, .. } => {
            assert_eq!(expr, "every 5 parsecs");
            assert_eq!(duration, "5 parsecs");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err("", None), ScheduleError::Empty);
    assert_eq!(err("   ", None), ScheduleError::Empty);
    // From code, sub-second intervals are allowed but zero is not.
    assert!(Schedule::every(Duration::from_millis(200)).is_ok());
    assert_eq!(
        Schedule::every(Duration::ZERO),
        Err(ScheduleError::ZeroInterval)
    );
}

/// Local wall-clock times of each occurrence in `[from, to)`.
fn local_runs(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    let tz = schedule.timezone().unwrap();
    let mut out = Vec::new();
    let mut at = from;
    while let Some(next) = schedule.next_after(at) {
        if next >= to {
            break;
        }
        out.push(format!(
            "{} = {}",
            next.with_timezone(&tz).format("%F %T %Z"),
            next.format("%T UTC")
        ));
        at = next;
    }
    out
}

#[test]
fn berlin_spring_forward_runs_once_at_three() {
    // 02:00-03:00 does not exist on 2027-03-28; croner runs a fixed-time job
    // that falls in the gap at the first instant after it.
    let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
    let runs = local_runs(&s, utc(2027, 3, 26, 12, 0, 0), utc(2027, 3, 30, 12, 0, 0));
    assert_eq!(
        runs,
        [
            "2027-03-27 02:30:00 CET = 01:30:00 UTC",
            "2027-03-28 03:00:00 CEST = 01:00:00 UTC",
            "2027-03-29 02:30:00 CEST = 00:30:00 UTC",
            "2027-03-30 02:30:00 CEST = 00:30:00 UTC",
        ]
    );
}

#[test]
fn berlin_fall_back_runs_once() {
    // 02:00-03:00 happens twice on 2027-10-31; croner runs a fixed-time job
    // at the first of the two instants only.
    let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
    let runs = local_runs(&s, utc(2027, 10, 29, 12, 0, 0), utc(2027, 11, 2, 12, 0, 0));
    assert_eq!(
        runs,
        [
            "2027-10-30 02:30:00 CEST = 00:30:00 UTC",
            "2027-10-31 02:30:00 CEST = 00:30:00 UTC",
            "2027-11-01 02:30:00 CET = 01:30:00 UTC",
            "2027-11-02 02:30:00 CET = 01:30:00 UTC",
        ]
    );
}

/// `0 * * * *` is "at the top of every hour". Across a DST change that must
/// still be one run per real hour: no duplicate instant, no real hour left
/// out, even though one local hour label is skipped or repeated.
fn assert_hourly_in_utc(schedule: &Schedule, from: DateTime<Utc>) {
    let runs = occurrences(schedule, from, 30);
    for pair in runs.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::TimeDelta::hours(1), "{pair:?}");
    }
    for t in &runs {
        assert_eq!((t.minute(), t.second()), (0, 0));
    }
}

#[test]
fn new_york_hourly_across_spring_forward() {
    let s = Schedule::parse("0 * * * *", Some("America/New_York")).unwrap();
    assert_hourly_in_utc(&s, utc(2027, 3, 14, 0, 30, 0));
    let local: Vec<u32> = occurrences(&s, utc(2027, 3, 14, 4, 30, 0), 4)
        .iter()
        .map(|t| t.with_timezone(&Tz::America__New_York).hour())
        .collect();
    assert_eq!(local, [0, 1, 3, 4], "02:00 local does not exist that day");
}

#[test]
fn new_york_hourly_across_fall_back() {
    let s = Schedule::parse("0 * * * *", Some("America/New_York")).unwrap();
    assert_hourly_in_utc(&s, utc(2027, 11, 6, 20, 30, 0));
    let local: Vec<u32> = occurrences(&s, utc(2027, 11, 7, 3, 30, 0), 4)
        .iter()
        .map(|t| t.with_timezone(&Tz::America__New_York).hour())
        .collect();
    assert_eq!(local, [0, 1, 1, 2], "01:00 local happens twice that day");
}

#[test]
fn named_zone_shifts_with_dst() {
    // 09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer: a fixed
    // offset computed once would be wrong for half of the year.
    let s = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        s.next_after(utc(2027, 1, 15, 0, 0, 0)),
        Some(utc(2027, 1, 15, 8, 0, 0))
    );
    assert_eq!(
        s.next_after(utc(2027, 7, 15, 0, 0, 0)),
        Some(utc(2027, 7, 15, 7, 0, 0))
    );
    let tokyo = Schedule::parse("0 0 * * *", Some("Asia/Tokyo")).unwrap();
    assert_eq!(
        tokyo.next_after(utc(2027, 7, 15, 0, 0, 0)),
        Some(utc(2027, 7, 15, 15, 0, 0))
    );
}

const FIVE_MINUTES: Duration = Duration::from_secs(300);

/// Machine ids the way systemd writes them (32 lower-case hex digits of a
/// random 128-bit value), from a fixed-seed xorshift generator so the test
/// sees the same fleet on every run.
fn synthetic_machine_ids(n: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| format!("{:016x}{:016x}", next(), next()))
        .collect()
}

/// How many of `ids` fall in each tenth of the splay.
fn tenths(ids: &[String]) -> [usize; 10] {
    let mut buckets = [0; 10];
    for id in ids {
        let offset = splay_offset(FIVE_MINUTES, id);
        assert!(offset < FIVE_MINUTES, "{id}: {offset:?}");
        buckets[(offset.as_nanos() * 10 / FIVE_MINUTES.as_nanos()) as usize] += 1;
    }
    buckets
}

#[test]
fn splay_offset_is_stable_for_one_id_and_within_the_splay() {
    // Computed independently (FNV-1a 64, SplitMix64 finalizer,
    // multiply-shift). These must never change: every host of a fleet
    // would move to a new offset on upgrade, and two versions side by side
    // would no longer spread.
    let pinned: &[(&str, Duration, u64)] = &[
        (
            "3d1219c7c4c5404aaa1f6d2a48adfda4",
            FIVE_MINUTES,
            36_587_190_268,
        ),
        ("web-0001", FIVE_MINUTES, 255_650_888_657),
        ("", FIVE_MINUTES, 287_302_027_572),
        (
            "b08dfa6083e7567a1921a715000001fb",
            Duration::from_secs(86_400),
            56_250_045_266_405,
        ),
    ];
    for (id, splay, nanos) in pinned {
        assert_eq!(
            splay_offset(*splay, id),
            Duration::from_nanos(*nanos),
            "{id:?}"
        );
        assert_eq!(splay_offset(*splay, id), splay_offset(*splay, id));
    }
    for splay in [
        Duration::from_nanos(1),
        Duration::from_millis(1),
        Duration::from_secs(1),
        FIVE_MINUTES,
        Duration::from_secs(86_400),
    ] {
        for id in synthetic_machine_ids(1000) {
            assert!(splay_offset(splay, &id) < splay, "{id} within {splay:?}");
        }
    }
}

#[test]
fn zero_splay_gives_zero_offset() {
    for id in ["", "web-0001", "3d1219c7c4c5404aaa1f6d2a48adfda4"] {
        assert_eq!(splay_offset(Duration::ZERO, id), Duration::ZERO);
    }
}

#[test]
fn a_fleet_of_ten_thousand_spreads_evenly_over_the_splay() {
    // 10,000 hosts in 10 buckets: 1000 each, one standard deviation is 30;
    // 150 is five of them.
    let machine_ids = synthetic_machine_ids(10_000);
    assert_eq!(
        machine_ids.iter().collect::<HashSet<_>>().len(),
        10_000,
        "distinct ids"
    );
    // Hostnames that differ only in their last digits are the hard case
    // for a plain FNV hash (buckets from 500 to 1500 without the finalizer).
    let hostnames: Vec<String> = (0..10_000).map(|i| format!("web-{i:05}")).collect();
    for (what, ids) in [("machine ids", &machine_ids), ("hostnames", &hostnames)] {
        let buckets = tenths(ids);
        println!("{what} per tenth of the splay: {buckets:?}");
        for (i, n) in buckets.iter().enumerate() {
            assert!((850..=1150).contains(n), "{what}: tenth {i} has {n}");
        }
    }
}

#[test]
fn host_identity_is_the_machine_id_else_the_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine-id");
    std::fs::write(&file, "  3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
    assert_eq!(
        identify_host(&file),
        (
            "3d1219c7c4c5404aaa1f6d2a48adfda4".to_string(),
            HostIdSource::MachineId
        )
    );

    let hostname = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(!hostname.is_empty());
    // Missing, empty, blank, or the first-boot placeholder all fall back.
    let missing = dir.path().join("absent");
    for content in [None, Some(""), Some(" \n"), Some("uninitialized\n")] {
        if let Some(content) = content {
            std::fs::write(&file, content).unwrap();
        }
        let path = if content.is_some() { &file } else { &missing };
        assert_eq!(
            identify_host(path),
            (hostname.clone(), HostIdSource::Hostname),
            "{content:?}"
        );
    }

    // This machine's own id, by the same rule.
    let expected = match std::fs::read_to_string(MACHINE_ID_PATH) {
        Ok(id) if !id.trim().is_empty() && id.trim() != "uninitialized" => id.trim().to_string(),
        _ => hostname,
    };
    assert_eq!(host_identity(), expected);
    assert_eq!(identify_host(Path::new(MACHINE_ID_PATH)).0, expected);
}
