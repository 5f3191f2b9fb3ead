//! A passbolt-compatible server on loopback, for `passbolt-sync demo` and
//! for the tests. It answers like the real v5.12 server in the captures:
//! the same envelopes, status codes and messages, the same login checks,
//! RS256 access tokens, single-use refresh tokens rotated through
//! `Set-Cookie`, v5 metadata with shared and personal keys. It records what
//! clients did (logins, refreshes, reuse attempts, logouts, every secret
//! handed out) for tests, and lets tests change its data the way users and
//! admins would (edits, renames, shares, metadata key rotation) and set its
//! clock.
//!
//! It is a development tool: state lives in memory and nothing is durable.

mod clock;
mod expiry;
pub mod fixtures;
mod handlers;
mod jwt;
mod kit;
mod metadata_keys;
mod query;
mod revisions;
pub mod seed;
mod store;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use metadata_keys::MetadataKey;
use passbolt_client::pgp::{self, PrivateKey, PublicKey};
use seed::SealedMetadata;
pub use seed::{SeedFolder, SeedResource};
pub use tls::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    #[error("dev server: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dev server: {0}")]
    Crypto(String),
    #[error("dev server: unknown resource type {0}")]
    UnknownType(String),
    #[error("dev server: no account {0}")]
    NoAccount(String),
    #[error("dev server: no resource {0}")]
    NoResource(String),
    #[error(
        "dev server: resource {0} is a personal item (its metadata is encrypted with its owner's key) and cannot be shared"
    )]
    PersonalItem(String),
    #[error("dev server: TLS: {0}")]
    Tls(String),
}

impl DevServerError {
    fn crypto(e: pgp::PgpError) -> DevServerError {
        DevServerError::Crypto(e.to_string())
    }
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
        /// The raw query string, empty when there is none.
        query: String,
        status: u16,
        /// Time spent answering, from routing to the response built (the
        /// server-side cost a client causes, as a real server's handler
        /// time would be).
        micros: u64,
    },
    /// One secret handed out, as the real server's secret access log
    /// records it: one per secret in a listing or view with
    /// `contain[secret]`, and one per `/secrets/resource/{id}.json`.
    SecretRead {
        user_id: String,
        resource_id: String,
    },
    /// A TOTP code checked at `/mfa/verify/totp.json`.
    MfaVerify {
        user_id: String,
        accepted: bool,
        /// The TOTP step of the server's clock at the check.
        step: u64,
    },
    /// Too many rejected codes since the last login: every refresh token
    /// of the account deactivated.
    MfaLoggedOut {
        user_id: String,
    },
    /// A request of an MFA account that carried a `passbolt_mfa` cookie,
    /// and whether the server took it.
    MfaCookie {
        path: String,
        valid: bool,
    },
    /// What the real server raises as an "attack" exception (error-logged,
    /// and e-mailed to the user and every admin before v5.4). A client must
    /// never cause one.
    Attack {
        kind: AttackKind,
    },
}

/// The real server's `AbstractJwtAttackException` subclasses a client can
/// trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// A refresh token already used or logged out.
    SpentRefreshToken,
    /// A refresh token older than its lifetime.
    ExpiredRefreshToken,
    /// A refresh token the server never issued to this user.
    UnknownRefreshToken,
    /// A login verify token presented twice.
    ReusedVerifyToken,
    /// A login verify token past its expiry.
    ExpiredVerifyToken,
    /// A login challenge for another domain.
    WrongDomain,
}

/// A fixed answer for every request whose path starts with `path_prefix`.
#[derive(Debug, Clone, Default)]
pub struct Canned {
    pub path_prefix: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
    /// Answer matching requests with a fixed status, headers and body:
    /// invalid JSON, a wrong shape, chosen statuses, `Retry-After`, a
    /// redirect, a garbage `Content-Encoding`.
    pub respond: Option<Canned>,
    /// List every resource twice.
    pub duplicate_ids: bool,
    /// List this resource with a resource type the server does not have.
    pub unknown_type_for: Option<String>,
    /// Answer as a passbolt 4 server would: no `/metadata/*` endpoints,
    /// no v5 resource types, and no item with encrypted metadata.
    pub pre_v5: bool,
    /// Leave `app.url` out of `/settings.json`, as an older server or a
    /// proxy that filters the settings would.
    pub hide_app_url: bool,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub bind: SocketAddr,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// The base URL clients reach the server at, when not its own address
    /// (behind a proxy): what logins, tokens and envelopes name.
    pub public_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            // The real server's default.
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            public_url: None,
        }
    }
}

/// A verified second factor, as `MfaVerifiedToken` stores it.
pub(crate) struct MfaToken {
    pub user_id: String,
    pub remember: bool,
    /// The access token it was verified (or last refreshed) with.
    pub session: String,
    pub active: bool,
    pub created: i64,
}

/// How long an MFA token lives (the real server's 30 days).
pub const MFA_TOKEN_LIFETIME: i64 = 30 * 24 * 3600;

/// `passbolt.security.mfa.maxAttempts`' default: one more rejected code
/// since the last login logs the account out.
pub const MFA_MAX_ATTEMPTS: u32 = 4;

pub(crate) struct RefreshRow {
    pub user_id: String,
    pub active: bool,
    pub created: i64,
}

/// One reader's copy of a secret.
#[derive(Clone, Debug)]
pub(crate) struct StoredSecret {
    pub id: String,
    /// Armored, encrypted to the reader's key.
    pub data: String,
    pub created: String,
    pub modified: String,
}

/// v5 metadata as stored: armored message, key id, key type.
pub type StoredMetadata = (String, String, String);

/// Who a permission is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Aro {
    User(String),
    Group(String),
}

/// One permission row: READ (1), UPDATE (7) or OWNER (15).
#[derive(Clone, Debug)]
pub(crate) struct StoredPermission {
    pub id: String,
    pub aro: Aro,
    pub kind: u8,
}

pub const READ: u8 = 1;
pub const UPDATE: u8 = 7;
pub const OWNER: u8 = 15;

/// A group of users.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

pub(crate) struct StoredResource {
    /// `seed.readers` is the set of users having access (direct or
    /// through a group), kept in step with `permissions`. `seed.secret` is
    /// the plaintext the server last encrypted itself; after a client's
    /// write it is what that client sent only when the test said so
    /// (the server cannot read secrets).
    pub seed: SeedResource,
    /// v5 only.
    pub metadata: Option<SealedMetadata>,
    /// By reader user id.
    pub secrets: HashMap<String, StoredSecret>,
    pub permissions: Vec<StoredPermission>,
    /// Password expiry mark, as the client last set it (or automatic
    /// expiry, when its setting is on and a reader lost access).
    pub expired: Option<String>,
    pub created: String,
    pub modified: String,
    pub modified_by: Option<String>,
    /// The revision `secrets` belong to, and the past ones.
    pub revisions: revisions::Revisions,
}

pub(crate) struct StoredFolder {
    pub seed: SeedFolder,
    /// v5 only.
    pub metadata: Option<SealedMetadata>,
    pub created: String,
    pub modified: String,
}

pub(crate) struct Data {
    pub accounts: Vec<Account>,
    /// By id, in the order they were first added (the listing order).
    pub resources: IndexMap<String, StoredResource>,
    pub folders: IndexMap<String, StoredFolder>,
    pub groups: IndexMap<String, Group>,
    /// `/password-policies/settings.json`'s body; `None` answers 404.
    pub password_policy: Option<serde_json::Value>,
    /// `/metadata/types/settings.json`'s body.
    pub metadata_types_settings: serde_json::Value,
    /// `/metadata/keys/settings.json`'s body.
    pub metadata_keys_settings: serde_json::Value,
    /// `/secret-revisions/settings.json`'s body: `max_revisions` decides
    /// how many past revisions keep their secrets.
    pub secret_revisions_settings: serde_json::Value,
    /// `/password-expiry/settings.json`'s body: `automatic_expiry` marks a
    /// resource expired when a reader who saw its secret loses access.
    pub password_expiry_settings: serde_json::Value,
    /// Oldest first; the newest one that has not expired is current.
    pub metadata_keys: Vec<MetadataKey>,
    /// Accounts the metadata keys are kept from, as in zero-knowledge mode
    /// before an admin shares them: rotations skip them too.
    pub metadata_withheld: HashSet<String>,
    pub verify_tokens: HashSet<(String, String)>,
    pub refresh_tokens: HashMap<String, RefreshRow>,
    /// TOTP seeds by user id.
    pub totp_seeds: HashMap<String, passbolt_client::TotpSeed>,
    /// MFA tokens by their `passbolt_mfa` cookie value.
    pub mfa_tokens: HashMap<String, MfaToken>,
    /// Rejected TOTP codes by user id since their last login.
    pub mfa_failures: HashMap<String, u32>,
    /// Every access and refresh token handed out, for leak checks.
    pub issued: Vec<String>,
    pub events: Vec<Event>,
    pub faults: Faults,
}

pub(crate) struct State {
    pub base_url: String,
    pub server_key: PrivateKey,
    /// Signs login responses under `Faults::sign_with_other_key`, and the
    /// metadata key envelopes as "an admin" the client cannot know.
    pub other_key: PrivateKey,
    pub jwt: jwt::JwtKey,
    pub opts: Options,
    pub clock: clock::Clock,
    pub data: Mutex<Data>,
    /// The base URL the server believes it has (passbolt's
    /// `App.fullBaseUrl`) when a test set one other than `base_url`.
    pub full_base_url: Mutex<Option<String>>,
}

impl State {
    pub fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn account(&self, id: &str) -> Option<Account> {
        self.data().accounts.iter().find(|a| a.id == id).cloned()
    }

    /// The domain the server believes it has, as envelopes and logins
    /// carry it, `/settings.json` announces it as `app.url`, and a login
    /// challenge must name it.
    pub fn domain(&self) -> String {
        self.full_base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| format!("{}/", self.base_url))
    }
}

/// A running dev server.
pub struct DevServer {
    state: Arc<State>,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Set for a server started with `start_tls`.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl DevServer {
    /// Starts a server for `accounts` with `resources` and `folders`,
    /// encrypting them on every core.
    pub async fn start(
        opts: Options,
        accounts: Vec<Account>,
        folders: Vec<SeedFolder>,
        resources: Vec<SeedResource>,
    ) -> Result<DevServer, DevServerError> {
        DevServer::start_with(opts, None, accounts, folders, resources).await
    }

    /// Like `start`, serving HTTPS with `tls`; the base URL is
    /// `https://<bind address>`, so the certificate must name that IP.
    pub async fn start_tls(
        opts: Options,
        tls: TlsConfig,
        accounts: Vec<Account>,
        folders: Vec<SeedFolder>,
        resources: Vec<SeedResource>,
    ) -> Result<DevServer, DevServerError> {
        DevServer::start_with(opts, Some(tls), accounts, folders, resources).await
    }

    async fn start_with(
        opts: Options,
        tls: Option<TlsConfig>,
        accounts: Vec<Account>,
        folders: Vec<SeedFolder>,
        resources: Vec<SeedResource>,
    ) -> Result<DevServer, DevServerError> {
        let tls = tls.map(|t| t.acceptor()).transpose()?;
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = opts
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let state = tokio::task::spawn_blocking(move || {
            let state = build_state(base_url, opts, accounts)?;
            state.add_folders(folders)?;
            state.add_resources(resources)?;
            Ok::<_, DevServerError>(state)
        })
        .await
        .expect("seeding task")?;
        let mut server = DevServer {
            state: Arc::new(state),
            addr,
            running: None,
            tls,
        };
        server.serve(listener)?;
        Ok(server)
    }

    fn serve(&mut self, listener: TcpListener) -> Result<(), DevServerError> {
        let (tx, rx) = oneshot::channel();
        let app = handlers::router(self.state.clone());
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = match &self.tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await;
            }),
            Some(acceptor) => {
                let listener =
                    tls::TlsListener::new(listener, acceptor.clone()).map_err(|source| {
                        DevServerError::Bind {
                            addr: self.addr,
                            source,
                        }
                    })?;
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await;
                })
            }
        };
        self.running = Some((tx, task));
        Ok(())
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
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
        self.serve(listener)
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

    /// Every attack event so far: must stay empty for any client.
    pub fn attacks(&self) -> Vec<AttackKind> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Attack { kind } => Some(kind),
                _ => None,
            })
            .collect()
    }

    /// Requests served so far.
    pub fn count_requests(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count()
    }

    /// Every request served so far: path, query and handler time.
    pub fn requests(&self) -> Vec<(String, String, Duration)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Request {
                    path,
                    query,
                    micros,
                    ..
                } => Some((path, query, Duration::from_micros(micros))),
                _ => None,
            })
            .collect()
    }

    /// Moves a resource into `folder` (`None`: the root). As on the real
    /// server, where a move changes the folder relation only, `modified`
    /// stays.
    pub fn move_resource(&self, id: &str, folder: Option<&str>) {
        if let Some(r) = self.state.data().resources.get_mut(id) {
            r.seed.folder_id = folder.map(str::to_string);
        }
    }

    /// Removes a folder; the resources in it move to the root: the folder
    /// id stops answering while its resources stay readable.
    pub fn remove_folder(&self, id: &str) {
        let mut data = self.state.data();
        data.folders.shift_remove(id);
        for r in data.resources.values_mut() {
            if r.seed.folder_id.as_deref() == Some(id) {
                r.seed.folder_id = None;
            }
        }
    }

    /// Shifts the server's clock by `seconds` from the real one (or from
    /// the frozen time), as a server with a wrong clock would have.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.state.clock.set_offset(seconds);
    }

    /// Makes the server believe its base URL is `url` (passbolt's
    /// `App.fullBaseUrl`, e.g. `http://localhost:8080/passbolt/`) while it
    /// is still reached at `url()`: `/settings.json` announces it and a
    /// login must name it, as a server configured for another address
    /// does. `None` goes back to its own address.
    pub fn set_full_base_url(&self, url: Option<&str>) {
        *self
            .state
            .full_base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = url.map(str::to_string);
    }

    /// Replaces `user_id`'s copy of a resource's secret with one encrypted
    /// to a key nobody has, as a broken client sharing it would; the
    /// resource's `modified` moves to now. `set_secret` repairs it.
    pub fn seal_secret_to_other_key(&self, id: &str, user_id: &str) -> Result<(), DevServerError> {
        self.state.seal_secret_to_other_key(id, user_id)
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

    /// Gives an account MFA providers by name (`totp`, `yubikey`, `duo`):
    /// every login then names them, and nothing else works until a code
    /// is verified. A `totp` without a seed (`set_totp`) accepts no code.
    pub fn set_mfa(&self, user_id: &str, providers: &[&str]) {
        let mut data = self.state.data();
        if let Some(a) = data.accounts.iter_mut().find(|a| a.id == user_id) {
            a.mfa = providers.iter().map(|p| p.to_string()).collect();
        }
    }

    /// Enables TOTP for an account with `seed` (base32 or an `otpauth://`
    /// URI), first among its providers.
    pub fn set_totp(&self, user_id: &str, seed: &str) -> Result<(), DevServerError> {
        let parsed = passbolt_client::TotpSeed::parse(seed.as_bytes())
            .map_err(|e| DevServerError::Crypto(format!("TOTP seed: {e}")))?;
        let mut data = self.state.data();
        let account = data
            .accounts
            .iter_mut()
            .find(|a| a.id == user_id)
            .ok_or_else(|| DevServerError::NoAccount(user_id.to_string()))?;
        account.mfa.retain(|p| p != "totp");
        account.mfa.insert(0, "totp".into());
        data.totp_seeds.insert(user_id.to_string(), parsed);
        Ok(())
    }

    /// Fault: deactivates every MFA token of the account, as the server
    /// does when one is presented with the wrong access token or an admin
    /// resets the account's MFA. The next request gets the MFA redirect.
    pub fn drop_mfa_tokens(&self, user_id: &str) {
        for t in self.state.data().mfa_tokens.values_mut() {
            if t.user_id == user_id {
                t.active = false;
            }
        }
    }

    /// Active MFA tokens (remembered cookies) of an account.
    pub fn active_mfa_tokens(&self, user_id: &str) -> usize {
        let now = self.state.clock.now();
        self.state
            .data()
            .mfa_tokens
            .values()
            .filter(|t| t.user_id == user_id && t.active && t.created + MFA_TOKEN_LIFETIME > now)
            .count()
    }

    /// TOTP codes checked for an account, as (accepted, rejected).
    pub fn totp_attempts(&self, user_id: &str) -> (usize, usize) {
        let mut counts = (0, 0);
        for e in self.state.data().events.iter() {
            if let Event::MfaVerify {
                user_id: u,
                accepted,
                ..
            } = e
                && u == user_id
            {
                if *accepted {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
        }
        counts
    }

    /// The server's TOTP steps at which codes of an account were accepted.
    pub fn totp_accepted_steps(&self, user_id: &str) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::MfaVerify {
                    user_id: u,
                    accepted: true,
                    step,
                } if u == user_id => Some(step),
                _ => None,
            })
            .collect()
    }

    /// Paths of requests that carried a `passbolt_mfa` cookie, with
    /// whether the server took it, in order.
    pub fn mfa_cookie_requests(&self) -> Vec<(String, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::MfaCookie { path, valid } => Some((path, valid)),
                _ => None,
            })
            .collect()
    }

    /// Secrets handed out so far, as (user id, resource id), in order.
    pub fn secret_reads(&self) -> Vec<(String, String)> {
        self.state
            .data()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::SecretRead {
                    user_id,
                    resource_id,
                } => Some((user_id.clone(), resource_id.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn count_secret_reads(&self) -> usize {
        self.state
            .data()
            .events
            .iter()
            .filter(|e| matches!(e, Event::SecretRead { .. }))
            .count()
    }

    /// Freezes the server's clock at `unix_seconds`, or lets it follow the
    /// real clock again with `None`. Everything the server stamps or checks
    /// uses this clock: `header.servertime`, `created` and `modified`,
    /// token expiry, the login's verify token window.
    pub fn set_clock(&self, unix_seconds: Option<i64>) {
        self.state.clock.set(unix_seconds);
    }

    /// The server's time, unix seconds.
    pub fn now(&self) -> i64 {
        self.state.clock.now()
    }

    /// Adds (or replaces, by id) a folder, encrypting v5 metadata.
    pub fn add_folder(&self, folder: SeedFolder) -> Result<(), DevServerError> {
        self.state.add_folders(vec![folder])
    }

    /// Adds (or replaces, by id) a resource, encrypting its metadata and
    /// its secret for each reader. A replaced resource is an edit: its
    /// `modified` moves to now.
    pub fn add_resource(&self, resource: SeedResource) -> Result<(), DevServerError> {
        self.state.add_resources(vec![resource])
    }

    /// `add_resource` for many, encrypted on every core. Nothing is stored
    /// if one fails.
    pub fn add_resources(&self, resources: Vec<SeedResource>) -> Result<(), DevServerError> {
        self.state.add_resources(resources)
    }

    /// Changes a resource's secret, as a user editing it would.
    pub fn set_secret(&self, id: &str, secret: &str) -> Result<(), DevServerError> {
        self.state.set_secrets(&[(id, secret)])
    }

    /// Changes many secrets at once, as (resource id, new plaintext),
    /// encrypted on every core. Nothing changes if an id is unknown.
    pub fn set_secrets<I: AsRef<str> + Sync, S: AsRef<str> + Sync>(
        &self,
        changes: &[(I, S)],
    ) -> Result<(), DevServerError> {
        self.state.set_secrets(changes)
    }

    /// Renames a resource (re-encrypting v5 metadata with the current
    /// metadata key or its owner's key); `modified` moves to now.
    pub fn rename(&self, id: &str, new_name: &str) -> Result<(), DevServerError> {
        self.state.rename(id, new_name)
    }

    /// Gives `user_id` read access: encrypts the secret for them. As on the
    /// real server, `modified` stays. A v5 personal (`user_key`) item is an
    /// error: its metadata only its owner can read.
    pub fn share(&self, id: &str, user_id: &str) -> Result<(), DevServerError> {
        self.state.share(id, user_id)
    }

    pub fn remove_resource(&self, id: &str) {
        self.state.data().resources.shift_remove(id);
    }

    /// Takes a user's access to a resource away (its secret for them too).
    /// As on the real server, `modified` stays; with automatic expiry on,
    /// the resource is marked expired if they had read its secret.
    pub fn revoke(&self, id: &str, user_id: &str) {
        let mut data = self.state.data();
        if let Some(r) = data.resources.get_mut(id) {
            r.seed.readers.retain(|u| u != user_id);
            r.secrets.remove(user_id);
            r.permissions
                .retain(|p| p.aro != Aro::User(user_id.to_string()));
            let now = self.state.clock.now();
            expiry::after_access_lost(&mut data, id, &[user_id.to_string()], now);
        }
    }

    /// Adds an account, with its copy of every metadata key.
    pub fn add_account(&self, account: Account) -> Result<(), DevServerError> {
        let id = account.id.clone();
        self.state.data().accounts.push(account);
        self.state.share_metadata_key(&id)
    }

    /// Adds a group of `members` (user ids); returns its id.
    pub fn add_group(&self, name: &str, members: &[&str]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.state.data().groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                name: name.to_string(),
                members: members.iter().map(|m| m.to_string()).collect(),
            },
        );
        id
    }

    /// Gives a group a permission of `kind` (`READ`, `UPDATE`, `OWNER`) on a
    /// resource, encrypting the secret the server last set for each
    /// member who had no access. `modified` stays, as on the real server.
    pub fn share_with_group(
        &self,
        id: &str,
        group_id: &str,
        kind: u8,
    ) -> Result<(), DevServerError> {
        self.state.share_with_group(id, group_id, kind)
    }

    /// Sets `user_id`'s direct permission on a resource to `kind`; the
    /// user must already have access.
    pub fn set_permission(&self, id: &str, user_id: &str, kind: u8) -> Result<(), DevServerError> {
        let mut data = self.state.data();
        let r = data
            .resources
            .get_mut(id)
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        let p = r
            .permissions
            .iter_mut()
            .find(|p| p.aro == Aro::User(user_id.to_string()))
            .ok_or_else(|| DevServerError::NoAccount(user_id.to_string()))?;
        p.kind = kind;
        Ok(())
    }

    /// Marks a resource's password expired (or not), as a client would.
    pub fn set_expired(&self, id: &str, expired: Option<&str>) {
        if let Some(r) = self.state.data().resources.get_mut(id) {
            r.expired = expired.map(str::to_string);
        }
    }

    pub fn expired(&self, id: &str) -> Option<String> {
        self.state
            .data()
            .resources
            .get(id)
            .and_then(|r| r.expired.clone())
    }

    /// `user_id`'s copy of a resource's secret, armored, as stored.
    pub fn stored_secret(&self, id: &str, user_id: &str) -> Option<String> {
        self.state
            .data()
            .resources
            .get(id)
            .and_then(|r| r.secrets.get(user_id))
            .map(|s| s.data.clone())
    }

    /// A resource's type slug and v5 metadata (armored, key id, key type).
    pub fn stored_type_and_metadata(&self, id: &str) -> Option<(String, Option<StoredMetadata>)> {
        self.state.data().resources.get(id).map(|r| {
            (
                r.seed.slug.clone(),
                r.metadata
                    .as_ref()
                    .map(|m| (m.armored.clone(), m.key_id.clone(), m.key_type.to_string())),
            )
        })
    }

    /// Ids of the resources named `name`, in listing order.
    pub fn resource_ids_named(&self, name: &str) -> Vec<String> {
        self.state
            .data()
            .resources
            .values()
            .filter(|r| r.seed.name == name)
            .map(|r| r.seed.id.clone())
            .collect()
    }

    /// The body of `/password-policies/settings.json`; `None` answers 404,
    /// as a server without the PasswordPolicies plugin.
    pub fn set_password_policy(&self, policy: Option<serde_json::Value>) {
        self.state.data().password_policy = policy;
    }

    /// The body of `/metadata/types/settings.json`.
    pub fn set_metadata_types_settings(&self, settings: serde_json::Value) {
        self.state.data().metadata_types_settings = settings;
    }

    /// The body of `/secret-revisions/settings.json`, as an administrator
    /// sets it: `max_revisions` (the active revision included) decides how
    /// many past revisions keep their secrets from the next update on.
    pub fn set_secret_revisions_settings(&self, settings: serde_json::Value) {
        self.state.data().secret_revisions_settings = settings;
    }

    /// The body of `/password-expiry/settings.json`; `automatic_expiry:
    /// true` marks a resource expired when a reader who had read its
    /// secret loses access.
    pub fn set_password_expiry_settings(&self, settings: serde_json::Value) {
        self.state.data().password_expiry_settings = settings;
    }

    /// A resource's `modified`, as listings show it.
    pub fn modified(&self, id: &str) -> Option<String> {
        self.state
            .data()
            .resources
            .get(id)
            .map(|r| r.modified.clone())
    }

    pub fn resources(&self) -> Vec<SeedResource> {
        self.state
            .data()
            .resources
            .values()
            .map(|r| r.seed.clone())
            .collect()
    }

    /// Rotates the shared metadata key as an admin would: a new key shared
    /// with every account (but those `unshare_metadata_key` left out), the
    /// old one marked expired and still listed, and the metadata of every
    /// v5 `shared_key` resource and folder re-encrypted with the new key.
    /// The v5.12 server sets `modified` to now on each item it rotates
    /// (`MetadataRotateKeyResourcesUpdateService`); `bump_modified: false`
    /// keeps the stamps, for clients that must not rely on it. Returns the
    /// new key's id.
    pub fn rotate_metadata_key(&self, bump_modified: bool) -> Result<String, DevServerError> {
        self.state.rotate_metadata_key(bump_modified)
    }

    /// Takes every metadata key away from `user_id` until
    /// `share_metadata_key`: `metadata_private_keys` is then empty for them,
    /// as for an account of a zero-knowledge server no admin has shared the
    /// key with yet.
    pub fn unshare_metadata_key(&self, user_id: &str) {
        self.state.unshare_metadata_key(user_id)
    }

    /// The fingerprints of the metadata keys, oldest first.
    pub fn metadata_key_fingerprints(&self) -> Vec<String> {
        self.state
            .data()
            .metadata_keys
            .iter()
            .map(|k| k.public.fingerprint())
            .collect()
    }

    /// Shares every metadata key with `user_id` that they lack.
    pub fn share_metadata_key(&self, user_id: &str) -> Result<(), DevServerError> {
        self.state.share_metadata_key(user_id)
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
    // Curve25519 keeps start-up fast; the client code path is the same.
    // Dated a month back: the server signs by its clock, which tests move
    // back by hours, and a signature older than its key does not verify.
    let created = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    let (server_key, _) = pgp::generate_key_created(
        "Passbolt dev server <server@passbolt.invalid>",
        pgp::CipherSuite::Cv25519,
        None,
        Some(created),
    )
    .map_err(DevServerError::crypto)?;
    let (other_key, _) = pgp::generate_key(
        "Impostor <impostor@passbolt.invalid>",
        pgp::CipherSuite::Cv25519,
        None,
    )
    .map_err(DevServerError::crypto)?;
    let jwt = jwt::JwtKey::generate().map_err(|e| DevServerError::Crypto(e.to_string()))?;
    let clock = clock::Clock::default();
    let now = clock.stamp();
    let mut metadata_key = MetadataKey::generate(&now)?;
    let domain = format!("{base_url}/");
    for account in &accounts {
        let envelope = metadata_key.envelope(&other_key, account, &domain)?;
        metadata_key.give(&account.id, envelope, &now);
    }
    Ok(State {
        base_url,
        server_key,
        other_key,
        jwt,
        opts,
        clock,
        full_base_url: Mutex::new(None),
        data: Mutex::new(Data {
            accounts,
            resources: IndexMap::new(),
            folders: IndexMap::new(),
            groups: IndexMap::new(),
            password_policy: Some(handlers::default_password_policy()),
            metadata_types_settings: handlers::default_metadata_types_settings(),
            metadata_keys_settings: serde_json::json!({
                "allow_usage_of_personal_keys": true,
                "zero_knowledge_key_share": false,
            }),
            secret_revisions_settings: revisions::default_settings(),
            password_expiry_settings: expiry::default_settings(),
            metadata_keys: vec![metadata_key],
            metadata_withheld: HashSet::new(),
            verify_tokens: HashSet::new(),
            refresh_tokens: HashMap::new(),
            totp_seeds: HashMap::new(),
            mfa_tokens: HashMap::new(),
            mfa_failures: HashMap::new(),
            issued: Vec::new(),
            events: Vec::new(),
            faults: Faults::default(),
        }),
    })
}
