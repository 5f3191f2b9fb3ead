//! The server's v5 shared metadata keys. The server holds a list: a
//! rotation adds a key and marks the previous one expired, which stays
//! listed because items not yet re-encrypted still use it. Each account
//! gets its own copy of a key's private half: an envelope encrypted to the
//! account's key and signed by the admin who shared it.
//!
//! The server never decrypts metadata: it keeps a key's public half to
//! encrypt seeded metadata with, and its armored private half only to put
//! into envelopes.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::{Account, DevServerError};
use passbolt_client::pgp::{self, PrivateKey, PublicKey};

pub(crate) struct MetadataKey {
    pub id: String,
    pub public: PublicKey,
    armored_private: Zeroizing<String>,
    pub created: String,
    pub modified: String,
    /// When it was retired by a rotation.
    pub expired: Option<String>,
    /// The copy of each account that holds one, by user id.
    pub private_keys: HashMap<String, PrivateKeyRow>,
}

/// One account's `metadata_private_keys` row.
pub(crate) struct PrivateKeyRow {
    pub id: String,
    /// The armored envelope, encrypted to the account's key.
    pub data: String,
    pub created: String,
}

impl MetadataKey {
    /// A fresh key, shared with nobody yet. Curve25519: the client code path
    /// is the same as for RSA, and generation is instant.
    pub fn generate(now: &str) -> Result<MetadataKey, DevServerError> {
        let (key, armored) = pgp::generate_key(
            "Passbolt metadata key <metadata@passbolt.invalid>",
            pgp::CipherSuite::Cv25519,
            None,
        )
        .map_err(DevServerError::crypto)?;
        Ok(MetadataKey {
            id: uuid::Uuid::new_v4().to_string(),
            public: key.public(),
            armored_private: Zeroizing::new(armored),
            created: now.to_string(),
            modified: now.to_string(),
            expired: None,
            private_keys: HashMap::new(),
        })
    }

    /// The envelope that shares this key with `account`: the JSON the
    /// browser extension writes, encrypted to the account, signed by `admin`.
    pub fn envelope(
        &self,
        admin: &PrivateKey,
        account: &Account,
        domain: &str,
    ) -> Result<String, DevServerError> {
        let plaintext = Zeroizing::new(
            serde_json::json!({
                "object_type": "PASSBOLT_METADATA_PRIVATE_KEY",
                "domain": domain,
                "fingerprint": self.public.fingerprint(),
                "armored_key": self.armored_private.as_str(),
                "passphrase": "",
            })
            .to_string(),
        );
        admin
            .encrypt_and_sign(&account.key, plaintext.as_bytes())
            .map_err(DevServerError::crypto)
    }

    /// Decrypts what was encrypted to this key. Only for the dev server's
    /// own bookkeeping of client-written metadata; never a check.
    pub fn open(&self, message: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        PrivateKey::load(self.armored_private.as_bytes(), None)
            .ok()?
            .decrypt(message)
            .ok()
    }

    pub fn give(&mut self, user_id: &str, data: String, now: &str) {
        self.private_keys.insert(
            user_id.to_string(),
            PrivateKeyRow {
                id: uuid::Uuid::new_v4().to_string(),
                data,
                created: now.to_string(),
            },
        );
    }
}
