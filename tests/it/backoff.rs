use std::time::Duration;

use passbolt_sync::runtime::backoff::{Backoff, DEFAULT_MAX, Health, Jitter, Transition};

const SECOND: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(300);

#[test]
fn defaults_are_one_second_to_five_minutes() {
    let b = Backoff::default();
    assert_eq!(b.ceiling(), SECOND);
    assert_eq!(DEFAULT_MAX, CAP);
    assert_eq!(b.attempts(), 0);
}

#[test]
fn full_jitter_ceiling_doubles_up_to_the_cap() {
    let mut b = Backoff::default().with_seed(7);
    let mut ceilings = Vec::new();
    for _ in 0..12 {
        let ceiling = b.ceiling();
        let delay = b.next_delay();
        assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
        ceilings.push(ceiling.as_secs());
    }
    assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(b.attempts(), 12);
}

#[test]
fn full_jitter_delays_grow_and_stay_in_range() {
    // Averaged over many seeds, later attempts wait much longer.
    let runs = 200u32;
    let mut sums = [Duration::ZERO; 10];
    for seed in 0..runs {
        let mut b = Backoff::default().with_seed(u64::from(seed));
        for sum in &mut sums {
            let d = b.next_delay();
            assert!(d <= CAP, "{d:?}");
            *sum += d;
        }
    }
    let means: Vec<f64> = sums
        .iter()
        .map(|s| s.as_secs_f64() / f64::from(runs))
        .collect();
    println!("mean full-jitter delays (s): {means:.1?}");
    for pair in means.windows(2) {
        assert!(pair[1] > pair[0], "{means:?}");
    }
    // Expected mean is ceiling/2: 0.5 s first, 150 s once capped.
    assert!((0.35..0.65).contains(&means[0]), "{means:?}");
    assert!((120.0..180.0).contains(&means[9]), "{means:?}");
}

#[test]
fn decorrelated_jitter_stays_between_initial_and_cap() {
    let mut b = Backoff::default()
        .with_jitter(Jitter::Decorrelated)
        .with_seed(42);
    let delays: Vec<Duration> = (0..60).map(|_| b.next_delay()).collect();
    for d in &delays {
        assert!(*d >= SECOND && *d <= CAP, "{d:?}");
    }
    assert!(
        delays[30..].iter().any(|d| *d > Duration::from_secs(60)),
        "never grew: {delays:?}"
    );
}

#[test]
fn never_exceeds_cap_even_after_many_attempts() {
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let mut b = Backoff::default().with_jitter(jitter);
        for _ in 0..10_000 {
            assert!(b.next_delay() <= CAP);
        }
        assert_eq!(b.attempts(), 10_000);
        assert!(b.ceiling() <= CAP);
    }
}

#[test]
fn reset_starts_over() {
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let mut b = Backoff::default().with_jitter(jitter).with_seed(1);
        for _ in 0..20 {
            b.next_delay();
        }
        assert!(b.ceiling() > SECOND * 10);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.ceiling() <= SECOND * 3, "{:?}", b.ceiling());
        assert!(b.next_delay() <= SECOND * 3);
    }
}

#[test]
fn initial_above_max_is_capped() {
    let mut b = Backoff::new(Duration::from_secs(600), CAP);
    assert!(b.next_delay() <= CAP);
    let mut b = Backoff::new(Duration::from_secs(600), CAP).with_jitter(Jitter::Decorrelated);
    assert_eq!(b.next_delay(), CAP);
}

#[test]
fn health_reports_each_edge_once() {
    let mut h = Health::new();
    assert_eq!(h.success(), None, "healthy start is not a recovery");
    assert!(!h.is_down());

    let first = h.failure(&"connection refused");
    assert_eq!(
        first,
        Some(Transition::Down {
            error: "connection refused".to_owned()
        })
    );
    for i in 0..5 {
        assert_eq!(h.failure(&format_args!("attempt {i}: timed out")), None);
    }
    assert!(h.is_down());
    assert_eq!(h.failures(), 6);
    assert_eq!(h.last_error(), Some("attempt 4: timed out"));

    std::thread::sleep(Duration::from_millis(20));
    match h.success() {
        Some(Transition::Recovered { down_for, attempts }) => {
            assert_eq!(attempts, 6);
            assert!(down_for >= Duration::from_millis(20), "{down_for:?}");
        }
        other => panic!("expected recovery, got {other:?}"),
    }
    assert_eq!(h.success(), None);
    assert!(!h.is_down());
    assert_eq!(h.failures(), 0);
    assert_eq!(h.last_error(), None);

    // A second outage is reported again.
    assert!(matches!(h.failure(&"503"), Some(Transition::Down { .. })));
    assert!(matches!(
        h.success(),
        Some(Transition::Recovered { attempts: 1, .. })
    ));
}

#[test]
fn transitions_read_well_in_logs() {
    let down = Transition::Down {
        error: "connection refused".to_owned(),
    };
    assert_eq!(down.to_string(), "down: connection refused");
    let up = Transition::Recovered {
        down_for: Duration::from_millis(185_400),
        attempts: 7,
    };
    assert_eq!(up.to_string(), "recovered after 3m 5s (7 failed attempts)");
    let quick = Transition::Recovered {
        down_for: Duration::from_millis(1_200),
        attempts: 1,
    };
    assert_eq!(quick.to_string(), "recovered after 1s (1 failed attempt)");
}
