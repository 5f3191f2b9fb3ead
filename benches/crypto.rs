//! Raw OpenPGP with the fixture keys, no client and no HTTP: what one
//! private-key operation costs per key type, and how decryption scales
//! over the cores (the ceiling of any download of many secrets).
//!
//! `cargo bench --bench crypto`; about 40 s. See `support` for the
//! harness and `PASSBOLT_SYNC_BENCH_QUICK`.

mod support;

use passbolt_client::pgp::{self, PrivateKey, PublicKey};
use support::{Sampler, Who, fmt_ms, row, section, time};

/// About the size of a login response (JWT plus refresh token).
const LOGIN_SIZED: usize = 1024;

const SECRET: &[u8] = br#"{"object_type":"PASSBOLT_SECRET_DATA","password":"correct horse battery staple","description":null}"#;

fn single_operations(who: &Who, server_key: &PublicKey) {
    let reference = support::ACCOUNTS
        .iter()
        .find(|a| a.0 == who.name())
        .expect("account")
        .2;
    let key = &who.key;
    let public = key.public();

    let plaintext = vec![b'x'; LOGIN_SIZED];
    let signed = key
        .encrypt_and_sign(&public, &plaintext)
        .expect("encrypt and sign");
    let mut s = Sampler::new(200, 2500);
    while s.more() {
        let (d, out) = time(|| key.decrypt_verify(&public, signed.as_bytes()));
        assert_eq!(out.expect("decrypt+verify").as_slice(), &plaintext[..]);
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

    let unsigned = pgp::encrypt(&public, None, SECRET).expect("encrypt");
    let mut s = Sampler::new(200, 2000);
    while s.more() {
        let (d, out) = time(|| key.decrypt(unsigned.as_bytes()));
        assert_eq!(out.expect("decrypt").as_slice(), SECRET);
        s.push(d);
    }
    row(
        &who.label("decrypt unsigned secret (as downloaded)"),
        &s.stats(),
        "one private-key operation",
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

/// Decrypts `messages` on `threads` threads.
fn decrypt_all(key: &PrivateKey, messages: &[String], threads: usize) {
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

/// `m` secrets decrypted on one thread and on every core, per secret: what
/// a download of many secrets can at best achieve.
fn parallel_ceiling(who: &Who, threads: usize) {
    let m = support::scaled(200, 50);
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
    let mut one = Sampler::new(5, 1);
    while one.more() {
        let (d, ()) = time(|| decrypt_all(&who.key, &messages, 1));
        one.push(d);
    }
    let one = one.stats().scaled(m, 1);
    row(
        &who.label(&format!("decrypt {m} secrets, 1 thread, per secret")),
        &one,
        "",
    );
    let mut all = Sampler::new(5, 1);
    while all.more() {
        let (d, ()) = time(|| decrypt_all(&who.key, &messages, threads));
        all.push(d);
    }
    let all = all.stats().scaled(m, 1);
    row(
        &who.label(&format!(
            "decrypt {m} secrets, {threads} threads, per secret"
        )),
        &all,
        &format!(
            "ceiling of the machine: ×{:.2} (min/min)",
            one.min.as_secs_f64() / all.min.as_secs_f64()
        ),
    );
}

fn main() {
    let started = std::time::Instant::now();
    support::banner("raw OpenPGP");
    let whos = Who::all();
    let server_key = support::common::server_public_key();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    support::table_header();
    section("one operation at a time (fixture keys; reference: nettle decrypt+verify)");
    for who in &whos {
        single_operations(who, &server_key);
    }
    section("many secrets: one thread against every core");
    for who in &whos {
        parallel_ceiling(who, threads);
    }
    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
