//! The JSON shapes of the passbolt API, as the v5.12 server sends them.
//!
//! Every field the client does not need is left out; serde ignores extra
//! keys so newer servers keep working. Optional fields take `null` too,
//! since the server's own migrations write nulls where schemas say strings.

use serde::{Deserialize, Serialize};

/// `{"header": {...}, "body": ...}`, the envelope of every answer but JWKS.
#[derive(Debug, Deserialize, Serialize)]
pub struct Envelope<T> {
    pub header: Header,
    pub body: T,
}

/// An envelope read for its header alone; the body is skipped unparsed.
#[derive(Debug, Deserialize)]
pub struct HeaderOnly {
    pub header: Header,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Header {
    #[serde(default)]
    pub id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub servertime: Option<i64>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VerifyBody {
    pub fingerprint: String,
    pub keydata: String,
}

/// The part of `GET /settings.json` (as a guest sees it) the login needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SettingsBody {
    #[serde(default)]
    pub app: Option<AppSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AppSettings {
    /// The server's base URL, with a trailing `/`: the exact string a login
    /// challenge's `domain` is compared with.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChallengeBody {
    pub challenge: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AccessTokenBody {
    pub access_token: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Me {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    pub gpgkey: Gpgkey,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Gpgkey {
    pub id: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub armored_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResourceType {
    pub id: String,
    pub slug: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Resource {
    pub id: String,
    pub resource_type_id: String,
    #[serde(default)]
    pub folder_parent_id: Option<String>,
    #[serde(default)]
    pub personal: Option<bool>,
    // v4 cleartext fields
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    // v5 encrypted metadata
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_key_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretRow>>,
    #[serde(default)]
    pub modified: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SecretRow {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub resource_id: Option<String>,
    pub data: String,
    #[serde(default)]
    pub modified: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Folder {
    pub id: String,
    #[serde(default)]
    pub folder_parent_id: Option<String>,
    #[serde(default)]
    pub modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_key_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetadataKey {
    pub id: String,
    pub fingerprint: String,
    #[serde(default)]
    pub armored_key: Option<String>,
    #[serde(default)]
    pub expired: Option<String>,
    #[serde(default)]
    pub deleted: Option<String>,
    #[serde(default)]
    pub metadata_private_keys: Vec<MetadataPrivateKey>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetadataPrivateKey {
    #[serde(default)]
    pub id: Option<String>,
    pub metadata_key_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    pub data: String,
}

/// What the client sends, encrypted, in the login challenge.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChallengeRequest {
    pub version: String,
    pub domain: String,
    pub verify_token: String,
    pub verify_token_expiry: serde_json::Value,
}

/// The decrypted login response. Tokens are wrapped by the session at once.
#[derive(Deserialize, Serialize)]
pub struct ChallengeResponse {
    pub version: String,
    pub domain: String,
    pub access_token: String,
    pub refresh_token: String,
    pub verify_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
}

impl std::fmt::Debug for ChallengeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeResponse")
            .field("version", &self.version)
            .field("domain", &self.domain)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

/// Decrypted v5 resource metadata (`PASSBOLT_RESOURCE_METADATA`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResourceMetadata {
    pub object_type: String,
    #[serde(default)]
    pub resource_type_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// The server's v4 to v5 migration writes `[null]` for a missing uri.
    #[serde(default)]
    pub uris: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub custom_fields: Option<Vec<CustomFieldEntry>>,
}

/// A custom field entry; the metadata side holds `metadata_key`, the secret
/// side `secret_value`, but either side may hold both.
#[derive(Clone, Deserialize, Serialize)]
pub struct CustomFieldEntry {
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata_key: Option<String>,
    #[serde(default)]
    pub metadata_value: Option<serde_json::Value>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub secret_value: Option<serde_json::Value>,
}

impl std::fmt::Debug for CustomFieldEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomFieldEntry")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("metadata_key", &self.metadata_key)
            .finish_non_exhaustive()
    }
}

/// Decrypted v5 folder metadata (`PASSBOLT_FOLDER_METADATA`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FolderMetadata {
    #[serde(default)]
    pub object_type: Option<String>,
    pub name: String,
}

/// Decrypted metadata private key envelope (`PASSBOLT_METADATA_PRIVATE_KEY`).
#[derive(Deserialize, Serialize)]
pub struct MetadataPrivateKeyData {
    pub object_type: String,
    #[serde(default)]
    pub domain: Option<String>,
    pub fingerprint: String,
    pub armored_key: String,
    #[serde(default)]
    pub passphrase: Option<String>,
}

/// Decrypted JSON secret of every non-string resource type.
#[derive(Deserialize, Serialize, Default)]
pub struct SecretData {
    #[serde(default)]
    pub object_type: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub totp: Option<TotpData>,
    #[serde(default)]
    pub pin_code: Option<String>,
    #[serde(default)]
    pub custom_fields: Option<Vec<CustomFieldEntry>>,
}

#[derive(Deserialize, Serialize, Clone)]
pub struct TotpData {
    pub secret_key: String,
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub digits: Option<serde_json::Value>,
    #[serde(default)]
    pub period: Option<serde_json::Value>,
}

/// Claims of a passbolt access token: `iss`, `sub`, `exp` and nothing else.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub exp: i64,
}
