//! Endurance of the real daemon against the dev server: SIGKILL at random
//! moments (also in the middle of a hook) while the server keeps changing
//! secrets, and a soak with short-lived tokens, config edits and SIGHUPs.
//!
//! After every kill each target must hold one whole value the server once
//! had: the values repeat a generation counter on every line, so a torn or
//! mixed file is seen by parsing it. The writer's temporary files
//! (`.<name>.pbsync.<16 hex>.tmp`) may outlive a kill, but not the next
//! completed pass. The dev server must see no refresh-token reuse and no
//! attack event.
//!
//! `soak_30_minutes` is `#[ignore]`d: `.ci/run` runs it only when
//! `PASSBOLT_SYNC_SOAK=1` is set (`cargo test --test it -- --ignored
//! soak_30_minutes`).

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, fixture, wait_until, write_config};
use nix::sys::signal::Signal;
use passbolt_devserver::{DevServer, Options, seed::ids};

/// The shortest interval the schedule parser accepts (sub-second intervals
/// are refused in a config).
const SCHEDULE: &str = "every 1s";
/// Lines per value: a torn write shows as a short or mixed file.
const LINES: usize = 64;

/// A target the changer keeps rewriting, as (resource, file name, v5 JSON?).
const CHANGING: &[(&str, &str, bool)] = &[
    (ids::V4_PASSWORD_STRING, "v4", false),
    (ids::V5_PASSWORD_STRING, "v5", false),
    (ids::V5_DEFAULT, "v5default", true),
];

/// The value of generation `n` for the target named `tag`.
fn value(tag: &str, n: u64) -> String {
    let line = format!("{tag} generation {n:010}");
    vec![line; LINES].join("\n")
}

fn secret(tag: &str, n: u64, v5_json: bool) -> String {
    if v5_json {
        serde_json::json!({
            "object_type": "PASSBOLT_SECRET_DATA",
            "password": value(tag, n),
            "description": "",
            "custom_fields": [],
        })
        .to_string()
    } else {
        value(tag, n)
    }
}

/// The generation a target file holds, or why it is not one whole value.
fn parse(tag: &str, content: &str) -> Result<u64, String> {
    let lines: Vec<&str> = content.split('\n').collect();
    if lines.len() != LINES || lines.iter().any(|l| *l != lines[0]) {
        return Err(format!(
            "{} line(s), not {LINES} equal ones; first {:?}",
            lines.len(),
            lines.first()
        ));
    }
    lines[0]
        .strip_prefix(&format!("{tag} generation "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a value of {tag}: {:?}", lines[0]))
}

/// Changes every target's secret every `every` until dropped, on a thread
/// of its own: encrypting is CPU work that would stall the server's runtime.
struct Changer {
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Changer {
    fn start(
        server: Arc<DevServer>,
        targets: &'static [(&'static str, &'static str, bool)],
        every: Duration,
    ) -> Changer {
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (generation.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let n = g.load(Ordering::SeqCst) + 1;
                let changes: Vec<(&str, String)> = targets
                    .iter()
                    .map(|(id, tag, json)| (*id, secret(tag, n, *json)))
                    .collect();
                server.set_secrets(&changes).unwrap();
                // Published only once stored: a file may never be ahead.
                g.store(n, Ordering::SeqCst);
                std::thread::sleep(every);
            }
        });
        Changer {
            generation,
            stop,
            thread: Some(thread),
        }
    }

    fn current(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

impl Drop for Changer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn targets_yaml(dir: &Path, hook: Option<&str>) -> String {
    let mut y = format!("schedule: {SCHEDULE}\ntargets:\n");
    for (id, tag, _) in CHANGING {
        y.push_str(&format!(
            "  - {{ path: {}, format: raw, resource: {id} }}\n",
            dir.join(tag).display()
        ));
    }
    if let Some(hook) = hook {
        // The hook belongs to the first target only.
        let first = format!("resource: {} }}", CHANGING[0].0);
        y = y.replacen(
            &first,
            &format!("resource: {}, on_change: {hook:?} }}", CHANGING[0].0),
            1,
        );
    }
    y
}

/// The writer's temporary files in `dir`.
fn temp_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.contains(".pbsync.") && n.ends_with(".tmp"))
        .collect()
}

fn sync_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("sync: ")).count()
}

/// What the kill loops found, over all kills.
#[derive(Default)]
struct Tally {
    kills: usize,
    restarts: usize,
    passes: usize,
    torn: Vec<String>,
    temp_after_kill: usize,
    temp_survived: Vec<String>,
    /// Per target, the last generation seen: a file never goes back.
    last: HashMap<&'static str, u64>,
    /// Temporary files seen after a kill, not yet seen removed by a pass.
    pending: BTreeSet<String>,
}

impl Tally {
    /// Checks every target after the daemon died; `passed`: the dead daemon
    /// had completed a pass, so no earlier leftover may remain.
    fn check(&mut self, dir: &Path, changer: &Changer, passed: bool, when: &str) {
        let newest = changer.current() + 1;
        for (_, tag, _) in CHANGING {
            let path = dir.join(tag);
            let Ok(content) = std::fs::read_to_string(&path) else {
                if self.last.contains_key(tag) {
                    self.torn.push(format!("{when}: {tag} is gone"));
                }
                continue;
            };
            match parse(tag, &content) {
                Ok(n) if n > newest => self.torn.push(format!(
                    "{when}: {tag} holds {n}, the server only had {newest}"
                )),
                Ok(n) if n < self.last.get(tag).copied().unwrap_or(0) => self.torn.push(format!(
                    "{when}: {tag} went back from {} to {n}",
                    self.last[tag]
                )),
                Ok(n) => {
                    self.last.insert(tag, n);
                }
                Err(e) => self.torn.push(format!("{when}: {tag}: {e}")),
            }
        }
        let temps = temp_files(dir);
        self.temp_after_kill += temps.len();
        if passed {
            self.temp_survived.extend(
                self.pending
                    .intersection(&temps)
                    .map(|t| format!("{when}: {t}")),
            );
            self.pending = temps;
        } else {
            self.pending.extend(temps);
        }
    }
}

struct Rig {
    server: Arc<DevServer>,
    dir: tempfile::TempDir,
    config: PathBuf,
}

async fn rig(hook: Option<&str>) -> Rig {
    let server = Arc::new(common::devserver(Options::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let mut hook_cmd = None;
    if let Some(h) = hook {
        hook_cmd = Some(h.replace("{dir}", &dir.path().display().to_string()));
    }
    let config = write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &targets_yaml(dir.path(), hook_cmd.as_deref()),
    );
    Rig {
        server,
        dir,
        config,
    }
}

impl Rig {
    async fn start(&self) -> Daemon {
        Daemon::start(
            &self.config,
            &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
        )
        .await
    }

    /// SIGKILL, then reap: the lock and the files are the dead daemon's.
    async fn kill(&self, mut d: Daemon) -> String {
        d.signal(Signal::SIGKILL);
        let status = tokio::time::timeout(Duration::from_secs(10), d.child.wait())
            .await
            .expect("a killed daemon is reaped")
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        d.log()
    }

    /// A last daemon runs one pass and stops on SIGTERM: then no
    /// temporary file is left, every target is whole, the server saw no
    /// reuse and no attack.
    async fn finish(&self, tally: &mut Tally, changer: &Changer) {
        let d = self.start().await;
        tally.restarts += 1;
        assert!(
            d.wait_log("sync: ", 1, Duration::from_secs(30)).await,
            "{}",
            d.log()
        );
        let (code, log) = d.stop().await;
        assert_eq!(code, Some(0), "{log}");
        tally.passes += sync_lines(&log);
        tally.check(self.dir.path(), changer, true, "after the last pass");
        for (_, tag, _) in CHANGING {
            assert!(self.dir.path().join(tag).exists(), "{tag}: {log}");
        }
        let left = temp_files(self.dir.path());
        eprintln!(
            "kills {}, restarts {}, passes observed {}, torn files found {}, temp files after a kill {}, temp files left {}, refresh reuses {}, attacks {}, logins {}",
            tally.kills,
            tally.restarts,
            tally.passes,
            tally.torn.len(),
            tally.temp_after_kill,
            tally.temp_survived.len() + left.len(),
            self.server.refresh_reuses().len(),
            self.server.attacks().len(),
            self.server.count_logins(),
        );
        assert_eq!(tally.torn, Vec::<String>::new(), "torn files");
        assert_eq!(
            tally.temp_survived,
            Vec::<String>::new(),
            "temp files outlived a pass"
        );
        assert!(left.is_empty(), "temp files left: {left:?}");
        assert!(
            self.server.refresh_reuses().is_empty(),
            "refresh token reused"
        );
        assert_eq!(self.server.attacks(), vec![], "the server saw an attack");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_sigkills_at_random_moments_leave_whole_files_and_no_temp_file() {
    let seed = std::env::var("PASSBOLT_SYNC_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("kill loop seed {seed} (PASSBOLT_SYNC_KILL_SEED={seed} repeats it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let rig = rig(None).await;
    let changer = Changer::start(rig.server.clone(), CHANGING, Duration::from_millis(50));
    let mut tally = Tally::default();
    // A kill between a temporary file's creation and its rename is a
    // window of a few milliseconds that random kills rarely hit: one
    // leftover per target, as such a kill leaves it, must go with the
    // first pass too.
    for (_, tag, _) in CHANGING {
        let name = format!(".{tag}.pbsync.{:016x}.tmp", rng.u64(..));
        std::fs::write(rig.dir.path().join(&name), value(tag, 0)).unwrap();
        tally.pending.insert(name);
    }
    let planted = tally.pending.len();
    let started = Instant::now();
    for i in 0..50 {
        let d = rig.start().await;
        if i > 0 {
            tally.restarts += 1;
        }
        // Half the kills land anywhere from exec on (key unlock, login,
        // first pass); the others after a first pass, in a later one.
        if rng.bool() {
            d.wait_log("sync: ", 1, Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..900))).await;
        let log = rig.kill(d).await;
        tally.kills += 1;
        let passes = sync_lines(&log);
        tally.passes += passes;
        tally.check(
            rig.dir.path(),
            &changer,
            passes > 0,
            &format!("kill {}", i + 1),
        );
    }
    rig.finish(&mut tally, &changer).await;
    eprintln!(
        "kill loop: {:?}, leftovers planted before the first start {planted}, generations written by the server {}",
        started.elapsed(),
        changer.current()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_hook_leaves_whole_files_and_no_temp_file() {
    let seed = fastrand::u64(..);
    eprintln!("hook kill seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let rig = rig(Some("echo run >> {dir}/hook.runs; sleep 2")).await;
    let runs = rig.dir.path().join("hook.runs");
    let count_runs = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let changer = Changer::start(rig.server.clone(), CHANGING, Duration::from_millis(50));
    let mut tally = Tally::default();
    for i in 0..5 {
        let before = count_runs();
        let d = rig.start().await;
        if i > 0 {
            tally.restarts += 1;
        }
        assert!(
            wait_until(Duration::from_secs(30), || count_runs() > before).await,
            "{}",
            d.log()
        );
        // Somewhere inside the hook's 2 s sleep.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..1500))).await;
        assert!(
            d.log().contains("running hook") && !d.log().contains("hook succeeded"),
            "{}",
            d.log()
        );
        let log = rig.kill(d).await;
        tally.kills += 1;
        let passes = sync_lines(&log);
        tally.passes += passes;
        tally.check(
            rig.dir.path(),
            &changer,
            passes > 0,
            &format!("hook kill {}", i + 1),
        );
    }
    rig.finish(&mut tally, &changer).await;
}

/// RSS in KiB and the open descriptors of `pid`, the smallest of a few
/// samples between passes: a pass briefly holds a temporary file and
/// maybe a new connection.
async fn footprint(d: &Daemon) -> (u64, usize) {
    let pid = d.child.id().unwrap();
    let passes = sync_lines(&d.log());
    d.wait_log("sync: ", passes + 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rss = u64::MAX;
    let mut fds = usize::MAX;
    for _ in 0..5 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        rss = rss.min(kib);
        fds = fds.min(
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count(),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    (rss, fds)
}

/// Lines of the log that report a failure: nothing in the soak injects one.
fn failure_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains(" ERROR ")
                || l.contains(" WARN ")
                || l.contains("sync still failing")
                || l.contains("passbolt server down")
        })
        .collect()
}

/// The daemon for `total` with 2-second access tokens and a 1-second
/// schedule; secrets change every 3 s, the config is replaced every 5 s
/// and SIGHUP comes every 7 s. Memory and descriptors are compared between
/// `mark` and the end.
async fn soak(total: Duration, mark: Duration) {
    let server = Arc::new(
        common::devserver(Options {
            access_token_ttl: Duration::from_secs(2),
            ..Options::default()
        })
        .await,
    );
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let base = targets_yaml(dir.path(), None);
    let config = write_config(dir.path(), &server, &who, &base);
    let with_pin = std::fs::read_to_string(&config).unwrap();
    let without_pin = with_pin.clone();
    let with_pin = format!(
        "{with_pin}  - {{ path: {}, format: raw, resource: {}, field: pin }}\n",
        dir.path().join("pin").display(),
        ids::V5_PIN
    );
    let changer = Changer::start(server.clone(), CHANGING, Duration::from_secs(3));
    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;
    assert!(
        d.wait_log("first sync complete; ready", 1, Duration::from_secs(30))
            .await,
        "{}",
        d.log()
    );
    let started = Instant::now();
    let mut at_mark = None;
    let (mut edits, mut sighups) = (0u32, 0u32);
    let mut next_edit = started + Duration::from_secs(5);
    let mut next_hup = started + Duration::from_secs(7);
    while started.elapsed() < total {
        let now = Instant::now();
        if now >= next_edit {
            edits += 1;
            let content = if edits % 2 == 1 {
                &with_pin
            } else {
                &without_pin
            };
            let tmp = config.with_extension("yaml.new");
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, &config).unwrap();
            next_edit += Duration::from_secs(5);
        }
        if now >= next_hup {
            sighups += 1;
            d.signal(Signal::SIGHUP);
            next_hup += Duration::from_secs(7);
        }
        if at_mark.is_none() && started.elapsed() >= mark {
            at_mark = Some(footprint(&d).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rss_end, fds_end) = footprint(&d).await;
    let (rss_mark, fds_mark) = at_mark.expect("the mark comes before the end");
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let failures = failure_lines(&log);
    let passes = sync_lines(&log);
    eprintln!(
        "soak {total:?}: passes {passes}, failed passes {}, refreshes {}, logins {}, refresh reuses {}, attack events {}, config edits {edits}, SIGHUPs {sighups}, secret generations {}, RSS {rss_mark} KiB at {mark:?} -> {rss_end} KiB at the end ({:+} KiB), fds {fds_mark} -> {fds_end}",
        failures.len(),
        server.count_refreshes(),
        server.count_logins(),
        server.refresh_reuses().len(),
        server.attacks().len(),
        changer.current(),
        rss_end as i64 - rss_mark as i64,
    );
    assert_eq!(server.attacks(), vec![], "the server saw an attack");
    assert!(server.refresh_reuses().is_empty(), "refresh token reused");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(passes as u64 >= total.as_secs() / 2, "{log}");
    assert!(
        log.matches("config reloaded").count() >= edits as usize / 2,
        "{log}"
    );
    assert!(
        rss_end < rss_mark + 2048,
        "RSS grew from {rss_mark} KiB to {rss_end} KiB"
    );
    assert_eq!(fds_mark, fds_end, "open descriptors changed");
    for (_, tag, _) in CHANGING {
        let content = std::fs::read_to_string(dir.path().join(tag)).unwrap();
        parse(tag, &content).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_60_seconds() {
    soak(Duration::from_secs(60), Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "30 minutes: .ci/run runs it when PASSBOLT_SYNC_SOAK=1"]
async fn soak_30_minutes() {
    soak(Duration::from_secs(30 * 60), Duration::from_secs(5 * 60)).await;
}
