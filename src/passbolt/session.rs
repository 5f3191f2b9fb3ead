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

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use zeroize::Zeroizing;

use super::ClientError;
use super::mfa::{self, TotpSeed};
use super::model::{
    AccessTokenBody, ChallengeBody, ChallengeRequest, ChallengeResponse, Claims, Envelope,
    HeaderOnly, VerifyBody,
};
use crate::pgp::{PrivateKey, PublicKey};

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
    key: Arc<PrivateKey>,
    server_key: StdMutex<Option<PublicKey>>,
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
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("passbolt-sync/", env!("CARGO_PKG_VERSION")))
            // A 302 means "MFA required" in passbolt; following it would hide that.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10).min(opts.timeout))
            .timeout(opts.timeout);
        let roots = super::tls::trusted(&opts.base_url, opts.ca_pem.as_deref(), true)
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
            key,
            server_key: StdMutex::new(None),
            tokens: Mutex::new(Tokens::default()),
            gate: RwLock::new(()),
            generation: AtomicU64::new(0),
            totp: None,
            mfa_cookie: StdMutex::new(None),
            mfa_verifications: AtomicU64::new(0),
            skew: AtomicI64::new(0),
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

    pub fn user_key(&self) -> &Arc<PrivateKey> {
        &self.key
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

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.opts.base_url, path)
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Reply, ClientError> {
        let url = self.url(path);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(cookie) = self.mfa_cookie.lock().expect("not poisoned").as_ref() {
            let pair = Zeroizing::new(format!("{}={}", mfa::COOKIE, cookie.as_str()));
            if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&pair) {
                value.set_sensitive(true);
                req = req.header(reqwest::header::COOKIE, value);
            }
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut resp = req.send().await.map_err(|e| unreachable(&self.opts, &e))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let set_cookies = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let limit = self.opts.max_response_bytes;
        let too_large = || ClientError::ResponseTooLarge {
            path: path.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| unreachable(&self.opts, &e))?
        {
            self.response_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        tracing::trace!(%path, status = status.as_u16(), bytes = body.len(), "response");
        Ok(Reply {
            status,
            location,
            retry_after,
            set_cookies,
            body,
        })
    }

    /// Decodes a success envelope, or turns the reply into the error its
    /// status means.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        path: &str,
        reply: &Reply,
    ) -> Result<T, ClientError> {
        self.decode_timed(path, reply).map(|(body, _)| body)
    }

    /// Like `decode`, with the answer's `header.servertime`.
    pub(crate) fn decode_timed<T: DeserializeOwned>(
        &self,
        path: &str,
        reply: &Reply,
    ) -> Result<(T, Option<i64>), ClientError> {
        if mfa::is_redirect(reply.status, reply.location.as_deref()) {
            return Err(ClientError::MfaRequired {
                providers: Vec::new(),
            });
        }
        // The header first, skipping the body: a listing parsed into a
        // generic tree before its typed form would hold both in memory.
        let header = serde_json::from_slice::<HeaderOnly>(&reply.body).map(|h| h.header);
        let servertime = header.as_ref().ok().and_then(|h| h.servertime);
        if let Some(t) = servertime {
            self.skew.store(t - now(), Ordering::Relaxed);
        }
        if !reply.status.is_success() {
            let message = header.map(|h| h.message).unwrap_or_default();
            return Err(status_error(path, reply, message));
        }
        let header = header.map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            detail: format!("not a passbolt JSON envelope: {e}"),
        })?;
        if header.status != "success" {
            return Err(ClientError::Malformed {
                path: path.to_string(),
                detail: format!(
                    "header.status is {:?} with HTTP {}",
                    header.status, reply.status
                ),
            });
        }
        let envelope: Envelope<T> =
            serde_json::from_slice(&reply.body).map_err(|e| ClientError::Malformed {
                path: path.to_string(),
                detail: e.to_string(),
            })?;
        Ok((envelope.body, servertime))
    }

    /// `GET /auth/verify.json`: the server's key, checked against the pin,
    /// against its own announced fingerprint, and against the key this
    /// process saw before.
    pub async fn verify_server(&self) -> Result<PublicKey, ClientError> {
        let path = "/auth/verify.json";
        let reply = self.send(Method::GET, path, None, None::<&()>).await?;
        let body: VerifyBody = self.decode(path, &reply)?;
        let key =
            PublicKey::from_armor(body.keydata.as_bytes()).map_err(|e| ClientError::Malformed {
                path: path.into(),
                detail: format!("keydata: {e}"),
            })?;
        let announced = crate::pgp::normalize_fingerprint(&body.fingerprint);
        if key.fingerprint() != announced {
            return Err(ClientError::ServerKeyInconsistent {
                announced,
                actual: key.fingerprint(),
            });
        }
        if let Some(pin) = &self.opts.fingerprint
            && *pin != key.fingerprint()
        {
            return Err(ClientError::PinMismatch {
                expected: pin.clone(),
                actual: key.fingerprint(),
            });
        }
        let mut known = self.server_key.lock().expect("not poisoned");
        if self.opts.fingerprint.is_none()
            && let Some(previous) = known.as_ref()
            && previous.fingerprint() != key.fingerprint()
        {
            return Err(ClientError::ServerKeyChanged {
                previous: previous.fingerprint(),
                current: key.fingerprint(),
            });
        }
        *known = Some(key.clone());
        Ok(key)
    }

    /// A full login; replaces whatever tokens the session had.
    pub async fn login(&self) -> Result<(), ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        self.login_locked(&mut tokens).await
    }

    /// The token state, with no request in flight until the guards drop.
    async fn exclusive(&self) -> (MutexGuard<'_, Tokens>, RwLockWriteGuard<'_, ()>) {
        let tokens = self.tokens.lock().await;
        let gate = self.gate.write().await;
        self.generation.fetch_add(1, Ordering::Relaxed);
        (tokens, gate)
    }

    async fn login_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        // Forget the old tokens first: whatever happens next, they are not
        // to be used again by this process.
        tokens.access = None;
        tokens.refresh = None;
        let server_key = self.verify_server().await?;
        let verify_token = uuid::Uuid::new_v4().to_string();
        let request = ChallengeRequest {
            version: PROTOCOL_VERSION.into(),
            domain: self.opts.base_url.clone(),
            verify_token: verify_token.clone(),
            verify_token_expiry: (self.server_now() + VERIFY_TOKEN_LIFETIME).into(),
        };
        let plaintext = serde_json::to_vec(&request).expect("serializable");
        let key = self.key.clone();
        let sk = server_key.clone();
        let challenge = tokio::task::spawn_blocking(move || key.encrypt_and_sign(&sk, &plaintext))
            .await
            .expect("encryption task")
            .map_err(|source| ClientError::Crypto {
                what: "the login challenge".into(),
                source,
            })?;
        let path = "/auth/jwt/login.json";
        let body = serde_json::json!({ "user_id": self.opts.user_id, "challenge": challenge });
        let reply = self.send(Method::POST, path, None, Some(&body)).await?;
        let body: ChallengeBody = match self.decode(path, &reply) {
            Ok(b) => b,
            Err(ClientError::Http {
                status: 400,
                message,
                ..
            }) => {
                return Err(ClientError::LoginRefused {
                    user_id: self.opts.user_id.clone(),
                    message,
                });
            }
            Err(ClientError::Http { status: 404, .. }) => {
                return Err(ClientError::UserNotFound {
                    user_id: self.opts.user_id.clone(),
                });
            }
            Err(e) => return Err(e),
        };
        let key = self.key.clone();
        let sk = server_key.clone();
        let plaintext = tokio::task::spawn_blocking(move || {
            key.decrypt_verify(&sk, body.challenge.as_bytes())
        })
        .await
        .expect("decryption task")
        .map_err(|e| {
            ClientError::ServerNotAuthenticated(format!(
                "the login response does not decrypt and verify with the server key {}: {e}",
                server_key.fingerprint()
            ))
        })?;
        let response: ChallengeResponse =
            serde_json::from_slice(&plaintext).map_err(|e| ClientError::Malformed {
                path: path.into(),
                detail: format!("decrypted login response: {e}"),
            })?;
        if response.verify_token != verify_token {
            return Err(ClientError::ServerNotAuthenticated(
                "the login response does not echo our verify_token".into(),
            ));
        }
        if response.version != PROTOCOL_VERSION {
            return Err(ClientError::ServerNotAuthenticated(format!(
                "the login response has protocol version {:?}, expected {PROTOCOL_VERSION:?}",
                response.version
            )));
        }
        if response.domain.trim_end_matches('/') != self.opts.base_url.trim_end_matches('/') {
            return Err(ClientError::ServerNotAuthenticated(format!(
                "the login response is for domain {:?}, not {:?}",
                response.domain, self.opts.base_url
            )));
        }
        tokens.access = Some(AccessToken::parse(
            response.access_token,
            path,
            self.server_now(),
        )?);
        let lifetime = self.refresh_lifetime.load(Ordering::Relaxed);
        tokens.refresh = Some(RefreshToken {
            value: Zeroizing::new(response.refresh_token),
            expires: (lifetime > 0).then(|| self.server_now() + lifetime),
        });
        if let Some(providers) = response.providers.filter(|p| !p.is_empty()) {
            // Whatever cookie went with the login, the server did not take it.
            *self.mfa_cookie.lock().expect("not poisoned") = None;
            if let Err(e) = self.answer_mfa(tokens, &providers).await {
                // Tokens of an unverified login open nothing but the MFA
                // endpoints (and the server would not let them be revoked).
                tokens.access = None;
                tokens.refresh = None;
                return Err(e);
            }
        }
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(user_id = %self.opts.user_id, server = %self.opts.base_url, "logged in");
        Ok(())
    }

    /// Answers the MFA challenge of the login whose tokens `tokens` holds.
    async fn answer_mfa(
        &self,
        tokens: &mut Tokens,
        providers: &[String],
    ) -> Result<(), ClientError> {
        if !providers.iter().any(|p| p == "totp") {
            return Err(ClientError::MfaUnsupported {
                providers: providers.to_vec(),
            });
        }
        if self.totp.is_none() {
            return Err(ClientError::MfaRequired {
                providers: providers.to_vec(),
            });
        }
        tracing::info!(providers = %providers.join(","), "the account requires MFA; answering with TOTP");
        self.verify_totp(tokens).await
    }

    /// `POST /mfa/verify/totp.json` with the code of the current step by
    /// the server's clock, once; the `passbolt_mfa` cookie it sets is kept.
    /// A step a code was already sent for is never used again: this waits
    /// for the next one (at most one period) instead.
    async fn verify_totp(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        let seed = self.totp.as_ref().expect("checked by the caller");
        let bearer = tokens
            .access
            .as_ref()
            .map(|a| a.value.clone())
            .expect("verification follows a login");
        let mut step = seed.step_at(self.server_now());
        if let Some(last) = tokens.last_step.filter(|l| step <= *l) {
            let next = (last + 1) * seed.period();
            let wait = (next as i64 - self.server_now()).max(0) as u64 + 1;
            tracing::info!(
                wait_s = wait,
                "a TOTP code was already sent for this step; waiting for the next step"
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
            step = seed.step_at(self.server_now()).max(last + 1);
        }
        tokens.last_step = Some(step);
        let code = seed.code(step);
        let path = mfa::TOTP_VERIFY_PATH;
        // `remember`: the token is then not bound to one access token, so
        // refreshes keep it, and the next login skips MFA for 30 days.
        let body = serde_json::json!({ "totp": code.as_str(), "remember": true });
        drop(code);
        self.mfa_verifications.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .send(Method::POST, path, Some(&bearer), Some(&body))
            .await?;
        drop(body);
        match self.decode::<serde_json::Value>(path, &reply) {
            Ok(_) => {}
            Err(ClientError::Http {
                status: 400,
                message,
                ..
            }) => {
                if message.contains("not required") {
                    // A cookie we sent was still good after all.
                    return Ok(());
                }
                // One rejected code per login: the server counts them
                // since the last login, so the next attempt logs in anew.
                tokens.access = None;
                tokens.refresh = None;
                if message.contains("too many failed attempts") {
                    return Err(ClientError::MfaLockedOut { message });
                }
                return Err(ClientError::MfaRejected { message });
            }
            Err(e) => return Err(e),
        }
        let cookie = mfa::cookie(&reply.set_cookies).ok_or_else(|| ClientError::Malformed {
            path: path.into(),
            detail: "the TOTP code was accepted but no passbolt_mfa cookie came back".into(),
        })?;
        *self.mfa_cookie.lock().expect("not poisoned") = Some(cookie);
        tokens.mfa_generation = self.generation.load(Ordering::Relaxed);
        tracing::info!("MFA verified (TOTP)");
        Ok(())
    }

    /// After a 302 to `/mfa/verify/error.json` on a request sent at
    /// `generation`: the server dropped the MFA token. Verifies once more,
    /// unless another task did since.
    async fn reverify(&self, path: &str, generation: u64) -> Result<(), ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        if tokens.mfa_generation > generation {
            return Ok(());
        }
        tracing::warn!(%path, "the server dropped the MFA token (302 to {}); verifying once more", mfa::ERROR_PATH);
        *self.mfa_cookie.lock().expect("not poisoned") = None;
        let usable = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.exp - self.server_now() > 5);
        if !usable {
            return self.login_locked(&mut tokens).await;
        }
        self.reverify_locked(&mut tokens).await
    }

    /// Asks the server which providers it wants (and its time), then
    /// verifies with the access token held.
    async fn reverify_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        let bearer = tokens
            .access
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or(ClientError::NoRefreshToken)?;
        let reply = self
            .send(Method::GET, mfa::ERROR_PATH, Some(&bearer), None::<&()>)
            .await?;
        // A 403 whose body names the providers; its header the server time.
        let _ = self.decode::<serde_json::Value>(mfa::ERROR_PATH, &reply);
        let providers: Vec<String> = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| serde_json::from_value(v["body"]["mfa_providers"].clone()).ok())
            .unwrap_or_else(|| vec!["totp".to_string()]);
        self.answer_mfa(tokens, &providers).await
    }

    /// Uses the refresh token, which is gone from the state whatever the
    /// outcome. Returns an error when no new access token came back.
    async fn refresh_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        let Some(RefreshToken {
            value: old,
            expires,
        }) = tokens.refresh.take()
        else {
            return Err(ClientError::NoRefreshToken);
        };
        let lifetime = self.refresh_lifetime.load(Ordering::Relaxed);
        if !refresh_usable(expires, self.server_now(), lifetime) {
            // The host slept or the daemon was paused past the token's
            // lifetime: the server would log presenting it as an attack.
            tracing::info!("the refresh token has expired or is about to; logging in instead");
            return Err(ClientError::NoRefreshToken);
        }
        let path = "/auth/jwt/refresh.json";
        let body =
            serde_json::json!({ "user_id": self.opts.user_id, "refresh_token": old.as_str() });
        let reply = match self.send(Method::POST, path, None, Some(&body)).await {
            // The connection was never made, so the token never left this
            // process: keeping it is not a replay.
            Err(e @ ClientError::Unreachable { connect: true, .. }) => {
                tokens.refresh = Some(RefreshToken {
                    value: old,
                    expires,
                });
                return Err(e);
            }
            other => other?,
        };
        if mfa::is_redirect(reply.status, reply.location.as_deref()) {
            // The MFA check runs before the token is consumed: keeping it
            // is not a replay.
            tokens.refresh = Some(RefreshToken {
                value: old,
                expires,
            });
            return Err(if self.totp.is_some() {
                ClientError::MfaDropped { path: path.into() }
            } else {
                ClientError::MfaRequired {
                    providers: Vec::new(),
                }
            });
        }
        drop(old);
        let decoded: AccessTokenBody = self.decode(path, &reply)?;
        tokens.access = Some(AccessToken::parse(
            decoded.access_token,
            path,
            self.server_now(),
        )?);
        match refresh_cookie(&reply.set_cookies) {
            Some(next) => {
                let max_age = refresh_cookie_max_age(&reply.set_cookies, self.server_now());
                if let Some(age) = max_age {
                    self.refresh_lifetime.store(age, Ordering::Relaxed);
                }
                tokens.refresh = Some(RefreshToken {
                    value: next,
                    expires: max_age.map(|a| self.server_now() + a),
                })
            }
            // The old token is spent; the next renewal will be a login.
            None => tracing::warn!("the refresh response carried no refresh_token cookie"),
        }
        // The server rebinds the MFA token to the new access token and
        // sends its cookie again.
        if let Some(cookie) = mfa::cookie(&reply.set_cookies) {
            *self.mfa_cookie.lock().expect("not poisoned") = Some(cookie);
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("access token refreshed");
        Ok(())
    }

    /// Renews the access token: refresh if we hold a refresh token, login
    /// when that fails or when we hold none.
    async fn renew_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        if tokens.refresh.is_some() {
            match self.refresh_locked(tokens).await {
                Ok(()) => return Ok(()),
                // Expired before it was sent: nothing failed on the server.
                Err(ClientError::NoRefreshToken) => {}
                // The access token still opens the MFA endpoints: verify
                // with it, then the unspent refresh token is good. Past
                // its expiry, the login below verifies instead.
                Err(ClientError::MfaDropped { .. })
                    if tokens
                        .access
                        .as_ref()
                        .is_some_and(|a| a.exp - self.server_now() > 5) =>
                {
                    tracing::warn!(
                        "the server dropped the MFA token (302 on refresh); verifying once more"
                    );
                    *self.mfa_cookie.lock().expect("not poisoned") = None;
                    self.reverify_locked(tokens).await?;
                    return self.refresh_locked(tokens).await;
                }
                Err(e) if e.is_outage() => {
                    // The token may or may not have been spent; it is gone
                    // either way, and a login now would hit the same outage.
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    self.refresh_outages.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) => {
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "token refresh failed; logging in again");
                }
            }
        }
        self.login_locked(tokens).await
    }

    /// A valid access token, renewed first when it is expired or within its
    /// margin (`REFRESH_MARGIN` for the server's 5-minute tokens) of expiry,
    /// by the server's clock.
    pub async fn access_token(&self) -> Result<Zeroizing<String>, ClientError> {
        self.access_token_at().await.map(|(token, _)| token)
    }

    /// `access_token`, with the `generation` it belongs to.
    async fn access_token_at(&self) -> Result<(Zeroizing<String>, u64), ClientError> {
        let mut tokens = self.tokens.lock().await;
        let fresh = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.exp - self.server_now() > a.margin);
        if !fresh {
            let _gate = self.gate.write().await;
            self.generation.fetch_add(1, Ordering::Relaxed);
            self.renew_locked(&mut tokens).await?;
        }
        Ok((current(&tokens), self.generation.load(Ordering::Relaxed)))
    }

    /// Sends an authenticated request, never while the tokens change.
    /// Returns the token it went with and its generation.
    async fn send_authorized(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(Reply, Zeroizing<String>, u64), ClientError> {
        loop {
            let (token, generation) = self.access_token_at().await?;
            let _inflight = self.gate.read().await;
            if self.generation.load(Ordering::Relaxed) != generation {
                // Replaced between reading it and getting here.
                continue;
            }
            let reply = self
                .send(method.clone(), path, Some(&token), None::<&()>)
                .await?;
            return Ok((reply, token, generation));
        }
    }

    /// Renews after the server refused `rejected`, unless another task
    /// already replaced it.
    async fn renew_after_401(&self, rejected: &str) -> Result<Zeroizing<String>, ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        let same = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.value.as_str() == rejected);
        if same || tokens.access.is_none() {
            tokens.access = None;
            self.renew_locked(&mut tokens).await?;
        }
        Ok(current(&tokens))
    }

    /// An authenticated GET. A 401 gets one renewal and one retry.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_timed(path).await.map(|(body, _)| body)
    }

    /// Like `get`, with the answer's `header.servertime`. A 302 to the
    /// MFA error page (the server dropped the MFA token) gets one new
    /// verification and one retry.
    pub async fn get_timed<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, Option<i64>), ClientError> {
        let mut renewals = 0;
        let mut reverified = false;
        loop {
            let (reply, token, generation) = self.send_authorized(Method::GET, path).await?;
            if mfa::is_redirect(reply.status, reply.location.as_deref()) && self.totp.is_some() {
                if reverified {
                    return Err(ClientError::MfaDropped { path: path.into() });
                }
                reverified = true;
                self.reverify(path, generation).await?;
                continue;
            }
            if reply.status != StatusCode::UNAUTHORIZED {
                return self.decode_timed(path, &reply);
            }
            match renewals {
                0 => {
                    tracing::debug!(%path, "401; renewing the access token and retrying once");
                    self.renew_after_401(&token).await?;
                }
                1 => {
                    // A refreshed token refused too: the refresh token may be
                    // bound to something the server no longer accepts. One
                    // full login, one last try; after that the pass fails and
                    // the daemon backs off.
                    tracing::debug!(%path, "401 after a renewal; logging in and retrying once");
                    let (mut tokens, _gate) = self.exclusive().await;
                    self.login_locked(&mut tokens).await?;
                }
                _ => return Err(ClientError::Unauthorized { path: path.into() }),
            }
            renewals += 1;
        }
    }

    /// Revokes this process's refresh token, and only it: an empty body
    /// would log out every session of the account on every machine.
    pub async fn logout(&self) -> Result<(), ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        if tokens.refresh.is_none() {
            return Ok(());
        }
        // Logout needs a valid bearer token. An expired one is renewed with
        // the refresh token (its one use), and the successor is revoked.
        let usable = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.exp - self.server_now() > 2);
        if !usable && let Err(e) = self.refresh_locked(&mut tokens).await {
            // The token was spent on this attempt or was already dead.
            tracing::debug!(error = %e, "no refresh token left to revoke");
            return Ok(());
        }
        let (Some(RefreshToken { value: refresh, .. }), Some(access)) =
            (tokens.refresh.take(), tokens.access.take())
        else {
            return Ok(());
        };
        let path = "/auth/jwt/logout.json";
        let body = serde_json::json!({ "refresh_token": refresh.as_str() });
        let reply = self
            .send(Method::POST, path, Some(&access.value), Some(&body))
            .await?;
        let _: serde_json::Value = self.decode(path, &reply)?;
        tracing::info!("logged out (own refresh token revoked)");
        Ok(())
    }

    /// Whether a refresh token is held (for tests and status).
    pub async fn has_refresh_token(&self) -> bool {
        self.tokens.lock().await.refresh.is_some()
    }
}

/// The access token a successful renewal left in `tokens`.
fn current(tokens: &Tokens) -> Zeroizing<String> {
    tokens
        .access
        .as_ref()
        .map(|a| a.value.clone())
        .expect("renewal sets an access token")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn unreachable(opts: &SessionOptions, e: &reqwest::Error) -> ClientError {
    // reqwest's outer layers say "error sending request for url (...)";
    // the innermost cause says why: refused, DNS, TLS, timeout. For TLS,
    // `tls::explain` says which setting fixes it.
    let mut detail = super::tls::explain(e, opts).unwrap_or_else(|| innermost(e));
    if e.is_timeout() && !detail.contains("timed out") {
        detail = format!("timed out ({detail})");
    }
    ClientError::Unreachable {
        url: opts.base_url.clone(),
        detail,
        connect: e.is_connect(),
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn status_error(path: &str, reply: &Reply, message: String) -> ClientError {
    let path = path.to_string();
    let status = reply.status;
    let code = status.as_u16();
    if status == StatusCode::UNAUTHORIZED {
        ClientError::Unauthorized { path }
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && reply.retry_after.is_some())
    {
        ClientError::Busy {
            path,
            status: code,
            retry_after: reply.retry_after,
        }
    } else if status.is_server_error() {
        ClientError::ServerError {
            path,
            status: code,
            message,
        }
    } else {
        ClientError::Http {
            path,
            status: code,
            message,
        }
    }
}

/// The `exp` claim of a JWT, read without checking the signature: the
/// server checks it; we only need to know when to renew.
pub fn token_exp(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Claims>(&bytes).ok().map(|c| c.exp)
}

/// Whether a refresh token expiring at `expires` may still be presented at
/// `now`: more than a minute left, or a quarter of its lifetime for
/// lifetimes under four minutes.
fn refresh_usable(expires: Option<i64>, now: i64, lifetime: i64) -> bool {
    let margin = REFRESH_MARGIN.min(lifetime / 4).max(0);
    expires.is_none_or(|exp| exp - now > margin)
}

/// `Retry-After` as delta-seconds or an HTTP date, in seconds from now.
fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    )
}

/// Seconds the `refresh_token` cookie lives, from `Max-Age` (which wins,
/// as in RFC 6265) or `expires` read against `server_now`.
pub fn refresh_cookie_max_age(set_cookies: &[String], server_now: i64) -> Option<i64> {
    let cookie = set_cookies.iter().find(|c| {
        c.split(';')
            .next()
            .and_then(|f| f.split_once('='))
            .is_some_and(|(n, _)| n.trim() == "refresh_token")
    })?;
    let attr = |name: &str| {
        cookie.split(';').skip(1).find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if let Some(age) = attr("max-age").and_then(|v| v.parse::<i64>().ok()) {
        return Some(age);
    }
    let expires = httpdate::parse_http_date(&attr("expires")?.replace('-', " ")).ok()?;
    let at = expires.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(at - server_now)
}

/// The value of `refresh_token=` among Set-Cookie headers. Parsed by hand:
/// the server marks it `secure` even over plain HTTP, which a cookie jar
/// would drop, and we must never send it back as a cookie anyway.
pub fn refresh_cookie(set_cookies: &[String]) -> Option<Zeroizing<String>> {
    set_cookies.iter().find_map(|c| {
        let first = c.split(';').next()?.trim();
        let (name, value) = first.split_once('=')?;
        (name.trim() == "refresh_token" && !value.is_empty() && value != "deleted")
            .then(|| Zeroizing::new(value.trim().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_refresh_cookie_from_captured_header() {
        let headers = vec![
            "passbolt_session=abc; path=/; HttpOnly".to_string(),
            "refresh_token=4d7f1f6c-1c0e-4f5e-8c63-2f4a0f1d7b11; expires=Mon, 28-Dec-2026 12:56:49 GMT; Max-Age=2592000; path=/; secure; HttpOnly".to_string(),
        ];
        assert_eq!(
            refresh_cookie(&headers).as_deref().map(String::as_str),
            Some("4d7f1f6c-1c0e-4f5e-8c63-2f4a0f1d7b11")
        );
        assert!(refresh_cookie(&headers[..1]).is_none());
    }

    #[test]
    fn reads_refresh_cookie_lifetime_from_max_age_or_expires() {
        let both = vec!["refresh_token=x; expires=Mon, 28-Dec-2026 12:56:49 GMT; Max-Age=2592000; path=/; secure; HttpOnly".to_string()];
        assert_eq!(refresh_cookie_max_age(&both, 0), Some(2592000));
        let expires =
            vec!["refresh_token=x; expires=Mon, 28-Dec-2026 12:56:49 GMT; path=/".to_string()];
        // 2026-12-28T12:56:49Z is 1798462609.
        assert_eq!(refresh_cookie_max_age(&expires, 1798462600), Some(9));
        assert_eq!(
            refresh_cookie_max_age(&["passbolt_session=a; Max-Age=5".to_string()], 0),
            None
        );
    }

    #[test]
    fn an_expired_or_nearly_expired_refresh_token_is_not_usable() {
        assert!(refresh_usable(None, 100, 0));
        assert!(refresh_usable(Some(1000), 900, 2592000));
        assert!(!refresh_usable(Some(1000), 950, 2592000), "within a minute");
        assert!(
            refresh_usable(Some(1000), 997, 8),
            "a quarter of a short lifetime"
        );
        assert!(!refresh_usable(Some(1000), 999, 8));
    }

    #[test]
    fn reads_retry_after() {
        assert_eq!(parse_retry_after("7"), Some(7));
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:01 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn reads_exp_from_jwt() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"http://x/","sub":"u","exp":1795870902}"#);
        assert_eq!(token_exp(&format!("e30.{claims}.sig")), Some(1795870902));
        assert_eq!(token_exp("garbage"), None);
    }
}
