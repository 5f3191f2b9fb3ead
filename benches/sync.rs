//! Benchmarks of passbolt-sync against the built-in dev server on loopback:
//! real HTTP, real OpenPGP, with the fixture accounts recorded from a real
//! passbolt server (admin RSA-4096, bob RSA-3072, alice Curve25519).
//!
//! Run with `cargo bench --bench sync`. Prints one table: median, p90 and
//! min over the samples of each row. Every row takes samples until it has
//! `max` of them or its time budget is spent (at least 3), so the whole run
//! stays within about two minutes on two cores.
//!
//! A hand-rolled loop rather than criterion: the rows measure tens of
//! microseconds to a second of mostly network and OpenPGP work, where
//! criterion's statistics buy little, and this keeps dev-dependencies empty.
//!
//! `PASSBOLT_SYNC_BENCH_RESOURCES` sets the size of the scaling set (500).
//!
//! The dev server runs in the same process and runtime as the client, so
//! the network rows include the server's own work (verifying the login
//! challenge, signing the response and the RS256 token, serializing the
//! listing) on the same two cores.
//!
//! The machine may be shared: compare mins when medians look noisy.

#[path = "../tests/it/common.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, fixture};
use passbolt_sync::config::Config;
use passbolt_sync::devserver::seed::{MetadataMode, SeedFolder, SeedResource, ids};
use passbolt_sync::devserver::{Account, DevServer, Options};
use passbolt_sync::passbolt::{Client, Listing, SessionOptions, api};
use passbolt_sync::pgp::{self, PrivateKey, PublicKey};
use passbolt_sync::sync::{PassOptions, Status, run_pass};

/// The fixture accounts, with their key type and the reference cost of one
/// decrypt+verify with nettle.
const ACCOUNTS: &[(&str, &str, f64)] = &[
    ("admin", "RSA-4096", 6.1),
    ("bob", "RSA-3072", 3.1),
    ("alice", "Curve25519", 0.10),
];

fn key_type(name: &str) -> &'static str {
    ACCOUNTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, _)| *t)
        .expect("a fixture account")
}

// ---------------------------------------------------------------- timing

const MIN_SAMPLES: usize = 3;

/// Collects samples until `max` of them or until `budget` is spent.
struct Sampler {
    samples: Vec<Duration>,
    max: usize,
    budget: Duration,
    started: Instant,
}

impl Sampler {
    fn new(max: usize, budget_ms: u64) -> Sampler {
        Sampler {
            samples: Vec::with_capacity(max),
            max,
            budget: Duration::from_millis(budget_ms),
            started: Instant::now(),
        }
    }

    fn more(&self) -> bool {
        let n = self.samples.len();
        n < self.max && (n < MIN_SAMPLES || self.started.elapsed() < self.budget)
    }

    fn push(&mut self, d: Duration) {
        self.samples.push(d);
    }

    fn stats(&self) -> Stats {
        Stats::of(&self.samples)
    }
}

#[derive(Clone, Copy)]
struct Stats {
    n: usize,
    median: Duration,
    p90: Duration,
    min: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort();
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        };
        // Nearest rank.
        let p90 = s[(n * 9).div_ceil(10).max(1) - 1];
        Stats {
            n,
            median,
            p90,
            min: s[0],
        }
    }
}

/// Times one synchronous call.
fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 100.0 {
        format!("{us:.1} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

fn fmt_ms(ms: f64) -> String {
    fmt_d(Duration::from_secs_f64(ms / 1e3))
}

// ----------------------------------------------------------------- table

const LABEL_W: usize = 52;

fn table_header() {
    println!(
        "{:<LABEL_W$} {:>4} {:>10} {:>10} {:>10}  note",
        "benchmark", "n", "median", "p90", "min"
    );
    println!("{}", "=".repeat(LABEL_W + 4 + 3 * 11 + 2 + 40));
}

fn section(title: &str) {
    println!();
    println!("-- {title}");
}

fn row(label: &str, s: &Stats, note: &str) {
    println!(
        "{:<LABEL_W$} {:>4} {:>10} {:>10} {:>10}  {note}",
        label,
        s.n,
        fmt_d(s.median),
        fmt_d(s.p90),
        fmt_d(s.min)
    );
}

// -------------------------------------------------------------- fixtures

struct Who {
    f: Fixture,
    key: Arc<PrivateKey>,
}

impl Who {
    fn label(&self, what: &str) -> String {
        format!("{what} [{} {}]", self.f.name, key_type(self.f.name))
    }
}

fn new_client(server: &DevServer, who: &Who) -> Client {
    Client::new(
        SessionOptions {
            base_url: server.url(),
            user_id: who.f.id.clone(),
            fingerprint: Some(server.server_fingerprint()),
            ca_pem: None,
            client_identity: None,
            timeout: Duration::from_secs(30),
        },
        who.key.clone(),
    )
    .expect("client")
}

fn all_ids(listing: &Listing) -> Vec<String> {
    listing.resources.iter().map(|r| r.id.clone()).collect()
}

async fn decrypt_all(client: &Client, listing: &mut Listing) {
    let ids = all_ids(listing);
    let failures = client.decrypt_secrets(listing, &ids).await;
    assert!(failures.is_empty(), "decryption failures: {failures:?}");
    assert!(listing.resources.iter().all(|r| r.secret.is_some()));
}

async fn list(client: &Client, with_secrets: bool) -> Listing {
    let listing = client.list(with_secrets).await.expect("listing");
    assert!(
        listing.failures.is_empty(),
        "decode failures: {:?}",
        listing.failures
    );
    listing
}

// ----------------------------------------------------------- raw crypto

fn bench_crypto(whos: &[Who], server_key: &PublicKey) {
    section("raw OpenPGP (one thread; fixture keys; reference: nettle decrypt+verify)");
    // About the size of a login response (JWT plus refresh token).
    let login_sized = vec![b'x'; 1024];
    let secret = br#"{"object_type":"PASSBOLT_SECRET_DATA","password":"correct horse battery staple","description":null}"#;
    for who in whos {
        let name = who.f.name;
        let reference = ACCOUNTS.iter().find(|a| a.0 == name).expect("account").2;
        let key = &who.key;
        let public = key.public();

        let signed = key
            .encrypt_and_sign(&public, &login_sized)
            .expect("encrypt and sign");
        let mut s = Sampler::new(200, 2500);
        while s.more() {
            let (d, out) = time(|| key.decrypt_verify(&public, signed.as_bytes()));
            assert_eq!(out.expect("decrypt+verify").as_slice(), &login_sized[..]);
            s.push(d);
        }
        let st = s.stats();
        row(
            &who.label("decrypt+verify 1 KiB, signed by itself"),
            &st,
            &format!(
                "nettle {}; ×{:.2}",
                fmt_ms(reference),
                st.median.as_secs_f64() * 1e3 / reference
            ),
        );

        let unsigned = pgp::encrypt(&public, None, secret).expect("encrypt");
        let mut s = Sampler::new(200, 2000);
        while s.more() {
            let (d, out) = time(|| key.decrypt(unsigned.as_bytes()));
            assert_eq!(out.expect("decrypt").as_slice(), &secret[..]);
            s.push(d);
        }
        let st = s.stats();
        row(
            &who.label("decrypt unsigned secret (as in a listing)"),
            &st,
            "",
        );

        let challenge = vec![b'c'; 200];
        let mut s = Sampler::new(200, 2000);
        while s.more() {
            let (d, out) = time(|| key.encrypt_and_sign(server_key, &challenge));
            out.expect("encrypt and sign");
            s.push(d);
        }
        row(
            &who.label("encrypt to server key + sign (challenge)"),
            &s.stats(),
            "to the captured server key (RSA-3072)",
        );

        let bytes = std::fs::read(&who.f.private_path).expect("private key file");
        let mut s = Sampler::new(30, 3000);
        while s.more() {
            let (d, out) = time(|| PrivateKey::load(&bytes, Some(who.f.passphrase.as_bytes())));
            out.expect("unlock");
            s.push(d);
        }
        row(
            &who.label("unlock passphrase-protected key"),
            &s.stats(),
            "parse + S2K + secret key check",
        );
    }
}

// ---------------------------------------------------------------- login

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
        new_client(server, who)
            .login()
            .await
            .expect("warm-up login");
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

// -------------------------------------------------------------- listing

/// The transport alone: the requests `list` makes, without decoding.
async fn fetch_only(client: &Client, with_secrets: bool) -> usize {
    let session = client.session();
    let rows = api::resources(session, with_secrets, None)
        .await
        .expect("resources");
    api::folders(session).await.expect("folders");
    rows.len()
}

async fn bench_listing(server: &DevServer, whos: &[Who]) {
    section("listing the sample set (every resource type, v4 and v5, one personal item each)");
    {
        let client = new_client(server, &whos[2]);
        client.login().await.expect("login");
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
    for who in whos {
        let client = new_client(server, who);
        client.login().await.expect("login");
        let n = list(&client, false).await.resources.len();

        let mut s = Sampler::new(100, 1500);
        while s.more() {
            let t = Instant::now();
            let rows = fetch_only(&client, true).await;
            s.push(t.elapsed());
            assert_eq!(rows, n);
        }
        row(
            &who.label("GET resources (+secrets) + folders only"),
            &s.stats(),
            "HTTP + JSON, no OpenPGP",
        );

        let mut s = Sampler::new(40, 3000);
        while s.more() {
            let c = new_client(server, who);
            c.login().await.expect("login");
            let t = Instant::now();
            let l = list(&c, false).await;
            s.push(t.elapsed());
            assert_eq!(l.resources.len(), n);
        }
        row(
            &who.label("list(false), first on a client"),
            &s.stats(),
            &format!("{n} resources; + types, metadata keys"),
        );

        let mut s = Sampler::new(100, 2000);
        while s.more() {
            let t = Instant::now();
            let l = list(&client, false).await;
            s.push(t.elapsed());
            assert_eq!(l.resources.len(), n);
        }
        row(&who.label("list(false)"), &s.stats(), "metadata decoded");

        let mut s = Sampler::new(100, 2000);
        while s.more() {
            let t = Instant::now();
            let l = list(&client, true).await;
            s.push(t.elapsed());
            assert_eq!(l.resources.len(), n);
        }
        row(
            &who.label("list(true)"),
            &s.stats(),
            "secrets fetched, not decrypted",
        );

        let mut s = Sampler::new(60, 3000);
        while s.more() {
            let t = Instant::now();
            let mut l = list(&client, true).await;
            decrypt_all(&client, &mut l).await;
            s.push(t.elapsed());
        }
        row(
            &who.label("list(true) + decrypt_secrets(all)"),
            &s.stats(),
            &format!("{n} secrets"),
        );
    }
}

// ------------------------------------------------------------- once pass

/// Twelve targets covering every format: raw by id and by name, dotenv and
/// json from vars and from a whole folder, templates by id and by name.
fn write_pass_config(dir: &Path, server: &DevServer, who: &Who) -> Config {
    let d = dir.display();
    std::fs::write(
        dir.join("app.conf.j2"),
        format!(
            "[db]\nuser = {{{{ secret('{db}', 'username') }}}}\npassword = {{{{ secret('{db}') }}}}\n\
             [gitlab]\npassword = {{{{ secret('{gl}') }}}}\n\
             [api]\ntoken = {{{{ secret('{cf}', 'custom:API token') }}}}\n\
             json = {{{{ secret('{gl}')|tojson }}}}\n",
            db = ids::MYAPP_DB,
            gl = ids::V5_DEFAULT,
            cf = ids::V5_CUSTOM_FIELDS,
        ),
    )
    .expect("template");
    let personal = match who.f.name {
        "admin" => "Personal 0",
        "bob" => "Personal 1",
        _ => "Personal 2",
    };
    std::fs::write(
        dir.join("personal.j2"),
        format!(
            "me={{{{ secret('{personal}') }}}}\nsmtp={{{{ secret('SMTP relay') }}}}\nlegacy={{{{ secret('Legacy DB') }}}}\n"
        ),
    )
    .expect("template");
    let targets = format!(
        r#"targets:
  - path: {d}/gitlab.pw
    format: raw
    resource: {gitlab}
  - path: {d}/door.pin
    format: raw
    resource: {pin}
    field: pin
  - path: {d}/recovery.txt
    format: raw
    resource: {note}
    field: note
  - path: {d}/redis.pw
    format: raw
    name: Redis
  - path: {d}/app.env
    format: dotenv
    vars:
      GITLAB_PASSWORD: {{ resource: {gitlab} }}
      GITLAB_USER: {{ resource: {gitlab}, field: username }}
      SMTP_PASSWORD: {{ resource: {smtp} }}
      API_TOKEN: {{ resource: {custom}, field: "custom:API token" }}
      CLOUD_PASSWORD: {{ name: Cloud console }}
  - path: {d}/myapp.env
    format: dotenv
    folder: Production/myapp
  - path: {d}/mixed.env
    format: dotenv
    folder: Production/myapp
    vars:
      REDIS_PASSWORD: {{ name: Redis }}
  - path: {d}/app.json
    format: json
    vars:
      gitlab: {{ resource: {gitlab} }}
      pin: {{ resource: {pin}, field: pin }}
      backup: {{ resource: {backup} }}
  - path: {d}/myapp.json
    format: json
    folder: Production/myapp
  - path: {d}/hosts.json
    format: json
    vars:
      api_host: {{ resource: {custom}, field: "custom:API host" }}
      gitlab_uri: {{ resource: {gitlab}, field: uri }}
  - path: {d}/app.conf
    format: template
    template: {d}/app.conf.j2
  - path: {d}/personal.conf
    format: template
    template: {d}/personal.j2
"#,
        gitlab = ids::V5_DEFAULT,
        pin = ids::V5_PIN,
        note = ids::V5_NOTE,
        smtp = ids::V4_PASSWORD_DESCRIPTION,
        custom = ids::V5_CUSTOM_FIELDS,
        backup = ids::V4_PASSWORD_DESCRIPTION_TOTP,
    );
    let path = common::write_config(dir, server, &who.f, &targets);
    Config::load(&path).expect("bench config")
}

fn check_statuses(report: &passbolt_sync::sync::PassReport, want: fn(&Status) -> bool, what: &str) {
    for t in &report.targets {
        assert!(
            want(&t.status) && t.hook.is_none(),
            "{what}: {} is {:?}",
            t.path.display(),
            t.status
        );
    }
}

async fn bench_pass(server: &DevServer, whos: &[Who]) {
    section("one `once` pass (run_pass) over 12 targets: 4 raw, 3 dotenv, 3 json, 2 template");
    for who in whos {
        let client = new_client(server, who);
        client.login().await.expect("login");
        list(&client, false).await;

        let mut s = Sampler::new(40, 3000);
        let mut decrypted = 0;
        while s.more() {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = write_pass_config(dir.path(), server, who);
            let t = Instant::now();
            let report = run_pass(&client, &config, None, PassOptions::default())
                .await
                .expect("pass");
            s.push(t.elapsed());
            check_statuses(&report, |s| matches!(s, Status::Created), "first run");
            assert_eq!(report.targets.len(), 12);
            decrypted = report.secrets_decrypted;
        }
        row(
            &who.label("first run: creates 12 files"),
            &s.stats(),
            &format!("{decrypted} secrets decrypted; fsync'd writes"),
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_pass_config(dir.path(), server, who);
        run_pass(&client, &config, None, PassOptions::default())
            .await
            .expect("first pass");
        let mut s = Sampler::new(60, 3000);
        while s.more() {
            let t = Instant::now();
            let report = run_pass(&client, &config, None, PassOptions::default())
                .await
                .expect("pass");
            s.push(t.elapsed());
            check_statuses(&report, |s| matches!(s, Status::Unchanged), "steady state");
        }
        row(
            &who.label("steady state: 12 files unchanged"),
            &s.stats(),
            "",
        );
    }
}

// -------------------------------------------------------------- scaling

const BULK_FOLDER: &str = "7b000000-0000-4000-8000-0000000000f0";

fn bulk_resources(n: usize, readers: &[String]) -> Vec<SeedResource> {
    (0..n)
        .map(|i| SeedResource {
            id: format!("7b000000-0000-4000-8001-{i:012x}"),
            slug: "v5-default".into(),
            name: format!("bulk-{i:04}"),
            username: Some(format!("svc-{i}")),
            uris: vec![format!("https://svc-{i}.internal")],
            description: None,
            folder_id: Some(BULK_FOLDER.into()),
            secret: format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","password":"bulk-password-{i:04}-{:016x}","description":null}}"#,
                fastrand::u64(..)
            ),
            custom_fields: Vec::new(),
            readers: readers.to_vec(),
            mode: MetadataMode::Shared,
        })
        .collect()
}

/// Decrypts `messages` on `threads` threads, as `decrypt_secrets` would
/// without the client around it.
fn raw_decrypt_all(key: &PrivateKey, messages: &[String], threads: usize) {
    let chunk = messages.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for part in messages.chunks(chunk) {
            s.spawn(move || {
                for m in part {
                    key.decrypt(m.as_bytes()).expect("decrypt");
                }
            });
        }
    });
}

/// Scales a measurement of `m` items to `n`.
fn scaled(st: Stats, m: usize, n: usize) -> Stats {
    let f = |d: Duration| d.mul_f64(n as f64 / m as f64);
    Stats {
        n: st.n,
        median: f(st.median),
        p90: f(st.p90),
        min: f(st.min),
    }
}

/// Raw decryption of `m` secrets like the seeded ones, on one thread and on
/// every core, scaled to `n`. Returns the least one-thread time.
fn bench_raw_baseline(who: &Who, n: usize, threads: usize) -> Duration {
    let m = n.min(200);
    let public = who.key.public();
    let messages: Vec<String> = (0..m)
        .map(|i| {
            let plaintext = format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","password":"bulk-password-{i:04}-{:016x}","description":null}}"#,
                fastrand::u64(..)
            );
            pgp::encrypt(&public, None, plaintext.as_bytes()).expect("encrypt")
        })
        .collect();
    let scale_note = if m == n {
        String::new()
    } else {
        format!("; {m} timed, scaled to {n}")
    };
    let mut one = Sampler::new(5, 1);
    while one.more() {
        let (d, ()) = time(|| raw_decrypt_all(&who.key, &messages, 1));
        one.push(d);
    }
    let one = scaled(one.stats(), m, n);
    row(
        &who.label(&format!("raw decrypt of {n}, 1 thread")),
        &one,
        &format!("no client, no HTTP{scale_note}"),
    );
    let mut all = Sampler::new(5, 1);
    while all.more() {
        let (d, ()) = time(|| raw_decrypt_all(&who.key, &messages, threads));
        all.push(d);
    }
    let all = scaled(all.stats(), m, n);
    row(
        &who.label(&format!("raw decrypt of {n}, {threads} threads")),
        &all,
        &format!(
            "ceiling of the machine: ×{:.2} (min/min){scale_note}",
            one.min.as_secs_f64() / all.min.as_secs_f64()
        ),
    );
    one.min
}

async fn bench_scaling(whos: &[Who]) {
    let n: usize = std::env::var("PASSBOLT_SYNC_BENCH_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    section(&format!(
        "scaling: {n} v5 resources (shared metadata key, one encrypted folder), {threads} cores"
    ));
    let whos: Vec<&Who> = whos
        .iter()
        .filter(|w| w.f.name == "alice" || w.f.name == "bob")
        .collect();
    let accounts: Vec<Account> = whos.iter().map(|w| w.f.account()).collect();
    let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let folders = vec![SeedFolder {
        id: BULK_FOLDER.into(),
        name: "bulk".into(),
        parent: None,
        encrypted: true,
    }];
    let t = Instant::now();
    let server = DevServer::start(
        Options::default(),
        accounts,
        folders,
        bulk_resources(n, &readers),
    )
    .await
    .expect("dev server");
    row(
        &format!("dev server start + seed {n} resources"),
        &Stats::of(&[t.elapsed()]),
        &format!("server side: {} encryptions", n * (1 + readers.len())),
    );

    for who in whos {
        let client = new_client(&server, who);
        client.login().await.expect("login");
        let count = list(&client, false).await.resources.len();
        assert_eq!(count, n);

        let mut s = Sampler::new(20, 2000);
        while s.more() {
            let t = Instant::now();
            let rows = fetch_only(&client, true).await;
            s.push(t.elapsed());
            assert_eq!(rows, n);
        }
        row(
            &who.label(&format!("GET resources (+secrets) + folders, {n}")),
            &s.stats(),
            "HTTP + JSON, no OpenPGP",
        );

        let mut s = Sampler::new(20, 3000);
        while s.more() {
            let t = Instant::now();
            let l = list(&client, false).await;
            s.push(t.elapsed());
            assert_eq!(l.resources.len(), n);
        }
        row(
            &who.label(&format!("list(false), {n}")),
            &s.stats(),
            &format!("{n} metadata decrypted (Curve25519)"),
        );

        let mut listed = Sampler::new(12, 8000);
        let mut decrypted = Vec::new();
        let mut total = Vec::new();
        while listed.more() {
            let t = Instant::now();
            let mut l = list(&client, true).await;
            let d_list = t.elapsed();
            let t2 = Instant::now();
            decrypt_all(&client, &mut l).await;
            decrypted.push(t2.elapsed());
            total.push(t.elapsed());
            listed.push(d_list);
        }
        row(
            &who.label(&format!("list(true), {n}")),
            &listed.stats(),
            "secrets fetched, not decrypted",
        );
        let dec = Stats::of(&decrypted);
        // Mins are the least disturbed by other load on the machine.
        let sequential = bench_raw_baseline(who, n, threads);
        row(
            &who.label(&format!("decrypt_secrets, {n} (blocking pool)")),
            &dec,
            &format!(
                "×{:.2} vs raw 1 thread (min/min)",
                sequential.as_secs_f64() / dec.min.as_secs_f64()
            ),
        );
        row(
            &who.label(&format!("list(true) + decrypt_secrets, {n}")),
            &Stats::of(&total),
            "",
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let targets = format!(
            "targets:\n  - path: {d}/bulk.env\n    format: dotenv\n    folder: bulk\n  - path: {d}/bulk.json\n    format: json\n    folder: bulk\n",
            d = dir.path().display()
        );
        let path = common::write_config(dir.path(), &server, &who.f, &targets);
        let config = Config::load(&path).expect("bulk config");
        let first = run_pass(&client, &config, None, PassOptions::default())
            .await
            .expect("first bulk pass");
        check_statuses(&first, |s| matches!(s, Status::Created), "bulk first run");
        let mut s = Sampler::new(10, 6000);
        while s.more() {
            let t = Instant::now();
            let report = run_pass(&client, &config, None, PassOptions::default())
                .await
                .expect("pass");
            s.push(t.elapsed());
            check_statuses(
                &report,
                |s| matches!(s, Status::Unchanged),
                "bulk steady state",
            );
            assert_eq!(report.secrets_decrypted, n);
        }
        row(
            &who.label(&format!("once pass, dotenv+json of folder ({n})")),
            &s.stats(),
            "steady state",
        );
    }
}

// ------------------------------------------------------------------ main

fn main() {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let whos: Vec<Who> = ACCOUNTS
        .iter()
        .map(|(name, _, _)| {
            let f = fixture(name);
            let key = Arc::new(f.private_key());
            Who { f, key }
        })
        .collect();

    println!(
        "passbolt-sync benchmarks: {} cores, {} build, temp dir {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "optimized"
        },
        std::env::temp_dir().display()
    );
    println!();
    table_header();

    bench_crypto(&whos, &common::server_public_key());

    runtime.block_on(async {
        let accounts: Vec<Account> = whos.iter().map(|w| w.f.account()).collect();
        let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        let server = DevServer::start(
            Options::default(),
            accounts,
            passbolt_sync::devserver::seed::sample_folders(),
            passbolt_sync::devserver::seed::sample_resources(&readers),
        )
        .await
        .expect("dev server");

        bench_login(&server, &whos).await;
        bench_listing(&server, &whos).await;
        bench_pass(&server, &whos).await;
        drop(server);
        bench_scaling(&whos).await;
    });

    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
