//! Login, token refresh and logout: the JWT session with one passbolt server.
//!
//! Tokens live only here, in types that never print. A refresh token is
//! taken out of the state before it is sent, so no code path can present it
//! twice, not even after a timeout; any refresh failure falls back to a full
//! login. The token state sits behind an async mutex, which serializes
//! refreshes and logins.
//!
//! An account under an MFA policy answers the TOTP challenge right after
//! login (see `mfa`), and the `passbolt_mfa` cookie then goes with every
//! request. Requests and token changes exclude each other (the `gate`):
//! the server kills an MFA token that comes with an access token it has
//! replaced, so no request may be in flight while a refresh, login or
//! verification runs.

mod login;
pub use login::check_announced;
mod refresh;
mod request;
mod second_factor;

use refresh::current;
pub use refresh::{refresh_cookie, refresh_cookie_max_age, token_exp};
use request::innermost;

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use zeroize::Zeroizing;

use crate::mfa::{self, TotpSeed};
use crate::model::{
    AccessTokenBody, ChallengeBody, ChallengeRequest, ChallengeResponse, Claims, Envelope,
    HeaderOnly, SettingsBody, VerifyBody,
};
use crate::pgp::{PrivateKey, PublicKey};
use crate::{ClientError, KeyIdentity};

pub const PROTOCOL_VERSION: &str = "1.0.0";

/// Refresh when the access token has less than this left.
pub const REFRESH_MARGIN: i64 = 60;

/// How far in the future the challenge's verify token expires. The server
/// accepts up to one hour; two minutes covers a slow round trip.
const VERIFY_TOKEN_LIFETIME: i64 = 120;

#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Base URL without trailing slash.
    pub base_url: String,
    pub user_id: String,
    /// Pinned server key fingerprint, upper-case hex.
    pub fingerprint: Option<String>,
    /// Extra PEM trust roots, added to the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key, for a server behind an mTLS proxy.
    pub client_identity: Option<ClientIdentity>,
    pub timeout: Duration,
    /// Largest response body accepted; a larger one is refused while it
    /// streams in, never buffered whole.
    pub max_response_bytes: u64,
}

/// A client certificate chain and its private key, PEM, concatenated as
/// reqwest reads them. Never printed.
#[derive(Clone)]
pub struct ClientIdentity(Zeroizing<Vec<u8>>);

impl ClientIdentity {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> ClientIdentity {
        let mut pem = Zeroizing::new(Vec::with_capacity(cert_pem.len() + key_pem.len() + 1));
        pem.extend_from_slice(cert_pem);
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(key_pem);
        ClientIdentity(pem)
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity([redacted])")
    }
}

/// The default of `server.max_response_bytes`: a listing of 10,000 v5
/// resources with their secrets is about 30 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

struct AccessToken {
    value: Zeroizing<String>,
    exp: i64,
    /// Seconds before `exp` at which to renew: `REFRESH_MARGIN`, or a
    /// quarter of the lifetime for tokens shorter than four minutes.
    margin: i64,
}

impl AccessToken {
    /// Wraps a token from the answer to `path`, reading its expiry.
    fn parse(value: String, path: &str, now: i64) -> Result<AccessToken, ClientError> {
        let exp = token_exp(&value).ok_or_else(|| ClientError::Malformed {
            path: path.into(),
            detail: "the access token is not a JWT with an exp claim".into(),
        })?;
        Ok(AccessToken {
            value: Zeroizing::new(value),
            exp,
            margin: REFRESH_MARGIN.min((exp - now) / 4).max(0),
        })
    }
}

/// A refresh token and when the server will call it expired (server
/// clock), when known. Presenting an expired token is logged by the server
/// as an attack, so one this close to its expiry is never sent.
struct RefreshToken {
    value: Zeroizing<String>,
    expires: Option<i64>,
}

#[derive(Default)]
struct Tokens {
    access: Option<AccessToken>,
    refresh: Option<RefreshToken>,
    /// The last TOTP step a code was sent for: a code is sent once
    /// (RFC 6238 §5.2), and a second one waits for the next step.
    last_step: Option<u64>,
    /// The `generation` at which the MFA cookie was last obtained.
    mfa_generation: u64,
}

/// Counters for logs, STATUS and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    pub logins: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
    /// Of `refresh_failures`, those where the server could not be reached
    /// or failed (the others it refused; a login followed).
    pub refresh_outages: u64,
    /// TOTP codes sent (accepted or not).
    pub mfa_verifications: u64,
    /// HTTP requests sent, logins and refreshes included.
    pub requests: u64,
    /// Response body bytes read.
    pub response_bytes: u64,
}

pub struct Session {
    http: reqwest::Client,
    opts: SessionOptions,
    /// Set at construction, or once the key is unlocked when the session
    /// was made without it (see [`Session::without_key`]).
    key: OnceLock<Arc<PrivateKey>>,
    server_key: StdMutex<Option<PublicKey>>,
    /// The server key `prepare_login` fetched, for the next login to use
    /// instead of asking again.
    prepared_server_key: StdMutex<Option<PublicKey>>,
    tokens: Mutex<Tokens>,
    /// Held shared by each authenticated request while it is in flight,
    /// exclusively (with `tokens`) by whatever changes the tokens or the
    /// MFA cookie.
    gate: RwLock<()>,
    /// Bumped by every exclusive section: a request whose token was read
    /// before one reads it again.
    generation: AtomicU64,
    totp: Option<TotpSeed>,
    /// The `passbolt_mfa` cookie, in memory only; sent with every request.
    mfa_cookie: StdMutex<Option<Zeroizing<String>>>,
    mfa_verifications: AtomicU64,
    /// Server clock minus local clock, in seconds, from `header.servertime`.
    skew: AtomicI64,
    /// What the check before the first login compared, once it passed.
    prechecked: StdMutex<Option<Prechecked>>,
    /// Refresh token lifetime in seconds as the last refresh cookie gave it
    /// (0 until one did): the login payload carries no expiry, so a token
    /// from a login is given the lifetime the server last announced.
    refresh_lifetime: AtomicI64,
    logins: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    refresh_outages: AtomicU64,
    requests: AtomicU64,
    response_bytes: AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("base_url", &self.opts.base_url)
            .field("user_id", &self.opts.user_id)
            .finish_non_exhaustive()
    }
}

/// What the check before the first login could compare: a server that
/// does not announce its base URL (or its time) leaves that cause open.
#[derive(Debug, Clone, Copy)]
struct Prechecked {
    base_url: bool,
    clock: bool,
}

/// A response read whole, before its status is interpreted.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    pub set_cookies: Vec<String>,
    pub body: Vec<u8>,
}

impl Session {
    pub fn new(opts: SessionOptions, key: Arc<PrivateKey>) -> Result<Session, ClientError> {
        let session = Session::without_key(opts)?;
        session.set_key(key);
        Ok(session)
    }

    /// A session whose key is still being unlocked: it can make the
    /// requests that need no key (`prepare_login`); [`Session::set_key`]
    /// must come before anything else.
    pub fn without_key(opts: SessionOptions) -> Result<Session, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("passbolt-sync/", env!("CARGO_PKG_VERSION")))
            // A 302 means "MFA required" in passbolt; following it would hide that.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10).min(opts.timeout))
            .timeout(opts.timeout);
        let roots = crate::tls::trusted(&opts.base_url, opts.ca_pem.as_deref(), true)
            .map_err(ClientError::Tls)?;
        builder = builder.tls_certs_only(roots);
        if let Some(ClientIdentity(pem)) = &opts.client_identity {
            // reqwest's message names no key material, only what is wrong.
            let identity = reqwest::Identity::from_pem(pem).map_err(|e| {
                ClientError::Tls(format!(
                    "server.client_cert_file / server.client_key_file: {}",
                    innermost(&e)
                ))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Tls(format!("cannot set up HTTPS: {e}")))?;
        Ok(Session {
            http,
            opts,
            key: OnceLock::new(),
            server_key: StdMutex::new(None),
            prepared_server_key: StdMutex::new(None),
            tokens: Mutex::new(Tokens::default()),
            gate: RwLock::new(()),
            generation: AtomicU64::new(0),
            totp: None,
            mfa_cookie: StdMutex::new(None),
            mfa_verifications: AtomicU64::new(0),
            skew: AtomicI64::new(0),
            prechecked: StdMutex::new(None),
            refresh_lifetime: AtomicI64::new(0),
            logins: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            refresh_failures: AtomicU64::new(0),
            refresh_outages: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
        })
    }

    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// The seed that answers the account's TOTP challenge; without one, an
    /// account under an MFA policy cannot log in (`MfaRequired`).
    pub fn set_totp(&mut self, seed: Option<TotpSeed>) {
        self.totp = seed;
    }

    /// Whether a `passbolt_mfa` cookie is held (for tests and status).
    pub fn has_mfa_cookie(&self) -> bool {
        self.mfa_cookie.lock().expect("not poisoned").is_some()
    }

    /// The account's key, once it is set: a session made without it
    /// panics here, which is a bug of its caller.
    pub fn user_key(&self) -> &Arc<PrivateKey> {
        self.key
            .get()
            .expect("the account key is set before any request that needs it")
    }

    /// Gives a session made [`Session::without_key`] its key; a second
    /// key is ignored.
    pub fn set_key(&self, key: Arc<PrivateKey>) {
        let _ = self.key.set(key);
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            logins: self.logins.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            refresh_outages: self.refresh_outages.load(Ordering::Relaxed),
            mfa_verifications: self.mfa_verifications.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            response_bytes: self.response_bytes.load(Ordering::Relaxed),
        }
    }

    /// Current time by the server's clock, as far as we know it.
    pub fn server_now(&self) -> i64 {
        now() + self.skew.load(Ordering::Relaxed)
    }

    /// The server's OpenPGP key, once `verify_server` has run.
    pub fn server_key(&self) -> Option<PublicKey> {
        self.server_key.lock().expect("not poisoned").clone()
    }
}

/// This host's clock, unix seconds.
pub fn unix_now() -> i64 {
    now()
}

pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
