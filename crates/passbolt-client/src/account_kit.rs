//! The passbolt account kit: what the browser extension exports for a
//! user (Profile > Desktop app setup), base64 of a cleartext-signed JSON
//! document with the account's identity, its keys and the server's key,
//! signed with the account's own key.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::pgp::{self, PgpError, PrivateKey, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("the account kit is not base64: {0}")]
    Base64(String),
    #[error("the account kit is not a signed OpenPGP message: {0}")]
    NotSigned(PgpError),
    #[error("the account kit's content is not the expected JSON: {0}")]
    Json(String),
    #[error("the account kit's {field}: {source}")]
    Key {
        field: &'static str,
        source: PgpError,
    },
    #[error(
        "the account kit's signature is not valid (expected one by the kit's own user key {expected}); export a new kit"
    )]
    BadSignature { expected: String },
    #[error(
        "the account kit's private key {private} does not match its public key {public}; export a new kit"
    )]
    KeyMismatch { private: String, public: String },
    #[error("cannot sign the account kit: {0}")]
    Sign(PgpError),
}

/// The kit's document, as the extension writes it.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccountKit {
    pub domain: String,
    pub user_id: String,
    pub username: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    /// Armored and, as the extension exports it, passphrase-protected;
    /// zeroized anyway.
    #[serde(with = "zeroizing")]
    pub user_private_armored_key: Zeroizing<String>,
    pub user_public_armored_key: String,
    pub server_public_armored_key: String,
    /// The colour code the extension shows to tell phishing pages apart;
    /// kept as given.
    #[serde(default)]
    pub security_token: serde_json::Value,
}

impl fmt::Debug for AccountKit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountKit")
            .field("domain", &self.domain)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("user_private_armored_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A kit checked by [`AccountKit::open`]: signed by its own user key, whose
/// private and public halves match.
#[derive(Debug)]
pub struct VerifiedKit {
    pub kit: AccountKit,
    pub user_key: PublicKey,
    pub server_key: PublicKey,
}

impl AccountKit {
    /// Decodes a kit file and checks its signature and its key pair.
    pub fn open(data: &[u8]) -> Result<VerifiedKit, KitError> {
        let compact: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let signed = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .map_err(|e| KitError::Base64(e.to_string()))?,
        );
        // The signer is named inside what it signed: read the document
        // once to learn the key, then again requiring its signature.
        let unverified =
            Zeroizing::new(pgp::signed_text_unverified(&signed).map_err(KitError::NotSigned)?);
        let claimed: AccountKit = parse_json(&unverified)?;
        let user_key = PublicKey::from_armor(claimed.user_public_armored_key.as_bytes()).map_err(
            |source| KitError::Key {
                field: "user_public_armored_key",
                source,
            },
        )?;
        let text = Zeroizing::new(pgp::verify_signed(&user_key, &signed).map_err(|e| match e {
            PgpError::BadSignature { expected } => KitError::BadSignature { expected },
            other => KitError::NotSigned(other),
        })?);
        let kit: AccountKit = parse_json(&text)?;
        let private = pgp::secret_key_fingerprint(kit.user_private_armored_key.as_bytes())
            .map_err(|source| KitError::Key {
                field: "user_private_armored_key",
                source,
            })?;
        let public =
            PublicKey::from_armor(kit.user_public_armored_key.as_bytes()).map_err(|source| {
                KitError::Key {
                    field: "user_public_armored_key",
                    source,
                }
            })?;
        if public.fingerprint() != user_key.fingerprint() || private != public.fingerprint() {
            return Err(KitError::KeyMismatch {
                private,
                public: public.fingerprint(),
            });
        }
        let server_key =
            PublicKey::from_armor(kit.server_public_armored_key.as_bytes()).map_err(|source| {
                KitError::Key {
                    field: "server_public_armored_key",
                    source,
                }
            })?;
        Ok(VerifiedKit {
            kit,
            user_key: public,
            server_key,
        })
    }

    /// The kit file's content: the document signed with `key` (the
    /// account's unlocked key) in the cleartext framework, in base64.
    pub fn seal(&self, key: &PrivateKey) -> Result<String, KitError> {
        let json = Zeroizing::new(serde_json::to_string(self).expect("serializable"));
        let signed = Zeroizing::new(
            key.sign_cleartext(json.as_bytes())
                .map_err(KitError::Sign)?,
        );
        Ok(base64::engine::general_purpose::STANDARD.encode(signed.as_bytes()))
    }
}

fn parse_json(text: &[u8]) -> Result<AccountKit, KitError> {
    // serde_json quotes a value only when its type is wrong; every field
    // the kit's key sits in takes a string, so the key is never quoted.
    serde_json::from_slice(text).map_err(|e| KitError::Json(e.to_string()))
}

mod zeroizing {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(v: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
        String::deserialize(d).map(Zeroizing::new)
    }
}
