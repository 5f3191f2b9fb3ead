//! What a command pays before its first listing: the account key's unlock
//! (its passphrase KDF) and the login, made one after the other (as the
//! daemon's setup does) or with the login's first two requests, which need
//! no key (`/auth/verify.json`, `/settings.json`), made while the key
//! unlocks (as `once`, `get`, `set` and the other commands that log in at
//! once do). The dev server delays every response by a round trip of 0,
//! 20 or 50 ms, as a server across a network would.
//!
//! `cargo bench --bench start` (or `cargo test --bench start`).

mod support;

use std::time::{Duration, Instant};

use passbolt_devserver::{Faults, Options};
use passbolt_sync::agent::setup;
use passbolt_sync::config::Config;

use support::common::{self, fixture};

const SAMPLES: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    support::banner("start: key unlock and login, one after the other or overlapped");
    let bob = fixture("bob");
    let mut rows = Vec::new();
    support::runtime().block_on(async {
        let server = common::devserver(Options::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&common::write_config(dir.path(), &server, &bob, "")).unwrap();
        for rtt in [0, 20, 50] {
            server.set_faults(Faults {
                delay: (rtt > 0).then(|| Duration::from_millis(rtt)),
                ..Faults::default()
            });
            let (mut apart, mut overlapped) = (Vec::new(), Vec::new());
            for _ in 0..SAMPLES {
                let started = Instant::now();
                let client = setup::connect(&config).await.unwrap();
                client.login().await.unwrap();
                apart.push(started.elapsed());
                let _ = client.logout().await;

                let started = Instant::now();
                let client = setup::connect_to_log_in(&config).await.unwrap();
                client.login().await.unwrap();
                overlapped.push(started.elapsed());
                let _ = client.logout().await;
            }
            rows.push((rtt, median(apart), median(overlapped)));
        }
    });
    println!();
    println!(
        "| server round trip | unlock, then login | login's first requests during the unlock | saved |"
    );
    println!("|---:|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (rtt, apart, overlapped) in rows {
        println!(
            "| {rtt} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(apart),
            ms(overlapped),
            ms(apart) - ms(overlapped)
        );
    }
}
