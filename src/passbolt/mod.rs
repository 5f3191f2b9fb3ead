//! The passbolt API client: a JWT session, the read endpoints, and the
//! decoding of resources, folders and v5 metadata.
//!
//! Nothing here knows about targets or schedules.

pub mod api;
pub mod decode;
pub mod metadata;
pub mod model;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

pub use decode::DecodeError;
pub use metadata::{Keyring, MetadataKeyError};
pub use session::{Session, SessionOptions, SessionStats};

use crate::pgp::{PgpError, PrivateKey};
use crate::secret::Resource;
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
    #[error(
        "login refused for user {user_id}: {message:?} (HTTP 400). Check auth.user_id, that the key is this user's, that server.url is exactly the server's base URL, and the clock"
    )]
    LoginRefused { user_id: String, message: String },
    #[error("user {user_id} does not exist, is not active or has been deleted (HTTP 404 at login)")]
    UserNotFound { user_id: String },
    #[error("server authentication failed: {0}")]
    ServerNotAuthenticated(String),
    #[error(
        "the account requires multi-factor authentication{}: give passbolt-sync an account without MFA",
        if providers.is_empty() { String::new() } else { format!(" ({})", providers.join(", ")) }
    )]
    MfaRequired { providers: Vec<String> },
    #[error("malformed response from {path}: {detail}")]
    Malformed { path: String, detail: String },
    #[error("cannot process {what}: {source}")]
    Crypto { what: String, source: PgpError },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("no refresh token held")]
    NoRefreshToken,
}

impl ClientError {
    /// The server is down or failing: keep every file and retry later.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::ServerError { .. }
        )
    }
}

/// One listing: every readable resource with its metadata decoded, and the
/// encrypted secrets kept aside until a caller asks for them.
#[derive(Debug, Default)]
pub struct Listing {
    pub resources: Vec<Resource>,
    /// Resources that could not be decoded, with why.
    pub failures: Vec<DecodeError>,
    pending: HashMap<String, Pending>,
}

#[derive(Debug)]
struct Pending {
    armored: Option<String>,
    custom: Vec<CustomFieldEntry>,
}

impl Listing {
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// Why a resource is absent, when it failed to decode.
    pub fn failure(&self, id: &str) -> Option<&DecodeError> {
        self.failures.iter().find(|e| e.resource_id() == id)
    }
}

/// The client of one server for one account.
pub struct Client {
    session: Session,
    types: Mutex<HashMap<String, String>>,
    keyring: Mutex<Keyring>,
}

impl Client {
    pub fn new(opts: SessionOptions, key: Arc<PrivateKey>) -> Result<Client, ClientError> {
        Ok(Client {
            session: Session::new(opts, key)?,
            types: Mutex::new(HashMap::new()),
            keyring: Mutex::new(Keyring::default()),
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn stats(&self) -> SessionStats {
        self.session.stats()
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
        let listed = api::metadata_keys(&self.session).await?;
        let user_key = self.session.user_key().clone();
        let (fresh, errors) =
            tokio::task::spawn_blocking(move || Keyring::load(&listed, &user_key))
                .await
                .expect("key loading task");
        for e in &errors {
            tracing::error!(error = %e, "metadata key unusable");
        }
        if !ring.is_empty() && fresh.fingerprints() != ring.fingerprints() {
            tracing::warn!(
                before = ?ring.fingerprints(),
                after = ?fresh.fingerprints(),
                "the set of metadata keys changed"
            );
        }
        *ring = fresh;
        Ok(())
    }

    /// Lists every resource the account can read, with metadata decoded.
    /// `with_secrets` fetches the encrypted secrets in the same request;
    /// they are decrypted only by `decrypt_secrets`.
    pub async fn list(&self, with_secrets: bool) -> Result<Listing, ClientError> {
        let rows = api::resources(&self.session, with_secrets, None).await?;
        self.decode(rows, with_secrets).await
    }

    /// Like `list`, restricted to the given ids (`filter[has-id][]`).
    pub async fn list_ids(
        &self,
        ids: &[String],
        with_secrets: bool,
    ) -> Result<Listing, ClientError> {
        let rows = api::resources(&self.session, with_secrets, Some(ids)).await?;
        self.decode(rows, with_secrets).await
    }

    async fn decode(
        &self,
        rows: Vec<model::Resource>,
        with_secrets: bool,
    ) -> Result<Listing, ClientError> {
        let type_ids: Vec<&str> = rows.iter().map(|r| r.resource_type_id.as_str()).collect();
        let slugs = self.slugs(&type_ids).await?;
        let folders = if rows.iter().any(|r| r.folder_parent_id.is_some()) {
            api::folders(&self.session).await?
        } else {
            Vec::new()
        };
        let shared: Vec<&str> = rows
            .iter()
            .filter_map(|r| {
                r.metadata_key_id.as_deref().filter(|_| {
                    r.metadata.is_some() && r.metadata_key_type.as_deref() != Some("user_key")
                })
            })
            .chain(folders.iter().filter_map(|f| {
                f.metadata_key_id.as_deref().filter(|_| {
                    f.metadata.is_some() && f.metadata_key_type.as_deref() != Some("user_key")
                })
            }))
            .collect();
        let keyring = if shared.is_empty() {
            Keyring::default()
        } else {
            self.keyring(&shared).await?
        };
        let user_key = self.session.user_key().clone();
        tokio::task::spawn_blocking(move || {
            let paths = folder_paths(&folders, &keyring, &user_key);
            let decoded = par_map(rows, |row| {
                let Some(slug) = slugs.get(&row.resource_type_id) else {
                    return Err(DecodeError::UnknownType {
                        id: row.id.clone(),
                        type_id: row.resource_type_id.clone(),
                    });
                };
                let folder = row
                    .folder_parent_id
                    .as_ref()
                    .and_then(|f| paths.get(f).cloned());
                let (resource, custom) =
                    decode::decode_metadata(&row, slug, folder, &keyring, &user_key)?;
                let armored = row
                    .secrets
                    .and_then(|s| s.into_iter().next())
                    .map(|s| s.data);
                Ok((resource, Pending { armored, custom }))
            });
            let mut listing = Listing::default();
            for item in decoded {
                match item {
                    Ok((resource, pending)) => {
                        if with_secrets || !pending.custom.is_empty() {
                            listing.pending.insert(resource.id.clone(), pending);
                        }
                        listing.resources.push(resource);
                    }
                    Err(e) => listing.failures.push(e),
                }
            }
            listing
        })
        .await
        .map_err(|e| ClientError::Malformed {
            path: "/resources.json".into(),
            detail: format!("decoding failed: {e}"),
        })
    }

    /// Decrypts the secrets of `ids` in parallel on the blocking pool and
    /// stores them in the listing. Returns the failures; a resource not in
    /// the listing is left to the caller to report.
    pub async fn decrypt_secrets(&self, listing: &mut Listing, ids: &[String]) -> Vec<DecodeError> {
        let mut work = Vec::new();
        for id in ids {
            let Some(res) = listing.get(id) else { continue };
            if res.secret.is_some() {
                continue;
            }
            let pending = listing.pending.get(id);
            work.push((
                id.clone(),
                res.type_slug.clone(),
                pending.and_then(|p| p.armored.clone()),
                pending.map(|p| p.custom.clone()).unwrap_or_default(),
            ));
        }
        if work.is_empty() {
            return Vec::new();
        }
        let user_key = self.session.user_key().clone();
        let results = tokio::task::spawn_blocking(move || {
            par_map(work, |(id, slug, armored, custom)| {
                let r = match armored {
                    Some(a) => decode::decode_secret(&id, &slug, &a, &custom, &user_key),
                    None => Err(DecodeError::NoSecret { id: id.clone() }),
                };
                (id, r)
            })
        })
        .await
        .expect("decryption task");
        let mut failures = Vec::new();
        for (id, r) in results {
            match r {
                Ok(fields) => {
                    if let Some(res) = listing.resources.iter_mut().find(|r| r.id == id) {
                        res.secret = Some(fields);
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        failures
    }
}

/// Folder paths by folder id, from the root down (`Parent/Child`).
fn folder_paths(
    folders: &[model::Folder],
    keyring: &Keyring,
    user_key: &PrivateKey,
) -> HashMap<String, String> {
    let names: HashMap<&str, (String, Option<&str>)> = folders
        .iter()
        .map(|f| {
            let name = match &f.metadata {
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
            };
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
