//! HTTPS as real passbolt servers serve it: a private CA, `server.ca_file`,
//! and client certificates for a server behind an mTLS proxy. The dev
//! server serves TLS with certificates generated here; the real binary
//! connects to it. Each way a TLS connection fails has its own message that
//! names the setting to fix.

use crate::common;

use std::path::{Path, PathBuf};

use common::{cli, fixture, text};
use passbolt_devserver::{self, Account, DevServer, Options, TlsConfig, seed::ids};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

enum Validity {
    Now,
    /// Not after 2021-01-01.
    Expired,
}

/// A leaf certificate and its key, both PEM. Names that parse as IP
/// addresses become IP subject alternative names.
fn leaf(
    ca: &Ca,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    validity: Validity,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![purpose];
    if let Validity::Expired = validity {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn server_cert(ca: &Ca, names: &[&str], validity: Validity) -> (String, String) {
    leaf(ca, names, ExtendedKeyUsagePurpose::ServerAuth, validity)
}

fn client_cert(ca: &Ca) -> (String, String) {
    leaf(
        ca,
        &["passbolt-sync-client"],
        ExtendedKeyUsagePurpose::ClientAuth,
        Validity::Now,
    )
}

fn accounts() -> (Vec<Account>, Vec<String>) {
    let accounts: Vec<Account> = ["admin", "bob", "alice"]
        .into_iter()
        .map(|n| fixture(n).account())
        .collect();
    let ids = accounts.iter().map(|a| a.id.clone()).collect();
    (accounts, ids)
}

/// A dev server serving HTTPS with `cert`, requiring client certificates
/// of `client_ca` when given.
async fn https_server((cert, key): (String, String), client_ca: Option<&Ca>) -> DevServer {
    let (accounts, ids) = accounts();
    DevServer::start_tls(
        Options::default(),
        TlsConfig {
            cert_chain_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            client_ca_pem: client_ca.map(|c| c.pem.clone().into_bytes()),
        },
        accounts,
        passbolt_devserver::seed::sample_folders(),
        passbolt_devserver::seed::sample_resources(&ids),
    )
    .await
    .unwrap()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A config for alice against `url`, with `server_extra` lines added to the
/// `server:` block and one raw target writing the v4 password string to
/// `<dir>/out/legacy`.
fn config(dir: &Path, url: &str, fingerprint: &str, server_extra: &str) -> PathBuf {
    let alice = fixture("alice");
    let pass = write(dir, "alice.pass", &format!("{}\n", alice.passphrase));
    std::fs::create_dir_all(dir.join("out")).unwrap();
    write(
        dir,
        "sync.yaml",
        &format!(
            "server:\n  url: {url}\n  fingerprint: {fingerprint}\n  timeout: 10s\n{server_extra}\
             auth:\n  user_id: {}\n  private_key_file: {}\n  passphrase_file: {}\n\
             targets:\n  - {{ path: {}, format: raw, resource: {} }}\n",
            alice.id,
            alice.private_path.display(),
            pass.display(),
            dir.join("out/legacy").display(),
            ids::V4_PASSWORD_STRING,
        ),
    )
}

/// Runs `passbolt-sync <command> -c <config>`: (exit code, stdout, stderr).
async fn run(command: &str, config: &Path, envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = cli(&[command, "-c", config.to_str().unwrap()], envs).await;
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

#[tokio::test]
async fn system_store_refuses_a_private_ca_and_names_server_ca_file() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Now), None).await;
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.url(), &server.server_fingerprint(), "");
    let (code, out, err) = run("resources", &cfg, &[]).await;
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(
            "the server's certificate is issued by a CA this host does not trust; \
             set server.ca_file to that CA's PEM"
        ),
        "{err}"
    );
    assert!(err.contains(&server.url()), "{err}");
    assert_eq!(server.count_logins(), 0);
}

#[tokio::test]
async fn ca_file_makes_login_listing_and_once_work() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Now), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let cfg = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );

    let (code, out, err) = run("resources", &cfg, &[]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(ids::V4_PASSWORD_STRING), "{out}");
    assert!(out.contains("Legacy DB"), "{out}");

    let (code, out, err) = run("once", &cfg, &[]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/legacy")).unwrap(),
        "legacy-db-pass"
    );
    assert_eq!(server.count_logins(), 2);
}

#[tokio::test]
async fn ca_file_with_another_ca_says_it_is_the_wrong_ca() {
    let ca_server = new_ca("the server's CA");
    let other = new_ca("some other CA");
    let server = https_server(server_cert(&ca_server, &["127.0.0.1"], Validity::Now), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &other.pem);
    let cfg = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );
    let (code, _, err) = run("resources", &cfg, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("neither this host nor server.ca_file trusts"),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_name_says_so() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(
        server_cert(&ca, &["passbolt.example.invalid"], Validity::Now),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let cfg = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );
    let (code, _, err) = run("resources", &cfg, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the server's certificate is not valid for the host name of server.url"),
        "{err}"
    );
    assert!(err.contains("passbolt.example.invalid"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_says_when_it_expired() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Expired), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let cfg = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );
    let (code, _, err) = run("resources", &cfg, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the server's certificate expired on 2021-01-01 00:00:00 UTC"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_http_on_the_https_port_says_so() {
    let server = common::devserver(Options::default()).await;
    let url = server.url().replacen("http://", "https://", 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, &server.server_fingerprint(), "");
    let (code, _, err) = run("resources", &cfg, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the server does not speak TLS on this port"),
        "{err}"
    );
}

#[tokio::test]
async fn mtls_refuses_without_a_client_certificate_and_accepts_one_from_its_ca() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Now), Some(&ca)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);

    let without = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );
    let (code, _, err) = run("resources", &without, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "requires a client certificate; set server.client_cert_file and server.client_key_file"
        ),
        "{err}"
    );

    // A certificate from a CA the proxy does not trust.
    let creds = tempfile::tempdir().unwrap();
    let stranger = new_ca("not the proxy's CA");
    let (cert, key) = client_cert(&stranger);
    write(creds.path(), "client.pem", &cert);
    write(creds.path(), "client.key", &key);
    let with = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!(
            "  ca_file: {}\n  client_cert_file: ${{CREDENTIALS_DIRECTORY}}/client.pem\n  \
             client_key_file: ${{CREDENTIALS_DIRECTORY}}/client.key\n",
            ca_file.display()
        ),
    );
    let envs = [("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())];
    let (code, _, err) = run("resources", &with, &envs).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        // Read from the alert or, when the alert comes after the handshake
        // (TLS 1.3) and the connection closes before the request, as "most
        // likely refused ...": both name the setting.
        err.contains("refused the client certificate of server.client_cert_file"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    assert_eq!(server.count_logins(), 0);

    // One the proxy's CA issued, found through ${CREDENTIALS_DIRECTORY}.
    let (cert, key) = client_cert(&ca);
    write(creds.path(), "client.pem", &cert);
    write(creds.path(), "client.key", &key);
    let (code, out, err) = run("resources", &with, &envs).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("Legacy DB"), "{out}");
    let (code, out, err) = run("once", &with, &envs).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/legacy")).unwrap(),
        "legacy-db-pass"
    );
}

#[tokio::test]
async fn client_cert_without_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "https://passbolt.example.invalid",
        "0123456789ABCDEF0123456789ABCDEF01234567",
        "  client_cert_file: client.pem\n",
    );
    let (code, _, err) = run("check", &cfg, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("give both `client_cert_file` and `client_key_file`, or neither"),
        "{err}"
    );
}

#[test]
fn client_identity_never_prints() {
    let ca = new_ca("passbolt-sync test CA");
    let (cert, key) = client_cert(&ca);
    let identity = passbolt_client::ClientIdentity::from_pem(cert.as_bytes(), key.as_bytes());
    let shown = format!("{identity:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}

/// The environment of a host without a trust store (a minimal container):
/// `SSL_CERT_FILE` names no file and `SSL_CERT_DIR` an empty directory,
/// which replace the system's defaults as they do for OpenSSL.
fn no_trust_store(dir: &Path) -> (String, String) {
    let empty = dir.join("empty-certs");
    std::fs::create_dir_all(&empty).unwrap();
    (
        empty.join("ca-certificates.crt").display().to_string(),
        empty.display().to_string(),
    )
}

/// `once` with the system store pointed at nothing (`file`, `certs`):
/// it succeeds and syncs; its stderr.
async fn once_without_trust_store(dir: &Path, cfg: &Path, file: &str, certs: &str) -> String {
    let env = [("SSL_CERT_FILE", file), ("SSL_CERT_DIR", certs)];
    let (code, out, err) = run("once", cfg, &env).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("out/legacy")).unwrap(),
        "legacy-db-pass"
    );
    err
}

#[tokio::test]
async fn plain_http_needs_no_trust_store() {
    let server = common::devserver(Options::default()).await;
    assert!(server.url().starts_with("http://"), "{}", server.url());
    let dir = tempfile::tempdir().unwrap();
    let (file, certs) = no_trust_store(dir.path());
    let cfg = config(dir.path(), &server.url(), &server.server_fingerprint(), "");
    let err = once_without_trust_store(dir.path(), &cfg, &file, &certs).await;
    // Not even a warning about the store nobody needs.
    assert!(!err.contains("CA"), "{err}");
}

#[tokio::test]
async fn ca_file_needs_no_trust_store() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Now), None).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, certs) = no_trust_store(dir.path());
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let cfg = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );
    let err = once_without_trust_store(dir.path(), &cfg, &file, &certs).await;
    assert!(!err.contains("CA"), "{err}");
}

#[tokio::test]
async fn https_without_any_trusted_ca_names_what_is_missing_and_both_fixes() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Now), None).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, certs) = no_trust_store(dir.path());
    let cfg = config(dir.path(), &server.url(), &server.server_fingerprint(), "");
    let env = [
        ("SSL_CERT_FILE", file.as_str()),
        ("SSL_CERT_DIR", certs.as_str()),
    ];
    for command in ["once", "resources"] {
        let (code, out, err) = run(command, &cfg, &env).await;
        assert_ne!(code, 0, "{command}: stdout: {out}\nstderr: {err}");
        for part in [
            format!(
                "no CA certificate to check the certificate of {}",
                server.url()
            ),
            format!("found none in SSL_CERT_FILE {file}"),
            format!("SSL_CERT_DIR {certs}"),
            "server.ca_file is not set".into(),
            "ca-certificates package".into(),
            "set server.ca_file to the PEM of the CA".into(),
        ] {
            assert!(err.contains(&part), "{command}: no {part:?} in:\n{err}");
        }
        assert!(!err.contains("builder error"), "{command}: {err}");
    }
    assert_eq!(server.count_logins(), 0);
}

#[tokio::test]
async fn ssl_cert_file_and_ssl_cert_dir_are_the_system_store() {
    let ca = new_ca("passbolt-sync test CA");
    let server = https_server(server_cert(&ca, &["127.0.0.1"], Validity::Now), None).await;
    let dir = tempfile::tempdir().unwrap();
    let (missing, empty) = no_trust_store(dir.path());
    let bundle = write(dir.path(), "bundle.pem", &ca.pem);
    let ca_dir = dir.path().join("ca-dir");
    std::fs::create_dir_all(&ca_dir).unwrap();
    write(&ca_dir, "test-ca.pem", &ca.pem);
    let cfg = config(dir.path(), &server.url(), &server.server_fingerprint(), "");
    let bundle = bundle.display().to_string();
    let ca_dir = ca_dir.display().to_string();
    // Either variable alone, the other naming nothing usable; a list of
    // directories, as OpenSSL reads it.
    let dirs = format!("{empty}:{ca_dir}");
    for env in [
        [
            ("SSL_CERT_FILE", bundle.as_str()),
            ("SSL_CERT_DIR", empty.as_str()),
        ],
        [
            ("SSL_CERT_FILE", missing.as_str()),
            ("SSL_CERT_DIR", ca_dir.as_str()),
        ],
        [
            ("SSL_CERT_FILE", missing.as_str()),
            ("SSL_CERT_DIR", dirs.as_str()),
        ],
    ] {
        let (code, out, err) = run("resources", &cfg, &env).await;
        assert_eq!(code, 0, "{env:?}: stdout: {out}\nstderr: {err}");
        assert!(out.contains(ids::V4_PASSWORD_STRING), "{out}");
    }
}

#[tokio::test]
async fn a_ca_file_rustls_cannot_use_is_named_not_a_builder_error() {
    let server = common::devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(
        dir.path(),
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let cfg = config(
        dir.path(),
        &server.url(),
        &server.server_fingerprint(),
        &format!("  ca_file: {}\n", ca_file.display()),
    );
    let (code, out, err) = run("resources", &cfg, &[]).await;
    assert_ne!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("server.ca_file: certificate 1 is not a usable CA"),
        "{err}"
    );
    assert!(!err.contains("builder error"), "{err}");
}
