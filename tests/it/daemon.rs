//! `passbolt-sync run` as a real child process against the dev server:
//! token refresh across cycles, reloads, outages, SIGTERM, sd_notify.

use crate::common;
use crate::common::replace;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, devserver, fixture, set_pin, wait_until, write_config};
use nix::sys::signal::Signal;
use passbolt_devserver::{Event, Faults, Options, seed::ids};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn pin_target(out: &Path, schedule: &str) -> String {
    format!(
        "schedule: {schedule}\ntargets:\n  - {{ path: {}/pin, format: raw, resource: {}, field: pin }}\n",
        out.display(),
        ids::V5_PIN
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cycles_refresh_rotated_tokens_with_one_login_and_sigterm_revokes_the_own_token() {
    let server = devserver(Options {
        access_token_ttl: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("alice");
    let config = write_config(
        dir.path(),
        &server,
        &who,
        &pin_target(dir.path(), "every 1s"),
    );
    // Another session of the same account, which must survive our logout.
    let other = common::client(&server, &who);
    other.login().await.unwrap();

    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(20), || server.count_refreshes() >= 3).await,
        "{}",
        d.log()
    );
    let pin = dir.path().join("pin");
    assert_eq!(read(&pin), "73019468");
    set_pin(&server, "1111");
    assert!(wait_until(Duration::from_secs(5), || read(&pin) == "1111").await);

    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        server.count_logins(),
        2,
        "ours and the other session's: no second login by the daemon"
    );
    assert!(
        server.refresh_reuses().is_empty(),
        "no refresh token presented twice"
    );
    // Each refresh presented a different token.
    let presented: Vec<String> = server
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Refresh { token, .. } => Some(token),
            _ => None,
        })
        .collect();
    let unique: std::collections::HashSet<_> = presented.iter().collect();
    assert_eq!(unique.len(), presented.len());
    // SIGTERM revoked this daemon's refresh token, and only it.
    assert!(
        server
            .events()
            .iter()
            .any(|e| matches!(e, Event::Logout { token: Some(_), .. }))
    );
    assert!(
        !server
            .events()
            .iter()
            .any(|e| matches!(e, Event::Logout { token: None, .. }))
    );
    assert_eq!(
        server.active_refresh_tokens(&who.id),
        1,
        "the other session lives on"
    );
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_edits_are_applied_live_and_broken_edits_keep_the_running_config() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("bob");
    let config = write_config(
        dir.path(),
        &server,
        &who,
        &pin_target(dir.path(), "every 1s"),
    );
    let d = Daemon::start(&config, &[]).await;
    let pin = dir.path().join("pin");
    assert!(
        wait_until(Duration::from_secs(15), || pin.exists()).await,
        "{}",
        d.log()
    );

    // 1. A new target, added by renaming a new file over the config.
    let base = std::fs::read_to_string(&config).unwrap();
    let redis = dir.path().join("redis");
    let added = format!(
        "{base}  - {{ path: {}, format: raw, resource: {} }}\n",
        redis.display(),
        ids::V5_PASSWORD_STRING
    );
    let t = Instant::now();
    replace(&config, &added);
    assert!(
        wait_until(Duration::from_secs(2), || redis.exists()).await,
        "{}",
        d.log()
    );
    let latency = t.elapsed();
    eprintln!("edit-to-file latency: {latency:?}");
    assert_eq!(read(&redis), "redis-pass-v5");

    // 2. A broken edit: logged with its position, the old config keeps syncing.
    replace(&config, &format!("{added}  - path: [\n"));
    assert!(
        d.wait_log("config reload failed", 1, Duration::from_secs(3))
            .await,
        "{}",
        d.log()
    );
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("config reload failed"))
        .unwrap();
    assert!(line.contains(&format!("{}:", config.display())), "{line}");
    set_pin(&server, "2222");
    assert!(
        wait_until(Duration::from_secs(5), || read(&pin) == "2222").await,
        "{}",
        d.log()
    );

    // 3. SIGHUP re-reads the file even when no change notification came.
    let renamed = dir.path().join("pin2");
    let edited = added.replace(
        &format!("{}/pin,", dir.path().display()),
        &format!("{},", renamed.display()),
    );
    std::fs::write(&config, &edited).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(
        d.wait_log("SIGHUP: re-reading the config", 1, Duration::from_secs(2))
            .await,
        "{}",
        d.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || read(&renamed) == "2222").await,
        "{}",
        d.log()
    );
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_logs_once_down_and_once_recovered_and_keeps_files() {
    let mut server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &pin_target(dir.path(), "every 1s"),
    );
    let d = Daemon::start(&config, &[]).await;
    let pin = dir.path().join("pin");
    assert!(
        wait_until(Duration::from_secs(15), || pin.exists()).await,
        "{}",
        d.log()
    );
    let mtime = std::fs::metadata(&pin).unwrap().modified().unwrap();

    server.stop().await;
    assert!(
        d.wait_log("passbolt server down", 1, Duration::from_secs(5))
            .await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(read(&pin), "73019468");
    assert_eq!(
        std::fs::metadata(&pin).unwrap().modified().unwrap(),
        mtime,
        "untouched"
    );

    server.restart().await.unwrap();
    set_pin(&server, "3333");
    // Backoff with full jitter from 1 s doubling: the attempt after a few
    // seconds of outage may come up to 16 s later.
    assert!(
        d.wait_log("passbolt server recovered", 1, Duration::from_secs(40))
            .await,
        "{}",
        d.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || read(&pin) == "3333").await,
        "sync resumes"
    );

    // 5xx is an outage too.
    server.set_faults(Faults {
        status_for_all: Some(502),
        ..Faults::default()
    });
    assert!(
        d.wait_log("passbolt server down", 2, Duration::from_secs(5))
            .await,
        "{}",
        d.log()
    );
    server.set_faults(Faults::default());
    assert!(
        d.wait_log("passbolt server recovered", 2, Duration::from_secs(20))
            .await,
        "{}",
        d.log()
    );

    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0));
    assert_eq!(
        log.matches("passbolt server down").count(),
        2,
        "one line per outage:\n{log}"
    );
    assert_eq!(log.matches("passbolt server recovered").count(), 2, "{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("passbolt server"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_comes_only_after_the_targets_exist_and_watchdog_pings_follow() {
    let server = devserver(Options::default()).await;
    // A slow server: READY must wait for the first sync.
    server.set_faults(Faults {
        delay: Some(Duration::from_millis(150)),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &fixture("bob"),
        &pin_target(dir.path(), "every 1h"),
    );
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let d = Daemon::start(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "600000"),
        ],
    )
    .await;
    let pin = dir.path().join("pin");
    let mut messages = Vec::new();
    let mut ready_saw_file = None;
    let mut watchdogs = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    // Pings may come during start-up too; count those after READY.
    while Instant::now() < deadline && (ready_saw_file.is_none() || watchdogs < 3) {
        let n = match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
            Ok(r) => r.unwrap(),
            Err(_) => continue,
        };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.contains("READY=1") && ready_saw_file.is_none() {
            ready_saw_file = Some(pin.exists());
        }
        if msg.contains("WATCHDOG=1") && ready_saw_file.is_some() {
            watchdogs += 1;
        }
        messages.push(msg);
    }
    assert_eq!(
        ready_saw_file,
        Some(true),
        "READY after the target exists: {messages:?}\n{}",
        d.log()
    );
    assert!(watchdogs >= 3, "{messages:?}");
    assert!(
        messages.iter().any(|m| m.starts_with("STATUS=last sync")),
        "{messages:?}"
    );
    let (code, _) = d.stop().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_plain_under_journald_and_json_on_request() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server,
        &fixture("alice"),
        &pin_target(dir.path(), "every 1h"),
    );
    let c = config.to_str().unwrap();
    let out = common::cli(&["once", "-c", c], &[("JOURNAL_STREAM", "8:12345")]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap();
    assert!(
        first.starts_with("INFO ") || first.starts_with(" INFO "),
        "no timestamp, no colour: {first:?}"
    );
    assert!(!stderr.contains('\u{1b}'));
    let out = common::cli(&["--log-format", "json", "once", "-c", c], &[]).await;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_ticks_wait_for_the_hosts_splay_offset_and_a_reload_applies_a_new_splay() {
    use passbolt_sync::runtime::schedule::{
        HostIdSource, MACHINE_ID_PATH, identify_host, splay_offset,
    };

    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let who = fixture("bob");
    let targets = pin_target(dir.path(), "every 1s");
    let config = write_config(dir.path(), &server, &who, &format!("splay: 3s\n{targets}"));
    // The daemon runs on this machine: it must find the same id, and so
    // the same offset, as this test.
    let (host_id, source) = identify_host(Path::new(MACHINE_ID_PATH));
    let line = |splay: Duration| {
        let offset = splay_offset(splay, &host_id);
        let shown = humantime::format_duration(Duration::from_millis(offset.as_millis() as u64));
        let splay = humantime::format_duration(splay);
        let from = match source {
            HostIdSource::MachineId => format!(" (from {MACHINE_ID_PATH})"),
            HostIdSource::Hostname => " (from the hostname)".to_string(),
            HostIdSource::Nothing => ": no machine id".to_string(),
        };
        (offset, format!("splay offset {shown} of {splay}{from}"))
    };
    let (offset, expected) = line(Duration::from_secs(3));

    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;
    assert!(
        d.wait_log("first sync complete; ready", 1, Duration::from_secs(15))
            .await,
        "{}",
        d.log()
    );
    let ready = Instant::now();
    assert!(
        d.wait_log("starting scheduled pass", 1, Duration::from_secs(6))
            .await,
        "{}",
        d.log()
    );
    // The first scheduled tick: one interval, then the offset, after the
    // drivers start (right after READY).
    let first_tick = ready.elapsed();
    eprintln!("splay offset {offset:?}; first scheduled pass {first_tick:?} after ready");
    let due = Duration::from_secs(1) + offset;
    assert!(
        first_tick + Duration::from_millis(100) >= due
            && first_tick <= due + Duration::from_millis(400),
        "first scheduled pass {first_tick:?} after ready, expected {due:?}\n{}",
        d.log()
    );
    assert_eq!(d.log().matches(&expected).count(), 1, "{}", d.log());

    let (_, expected_after_reload) = line(Duration::from_secs(1));
    let base = std::fs::read_to_string(&config).unwrap();
    replace(&config, &base.replace("splay: 3s", "splay: 1s"));
    assert!(
        d.wait_log(&expected_after_reload, 1, Duration::from_secs(3))
            .await,
        "{}",
        d.log()
    );
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    if source == HostIdSource::MachineId {
        assert!(!log.contains(&host_id), "the machine id is logged:\n{log}");
    }
}
