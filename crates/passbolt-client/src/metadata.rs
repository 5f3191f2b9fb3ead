//! v5 metadata keys: the shared private keys that decrypt resource and
//! folder metadata, handed to each user inside an envelope encrypted to
//! their own key.

use std::collections::HashMap;
use std::sync::Arc;

use super::model::{MetadataKey, MetadataPrivateKeyData};
use crate::pgp::{PrivateKey, normalize_fingerprint};

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataKeyError {
    #[error("metadata key {id}: cannot decrypt its private key envelope: {detail}")]
    Envelope { id: String, detail: String },
    #[error("metadata key {id}: the envelope is not a PASSBOLT_METADATA_PRIVATE_KEY ({detail})")]
    NotAKey { id: String, detail: String },
    #[error(
        "metadata key {id}: the envelope's key has fingerprint {actual}, but it claims {claimed} and the server lists {listed}"
    )]
    FingerprintMismatch {
        id: String,
        claimed: String,
        actual: String,
        listed: String,
    },
}

/// The metadata private keys this user can use, by `metadata_keys.id`.
/// Expired keys are kept: items not yet rotated still use them.
#[derive(Default, Clone)]
pub struct Keyring {
    keys: HashMap<String, Arc<PrivateKey>>,
    fingerprints: HashMap<String, String>,
    /// Every key the server lists, opened or not (fingerprint, and
    /// whether it has expired): what names a key that has not been shared
    /// with this user yet.
    listed: HashMap<String, (String, bool)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.fingerprints.iter()).finish()
    }
}

impl Keyring {
    pub fn get(&self, id: &str) -> Option<&Arc<PrivateKey>> {
        self.keys.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The fingerprint the server lists for key `id`, whether or not it
    /// is shared with this user.
    pub fn listed_fingerprint(&self, id: &str) -> Option<&str> {
        self.listed.get(id).map(|(f, _)| f.as_str())
    }

    /// The fingerprints of the current (unexpired) keys the server lists
    /// but has not shared with this user, sorted.
    pub fn unshared(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .listed
            .iter()
            .filter(|(id, (_, expired))| !expired && !self.keys.contains_key(*id))
            .map(|(_, (f, _))| f.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    /// Fingerprints by key id, to notice when the set changes.
    pub fn fingerprints(&self) -> &HashMap<String, String> {
        &self.fingerprints
    }

    /// Opens every envelope shared with this user. A key that fails is
    /// reported and skipped, so the others still work.
    pub fn load(listed: &[MetadataKey], user_key: &PrivateKey) -> (Keyring, Vec<MetadataKeyError>) {
        let mut ring = Keyring::default();
        let mut errors = Vec::new();
        for key in listed {
            ring.listed.insert(
                key.id.clone(),
                (
                    normalize_fingerprint(&key.fingerprint),
                    key.expired.is_some(),
                ),
            );
            for envelope in &key.metadata_private_keys {
                match open_envelope(key, &envelope.data, user_key) {
                    Ok(private) => {
                        ring.fingerprints
                            .insert(key.id.clone(), private.fingerprint());
                        ring.keys
                            .insert(key.id.clone(), Arc::new(private.count_with(user_key)));
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        (ring, errors)
    }
}

fn open_envelope(
    key: &MetadataKey,
    data: &str,
    user_key: &PrivateKey,
) -> Result<PrivateKey, MetadataKeyError> {
    // Signed by whichever admin shared it, whose key we may not know: the
    // protocol gives us nothing to verify it against.
    let plaintext = user_key
        .decrypt(data.as_bytes())
        .map_err(|e| MetadataKeyError::Envelope {
            id: key.id.clone(),
            detail: e.to_string(),
        })?;
    let parsed: MetadataPrivateKeyData =
        serde_json::from_slice(&plaintext).map_err(|e| MetadataKeyError::NotAKey {
            id: key.id.clone(),
            detail: e.to_string(),
        })?;
    if parsed.object_type != "PASSBOLT_METADATA_PRIVATE_KEY" {
        return Err(MetadataKeyError::NotAKey {
            id: key.id.clone(),
            detail: format!("object_type is {:?}", parsed.object_type),
        });
    }
    let passphrase = parsed
        .passphrase
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(str::as_bytes);
    let private = PrivateKey::load(parsed.armored_key.as_bytes(), passphrase).map_err(|e| {
        MetadataKeyError::NotAKey {
            id: key.id.clone(),
            detail: e.to_string(),
        }
    })?;
    let claimed = normalize_fingerprint(&parsed.fingerprint);
    let listed = normalize_fingerprint(&key.fingerprint);
    if private.fingerprint() != claimed || private.fingerprint() != listed {
        return Err(MetadataKeyError::FingerprintMismatch {
            id: key.id.clone(),
            claimed,
            actual: private.fingerprint(),
            listed,
        });
    }
    Ok(private)
}
