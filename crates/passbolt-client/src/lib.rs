//! The passbolt API client: a JWT session, the read endpoints, and the
//! decoding of resources, folders and v5 metadata.
//!
//! Nothing here knows about targets or schedules.

pub mod account_kit;
pub mod api;
pub mod decode;
pub mod generate;
pub mod metadata;
pub mod mfa;
pub mod model;
pub mod pgp;
pub mod revisions;
pub mod secret;
pub mod session;
mod tls;
pub mod write;

pub use tls::trusted;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::Mutex;

pub use decode::DecodeError;
pub use metadata::{Keyring, MetadataKeyError};
pub use mfa::TotpSeed;
pub use session::{ClientIdentity, Session, SessionOptions, SessionStats};

use crate::pgp::{PgpError, PrivateKey};
use crate::secret::{Resource, SecretFields};
use model::CustomFieldEntry;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the passbolt server at {url}: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        /// The connection was never established.
        connect: bool,
    },
    #[error("the passbolt server failed on {path}: HTTP {status} {message:?}")]
    ServerError {
        path: String,
        status: u16,
        message: String,
    },
    #[error("the passbolt server is busy on {path}: HTTP {status}{}", retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    Busy {
        path: String,
        status: u16,
        /// The server's `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    #[error("{path}: HTTP {status} {message:?}")]
    Http {
        path: String,
        status: u16,
        message: String,
    },
    #[error("{path}: the server refused the access token (HTTP 401) after a renewal")]
    Unauthorized { path: String },
    #[error(
        "the server's OpenPGP key is {actual}, not the pinned {expected} (server.fingerprint); refusing to log in"
    )]
    PinMismatch { expected: String, actual: String },
    #[error(
        "/auth/verify.json announces fingerprint {announced}, but the key it serves is {actual}"
    )]
    ServerKeyInconsistent { announced: String, actual: String },
    #[error(
        "the server's OpenPGP key changed from {previous} to {current} while running; pin server.fingerprint to accept a new key"
    )]
    ServerKeyChanged { previous: String, current: String },
    #[error("{}", refused(user_id, message, key.as_ref()))]
    LoginRefused {
        user_id: String,
        message: String,
        /// The configured key, when the base URL and the clock were both
        /// checked before the challenge: only the user id and the key
        /// remain as causes, and the key is named so the operator can
        /// compare it with the server's.
        key: Option<KeyIdentity>,
    },
    #[error(
        "server.url must be {announced}, the base URL this server announces (app.url at /settings.json), not {configured}: the server refuses a login challenge for any other spelling of its address"
    )]
    BaseUrlMismatch {
        configured: String,
        /// `app.url` without its trailing slash.
        announced: String,
    },
    #[error(
        "this host's clock is {} the server's: the server's signed login answer would be dated more than {} min in the future and refused; set this host's clock (NTP)",
        clock_offset(*offset_secs),
        pgp::CLOCK_SKEW_TOLERANCE.as_secs() / 60
    )]
    ClockSkew {
        /// Server clock minus this host's, in seconds.
        offset_secs: i64,
    },
    #[error("user {user_id} does not exist, is not active or has been deleted (HTTP 404 at login)")]
    UserNotFound { user_id: String },
    #[error("server authentication failed: {0}")]
    ServerNotAuthenticated(String),
    #[error(
        "the account requires multi-factor authentication{}: set auth.totp_secret_file (or auth.totp_secret_env) to the account's TOTP seed, or give passbolt-sync an account without MFA",
        if providers.is_empty() { String::new() } else { format!(" ({})", providers.join(", ")) }
    )]
    MfaRequired { providers: Vec<String> },
    #[error(
        "the account's multi-factor authentication is {} only, which passbolt-sync cannot answer (Duo is a browser flow; a Yubikey needs a touch): give the account TOTP, or give passbolt-sync an account without MFA",
        providers.join(" and ")
    )]
    MfaUnsupported { providers: Vec<String> },
    #[error(
        "the server rejected the TOTP code ({message:?}): auth.totp_secret_file / auth.totp_secret_env does not hold this account's current seed. Not retrying soon: the server logs the account out after repeated failures"
    )]
    MfaRejected { message: String },
    #[error(
        "the server logged the account out of every session after too many failed TOTP codes ({message:?}); fix the seed in auth.totp_secret_file / auth.totp_secret_env"
    )]
    MfaLockedOut { message: String },
    #[error(
        "{path}: the server asked for MFA again right after the TOTP code was accepted (the passbolt_mfa cookie was dropped twice in a row)"
    )]
    MfaDropped { path: String },
    #[error("malformed response from {path}: {detail}")]
    Malformed { path: String, detail: String },
    #[error("cannot process {what}: {source}")]
    Crypto { what: String, source: PgpError },
    #[error(
        "the answer to {path} is larger than {limit} bytes (server.max_response_bytes); refusing to read it"
    )]
    ResponseTooLarge { path: String, limit: u64 },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("no refresh token held")]
    NoRefreshToken,
}

/// The user's key as the server's Profile > Keys page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub fingerprint: String,
    pub user_ids: Vec<String>,
}

fn refused(user_id: &str, message: &str, key: Option<&KeyIdentity>) -> String {
    let head = format!("login refused for user {user_id}: {message:?} (HTTP 400).");
    match key {
        None => format!(
            "{head} Check auth.user_id, that the key is this user's, that server.url is exactly the server's base URL, and the clock"
        ),
        Some(key) => format!(
            "{head} server.url is the base URL the server announces and the clock agrees with the server's, so either auth.user_id is not this key's account or the key is another user's: the key is {}{}; compare it with Profile > Keys of the user auth.user_id names",
            key.fingerprint,
            if key.user_ids.is_empty() {
                String::new()
            } else {
                format!(" ({})", key.user_ids.join(", "))
            }
        ),
    }
}

/// `7 min 12 s behind` / `2 h 0 min 5 s ahead of`: how this host's clock
/// stands against the server's, `offset` being server minus host.
fn clock_offset(offset: i64) -> String {
    let n = offset.unsigned_abs();
    let (h, m, s) = (n / 3600, n / 60 % 60, n % 60);
    let amount = if h > 0 {
        format!("{h} h {m} min {s} s")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    };
    let side = if offset >= 0 { "behind" } else { "ahead of" };
    format!("{amount} {side}")
}

impl ClientError {
    /// The server is down or failing: keep every file and retry later.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::ServerError { .. }
                | ClientError::Busy { .. }
        )
    }

    /// Retrying soon cannot help and may harm: the TOTP seed is wrong (the
    /// server logs the account out after a few rejected codes) or the
    /// account's MFA cannot be answered, or server.url is not the server's
    /// base URL. The operator must fix the config.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            ClientError::BaseUrlMismatch { .. }
                | ClientError::MfaRequired { .. }
                | ClientError::MfaUnsupported { .. }
                | ClientError::MfaRejected { .. }
                | ClientError::MfaLockedOut { .. }
        )
    }

    /// How long the server asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Busy {
                retry_after: Some(s),
                ..
            } => Some(std::time::Duration::from_secs(*s)),
            _ => None,
        }
    }
}

/// One listing: every readable resource with its metadata decoded. It
/// carries no secret; `Client::fetch_secrets` downloads those.
#[derive(Debug, Default)]
pub struct Listing {
    pub resources: Vec<Resource>,
    /// Resources that could not be decoded, with why.
    pub failures: Vec<DecodeError>,
    /// The answer's `header.servertime`.
    pub servertime: Option<i64>,
    index: HashMap<String, usize>,
}

impl Listing {
    /// A listing of resources already decoded, e.g. kept from earlier
    /// listings to render from while the server cannot be reached.
    pub fn from_resources(resources: Vec<Resource>, servertime: Option<i64>) -> Listing {
        Listing::new(resources, Vec::new(), servertime)
    }

    fn new(
        resources: Vec<Resource>,
        failures: Vec<DecodeError>,
        servertime: Option<i64>,
    ) -> Listing {
        let mut index = HashMap::with_capacity(resources.len());
        let mut kept: Vec<Resource> = Vec::with_capacity(resources.len());
        for r in resources {
            // A listing that names one id twice is the server's mistake;
            // the first row wins, deterministically.
            if index.contains_key(&r.id) {
                tracing::warn!(resource_id = %r.id, "the listing names this resource twice; using the first row");
                continue;
            }
            index.insert(r.id.clone(), kept.len());
            kept.push(r);
        }
        Listing {
            resources: kept,
            failures,
            servertime,
            index,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.index.get(id).map(|&i| &self.resources[i])
    }

    /// Why a resource is absent, when it is listed but failed to decode.
    pub fn failure(&self, id: &str) -> Option<&DecodeError> {
        self.failures.iter().find(|e| e.resource_id() == id)
    }
}

/// One downloaded secret, decrypted (or why not), with what is needed to
/// know later whether it is still current.
#[derive(Debug)]
pub struct FetchedSecret {
    /// The resource's `modified` in the answer that carried the secret.
    pub modified: Option<String>,
    /// That answer's `header.servertime`.
    pub servertime: Option<i64>,
    pub fields: Result<SecretFields, DecodeError>,
}

/// What the client has cost so far: requests, bytes, downloads and
/// private-key operations. Callers take differences around a pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub response_bytes: u64,
    pub secrets_downloaded: u64,
    pub private_key_operations: u64,
    pub logins: u64,
    pub refreshes: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, before: Counters) -> Counters {
        Counters {
            requests: self.requests - before.requests,
            response_bytes: self.response_bytes - before.response_bytes,
            secrets_downloaded: self.secrets_downloaded - before.secrets_downloaded,
            private_key_operations: self.private_key_operations - before.private_key_operations,
            logins: self.logins - before.logins,
            refreshes: self.refreshes - before.refreshes,
        }
    }
}

/// Longest request URL sent: 8 KiB is the default limit of common reverse
/// proxies (nginx's large_client_header_buffers, Apache's LimitRequestLine).
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// One downloaded secret row with the resource decoded from it.
struct SecretWork {
    resource: Resource,
    custom: Vec<CustomFieldEntry>,
    armored: Option<String>,
}

/// Decoded v5 metadata, kept while its row is unchanged: decrypting it
/// again costs a private-key operation per resource and listing.
struct DecodedMetadata {
    digest: u64,
    resource: Resource,
    custom: Vec<CustomFieldEntry>,
}

/// The client of one server for one account.
pub struct Client {
    session: Session,
    types: Mutex<HashMap<String, String>>,
    keyring: Mutex<Keyring>,
    /// v5 resource metadata by resource id, and v5 folder names by folder
    /// id, each with the digest of the row it was decoded from.
    metadata: StdMutex<HashMap<String, DecodedMetadata>>,
    folder_names: StdMutex<HashMap<String, (u64, String)>>,
    /// Folder paths by folder id as of the last listing that asked for
    /// them: a scoped listing names folders from here without a request.
    known_paths: StdMutex<HashMap<String, String>>,
    digests: RandomState,
    secrets_downloaded: AtomicU64,
    /// The server answered 404 for the metadata keys: it predates v5.
    pre_v5: AtomicBool,
}

impl Client {
    pub fn new(opts: SessionOptions, key: Arc<PrivateKey>) -> Result<Client, ClientError> {
        let client = Client::without_key(opts)?;
        client.set_key(key);
        Ok(client)
    }

    /// A client whose key is still being unlocked: only
    /// `session().prepare_login()` may run before [`Client::set_key`].
    pub fn without_key(opts: SessionOptions) -> Result<Client, ClientError> {
        Ok(Client {
            session: Session::without_key(opts)?,
            types: Mutex::new(HashMap::new()),
            keyring: Mutex::new(Keyring::default()),
            metadata: StdMutex::new(HashMap::new()),
            folder_names: StdMutex::new(HashMap::new()),
            known_paths: StdMutex::new(HashMap::new()),
            digests: RandomState::new(),
            secrets_downloaded: AtomicU64::new(0),
            pre_v5: AtomicBool::new(false),
        })
    }

    pub fn set_key(&self, key: Arc<PrivateKey>) {
        self.session.set_key(key);
    }

    /// Answers the account's TOTP second factor with `seed` (see
    /// `Session::set_totp`).
    pub fn with_totp(mut self, seed: Option<TotpSeed>) -> Client {
        self.session.set_totp(seed);
        self
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn stats(&self) -> SessionStats {
        self.session.stats()
    }

    pub fn counters(&self) -> Counters {
        let s = self.session.stats();
        Counters {
            requests: s.requests,
            response_bytes: s.response_bytes,
            secrets_downloaded: self.secrets_downloaded.load(Ordering::Relaxed),
            private_key_operations: self.session.user_key().operations(),
            logins: s.logins,
            refreshes: s.refreshes,
        }
    }

    /// What the held state of a caller depends on besides each resource:
    /// the account's key and the metadata keys known so far. When it
    /// changes, whatever was derived from the old keys must be dropped.
    pub async fn key_identity(&self) -> String {
        let ring = self.keyring.lock().await;
        let mut fps: Vec<&String> = ring.fingerprints().values().collect();
        fps.sort();
        let mut id = self.session.user_key().fingerprint();
        for f in fps {
            id.push(' ');
            id.push_str(f);
        }
        id
    }

    /// Whether the server turned out to predate v5 metadata (known once
    /// the metadata keys were asked for).
    pub fn pre_v5(&self) -> bool {
        self.pre_v5.load(Ordering::Relaxed)
    }

    /// Logs in now (otherwise the first request does).
    pub async fn login(&self) -> Result<(), ClientError> {
        self.session.login().await
    }

    pub async fn logout(&self) -> Result<(), ClientError> {
        self.session.logout().await
    }

    /// Resource type slugs by id, fetched once and again when an unknown id
    /// shows up.
    async fn slugs(&self, needed: &[&str]) -> Result<HashMap<String, String>, ClientError> {
        let mut types = self.types.lock().await;
        if types.is_empty() || needed.iter().any(|id| !types.contains_key(*id)) {
            *types = api::resource_types(&self.session)
                .await?
                .into_iter()
                .map(|t| (t.id, t.slug))
                .collect();
        }
        Ok(types.clone())
    }

    /// Fetches and opens every metadata key shared with this account.
    pub async fn load_metadata_keys(&self) -> Result<Keyring, ClientError> {
        let mut ring = self.keyring.lock().await;
        self.fetch_keyring(&mut ring).await?;
        Ok(ring.clone())
    }

    /// The metadata keys needed to read `key_ids`, fetched when one is new.
    pub async fn keyring(&self, key_ids: &[&str]) -> Result<Keyring, ClientError> {
        let mut ring = self.keyring.lock().await;
        if key_ids.iter().any(|id| !ring.contains(id)) {
            self.fetch_keyring(&mut ring).await?;
        }
        Ok(ring.clone())
    }

    async fn fetch_keyring(&self, ring: &mut Keyring) -> Result<(), ClientError> {
        let listed = match api::metadata_keys(&self.session).await {
            Ok(listed) => listed,
            // A server before v5 has no metadata endpoints, and so no
            // item a metadata key would open.
            Err(ClientError::Http { status: 404, .. }) => {
                if !self.pre_v5.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "the server has no /metadata endpoints (passbolt before v5): v4 resources only"
                    );
                }
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let user_key = self.session.user_key().clone();
        let (fresh, errors) =
            tokio::task::spawn_blocking(move || Keyring::load(&listed, &user_key))
                .await
                .expect("key loading task");
        for e in &errors {
            tracing::error!(error = %e, "metadata key unusable");
        }
        if fresh.fingerprints() != ring.fingerprints() {
            if !ring.is_empty() {
                tracing::warn!(
                    before = ?ring.fingerprints(),
                    after = ?fresh.fingerprints(),
                    "the set of metadata keys changed"
                );
            }
            // Metadata decoded with the old set is not evidence of what
            // the new set would decode.
            self.metadata.lock().expect("not poisoned").clear();
            self.folder_names.lock().expect("not poisoned").clear();
        }
        *ring = fresh;
        Ok(())
    }

    /// Lists every resource the account can read, with metadata decoded
    /// (v5 metadata only when its row changed since the last listing).
    /// `folder_paths` also lists the folders to name each resource's.
    pub async fn list(&self, folder_paths: bool) -> Result<Listing, ClientError> {
        let (rows, servertime) = api::resources(&self.session, false, None).await?;
        let listing = self.decode(rows, servertime, folder_paths).await?;
        // Forget what the server no longer lists, so the cache never
        // outgrows the account.
        self.metadata
            .lock()
            .expect("not poisoned")
            .retain(|id, _| listing.index.contains_key(id) || listing.failure(id).is_some());
        Ok(listing)
    }

    /// Lists only the resources `ids` and those directly inside the
    /// folders `parents` (`filter[has-id][]` and `filter[has-parent][]`,
    /// which the server ANDs, so in separate requests), each kind in as
    /// many requests as keep each URL under `MAX_URL_BYTES`; none when
    /// both are empty. Folder paths come from the last full listing that
    /// named them (a folder unknown then has none): a scoped listing costs
    /// no `/folders.json`. The metadata cache keeps what is not listed,
    /// for the next full listing.
    pub async fn list_scoped(
        &self,
        ids: &[String],
        parents: &[String],
    ) -> Result<Listing, ClientError> {
        let mut rows = Vec::new();
        let mut servertime: Option<i64> = None;
        let mut keep = |(more, time): (Vec<model::Resource>, Option<i64>)| {
            rows.extend(more);
            // The oldest clock of the answers: nothing here is newer.
            servertime = match (servertime, time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        for batch in self.batches(ids) {
            keep(api::resources(&self.session, false, Some(batch)).await?);
        }
        for batch in self.batches_of(parents, api::HAS_PARENT_PARAM) {
            keep(api::resources_in(&self.session, batch).await?);
        }
        let paths = self.known_paths.lock().expect("not poisoned").clone();
        self.listing(rows, servertime, &paths).await
    }

    /// The ids of the folders whose path is `path`, as of the last listing
    /// with folder paths (several folders may share a path).
    pub fn folder_ids(&self, path: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .known_paths
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, p)| p.as_str() == path)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Downloads and decrypts the secrets of `ids` (`contain[secret]`
    /// restricted by `filter[has-id][]`), in as many requests as keep each
    /// URL under `MAX_URL_BYTES`. Decryption of one batch overlaps the
    /// download of the next. An id the server no longer lists is absent
    /// from the result; one listed without a secret for this account has
    /// `DecodeError::NoSecret`.
    pub async fn fetch_secrets(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, FetchedSecret>, ClientError> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut decrypting: Option<tokio::task::JoinHandle<Vec<(String, FetchedSecret)>>> = None;
        for batch in self.batches(ids) {
            let (rows, servertime) = api::resources(&self.session, true, Some(batch)).await?;
            let downloaded = rows
                .iter()
                .filter(|r| r.secrets.as_ref().is_some_and(|s| !s.is_empty()))
                .count();
            self.secrets_downloaded
                .fetch_add(downloaded as u64, Ordering::Relaxed);
            let work = self.prepare_secrets(rows).await?;
            let user_key = self.session.user_key().clone();
            let next = tokio::task::spawn_blocking(move || {
                par_map(work, |w| {
                    let r = w.resource;
                    let fields = match w.armored {
                        Some(a) => {
                            decode::decode_secret(&r.id, &r.type_slug, &a, &w.custom, &user_key)
                        }
                        None => Err(DecodeError::NoSecret { id: r.id.clone() }),
                    };
                    let fetched = FetchedSecret {
                        modified: r.modified,
                        servertime,
                        fields,
                    };
                    (r.id, fetched)
                })
            });
            if let Some(previous) = decrypting.replace(next) {
                out.extend(previous.await.expect("decryption task"));
            }
        }
        if let Some(last) = decrypting {
            out.extend(last.await.expect("decryption task"));
        }
        Ok(out)
    }

    /// Splits `ids` into batches whose listing URL stays within
    /// `MAX_URL_BYTES`.
    pub fn batches<'a>(&self, ids: &'a [String]) -> Vec<&'a [String]> {
        self.batches_of(ids, api::HAS_ID_PARAM)
    }

    /// Like `batches`, for ids each sent after `param`.
    fn batches_of<'a>(&self, ids: &'a [String], param: &str) -> Vec<&'a [String]> {
        let fixed = self.session.options().base_url.len() + api::resources_path(true, &[]).len();
        // "&" and the parameter before each 36-character id.
        let per_id = param.len() + 1 + 36;
        let per_batch = (MAX_URL_BYTES.saturating_sub(fixed) / per_id).max(1);
        ids.chunks(per_batch).collect()
    }

    /// Pairs each secret row with the resource decoded from it (its slug,
    /// `modified` and custom field entries label the secret).
    async fn prepare_secrets(
        &self,
        mut rows: Vec<model::Resource>,
    ) -> Result<Vec<SecretWork>, ClientError> {
        let armored: Vec<Option<String>> = rows
            .iter_mut()
            .map(|r| {
                r.secrets
                    .take()
                    .and_then(|s| s.into_iter().next())
                    .map(|s| s.data)
            })
            .collect();
        let (decoded, failures) = self.decode_rows(rows).await?;
        for e in failures {
            // Its metadata does not decode, so neither can its secret be
            // labelled; the listing already reported it.
            tracing::debug!(error = %e, "secret row skipped");
        }
        Ok(decoded
            .into_iter()
            .zip(armored)
            .filter_map(|(item, armored)| {
                let (resource, custom) = item?;
                Some(SecretWork {
                    resource,
                    custom,
                    armored,
                })
            })
            .collect())
    }

    async fn decode(
        &self,
        rows: Vec<model::Resource>,
        servertime: Option<i64>,
        folder_paths: bool,
    ) -> Result<Listing, ClientError> {
        let paths = if folder_paths && rows.iter().any(|r| r.folder_parent_id.is_some()) {
            self.folder_paths().await?
        } else {
            HashMap::new()
        };
        self.listing(rows, servertime, &paths).await
    }

    /// Decodes `rows` into a listing, each resource in the folder path
    /// `paths` gives its parent (none for a parent it does not name).
    async fn listing(
        &self,
        rows: Vec<model::Resource>,
        servertime: Option<i64>,
        paths: &HashMap<String, String>,
    ) -> Result<Listing, ClientError> {
        let parents: Vec<Option<String>> =
            rows.iter().map(|r| r.folder_parent_id.clone()).collect();
        let (decoded, failures) = self.decode_rows(rows).await?;
        let resources = decoded
            .into_iter()
            .zip(parents)
            .filter_map(|(item, parent)| {
                let (mut resource, _) = item?;
                resource.folder = parent.and_then(|p| paths.get(&p).cloned());
                Some(resource)
            })
            .collect();
        Ok(Listing::new(resources, failures, servertime))
    }

    /// Decodes rows in order (`None` where a row failed, with its error
    /// in the second list), reusing the metadata decoded from an identical
    /// row before.
    #[allow(clippy::type_complexity)]
    async fn decode_rows(
        &self,
        rows: Vec<model::Resource>,
    ) -> Result<
        (
            Vec<Option<(Resource, Vec<CustomFieldEntry>)>>,
            Vec<DecodeError>,
        ),
        ClientError,
    > {
        let type_ids: Vec<&str> = rows.iter().map(|r| r.resource_type_id.as_str()).collect();
        let slugs = self.slugs(&type_ids).await?;
        let digests: Vec<u64> = rows.iter().map(|r| self.digest(r)).collect();
        let mut reused: Vec<Option<(Resource, Vec<CustomFieldEntry>)>> = {
            let cache = self.metadata.lock().expect("not poisoned");
            rows.iter()
                .zip(&digests)
                .map(|(r, d)| {
                    cache
                        .get(&r.id)
                        .filter(|c| c.digest == *d)
                        .map(|c| (c.resource.clone(), c.custom.clone()))
                })
                .collect()
        };
        let shared: Vec<&str> = rows
            .iter()
            .zip(&reused)
            .filter(|(_, hit)| hit.is_none())
            .filter_map(|(r, _)| {
                r.metadata_key_id.as_deref().filter(|_| {
                    r.metadata.is_some() && r.metadata_key_type.as_deref() != Some("user_key")
                })
            })
            .collect();
        let keyring = if shared.is_empty() {
            Keyring::default()
        } else {
            self.keyring(&shared).await?
        };
        let user_key = self.session.user_key().clone();
        let todo: Vec<(usize, model::Resource)> = rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| reused[*i].is_none())
            .collect();
        let fresh = tokio::task::spawn_blocking(move || {
            par_map(todo, |(i, row)| {
                let Some(slug) = slugs.get(&row.resource_type_id) else {
                    return (
                        i,
                        Err(DecodeError::UnknownType {
                            id: row.id.clone(),
                            type_id: row.resource_type_id.clone(),
                        }),
                    );
                };
                (
                    i,
                    decode::decode_metadata(&row, slug, None, &keyring, &user_key),
                )
            })
        })
        .await
        .map_err(|e| ClientError::Malformed {
            path: "/resources.json".into(),
            detail: format!("decoding failed: {e}"),
        })?;
        let mut failures = Vec::new();
        for (i, result) in fresh {
            match result {
                Ok(decoded) => reused[i] = Some(decoded),
                Err(e) => failures.push(e),
            }
        }
        // Everything decoded goes (back) into the cache: fetching the
        // keyring above may have emptied it, rows read from it included.
        let mut cache = self.metadata.lock().expect("not poisoned");
        for (item, digest) in reused.iter().zip(&digests) {
            if let Some((resource, custom)) = item
                && cache.get(&resource.id).is_none_or(|c| c.digest != *digest)
            {
                cache.insert(
                    resource.id.clone(),
                    DecodedMetadata {
                        digest: *digest,
                        resource: resource.clone(),
                        custom: custom.clone(),
                    },
                );
            }
        }
        Ok((reused, failures))
    }

    /// What identifies a row's decodable content: everything decoding it
    /// reads. `modified` is part of it, so an edit is decoded again even
    /// if it re-encrypted to identical-looking input.
    fn digest(&self, r: &model::Resource) -> u64 {
        self.digests.hash_one((
            &r.resource_type_id,
            &r.modified,
            &r.metadata,
            &r.metadata_key_id,
            &r.metadata_key_type,
            &r.name,
            &r.username,
            &r.uri,
            &r.description,
        ))
    }

    /// Learns the folder tree (`/folders.json`, one request) without
    /// listing any resource: what a scoped listing needs to name folder
    /// paths when no full listing came first, e.g. after a restart that
    /// kept what its folder selectors resolved to.
    pub async fn load_folder_paths(&self) -> Result<(), ClientError> {
        self.folder_paths().await.map(drop)
    }

    /// Folder paths by folder id; v5 folder names are decrypted only when
    /// their row changed.
    async fn folder_paths(&self) -> Result<HashMap<String, String>, ClientError> {
        let folders = api::folders(&self.session).await?;
        let shared: Vec<&str> = folders
            .iter()
            .filter_map(|f| {
                f.metadata_key_id.as_deref().filter(|_| {
                    f.metadata.is_some() && f.metadata_key_type.as_deref() != Some("user_key")
                })
            })
            .collect();
        let keyring = if shared.is_empty() {
            Keyring::default()
        } else {
            self.keyring(&shared).await?
        };
        let user_key = self.session.user_key().clone();
        let digests: Vec<u64> = folders
            .iter()
            .map(|f| {
                self.digests
                    .hash_one((&f.metadata, &f.metadata_key_id, &f.name, &f.modified))
            })
            .collect();
        let known = self.folder_names.lock().expect("not poisoned").clone();
        let (names, paths) = tokio::task::spawn_blocking(move || {
            let names: HashMap<String, (u64, String)> = folders
                .iter()
                .zip(digests)
                .map(|(f, d)| {
                    let name = match known.get(&f.id).filter(|(kd, _)| *kd == d) {
                        Some((_, name)) => name.clone(),
                        None => folder_name(f, &keyring, &user_key),
                    };
                    (f.id.clone(), (d, name))
                })
                .collect();
            let paths = folder_paths(&folders, &names);
            (names, paths)
        })
        .await
        .expect("folder decoding task");
        *self.folder_names.lock().expect("not poisoned") = names;
        *self.known_paths.lock().expect("not poisoned") = paths.clone();
        Ok(paths)
    }
}

/// A folder's name: cleartext (v4) or decrypted from its metadata (v5).
fn folder_name(f: &model::Folder, keyring: &Keyring, user_key: &PrivateKey) -> String {
    match &f.metadata {
        None => f.name.clone().unwrap_or_default(),
        Some(armored) => {
            let key = match f.metadata_key_type.as_deref() {
                Some("user_key") => Some(user_key),
                _ => f
                    .metadata_key_id
                    .as_deref()
                    .and_then(|id| keyring.get(id))
                    .map(|k| k.as_ref()),
            };
            key.and_then(|k| k.decrypt(armored.as_bytes()).ok())
                .and_then(|p| serde_json::from_slice::<model::FolderMetadata>(&p).ok())
                .map(|m| m.name)
                .unwrap_or_else(|| format!("[folder {}]", f.id))
        }
    }
}

/// Folder paths by folder id, from the root down (`Parent/Child`).
fn folder_paths(
    folders: &[model::Folder],
    names: &HashMap<String, (u64, String)>,
) -> HashMap<String, String> {
    let names: HashMap<&str, (&str, Option<&str>)> = folders
        .iter()
        .map(|f| {
            let name = names.get(&f.id).map(|(_, n)| n.as_str()).unwrap_or("");
            (f.id.as_str(), (name, f.folder_parent_id.as_deref()))
        })
        .collect();
    let mut out = HashMap::new();
    for id in names.keys() {
        let mut parts = Vec::new();
        let mut cur = Some(*id);
        // A cycle or a missing parent ends the walk rather than looping.
        while let Some(c) = cur {
            if parts.len() > names.len() {
                break;
            }
            match names.get(c) {
                Some((name, parent)) => {
                    parts.push(name.replace('/', "∕"));
                    cur = *parent;
                }
                None => break,
            }
        }
        parts.reverse();
        out.insert(id.to_string(), parts.join("/"));
    }
    out
}

/// Maps `f` over `items` on all cores, keeping the order. Runs inside one
/// blocking task; the work is CPU-bound OpenPGP.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter();
    loop {
        let c: Vec<T> = items.by_ref().take(chunk).collect();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    })
}
