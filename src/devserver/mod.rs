//! A passbolt-compatible server on loopback, for `passbolt-sync demo` and
//! for the tests. It answers like the real v5.12 server in the captures:
//! the same envelopes, status codes and messages, the same login checks,
//! RS256 access tokens, single-use refresh tokens rotated through
//! `Set-Cookie`, v5 metadata with shared and personal keys. It records what
//! clients did (logins, refreshes, reuse attempts, logouts) for tests.
//!
//! It is a development tool: state lives in memory and nothing is durable.

mod handlers;
mod jwt;
pub mod seed;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pgp::{self, PrivateKey, PublicKey};
pub use seed::{SeedFolder, SeedResource};

#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    #[error("dev server: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dev server: {0}")]
    Crypto(String),
    #[error("dev server: {0}")]
    Seed(String),
}

/// A user account of the dev server.
#[derive(Clone)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub key: PublicKey,
    /// MFA providers; non-empty means every login asks for MFA.
    pub mfa: Vec<String>,
}

/// Something a client did, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Login {
        user_id: String,
    },
    /// A refused login, with the reason the real server would only log.
    LoginRejected {
        user_id: String,
        reason: String,
    },
    Refresh {
        user_id: String,
        token: String,
    },
    /// A spent (or logged out) refresh token presented again.
    RefreshReuse {
        token: String,
    },
    RefreshRejected {
        token: String,
        reason: String,
    },
    Logout {
        user_id: String,
        token: Option<String>,
    },
    Request {
        method: String,
        path: String,
        status: u16,
    },
}

/// Ways to make the server misbehave, for tests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every request with this status (e.g. 500, 503).
    pub status_for_all: Option<u16>,
    /// Sign login responses with a key other than the server key.
    pub sign_with_other_key: bool,
    /// Echo a verify_token other than the one sent.
    pub wrong_verify_token: bool,
    /// Echo this domain instead of the server's.
    pub wrong_domain: Option<String>,
    /// Serve this key at /auth/verify.json instead of the real one.
    pub announce_other_key: bool,
    /// Answer API calls with 401 this many times, whatever the token.
    pub unauthorized_next: u32,
    /// Leave the refresh_token cookie out of refresh responses.
    pub omit_refresh_cookie: bool,
    /// Delay every response by this much.
    pub delay: Option<Duration>,
    /// Answer requests whose path starts with this with a 200 HTML page,
    /// as a misconfigured proxy would.
    pub malformed_path: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub bind: SocketAddr,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            // The real server's default.
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

pub(crate) struct RefreshRow {
    pub user_id: String,
    pub active: bool,
    pub created: i64,
}

pub(crate) struct StoredResource {
    pub seed: SeedResource,
    /// Armored metadata for v5 resources.
    pub metadata: Option<String>,
    pub metadata_key_id: Option<String>,
    pub metadata_key_type: Option<&'static str>,
    /// Armored secret by reader user id.
    pub secrets: HashMap<String, String>,
    pub modified: String,
}

pub(crate) struct StoredFolder {
    pub seed: SeedFolder,
    pub metadata: Option<String>,
}

pub(crate) struct Data {
    pub accounts: Vec<Account>,
    pub resources: Vec<StoredResource>,
    pub folders: Vec<StoredFolder>,
    pub metadata_envelopes: HashMap<String, String>,
    pub verify_tokens: HashSet<(String, String)>,
    pub refresh_tokens: HashMap<String, RefreshRow>,
    pub mfa_pending: HashSet<String>,
    /// Every access and refresh token handed out, for leak checks.
    pub issued: Vec<String>,
    pub events: Vec<Event>,
    pub faults: Faults,
}

pub(crate) struct State {
    pub base_url: String,
    pub server_key: PrivateKey,
    pub other_key: PrivateKey,
    pub metadata_key: PrivateKey,
    pub metadata_key_id: String,
    pub jwt: jwt::JwtKey,
    pub opts: Options,
    pub data: Mutex<Data>,
}

impl State {
    pub fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn account(&self, id: &str) -> Option<Account> {
        self.data().accounts.iter().find(|a| a.id == id).cloned()
    }
}

/// A running dev server.
pub struct DevServer {
    state: Arc<State>,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl DevServer {
    /// Starts a server for `accounts` with `resources` and `folders`.
    pub async fn start(
        opts: Options,
        accounts: Vec<Account>,
        folders: Vec<SeedFolder>,
        resources: Vec<SeedResource>,
    ) -> Result<DevServer, DevServerError> {
        let listener =
            TcpListener::bind(opts.bind)
                .await
                .map_err(|source| DevServerError::Bind {
                    addr: opts.bind,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevServerError::Bind {
                addr: opts.bind,
                source,
            })?;
        let base_url = format!("http://{addr}");
        let state = tokio::task::spawn_blocking(move || build_state(base_url, opts, accounts))
            .await
            .expect("key generation task")?;
        let state = Arc::new(state);
        let mut server = DevServer {
            state,
            addr,
            running: None,
        };
        for f in folders {
            server.add_folder(f)?;
        }
        for r in resources {
            server.add_resource(r)?;
        }
        server.serve(listener);
        Ok(server)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel();
        let app = handlers::router(self.state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, task));
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn server_fingerprint(&self) -> String {
        self.state.server_key.fingerprint()
    }

    pub fn server_public_key(&self) -> PublicKey {
        self.state.server_key.public()
    }

    /// Stops listening: clients now get "connection refused".
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Listens again on the same address, with the same state.
    pub async fn restart(&mut self) -> Result<(), DevServerError> {
        self.stop().await;
        let listener =
            TcpListener::bind(self.addr)
                .await
                .map_err(|source| DevServerError::Bind {
                    addr: self.addr,
                    source,
                })?;
        self.serve(listener);
        Ok(())
    }

    pub fn events(&self) -> Vec<Event> {
        self.state.data().events.clone()
    }

    pub fn clear_events(&self) {
        self.state.data().events.clear();
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.data().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.state.data().faults.clone()
    }

    /// Refresh tokens presented more than once: must stay empty.
    pub fn refresh_reuses(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::RefreshReuse { token } => Some(token),
                _ => None,
            })
            .collect()
    }

    pub fn count_logins(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Login { .. }))
            .count()
    }

    pub fn count_refreshes(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Refresh { .. }))
            .count()
    }

    /// Whether a refresh token is still usable.
    pub fn refresh_token_active(&self, token: &str) -> bool {
        self.state
            .data()
            .refresh_tokens
            .get(token)
            .is_some_and(|r| r.active)
    }

    /// Active refresh tokens of a user.
    pub fn active_refresh_tokens(&self, user_id: &str) -> usize {
        self.state
            .data()
            .refresh_tokens
            .values()
            .filter(|r| r.active && r.user_id == user_id)
            .count()
    }

    /// Every access and refresh token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.data().issued.clone()
    }

    pub fn set_mfa(&self, user_id: &str, providers: &[&str]) {
        let mut data = self.state.data();
        if let Some(a) = data.accounts.iter_mut().find(|a| a.id == user_id) {
            a.mfa = providers.iter().map(|p| p.to_string()).collect();
        }
    }

    pub fn add_folder(&self, folder: SeedFolder) -> Result<(), DevServerError> {
        let stored = seed::store_folder(&self.state, folder)?;
        self.state.data().folders.push(stored);
        Ok(())
    }

    /// Adds (or replaces, by id) a resource, encrypting its metadata and
    /// its secret for each reader.
    pub fn add_resource(&self, resource: SeedResource) -> Result<(), DevServerError> {
        let stored = seed::store_resource(&self.state, resource)?;
        let mut data = self.state.data();
        data.resources.retain(|r| r.seed.id != stored.seed.id);
        data.resources.push(stored);
        Ok(())
    }

    /// Changes a resource's secret, as a user editing it would.
    pub fn set_secret(&self, id: &str, secret: &str) -> Result<(), DevServerError> {
        let mut seed = self
            .state
            .data()
            .resources
            .iter()
            .find(|r| r.seed.id == id)
            .map(|r| r.seed.clone())
            .ok_or_else(|| DevServerError::Seed(format!("no resource {id}")))?;
        seed.secret = secret.to_string();
        self.add_resource(seed)
    }

    pub fn remove_resource(&self, id: &str) {
        self.state.data().resources.retain(|r| r.seed.id != id);
    }

    /// Takes a user's access to a resource away (its secret for them too).
    pub fn revoke(&self, id: &str, user_id: &str) {
        let mut data = self.state.data();
        if let Some(r) = data.resources.iter_mut().find(|r| r.seed.id == id) {
            r.seed.readers.retain(|u| u != user_id);
            r.secrets.remove(user_id);
        }
    }

    pub fn resources(&self) -> Vec<SeedResource> {
        self.state
            .data()
            .resources
            .iter()
            .map(|r| r.seed.clone())
            .collect()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}

fn build_state(
    base_url: String,
    opts: Options,
    accounts: Vec<Account>,
) -> Result<State, DevServerError> {
    let crypto = |e: pgp::PgpError| DevServerError::Crypto(e.to_string());
    // Curve25519 keeps start-up fast; the client code path is the same.
    let (server_key, _) = pgp::generate_key(
        "Passbolt dev server <server@passbolt.invalid>",
        pgp::CipherSuite::Cv25519,
        None,
    )
    .map_err(crypto)?;
    let (other_key, _) = pgp::generate_key(
        "Impostor <impostor@passbolt.invalid>",
        pgp::CipherSuite::Cv25519,
        None,
    )
    .map_err(crypto)?;
    let (metadata_key, metadata_armored) = pgp::generate_key(
        "Passbolt metadata key <metadata@passbolt.invalid>",
        pgp::CipherSuite::Cv25519,
        None,
    )
    .map_err(crypto)?;
    let jwt = jwt::JwtKey::generate().map_err(|e| DevServerError::Crypto(e.to_string()))?;
    let metadata_key_id = uuid::Uuid::new_v4().to_string();
    let mut envelopes = HashMap::new();
    for account in &accounts {
        let plaintext = serde_json::json!({
            "object_type": "PASSBOLT_METADATA_PRIVATE_KEY",
            "domain": format!("{base_url}/"),
            "fingerprint": metadata_key.fingerprint(),
            "armored_key": metadata_armored,
            "passphrase": "",
        });
        // Shared by "an admin": signed, but by a key the client cannot know.
        let envelope = other_key
            .encrypt_and_sign(&account.key, plaintext.to_string().as_bytes())
            .map_err(crypto)?;
        envelopes.insert(account.id.clone(), envelope);
    }
    Ok(State {
        base_url,
        server_key,
        other_key,
        metadata_key,
        metadata_key_id,
        jwt,
        opts,
        data: Mutex::new(Data {
            accounts,
            resources: Vec::new(),
            folders: Vec::new(),
            metadata_envelopes: envelopes,
            verify_tokens: HashSet::new(),
            refresh_tokens: HashMap::new(),
            mfa_pending: HashSet::new(),
            issued: Vec::new(),
            events: Vec::new(),
            faults: Faults::default(),
        }),
    })
}
