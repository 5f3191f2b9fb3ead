//! The client against the in-process dev server on loopback, real HTTP and
//! real OpenPGP: login, listing (first on a client, and again with the v5
//! metadata it already decoded), and the download of secrets by id.
//!
//! `cargo bench --bench session`; about two minutes.
//! `PASSBOLT_SYNC_BENCH_RESOURCES` sets the size of the scaling set (500).
//!
//! The dev server runs in the same process and runtime as the client, so
//! these rows include the server's own work (verifying the login
//! challenge, signing the response and the RS256 token, serializing the
//! listing) on the same cores.

mod support;

use std::time::Instant;

use passbolt_client::{Client, Listing, api};
use passbolt_devserver::seed;
use passbolt_devserver::{Account, DevServer, Options};
use support::{Sampler, Stats, Who, fmt_bytes, new_client, row, section, time};

async fn logged_in(server: &DevServer, who: &Who) -> Client {
    let c = new_client(server, who);
    c.login().await.expect("login");
    c
}

async fn list(client: &Client, folder_paths: bool) -> Listing {
    let listing = client.list(folder_paths).await.expect("listing");
    assert!(
        listing.failures.is_empty(),
        "decode failures: {:?}",
        listing.failures
    );
    listing
}

fn all_ids(listing: &Listing) -> Vec<String> {
    listing.resources.iter().map(|r| r.id.clone()).collect()
}

/// The transport alone: what `list(true)` requests, without decoding.
async fn fetch_only(client: &Client) -> usize {
    let session = client.session();
    let (rows, _) = api::resources(session, false, None)
        .await
        .expect("resources");
    api::folders(session).await.expect("folders");
    rows.len()
}

async fn bench_login(server: &DevServer, whos: &[Who]) {
    section(
        "login: GET /auth/verify.json, encrypt+sign challenge, POST, decrypt+verify (fresh client each)",
    );
    let mut s = Sampler::new(50, 1500);
    while s.more() {
        let (d, c) = time(|| new_client(server, &whos[0]));
        drop(c);
        s.push(d);
    }
    row(
        "Client::new (reqwest + rustls setup, not in login)",
        &s.stats(),
        "",
    );
    for who in whos {
        logged_in(server, who).await;
        let mut s = Sampler::new(40, 4000);
        while s.more() {
            let c = new_client(server, who);
            let t = Instant::now();
            c.login().await.expect("login");
            s.push(t.elapsed());
        }
        row(
            &who.label("full JWT login"),
            &s.stats(),
            "dev server key: Curve25519",
        );
    }
}

/// The listing and download rows of one account against `server`, whose
/// resources are all readable by it.
async fn bench_listing(server: &DevServer, who: &Who, what: &str, budget_ms: u64) {
    let client = logged_in(server, who).await;
    let n = list(&client, true).await.resources.len();

    let mut s = Sampler::new(100, budget_ms / 2);
    while s.more() {
        let t = Instant::now();
        let rows = fetch_only(&client).await;
        s.push(t.elapsed());
        assert_eq!(rows, n);
    }
    let bytes = {
        let before = client.counters();
        fetch_only(&client).await;
        (client.counters() - before).response_bytes
    };
    row(
        &who.label(&format!("GET resources + folders only, {what}")),
        &s.stats(),
        &format!("HTTP + JSON, no OpenPGP; {}", fmt_bytes(bytes)),
    );

    let mut s = Sampler::new(40, budget_ms);
    let mut ops = 0;
    while s.more() {
        let c = logged_in(server, who).await;
        let before = c.counters();
        let t = Instant::now();
        let l = list(&c, true).await;
        s.push(t.elapsed());
        ops = (c.counters() - before).private_key_operations;
        assert_eq!(l.resources.len(), n);
    }
    row(
        &who.label(&format!("list, first on a client, {what}")),
        &s.stats(),
        &format!("{n} resources; + types, metadata keys; {ops} private-key ops"),
    );

    for folder_paths in [true, false] {
        let mut s = Sampler::new(100, budget_ms / 2);
        while s.more() {
            let before = client.counters();
            let t = Instant::now();
            let l = list(&client, folder_paths).await;
            s.push(t.elapsed());
            assert_eq!(l.resources.len(), n);
            let ops = (client.counters() - before).private_key_operations;
            assert_eq!(ops, 0, "an unchanged listing decrypts no metadata again");
        }
        row(
            &who.label(&format!(
                "list again{}, {what}",
                if folder_paths { "" } else { " without folders" }
            )),
            &s.stats(),
            "v5 metadata reused; 0 private-key ops",
        );
    }

    let ids = all_ids(&list(&client, false).await);
    let mut s = Sampler::new(60, budget_ms);
    let mut cost = Default::default();
    while s.more() {
        let before = client.counters();
        let t = Instant::now();
        let fetched = client.fetch_secrets(&ids).await.expect("download");
        s.push(t.elapsed());
        cost = client.counters() - before;
        assert_eq!(fetched.len(), n);
        assert!(
            fetched.values().all(|f| f.fields.is_ok()),
            "a secret failed"
        );
    }
    let st = s.stats();
    row(
        &who.label(&format!("fetch_secrets(every id), {what}")),
        &st,
        &format!(
            "{} requests, {}, {} secrets; {} a secret",
            cost.requests,
            fmt_bytes(cost.response_bytes),
            cost.secrets_downloaded,
            support::fmt_d(st.median / n as u32),
        ),
    );
}

async fn bench_scaling(whos: &[Who]) {
    let n: usize = std::env::var("PASSBOLT_SYNC_BENCH_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(support::scaled(500, 100));
    section(&format!(
        "scaling: {n} generated resources (half v4, half v5 with the shared metadata key; v5 folders of 500)"
    ));
    let whos: Vec<&Who> = whos
        .iter()
        .filter(|w| w.name() == "alice" || w.name() == "bob")
        .collect();
    let accounts: Vec<Account> = whos.iter().map(|w| w.f.account()).collect();
    let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let (folders, resources) = seed::generated(n, &readers);
    let t = Instant::now();
    let server = DevServer::start(Options::default(), accounts, folders, resources)
        .await
        .expect("dev server");
    row(
        &format!("dev server start + seed {n} resources"),
        &Stats::of(&[t.elapsed()]),
        "on every core; in no other row",
    );
    for who in whos {
        bench_listing(&server, who, &format!("{n}"), 6000).await;
    }
}

fn main() {
    let started = Instant::now();
    support::banner("login, listing, download");
    let whos = Who::all();
    support::table_header();
    support::runtime().block_on(async {
        let accounts: Vec<Account> = whos.iter().map(|w| w.f.account()).collect();
        let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        let server = DevServer::start(
            Options::default(),
            accounts,
            seed::sample_folders(),
            seed::sample_resources(&readers),
        )
        .await
        .expect("dev server");
        bench_login(&server, &whos).await;
        section("the sample set: every resource type, v4 and v5, one personal item each");
        {
            let client = logged_in(&server, &whos[2]).await;
            let mut s = Sampler::new(300, 1500);
            while s.more() {
                let t = Instant::now();
                api::me(client.session()).await.expect("me");
                s.push(t.elapsed());
            }
            row(
                "GET /users/me.json (one authenticated round trip)",
                &s.stats(),
                "dev server verifies the RS256 JWT per request",
            );
        }
        for who in &whos {
            bench_listing(&server, who, "sample", 3000).await;
        }
        drop(server);
        bench_scaling(&whos).await;
    });
    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
