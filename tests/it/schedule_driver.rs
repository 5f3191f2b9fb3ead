use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use passbolt_sync::runtime::schedule::{PassReason, Schedule, run_schedule};
use tokio::sync::watch;

struct Probe {
    running: AtomicUsize,
    max_running: AtomicUsize,
    passes: AtomicUsize,
    starts: Mutex<Vec<(Instant, PassReason)>>,
    /// Wall-clock start of each pass, to measure the phase of cron ticks.
    wall_starts: Mutex<Vec<DateTime<Utc>>>,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            passes: AtomicUsize::new(0),
            starts: Mutex::new(Vec::new()),
            wall_starts: Mutex::new(Vec::new()),
        })
    }

    /// A pass that takes `work` and records concurrency.
    async fn pass(self: Arc<Self>, reason: PassReason, work: Duration) {
        let now_running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now_running, Ordering::SeqCst);
        self.starts.lock().unwrap().push((Instant::now(), reason));
        self.wall_starts.lock().unwrap().push(Utc::now());
        tokio::time::sleep(work).await;
        self.passes.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Running {
    shutdown: watch::Sender<bool>,
    run_now: watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(schedule: Schedule, probe: &Arc<Probe>, work: Duration) -> Running {
    start_with_offset(schedule, Duration::ZERO, probe, work)
}

fn start_with_offset(
    schedule: Schedule,
    offset: Duration,
    probe: &Arc<Probe>,
    work: Duration,
) -> Running {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (run_now, run_now_rx) = watch::channel(());
    let probe = Arc::clone(probe);
    let task = tokio::spawn(run_schedule(
        schedule,
        offset,
        shutdown_rx,
        run_now_rx,
        move |reason| Arc::clone(&probe).pass(reason, work),
    ));
    Running {
        shutdown,
        run_now,
        task,
    }
}

async fn stop(running: Running) -> Duration {
    let asked = Instant::now();
    running.shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_secs(2), running.task)
        .await
        .expect("driver did not stop")
        .expect("driver panicked");
    asked.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_pass_never_overlaps_and_missed_ticks_are_not_replayed() {
    let probe = Probe::new();
    let schedule = Schedule::every(Duration::from_millis(200)).unwrap();
    let running = start(schedule, &probe, Duration::from_millis(500));

    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Let a pass in progress finish so the count is exact.
    stop(running).await;

    let passes = probe.passes.load(Ordering::SeqCst);
    let starts = probe.starts.lock().unwrap().clone();
    println!("passes in ~2 s: {passes}");
    assert_eq!(probe.max_running.load(Ordering::SeqCst), 1);
    // First tick at 0.2 s, then each 0.5 s pass skips to the next 0.2 s grid
    // point after it ends: starts at 0.2, 0.8, 1.4 and maybe 2.0. A driver
    // replaying missed ticks would start passes back to back (~4 by 2 s and
    // ever more behind); a parallel one would do ~10.
    assert!((3..=4).contains(&passes), "passes = {passes}");
    for pair in starts.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(550),
            "gap {gap:?} between passes"
        );
    }
    assert!(
        starts
            .iter()
            .all(|(_, r)| matches!(r, PassReason::Scheduled { .. }))
    );
}

#[tokio::test]
async fn every_schedule_keeps_its_pace() {
    let probe = Probe::new();
    let schedule = Schedule::every(Duration::from_millis(100)).unwrap();
    let running = start(schedule, &probe, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(1050)).await;
    stop(running).await;
    let passes = probe.passes.load(Ordering::SeqCst);
    println!("passes of a 100 ms schedule in ~1.05 s: {passes}");
    assert!((8..=11).contains(&passes), "passes = {passes}");
}

#[tokio::test]
async fn shutdown_while_waiting_is_prompt() {
    let probe = Probe::new();
    let running = start(parse_hourly(), &probe, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = stop(running).await;
    println!("shutdown took {took:?}");
    assert!(took < Duration::from_millis(50), "shutdown took {took:?}");
    assert_eq!(probe.passes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dropping_the_shutdown_sender_stops_the_driver() {
    let probe = Probe::new();
    let running = start(parse_hourly(), &probe, Duration::ZERO);
    drop(running.shutdown);
    tokio::time::timeout(Duration::from_millis(100), running.task)
        .await
        .expect("driver kept running")
        .unwrap();
}

#[tokio::test]
async fn run_now_starts_a_pass_immediately() {
    let probe = Probe::new();
    let running = start(parse_hourly(), &probe, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(20)).await;

    let asked = Instant::now();
    running.run_now.send_replace(());
    wait_for(|| probe.passes.load(Ordering::SeqCst) == 1).await;
    let latency = {
        let starts = probe.starts.lock().unwrap();
        assert_eq!(starts[0].1, PassReason::RunNow);
        starts[0].0 - asked
    };
    println!("run-now latency: {latency:?}");
    assert!(latency < Duration::from_millis(50), "took {latency:?}");

    stop(running).await;
    assert_eq!(probe.passes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn run_now_requests_during_a_pass_coalesce_into_one() {
    let probe = Probe::new();
    let running = start(parse_hourly(), &probe, Duration::from_millis(200));
    running.run_now.send_replace(());
    wait_for(|| probe.running.load(Ordering::SeqCst) == 1).await;
    for _ in 0..5 {
        running.run_now.send_replace(());
    }
    wait_for(|| probe.passes.load(Ordering::SeqCst) == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(running).await;
    assert_eq!(probe.passes.load(Ordering::SeqCst), 2);
    assert_eq!(probe.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn marked_receiver_runs_a_first_pass_at_start() {
    let probe = Probe::new();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (_run_now, mut run_now_rx) = watch::channel(());
    run_now_rx.mark_changed();
    let p = Arc::clone(&probe);
    let task = tokio::spawn(run_schedule(
        parse_hourly(),
        Duration::ZERO,
        shutdown_rx,
        run_now_rx,
        move |reason| Arc::clone(&p).pass(reason, Duration::ZERO),
    ));
    wait_for(|| probe.passes.load(Ordering::SeqCst) == 1).await;
    shutdown.send_replace(true);
    task.await.unwrap();
}

#[tokio::test]
async fn dropped_run_now_sender_leaves_the_schedule_running() {
    let probe = Probe::new();
    let schedule = Schedule::every(Duration::from_millis(50)).unwrap();
    let running = start(schedule, &probe, Duration::ZERO);
    let Running {
        shutdown,
        run_now,
        task,
    } = running;
    drop(run_now);
    wait_for(|| probe.passes.load(Ordering::SeqCst) >= 3).await;
    shutdown.send_replace(true);
    task.await.unwrap();
}

#[tokio::test]
async fn cron_schedule_fires_on_the_second() {
    let probe = Probe::new();
    let every_second = Schedule::parse("* * * * * *", None).unwrap();
    let running = start(every_second, &probe, Duration::ZERO);
    wait_for(|| probe.passes.load(Ordering::SeqCst) >= 2).await;
    stop(running).await;
    let starts = probe.starts.lock().unwrap();
    let PassReason::Scheduled { due } = starts[0].1 else {
        panic!("not scheduled")
    };
    assert_eq!(due.timestamp_subsec_nanos(), 0);
    let gap = starts[1].0 - starts[0].0;
    assert!(
        gap > Duration::from_millis(900) && gap < Duration::from_millis(1100),
        "{gap:?}"
    );
}

fn parse_hourly() -> Schedule {
    Schedule::parse("every 1h", None).unwrap()
}

async fn wait_for(cond: impl Fn() -> bool) {
    // Long enough for three ticks of a one-second schedule with an offset.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn shutdown_during_a_pass_lets_it_finish_then_stops() {
    let probe = Probe::new();
    let running = start(parse_hourly(), &probe, Duration::from_millis(200));
    running.run_now.send_replace(());
    wait_for(|| probe.running.load(Ordering::SeqCst) == 1).await;
    let took = stop(running).await;
    println!("shutdown during a pass took {took:?}");
    assert_eq!(probe.passes.load(Ordering::SeqCst), 1, "pass was cut short");
    assert!(took < Duration::from_millis(300), "{took:?}");
}

#[tokio::test]
async fn already_shut_down_never_runs() {
    let probe = Probe::new();
    let (_shutdown, shutdown_rx) = watch::channel(true);
    let (_run_now, mut run_now_rx) = watch::channel(());
    run_now_rx.mark_changed();
    let p = Arc::clone(&probe);
    run_schedule(
        parse_hourly(),
        Duration::ZERO,
        shutdown_rx,
        run_now_rx,
        move |reason| Arc::clone(&p).pass(reason, Duration::ZERO),
    )
    .await;
    assert_eq!(probe.passes.load(Ordering::SeqCst), 0);
}

const OFFSET: Duration = Duration::from_millis(300);

/// When each pass started, relative to `t0`.
fn since(t0: Instant, probe: &Probe) -> Vec<Duration> {
    probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(at, _)| *at - t0)
        .collect()
}

#[tokio::test]
async fn every_tick_fires_its_offset_after_the_occurrence_without_drifting() {
    let probe = Probe::new();
    let t0 = Instant::now();
    let schedule = Schedule::every(Duration::from_secs(1)).unwrap();
    let running = start_with_offset(schedule, OFFSET, &probe, Duration::from_millis(10));
    wait_for(|| probe.passes.load(Ordering::SeqCst) >= 3).await;
    stop(running).await;

    // Occurrences at 1 s, 2 s, 3 s after the start; ticks 300 ms later.
    // A driver that computed each next tick from the delayed start plus
    // the offset again would fire at 1.3, 2.6, 3.9 s.
    let starts = since(t0, &probe);
    println!("every 1s with a 300 ms offset, passes at {starts:?}");
    for (k, at) in starts.iter().take(3).enumerate() {
        let expected = Duration::from_secs(k as u64 + 1) + OFFSET;
        assert!(
            *at >= expected && *at < expected + Duration::from_millis(60),
            "pass {k} at {at:?}, expected {expected:?}"
        );
    }
    let phases: Vec<u128> = starts.iter().map(|at| at.as_millis() % 1000).collect();
    println!("phase of each pass within its second: {phases:?} ms");
}

#[tokio::test]
async fn cron_ticks_fire_on_the_offset_phase_even_when_it_exceeds_the_period() {
    let probe = Probe::new();
    let every_second = Schedule::parse("* * * * * *", None).unwrap();
    // Longer than the period: each second's tick fires 1.3 s after it, so
    // ticks still come once a second, 300 ms into it, the first one within
    // a second (its occurrence is already past when the driver starts).
    let offset = Duration::from_secs(1) + OFFSET;
    let t0 = Instant::now();
    let running = start_with_offset(every_second, offset, &probe, Duration::ZERO);
    wait_for(|| probe.passes.load(Ordering::SeqCst) >= 3).await;
    stop(running).await;

    let starts = since(t0, &probe);
    let walls = probe.wall_starts.lock().unwrap().clone();
    let reasons: Vec<PassReason> = probe.starts.lock().unwrap().iter().map(|s| s.1).collect();
    println!("cron every second with a 1.3 s offset, passes at {starts:?}");
    assert!(starts[0] < Duration::from_millis(1050), "{:?}", starts[0]);
    for (wall, reason) in walls.iter().zip(&reasons) {
        let PassReason::Scheduled { due } = reason else {
            panic!("not scheduled: {reason:?}")
        };
        assert_eq!(due.timestamp_subsec_millis(), 300, "due {due}");
        let late = *wall - *due;
        assert!(
            late >= chrono::TimeDelta::zero() && late < chrono::TimeDelta::milliseconds(60),
            "started {wall}, due {due}"
        );
    }
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(940) && gap < Duration::from_millis(1060),
            "{gap:?}"
        );
    }
}

#[tokio::test]
async fn requested_passes_are_not_delayed_and_restart_the_grid_with_the_offset() {
    let probe = Probe::new();
    let t0 = Instant::now();
    let schedule = Schedule::every(Duration::from_secs(1)).unwrap();
    let running = start_with_offset(schedule, OFFSET, &probe, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let asked = Instant::now();
    running.run_now.send_replace(());
    wait_for(|| probe.passes.load(Ordering::SeqCst) >= 2).await;
    stop(running).await;

    let starts = probe.starts.lock().unwrap().clone();
    assert_eq!(starts[0].1, PassReason::RunNow);
    let latency = starts[0].0 - asked;
    println!("run-now latency with a 300 ms offset: {latency:?}");
    assert!(latency < Duration::from_millis(50), "{latency:?}");
    // The grid restarts at the requested pass: its first tick one interval
    // plus the offset later (~1.7 s), not on the old grid (1.3 s).
    assert!(matches!(starts[1].1, PassReason::Scheduled { .. }));
    let after = starts[1].0 - starts[0].0;
    let scheduled_at = starts[1].0 - t0;
    println!("scheduled tick {after:?} after the requested pass, {scheduled_at:?} after start");
    assert!(
        after >= Duration::from_secs(1) + OFFSET
            && after < Duration::from_secs(1) + OFFSET + Duration::from_millis(60),
        "{after:?}"
    );
}
