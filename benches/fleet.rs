//! What an idle tick and a restart cost the server at fleet scale: an
//! account that reads 1,000 or 10,000 resources, a host that maps 10 or 100
//! of them by id, by folder or by name. For each, the idle tick as it is
//! now (a listing scoped to the mapped resources) beside the listing every
//! idle tick made before (everything the account reads; with the folders
//! when a selector names one), on the same server: requests, response
//! bytes, and the dev server's time in its handlers. `/users/me.json` is
//! the server's per-request floor. Then a restart with nothing changed,
//! from the state a previous run recorded, with a fresh client (its login
//! included).
//!
//! `cargo bench --bench fleet` (or, without the release build,
//! `cargo test --bench fleet`; `PASSBOLT_SYNC_BENCH_QUICK=1` for 1,000 only).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use passbolt_client::{Client, api};
use passbolt_devserver::seed::{self, SeedFolder};
use passbolt_devserver::{DevServer, Options};
use passbolt_sync::config::Config;
use passbolt_sync::sync::held::{Held, SETTLE_SECONDS};
use passbolt_sync::sync::plan::Plan;
use passbolt_sync::sync::{PassOptions, run_pass};

use support::common::{self, fixture};

const MAPPED_FOLDER: &str = "5f0c7a3e-0000-4000-8ff0-000000000001";
const SAMPLES: usize = 7;

#[derive(Clone, Copy)]
enum Kind {
    Id,
    Folder,
    Name,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Id => "id",
            Kind::Folder => "folder",
            Kind::Name => "name",
        }
    }
}

struct Row {
    readable: usize,
    mapped: usize,
    kind: Kind,
    before: (u64, u64, Duration),
    after: (u64, u64, Duration),
    restart: passbolt_client::Counters,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The dev server's handler time of the requests since `from`.
fn handler_time(server: &DevServer, from: usize) -> Duration {
    server.requests()[from..].iter().map(|(_, _, d)| *d).sum()
}

fn config(dir: &Path, server: &DevServer, kind: Kind, mapped: &[seed::SeedResource]) -> Plan {
    let mut t = format!(
        "targets:\n  - path: {}\n    format: dotenv\n",
        dir.join("mapped.env").display()
    );
    match kind {
        Kind::Folder => t.push_str("    folder: Mapped\n"),
        Kind::Id | Kind::Name => {
            t.push_str("    vars:\n");
            for (i, r) in mapped.iter().enumerate() {
                match kind {
                    Kind::Id => t.push_str(&format!("      V{i}: {{ resource: {} }}\n", r.id)),
                    _ => t.push_str(&format!("      V{i}: {{ name: {} }}\n", r.name)),
                }
            }
        }
    }
    let path = common::write_config(dir, server, &fixture("alice"), &t);
    Plan::build(&Config::load(&path).expect("bench config")).expect("plan")
}

async fn measure(
    server: &DevServer,
    client: &Client,
    readable: usize,
    mapped: &[seed::SeedResource],
    kind: Kind,
) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = config(dir.path(), server, kind, mapped);
    let mut held = Held::new();
    let cold = run_pass(client, &plan, &mut held, None, PassOptions::default())
        .await
        .expect("cold pass");
    assert!(cold.all_current(), "{cold:?}");

    // Before: what every idle tick listed.
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let (mut before_cost, mut after_cost) = ((0, 0), (0, 0));
    for _ in 0..SAMPLES {
        let from = server.requests().len();
        let c = client.counters();
        client
            .list(matches!(kind, Kind::Folder))
            .await
            .expect("full listing");
        let d = client.counters() - c;
        before_cost = (d.requests, d.response_bytes);
        before.push(handler_time(server, from));

        let from = server.requests().len();
        let tick = run_pass(client, &plan, &mut held, None, PassOptions::default())
            .await
            .expect("idle tick");
        assert_eq!(tick.cost.secrets_downloaded, 0, "idle: {:?}", tick.cost);
        assert!(!tick.full_listing);
        after_cost = (tick.cost.requests, tick.cost.response_bytes);
        after.push(handler_time(server, from));
    }

    // A restart: a fresh client and what the state directory would hold.
    let restarted = common::client(server, &fixture("alice"));
    let mut fresh = Held::new();
    fresh.load_records(held.records(Instant::now()), Instant::now());
    let report = run_pass(&restarted, &plan, &mut fresh, None, PassOptions::default())
        .await
        .expect("restart pass");
    assert!(report.all_current());
    let _ = restarted.logout().await;
    Row {
        readable,
        mapped: mapped.len(),
        kind,
        before: (before_cost.0, before_cost.1, median(before)),
        after: (after_cost.0, after_cost.1, median(after)),
        restart: report.cost,
    }
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1000.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let started = Instant::now();
    support::banner("fleet: idle tick and restart");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let sizes = support::scaled(vec![1000, 10_000], vec![1000]);
    let alice = fixture("alice");
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    support::runtime().block_on(async {
        for n in sizes {
            let (folders, resources) = seed::generated(n, std::slice::from_ref(&alice.id));
            let server = DevServer::start(
                Options::default(),
                vec![alice.account()],
                folders,
                resources.clone(),
            )
            .await
            .expect("dev server");
            server
                .add_folder(SeedFolder {
                    id: MAPPED_FOLDER.into(),
                    name: "Mapped".into(),
                    parent: None,
                    encrypted: false,
                })
                .expect("folder");
            let client = common::client(&server, &alice);
            client.login().await.expect("login");
            let mut me = Vec::new();
            for _ in 0..SAMPLES {
                let from = server.requests().len();
                api::me(client.session()).await.expect("me");
                me.push(handler_time(&server, from));
            }
            floors.push((n, median(me)));
            for m in [10, 100] {
                // Spread over the account, v4 and v5 alike.
                let mapped: Vec<_> = (0..m).map(|i| resources[i * (n / m)].clone()).collect();
                for r in &mapped {
                    server.move_resource(&r.id, Some(MAPPED_FOLDER));
                }
                server.set_clock(Some(server.now() + SETTLE_SECONDS + 1));
                for kind in [Kind::Id, Kind::Folder, Kind::Name] {
                    rows.push(measure(&server, &client, n, &mapped, kind).await);
                }
                for r in &mapped {
                    server.move_resource(&r.id, r.folder_id.as_deref());
                }
            }
        }
    });
    println!();
    println!(
        "`/users/me.json` handler time (median): {}",
        floors
            .iter()
            .map(|(n, d)| format!("{} at {n} readable", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "| readable | mapped | by | before: requests | bytes | handler time | now: requests | bytes | handler time | restart: secrets downloaded | pk ops (login incl.) | requests |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.readable,
            r.mapped,
            r.kind.label(),
            r.before.0,
            kib(r.before.1),
            ms(r.before.2),
            r.after.0,
            kib(r.after.1),
            ms(r.after.2),
            r.restart.secrets_downloaded,
            r.restart.private_key_operations,
            r.restart.requests,
        );
    }
    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
