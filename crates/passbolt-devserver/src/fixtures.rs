//! The recorded accounts of a real passbolt 5.12 server (their keys and
//! passphrases, sandbox keys worthless elsewhere) and a dev server seeded
//! with them: what every test suite of the workspace starts from. The
//! paths point into the workspace's source tree: for its tests only.
#![allow(clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use passbolt_client::pgp::{PrivateKey, PublicKey};
use serde_json::Value;

use crate::{self as devserver, Account, DevServer};

/// `tests/fixtures/captures` of the workspace: the recorded requests and
/// answers, and `keys/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/captures")
}

pub fn capture(name: &str) -> Value {
    let path = fixtures().join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

pub struct Fixture {
    pub name: &'static str,
    pub id: String,
    pub passphrase: String,
    pub private_path: PathBuf,
    pub public: PublicKey,
}

impl Fixture {
    pub fn private_key(&self) -> PrivateKey {
        PrivateKey::load(
            &std::fs::read(&self.private_path).unwrap(),
            Some(self.passphrase.as_bytes()),
        )
        .unwrap()
    }

    pub fn account(&self) -> Account {
        Account {
            id: self.id.clone(),
            username: format!("{}@passbolt.local", self.name),
            key: self.public.clone(),
            mfa: Vec::new(),
        }
    }
}

/// `admin` (RSA-4096), `bob` (RSA-3072) or `alice` (Curve25519).
pub fn fixture(name: &'static str) -> Fixture {
    let accounts = capture("accounts.json");
    let a = &accounts[name];
    let dir = fixtures();
    Fixture {
        name,
        id: a["id"].as_str().unwrap().to_string(),
        passphrase: a["passphrase"].as_str().unwrap().to_string(),
        private_path: dir.join(a["private_key"].as_str().unwrap()),
        public: PublicKey::from_armor(
            &std::fs::read(dir.join(a["public_key"].as_str().unwrap())).unwrap(),
        )
        .unwrap(),
    }
}

pub fn server_public_key() -> PublicKey {
    PublicKey::from_armor(&std::fs::read(fixtures().join("keys/server_public.asc")).unwrap())
        .unwrap()
}

/// A dev server with admin, bob and alice, seeded with the sample set.
pub async fn devserver(opts: devserver::Options) -> DevServer {
    let accounts: Vec<Account> = ["admin", "bob", "alice"]
        .into_iter()
        .map(|n| fixture(n).account())
        .collect();
    let ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    DevServer::start(
        opts,
        accounts,
        devserver::seed::sample_folders(),
        devserver::seed::sample_resources(&ids),
    )
    .await
    .unwrap()
}

/// The fixture's unlocked key, unlocked once per test binary: the fixture
/// keys use GnuPG's strongest passphrase hashing (about 0.4 s per unlock).
pub fn shared_key(who: &Fixture) -> Arc<PrivateKey> {
    static KEYS: std::sync::Mutex<Vec<(&'static str, Arc<PrivateKey>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap();
    if let Some((_, k)) = keys.iter().find(|(n, _)| *n == who.name) {
        return k.clone();
    }
    let k = Arc::new(who.private_key());
    keys.push((who.name, k.clone()));
    k
}

pub fn client(server: &DevServer, who: &Fixture) -> passbolt_client::Client {
    passbolt_client::Client::new(session_options(server, who), shared_key(who)).unwrap()
}

/// The options of `who`'s session on `server`, its pin included.
pub fn session_options(server: &DevServer, who: &Fixture) -> passbolt_client::SessionOptions {
    passbolt_client::SessionOptions {
        base_url: server.url(),
        user_id: who.id.clone(),
        fingerprint: Some(server.server_fingerprint()),
        ca_pem: None,
        client_identity: None,
        timeout: std::time::Duration::from_secs(10),
        max_response_bytes: passbolt_client::session::DEFAULT_MAX_RESPONSE_BYTES,
    }
}
