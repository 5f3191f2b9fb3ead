//! One session per host: 100 `passbolt-sync get` calls against a running
//! `passbolt-sync run` of the same config (answered on its local socket)
//! beside 100 with `--no-agent` (a login each), on the dev server. The
//! real binary in both, as a script would run it. For each: the median
//! wall time of one call, and what the calls cost the server: requests,
//! logins and secret reads (each a row in passbolt's audit
//! log).
//!
//! `cargo bench --bench agent` (or, without the release build,
//! `cargo test --bench agent`; `PASSBOLT_SYNC_BENCH_QUICK=1` for 20 calls).

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use passbolt_devserver::{DevServer, Options, seed::ids};
use passbolt_sync::sync::held::SETTLE_SECONDS;

use support::common::{self, fixture};

struct Cost {
    wall: Duration,
    requests: usize,
    logins: usize,
    secret_reads: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn gets(
    server: &DevServer,
    config: &Path,
    run: &Path,
    calls: usize,
    via_agent: bool,
) -> Cost {
    let requests = server.count_requests();
    let (logins, reads) = (server.count_logins(), server.count_secret_reads());
    let mut walls = Vec::new();
    for _ in 0..calls {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"));
        cmd.args(["get", "-c", config.to_str().unwrap(), ids::V5_DEFAULT])
            .env_remove("RUST_LOG")
            .env("RUNTIME_DIRECTORY", run)
            .stderr(Stdio::inherit());
        if !via_agent {
            cmd.arg("--no-agent");
        }
        let started = Instant::now();
        let out = cmd.output().await.expect("the binary runs");
        walls.push(started.elapsed());
        assert!(out.status.success() && !out.stdout.is_empty());
    }
    Cost {
        wall: median(walls),
        requests: server.count_requests() - requests,
        logins: server.count_logins() - logins,
        secret_reads: server.count_secret_reads() - reads,
    }
}

fn main() {
    support::banner("agent: get through the daemon's socket, and without");
    let calls = support::scaled(100, 20);
    let bob = fixture("bob");
    let rows = support::runtime().block_on(async {
        let server = common::devserver(Options::default()).await;
        server.set_clock(Some(server.now() + SETTLE_SECONDS + 1));
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let yaml = format!(
            "schedule: every 1h\ntargets:\n  - {{ path: {}/gitlab, format: raw, resource: {} }}\n",
            dir.path().display(),
            ids::V5_DEFAULT
        );
        let config = common::write_config(dir.path(), &server, &bob, &yaml);
        let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"));
        daemon
            .args(["run", "-c", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env("RUNTIME_DIRECTORY", &run)
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut daemon = daemon.spawn().expect("the daemon runs");
        let target = dir.path().join("gitlab");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !target.exists() {
            assert!(Instant::now() < deadline, "the daemon's first sync");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let through = gets(&server, &config, &run, calls, true).await;
        let without = gets(&server, &config, &run, calls, false).await;
        let _ = daemon.kill().await;
        [
            ("through the daemon's socket", through),
            ("--no-agent (a login each)", without),
        ]
    });
    println!();
    println!(
        "| {calls} `get` calls | median wall per call | server requests | logins | secret reads |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (label, c) in rows {
        println!(
            "| {label} | {:.1} ms | {} | {} | {} |",
            c.wall.as_secs_f64() * 1000.0,
            c.requests,
            c.logins,
            c.secret_reads
        );
    }
}
