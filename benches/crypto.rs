//! What the crypto backend costs: raw OpenPGP with the fixture keys, then a
//! whole cold pass of 1,000 secrets against the in-process dev server.
//!
//! Every row has the wall time (median, p90, min of its samples) and the
//! median CPU time: of the measuring thread for one operation, of the
//! whole process (client and in-process dev server) for a login or a pass.
//! CPU time is the figure to compare on a shared machine: load stretches
//! the wall time of an operation but hardly its CPU time.
//!
//! - private-key operations through sequoia alone (`KeyPair`): session-key
//!   decryption (RSA-3072, RSA-4096, X25519) and signing (RSA, Ed25519);
//! - the passphrase KDF of a key protected as GnuPG does by default
//!   (iterated and salted SHA-1 over 65,011,712 bytes);
//! - the same operations as the client runs them (`passbolt_client::pgp`:
//!   parse, session key, symmetric decryption, signature check);
//! - a login, and a cold pass (a new client, login, nothing held, no file)
//!   over 1,000 mapped secrets, for an RSA-3072 and a Curve25519 account.
//!
//! One backend per build: `cargo bench --bench crypto` measures the default
//! (OpenSSL), `cargo bench --bench crypto --no-default-features --features
//! crypto-nettle` nettle. `benches/crypto-backends.sh` builds and runs
//! both, several times, and prints the medians side by side. About two
//! minutes per backend on two cores; `PASSBOLT_SYNC_BENCH_QUICK=1` scales
//! it down.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passbolt_client::pgp::{self, PrivateKey, PublicKey};
use passbolt_devserver::seed::{self, GENERATED_PER_FOLDER};
use passbolt_devserver::{Account, DevServer, Options};
use passbolt_sync::config::Config;
use passbolt_sync::sync::held::{Held, SETTLE_SECONDS};
use passbolt_sync::sync::plan::Plan;
use passbolt_sync::sync::{PassOptions, Status, run_pass};
use sequoia_openpgp as openpgp;
use support::{Sampler, Stats, Who, fmt_d, section, time};

use openpgp::crypto::{KeyPair, Password, S2K, SessionKey, Signer};
use openpgp::packet::PKESK;
use openpgp::packet::pkesk::PKESK3;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::types::{HashAlgorithm, SymmetricAlgorithm};

const LOGIN_SIZED: usize = 1024;

const SECRET: &[u8] = br#"{"object_type":"PASSBOLT_SECRET_DATA","password":"correct horse battery staple","description":null}"#;

/// GnuPG's default `--s2k-count`, the most its agent asks for by default.
const GNUPG_S2K_BYTES: u32 = 65_011_712;

/// The CPU clock `clock`: the same accounting as getrusage, read to the
/// nanosecond (getrusage's per-thread figures move in scheduler ticks,
/// coarser than one Curve25519 operation).
fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread: one operation's own cost, whatever the
/// other threads of the process do meanwhile.
fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process: client, dev server, every thread.
fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Samples of one row: wall and CPU time of each.
struct Samples {
    wall: Sampler,
    cpu: Vec<Duration>,
}

impl Samples {
    fn new(wall: Sampler) -> Samples {
        Samples {
            wall,
            cpu: Vec::new(),
        }
    }

    fn more(&self) -> bool {
        self.wall.more()
    }

    /// Runs `f` once, on this thread, and records its wall and thread CPU.
    fn op<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let cpu = thread_cpu();
        let (d, out) = time(f);
        self.cpu.push(thread_cpu() - cpu);
        self.wall.push(d);
        out
    }

    fn push(&mut self, wall: Duration, cpu: Duration) {
        self.wall.push(wall);
        self.cpu.push(cpu);
    }
}

/// Prints a row for people and a tab-separated line for
/// `crypto-backends.sh`, which joins the runs of each backend by `id`.
fn report(id: &str, label: &str, s: &Samples, note: &str) -> (Stats, Stats) {
    let wall = s.wall.stats();
    let cpu = Stats::of(&s.cpu);
    println!(
        "{:<58} {:>4} {:>10} {:>10} {:>10} {:>10}  {note}",
        label,
        wall.n,
        fmt_d(wall.median),
        fmt_d(wall.p90),
        fmt_d(wall.min),
        fmt_d(cpu.median),
    );
    println!(
        "tsv\t{id}\t{label}\t{}\t{}\t{}\t{}",
        wall.median.as_nanos(),
        wall.min.as_nanos(),
        cpu.median.as_nanos(),
        wall.n
    );
    (wall, cpu)
}

fn header() {
    println!();
    println!(
        "{:<58} {:>4} {:>10} {:>10} {:>10} {:>10}  note",
        "benchmark", "n", "median", "p90", "min", "CPU med"
    );
    println!("{}", "=".repeat(58 + 5 + 4 * 11 + 30));
}

// ------------------------------------------------- sequoia alone, per key

/// The fixture's keys unlocked through sequoia itself: its first
/// encryption subkey and its signing key (the primary when it signs, as
/// passbolt wants).
fn raw_keypairs(who: &Who) -> (KeyPair, KeyPair) {
    let policy = StandardPolicy::new();
    let cert = openpgp::Cert::from_file(&who.f.private_path).expect("fixture key");
    let password = Password::from(who.f.passphrase.as_str());
    let unlock = |k: openpgp::packet::Key<_, _>| {
        k.decrypt_secret(&password)
            .expect("unlock")
            .into_keypair()
            .expect("keypair")
    };
    let vc = cert.with_policy(&policy, None).expect("valid cert");
    let enc = vc
        .keys()
        .secret()
        .for_transport_encryption()
        .next()
        .expect("an encryption subkey")
        .key()
        .clone()
        .role_into_unspecified();
    let sig = vc
        .keys()
        .secret()
        .for_signing()
        .next()
        .expect("a signing key")
        .key()
        .clone()
        .role_into_unspecified();
    (unlock(enc), unlock(sig))
}

fn raw_operations(who: &Who, rows: &mut Vec<(String, Stats)>) {
    let (mut enc, mut sig) = raw_keypairs(who);
    let algo = SymmetricAlgorithm::AES256;
    let sk = SessionKey::new(algo.key_size().expect("AES-256")).expect("session key");
    let pkesk: PKESK = PKESK3::for_recipient(algo, &sk, enc.public())
        .expect("PKESK")
        .into();
    let tag = who.f.name;
    let mut s = Samples::new(Sampler::new(300, 2500));
    while s.more() {
        let out = s.op(|| pkesk.decrypt(&mut enc, None));
        let (_, got) = out.expect("session-key decryption");
        assert_eq!(&got[..], &sk[..]);
    }
    report(
        &format!("skd-{tag}"),
        &who.label("session-key decryption, sequoia's KeyPair"),
        &s,
        "PKESK::decrypt: the backend as sequoia drives it",
    );

    let mut s = Samples::new(Sampler::new(300, 2500));
    while s.more() {
        let got = s.op(|| who.key.decrypt_session_key(&pkesk));
        assert_eq!(&got.expect("session-key decryption")[..], &sk[..]);
    }
    let (_, cpu) = report(
        &format!("pk-{tag}"),
        &who.label("session-key decryption, as passbolt-sync runs it"),
        &s,
        "the private-key operation of each download",
    );
    rows.push((format!("pk-{tag}"), cpu));

    let digest = vec![0x5a; 32];
    let mut s = Samples::new(Sampler::new(300, 2500));
    while s.more() {
        s.op(|| sig.sign(HashAlgorithm::SHA256, &digest))
            .expect("sign");
    }
    report(
        &format!("sign-{tag}"),
        &who.label(&format!(
            "sign a SHA-256 digest ({})",
            sig.public().pk_algo()
        )),
        &s,
        "one signature, as in the login",
    );
}

fn s2k() {
    let s2k = S2K::Iterated {
        hash: HashAlgorithm::SHA1,
        salt: *b"passbolt",
        hash_bytes: GNUPG_S2K_BYTES,
    };
    let password = Password::from("correct horse battery staple");
    let mut s = Samples::new(Sampler::new(20, 3000));
    while s.more() {
        s.op(|| s2k.derive_key(&password, 16)).expect("derive");
    }
    report(
        "s2k-gnupg",
        "passphrase KDF: iterated+salted SHA-1, 65,011,712 bytes",
        &s,
        "GnuPG's default protection, AES-128 key",
    );
}

// -------------------------------------------- as the client runs them

fn client_operations(who: &Who, server_key: &PublicKey) {
    let key = &who.key;
    let public = key.public();
    let tag = who.f.name;

    let unsigned = pgp::encrypt(&public, None, SECRET).expect("encrypt");
    let mut s = Samples::new(Sampler::new(300, 2500));
    while s.more() {
        let out = s.op(|| key.decrypt(unsigned.as_bytes()));
        assert_eq!(out.expect("decrypt").as_slice(), SECRET);
    }
    report(
        &format!("secret-{tag}"),
        &who.label("decrypt a secret (as downloaded)"),
        &s,
        "parse, session key, AES, MDC",
    );

    let plaintext = vec![b'x'; LOGIN_SIZED];
    let signed = key
        .encrypt_and_sign(&public, &plaintext)
        .expect("encrypt and sign");
    let mut s = Samples::new(Sampler::new(200, 2500));
    while s.more() {
        let out = s.op(|| key.decrypt_verify(&public, signed.as_bytes()));
        assert_eq!(out.expect("decrypt+verify").as_slice(), &plaintext[..]);
    }
    report(
        &format!("dv-{tag}"),
        &who.label("decrypt+verify 1 KiB (login response)"),
        &s,
        "signed by itself",
    );

    let challenge = vec![b'c'; 200];
    let mut s = Samples::new(Sampler::new(200, 2500));
    while s.more() {
        s.op(|| key.encrypt_and_sign(server_key, &challenge))
            .expect("encrypt and sign");
    }
    report(
        &format!("challenge-{tag}"),
        &who.label("encrypt to server + sign (login challenge)"),
        &s,
        "to the captured RSA-3072 server key",
    );

    let bytes = std::fs::read(&who.f.private_path).expect("private key file");
    // Each locked subkey is unlocked on a thread of its own: process CPU.
    let mut s = Samples::new(Sampler::new(10, 3000));
    while s.more() {
        let cpu = process_cpu();
        let (d, out) = time(|| PrivateKey::load(&bytes, Some(who.f.passphrase.as_bytes())));
        s.push(d, process_cpu() - cpu);
        out.expect("unlock");
    }
    report(
        &format!("unlock-{tag}"),
        &who.label("unlock the fixture key (its own S2K)"),
        &s,
        "process CPU: parse, S2K per locked key, key checks",
    );
}

// ---------------------------------------------------- login and cold pass

fn target_file(dir: &Path, j: usize) -> PathBuf {
    dir.join(format!("gen-{j:03}.env"))
}

/// One dotenv target per generated folder: every generated secret mapped.
fn pass_plan(dir: &Path, server: &DevServer, who: &Who, n: usize) -> Plan {
    let mut targets = String::from("targets:\n");
    for j in 0..n.div_ceil(GENERATED_PER_FOLDER) {
        targets.push_str(&format!(
            "  - path: {}\n    format: dotenv\n    folder: Generated/gen-{j:03}\n",
            target_file(dir, j).display()
        ));
    }
    let path = support::common::write_config(dir, server, &who.f, &targets);
    Plan::build(&Config::load(&path).expect("bench config")).expect("plan")
}

/// What `once` does after unlocking the key: a new client logs in and
/// downloads, decrypts and writes every mapped secret.
async fn cold_passes(server: &DevServer, who: &Who, n: usize) -> Stats {
    let mut login = Samples::new(Sampler::new(20, 3000));
    while login.more() {
        let client = support::new_client(server, who);
        let cpu = process_cpu();
        let t = Instant::now();
        client.login().await.expect("login");
        login.push(t.elapsed(), process_cpu() - cpu);
    }
    report(
        &format!("login-{}", who.name()),
        &who.label("login (client and dev server)"),
        &login,
        "process CPU",
    );

    let mut s = Samples::new(Sampler::with_min(support::scaled(5, 2), 9, 30_000));
    let mut ops = 0;
    while s.more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = pass_plan(dir.path(), server, who, n);
        let mut held = Held::new();
        let before = who.key.operations();
        let cpu = process_cpu();
        let t = Instant::now();
        let client = support::new_client(server, who);
        client.login().await.expect("login");
        let report = run_pass(&client, &plan, &mut held, None, PassOptions::default())
            .await
            .expect("pass");
        s.push(t.elapsed(), process_cpu() - cpu);
        assert_eq!(report.cost.secrets_downloaded, n as u64, "cold");
        for t in &report.targets {
            assert!(matches!(t.status, Status::Created), "{:?}", t.status);
        }
        ops = who.key.operations() - before;
    }
    let (_, cpu) = report(
        &format!("cold-{}", who.name()),
        &who.label(&format!("cold pass, {n} secrets, login included")),
        &s,
        &format!("process CPU; {ops} private-key operations"),
    );
    cpu
}

fn main() {
    let started = Instant::now();
    support::banner("crypto backends");
    println!("backend: {}", openpgp::crypto::backend());
    println!("tsv\tbackend\t{}", openpgp::crypto::backend());
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load at start: {}", load.trim());
    }
    let whos = Who::all();
    let server_key = support::common::server_public_key();
    header();

    section("private-key operations through sequoia alone (thread CPU)");
    let mut raw = Vec::new();
    for who in &whos {
        raw_operations(who, &mut raw);
    }
    s2k();

    section("as the client runs them (passbolt_client::pgp; thread CPU)");
    for who in &whos {
        client_operations(who, &server_key);
    }

    let n = support::scaled(1000, 200);
    section(&format!(
        "login and cold pass of {n} secrets against the in-process dev server (process CPU)"
    ));
    let bob = whos.iter().find(|w| w.name() == "bob").expect("bob");
    let alice = whos.iter().find(|w| w.name() == "alice").expect("alice");
    let accounts: Vec<Account> = [bob, alice].iter().map(|w| w.f.account()).collect();
    let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let (folders, resources) = seed::generated(n, &readers);
    let cold_bob = support::runtime().block_on(async {
        let server = DevServer::start(Options::default(), accounts, folders, resources)
            .await
            .expect("dev server");
        // Seeded stamps settled: nothing is downloaded twice for being new.
        server.set_clock(Some(server.now() + SETTLE_SECONDS + 1));
        let cold_bob = cold_passes(&server, bob, n).await;
        cold_passes(&server, alice, n).await;
        cold_bob
    });

    let rsa = raw
        .iter()
        .find(|(id, _)| id == "pk-bob")
        .expect("RSA-3072 row")
        .1;
    let floor = rsa.median.mul_f64(n as f64);
    println!();
    println!(
        "cold pass CPU (bob) / ({n} × RSA-3072 session-key decryption CPU as passbolt-sync runs it) = {} / {} = {:.2} (goal ≤ 1.2)",
        fmt_d(cold_bob.median),
        fmt_d(floor),
        cold_bob.median.as_secs_f64() / floor.as_secs_f64()
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load at end: {}", load.trim());
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
