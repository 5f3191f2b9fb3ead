//! The incremental pass at scale, against the in-process dev server: 1,000
//! and 10,000 mapped resources (half v4 `password-and-description`, half
//! v5 `v5-default` with the shared metadata key, 500 to a folder, one
//! dotenv target per folder), for an RSA-3072 (bob) and a Curve25519
//! (alice) account. Three passes:
//!
//! - cold: a fresh client (logged in beforehand, so login is not in the
//!   row), nothing held, no file yet: every secret is downloaded;
//! - warm: nothing changed since: nothing is downloaded, no private-key
//!   operation runs (asserted);
//! - 1% changed, spread over the folders: exactly those secrets are
//!   downloaded (asserted, and their new values checked in the files).
//!
//! Then the resident memory of `passbolt-sync run` (the release binary)
//! holding 1,000 mapped secrets after ~40 s of idle ticks.
//!
//! The dev server's clock is frozen and moved on by hand: a `modified`
//! stamp less than `SETTLE_SECONDS` older than the server's clock is
//! downloaded again on every pass, and the warm rows must measure a
//! settled state without waiting for it.
//!
//! `cargo bench --bench incremental`; about five minutes on two otherwise
//! idle cores, most of it the three cold passes over 10,000 RSA secrets.
//! `PASSBOLT_SYNC_BENCH_QUICK=1` runs 100 and 1,000 resources and a short
//! idle period instead.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passbolt_client::{Client, Counters};
use passbolt_devserver::seed::{self, GENERATED_PER_FOLDER, SeedResource};
use passbolt_devserver::{Account, DevServer, Options};
use passbolt_sync::config::Config;
use passbolt_sync::sync::held::{Held, SETTLE_SECONDS};
use passbolt_sync::sync::plan::Plan;
use passbolt_sync::sync::{PassOptions, PassReport, Status, run_pass};
use support::common::{self, Daemon};
use support::{Sampler, Stats, Who, cpu_time, fmt_bytes, fmt_d, new_client};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Cold,
    Warm,
    Changed,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Cold => "cold",
            Case::Warm => "warm",
            Case::Changed => "1% changed",
        }
    }
}

/// One row: wall and CPU time over the runs, and the counters of a pass
/// (every run of a row has the same but for a few bytes of ciphertext).
struct Row {
    size: usize,
    case: Case,
    wall: Stats,
    cpu: Stats,
    cost: Counters,
}

/// What one pass measured.
struct Timed {
    wall: Duration,
    cpu: Duration,
    report: PassReport,
}

async fn timed_pass(client: &Client, plan: &Plan, held: &mut Held) -> Timed {
    let cpu = cpu_time();
    let t = Instant::now();
    let report = run_pass(client, plan, held, None, PassOptions::default())
        .await
        .expect("pass");
    Timed {
        wall: t.elapsed(),
        cpu: cpu_time() - cpu,
        report,
    }
}

/// Collects wall and CPU samples of one row.
struct Samples {
    wall: Sampler,
    cpu: Vec<Duration>,
    cost: Counters,
}

impl Samples {
    fn new(wall: Sampler) -> Samples {
        Samples {
            wall,
            cpu: Vec::new(),
            cost: Counters::default(),
        }
    }

    fn more(&self) -> bool {
        self.wall.more()
    }

    fn push(&mut self, t: &Timed) {
        self.wall.push(t.wall);
        self.cpu.push(t.cpu);
        self.cost = t.report.cost;
    }

    fn row(&self, size: usize, case: Case) -> Row {
        Row {
            size,
            case,
            wall: self.wall.stats(),
            cpu: Stats::of(&self.cpu),
            cost: self.cost,
        }
    }
}

/// The target file of generated folder `j`.
fn target_file(dir: &Path, j: usize) -> PathBuf {
    dir.join(format!("gen-{j:03}.env"))
}

/// A config mapping every generated folder to one dotenv target in `dir`.
fn write_config(dir: &Path, server: &DevServer, who: &Who, n: usize) -> PathBuf {
    let mut targets = String::from("schedule: every 5s\ntargets:\n");
    for j in 0..n.div_ceil(GENERATED_PER_FOLDER) {
        targets.push_str(&format!(
            "  - path: {}\n    format: dotenv\n    folder: Generated/gen-{j:03}\n",
            target_file(dir, j).display()
        ));
    }
    common::write_config(dir, server, &who.f, &targets)
}

fn plan(path: &Path) -> Plan {
    Plan::build(&Config::load(path).expect("bench config")).expect("plan")
}

/// Moves the frozen server clock on by `seconds`.
fn advance(server: &DevServer, seconds: i64) {
    server.set_clock(Some(server.now() + seconds));
}

/// The 1% of `resources` changed by run `run`: one in a hundred, spread
/// over every folder, v4 and v5 alternately, a different one each run.
fn changes(resources: &[SeedResource], run: usize) -> Vec<(String, String)> {
    let k = resources.len() / 100;
    (0..k)
        .map(|j| {
            let r = &resources[j * 100 + (j + 3 * run) % 100];
            let password: String = std::iter::repeat_with(fastrand::alphanumeric)
                .take(24)
                .collect();
            let secret = if r.slug.starts_with("v5-") {
                serde_json::json!({"object_type": "PASSBOLT_SECRET_DATA", "password": password, "description": null})
            } else {
                serde_json::json!({"password": password, "description": null})
            };
            (r.id.clone(), secret.to_string())
        })
        .collect()
}

fn assert_all(report: &PassReport, want: fn(&Status) -> bool, what: &str) {
    for t in &report.targets {
        assert!(
            want(&t.status),
            "{what}: {} is {:?}",
            t.path.display(),
            t.status
        );
    }
}

/// Cold, warm and 1% rows of one account against a server holding the
/// `resources` of `seed::generated`.
async fn measure(server: &DevServer, who: &Who, resources: &[SeedResource]) -> Vec<Row> {
    let n = resources.len();
    let folders = n.div_ceil(GENERATED_PER_FOLDER);
    let large = n > 2000;

    // Cold: a new client, nothing held, no file. The last run's state is
    // the start of the warm and 1% rows.
    let mut cold = Samples::new(Sampler::with_min(
        support::scaled(3, 2),
        if large { 3 } else { 7 },
        20_000,
    ));
    let mut last = None;
    while cold.more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan(&write_config(dir.path(), server, who, n));
        let client = new_client(server, who);
        client.login().await.expect("login");
        let mut held = Held::new();
        let t = timed_pass(&client, &plan, &mut held).await;
        assert_eq!(t.report.targets.len(), folders);
        assert_all(&t.report, |s| matches!(s, Status::Created), "cold");
        assert_eq!(t.report.cost.secrets_downloaded, n as u64, "cold");
        assert_eq!(t.report.cost.logins, 0, "logged in beforehand");
        cold.push(&t);
        last = Some((dir, plan, client, held));
    }
    let (dir, plan, client, mut held) = last.expect("a cold run");

    let mut warm = Samples::new(Sampler::new(if large { 10 } else { 30 }, 6000));
    while warm.more() {
        let t = timed_pass(&client, &plan, &mut held).await;
        assert_all(&t.report, |s| matches!(s, Status::Unchanged), "warm");
        let c = t.report.cost;
        assert_eq!(c.secrets_downloaded, 0, "a warm pass downloaded secrets");
        assert_eq!(
            c.private_key_operations, 0,
            "a warm pass ran private-key operations"
        );
        warm.push(&t);
    }

    let mut changed = Samples::new(Sampler::new(if large { 5 } else { 10 }, 8000));
    let mut run = 0;
    while changed.more() {
        let edits = changes(resources, run);
        run += 1;
        // The edits are stamped now; the pass comes a settled while later,
        // so what it downloads is held current afterwards.
        server.set_secrets(&edits).expect("set_secrets");
        advance(server, SETTLE_SECONDS + 1);
        let t = timed_pass(&client, &plan, &mut held).await;
        assert_eq!(
            t.report.cost.secrets_downloaded,
            edits.len() as u64,
            "the 1% pass must download exactly the changed secrets"
        );
        assert_all(
            &t.report,
            |s| matches!(s, Status::Updated { .. }),
            "every folder has a changed secret",
        );
        let mut files: HashMap<usize, String> = HashMap::new();
        for (id, secret) in &edits {
            let i = resources.iter().position(|r| &r.id == id).expect("seeded");
            let content = files.entry(i / GENERATED_PER_FOLDER).or_insert_with(|| {
                std::fs::read_to_string(target_file(dir.path(), i / GENERATED_PER_FOLDER))
                    .expect("target file")
            });
            let v: serde_json::Value = serde_json::from_str(secret).expect("json");
            let password = v["password"].as_str().expect("password");
            assert!(content.contains(password), "{id}: new value not written");
        }
        changed.push(&t);
    }
    vec![
        cold.row(n, Case::Cold),
        warm.row(n, Case::Warm),
        changed.row(n, Case::Changed),
    ]
}

fn size_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn print_account(who: &Who, rows: &[Row]) {
    println!();
    println!(
        "-- {} ({}): wall and CPU: median [min] of n passes; counters per pass",
        who.name(),
        who.key_type()
    );
    println!(
        "{:<16} {:>3} {:>22} {:>22} {:>9} {:>11} {:>8} {:>8}",
        "pass", "n", "wall", "CPU", "requests", "bytes", "secrets", "pk ops"
    );
    println!("{}", "=".repeat(16 + 4 + 23 * 2 + 10 + 12 + 9 + 9));
    for r in rows {
        let both = |s: &Stats| format!("{} [{}]", fmt_d(s.median), fmt_d(s.min));
        println!(
            "{:<16} {:>3} {:>22} {:>22} {:>9} {:>11} {:>8} {:>8}",
            format!("{} {}", size_label(r.size), r.case.label()),
            r.wall.n,
            both(&r.wall),
            both(&r.cpu),
            r.cost.requests,
            fmt_bytes(r.cost.response_bytes),
            r.cost.secrets_downloaded,
            r.cost.private_key_operations,
        );
    }
    let find = |size, case| rows.iter().find(|r| r.size == size && r.case == case);
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.dedup();
    for size in sizes {
        let (Some(cold), Some(warm), Some(changed)) = (
            find(size, Case::Cold),
            find(size, Case::Warm),
            find(size, Case::Changed),
        ) else {
            continue;
        };
        let ratio = |a: &Stats, b: &Stats| a.median.as_secs_f64() / b.median.as_secs_f64();
        println!(
            "{}: warm/cold wall {:.4}, CPU {:.4}; 1%/cold wall {:.4}, CPU {:.4}",
            size_label(size),
            ratio(&warm.wall, &cold.wall),
            ratio(&warm.cpu, &cold.cpu),
            ratio(&changed.wall, &cold.wall),
            ratio(&changed.cpu, &cold.cpu),
        );
    }
}

fn print_markdown(results: &[(&Who, Vec<Row>)], rss: &str) {
    println!();
    println!("Markdown (README):");
    println!();
    println!(
        "| account | pass | wall (median) | CPU (median) | requests | response bytes | secrets downloaded | private-key ops |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (who, rows) in results {
        for r in rows {
            println!(
                "| {} ({}) | {} {} | {} | {} | {} | {} | {} | {} |",
                who.name(),
                who.key_type(),
                size_label(r.size),
                r.case.label(),
                fmt_d(r.wall.median),
                fmt_d(r.cpu.median),
                r.cost.requests,
                fmt_bytes(r.cost.response_bytes),
                r.cost.secrets_downloaded,
                r.cost.private_key_operations,
            );
        }
    }
    println!();
    println!("{rss}");
}

/// A `/proc/<pid>/status` field in KiB, e.g. `VmRSS`.
fn status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc status"))
}

/// `passbolt-sync run` against `server`, all `n` generated resources
/// mapped, `schedule: every 5s`: its memory after its first sync and
/// `idle` of ticks that find nothing changed. Returns the line to print.
async fn idle_rss(server: &DevServer, who: &Who, n: usize, idle: Duration) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), server, who, n);
    let d = Daemon::start(
        &config,
        &[("RUST_LOG", "passbolt_sync=debug,passbolt_client=debug")],
    )
    .await;
    assert!(
        d.wait_log("first sync complete; ready", 1, Duration::from_secs(300))
            .await,
        "the daemon did not sync: {}",
        d.log()
    );
    tokio::time::sleep(idle).await;
    let pid = d.child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let passes: Vec<String> = d
        .log()
        .lines()
        .filter(|l| l.contains(" sync: ") && l.contains("secrets_downloaded="))
        .map(str::to_string)
        .collect();
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "the daemon stops cleanly: {log}");
    assert!(
        passes
            .first()
            .is_some_and(|l| l.contains(&format!("secrets_downloaded={n} "))),
        "the first pass downloads every mapped secret: {log}"
    );
    let idle_ticks = &passes[1..];
    assert!(
        idle_ticks.len() >= 2,
        "idle ticks every 5s: {} in {idle:?}",
        idle_ticks.len()
    );
    for l in idle_ticks {
        assert!(
            l.contains("secrets_downloaded=0 ") && l.contains("private_key_operations=0 "),
            "an idle tick downloaded or decrypted: {l}"
        );
    }
    let mib = |f: &str| status_kib(&status, f) as f64 / 1024.0;
    format!(
        "Idle RSS of `passbolt-sync run` holding {n} mapped secrets ({} {}, {} dotenv targets, every 5s; after the first sync and {} s, {} idle ticks): VmRSS {:.1} MiB, VmHWM {:.1} MiB, RssAnon {:.1} MiB, RssFile {:.1} MiB",
        who.name(),
        who.key_type(),
        n.div_ceil(GENERATED_PER_FOLDER),
        idle.as_secs(),
        idle_ticks.len(),
        mib("VmRSS"),
        mib("VmHWM"),
        mib("RssAnon"),
        mib("RssFile"),
    )
}

fn main() {
    let started = Instant::now();
    support::banner("incremental pass at scale");
    println!(
        "CPU is getrusage(RUSAGE_SELF) user+sys around each pass: the whole process, so it includes the in-process dev server's work (serializing listings, answering downloads). Seeding and encrypting at seed time are in no row."
    );
    let whos = [Who::load("bob"), Who::load("alice")];
    let sizes = support::scaled([1000, 10_000], [100, 1000]);
    let rss_size = 1000;
    let idle = Duration::from_secs(support::scaled(40, 12));
    let accounts: Vec<Account> = whos.iter().map(|w| w.f.account()).collect();
    let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();

    let mut results: Vec<(&Who, Vec<Row>)> = whos.iter().map(|w| (w, Vec::new())).collect();
    let mut rss = String::new();
    support::runtime().block_on(async {
        for n in sizes {
            let (folders, resources) = seed::generated(n, &readers);
            let t = Instant::now();
            let server = DevServer::start(
                Options::default(),
                accounts.clone(),
                folders,
                resources.clone(),
            )
            .await
            .expect("dev server");
            println!(
                "seeded {n} resources for {} readers in {:.1} s (in no row)",
                readers.len(),
                t.elapsed().as_secs_f64()
            );
            // Freeze the clock with the seeded stamps settled.
            advance(&server, SETTLE_SECONDS + 1);
            for (who, rows) in results.iter_mut() {
                let t = Instant::now();
                rows.extend(measure(&server, who, &resources).await);
                println!(
                    "measured {n} for {} in {:.1} s",
                    who.name(),
                    t.elapsed().as_secs_f64()
                );
            }
            if n == rss_size {
                rss = idle_rss(&server, &whos[0], n, idle).await;
            }
        }
    });
    for (who, rows) in &results {
        print_account(who, rows);
    }
    print_markdown(&results, &rss);
    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
