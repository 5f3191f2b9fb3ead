//! From API rows to decoded resources: v4 cleartext or v5 encrypted
//! metadata, and the secret formats of every resource type of v5.12.

use super::metadata::Keyring;
use super::model::{CustomFieldEntry, Resource as Row, ResourceMetadata, SecretData, TotpData};
use crate::pgp::PrivateKey;
use crate::secret::{CustomField, Resource, Secret, SecretFields, Totp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "resource {id}: the metadata key {} is not shared with this account yet; an administrator must share it",
        fingerprint.as_deref().unwrap_or(key_id)
    )]
    MissingMetadataKey {
        id: String,
        key_id: String,
        /// As the server lists it; `None` when it does not list the key.
        fingerprint: Option<String>,
    },
    #[error("resource {id}: cannot decrypt its metadata: {detail}")]
    Metadata { id: String, detail: String },
    #[error("resource {id}: unknown resource type id {type_id}")]
    UnknownType { id: String, type_id: String },
    #[error("resource {id}: the listing carries no secret for this user")]
    NoSecret { id: String },
    #[error("resource {id}: cannot decrypt its secret: {detail}")]
    Secret { id: String, detail: String },
    #[error("resource {id}: its {slug} secret is malformed: {detail}")]
    SecretFormat {
        id: String,
        slug: String,
        detail: String,
    },
}

impl DecodeError {
    /// The resource the error is about.
    pub fn resource_id(&self) -> &str {
        match self {
            DecodeError::MissingMetadataKey { id, .. }
            | DecodeError::Metadata { id, .. }
            | DecodeError::UnknownType { id, .. }
            | DecodeError::NoSecret { id }
            | DecodeError::Secret { id, .. }
            | DecodeError::SecretFormat { id, .. } => id,
        }
    }
}

/// Secret types whose plaintext is the bare password, not JSON.
fn is_string_secret(slug: &str) -> bool {
    matches!(slug, "password-string" | "v5-password-string")
}

/// Decodes the metadata of one row: cleartext for v4, decrypted for v5.
/// Returns the resource (without secret) and the metadata's custom field
/// entries, needed later to label the secret's values.
pub fn decode_metadata(
    row: &Row,
    slug: &str,
    folder: Option<String>,
    keyring: &Keyring,
    user_key: &PrivateKey,
) -> Result<(Resource, Vec<CustomFieldEntry>), DecodeError> {
    let Some(armored) = &row.metadata else {
        return Ok((
            Resource {
                id: row.id.clone(),
                name: row.name.clone().unwrap_or_default(),
                username: row.username.clone().filter(|u| !u.is_empty()),
                uris: row.uri.iter().filter(|u| !u.is_empty()).cloned().collect(),
                description: row.description.clone(),
                folder,
                type_slug: slug.to_string(),
                custom_field_labels: Vec::new(),
                modified: row.modified.clone(),
            },
            Vec::new(),
        ));
    };
    let meta_err = |detail: String| DecodeError::Metadata {
        id: row.id.clone(),
        detail,
    };
    let plaintext = match row.metadata_key_type.as_deref() {
        Some("user_key") => user_key.decrypt(armored.as_bytes()),
        _ => {
            let key_id = row.metadata_key_id.clone().unwrap_or_default();
            let key = keyring
                .get(&key_id)
                .ok_or_else(|| DecodeError::MissingMetadataKey {
                    id: row.id.clone(),
                    fingerprint: keyring.listed_fingerprint(&key_id).map(str::to_string),
                    key_id: key_id.clone(),
                })?;
            key.decrypt(armored.as_bytes())
        }
    }
    .map_err(|e| meta_err(e.to_string()))?;
    let meta: ResourceMetadata =
        serde_json::from_slice(&plaintext).map_err(|e| meta_err(e.to_string()))?;
    if meta.object_type != "PASSBOLT_RESOURCE_METADATA" {
        return Err(meta_err(format!(
            "object_type is {:?}, expected PASSBOLT_RESOURCE_METADATA",
            meta.object_type
        )));
    }
    let custom = meta.custom_fields.unwrap_or_default();
    let labels = custom
        .iter()
        .filter_map(|c| {
            c.metadata_key
                .clone()
                .or_else(|| c.secret_key.clone())
                .map(|l| (c.id.clone(), l))
        })
        .collect();
    Ok((
        Resource {
            id: row.id.clone(),
            name: meta.name.unwrap_or_default(),
            username: meta.username.filter(|u| !u.is_empty()),
            // The v4 to v5 migration writes `[null]` for an absent uri.
            uris: meta
                .uris
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .filter(|u| !u.is_empty())
                .collect(),
            description: meta.description,
            folder,
            type_slug: slug.to_string(),
            custom_field_labels: labels,
            modified: row.modified.clone(),
        },
        custom,
    ))
}

/// Decrypts and parses a secret. `meta_custom` are the custom field
/// entries from the metadata, joined with the secret's by id.
pub fn decode_secret(
    id: &str,
    slug: &str,
    armored: &str,
    meta_custom: &[CustomFieldEntry],
    user_key: &PrivateKey,
) -> Result<SecretFields, DecodeError> {
    // Secrets are not signed by anyone we could hold accountable: the
    // server does not check signatures on write, so neither can we.
    let plaintext = user_key
        .decrypt(armored.as_bytes())
        .map_err(|e| DecodeError::Secret {
            id: id.to_string(),
            detail: e.to_string(),
        })?;
    parse_secret(id, slug, &plaintext, meta_custom)
}

pub fn parse_secret(
    id: &str,
    slug: &str,
    plaintext: &[u8],
    meta_custom: &[CustomFieldEntry],
) -> Result<SecretFields, DecodeError> {
    let format_err = |detail: String| DecodeError::SecretFormat {
        id: id.to_string(),
        slug: slug.to_string(),
        detail,
    };
    let text = std::str::from_utf8(plaintext).map_err(|_| format_err("not UTF-8".into()))?;
    let looks_json = text.trim_start().starts_with('{');
    if is_string_secret(slug) || (!looks_json && !is_known(slug)) {
        return Ok(SecretFields {
            password: Some(Secret::new(text)),
            ..Default::default()
        });
    }
    // serde_json's error messages quote no input, so they are safe to keep.
    let data: SecretData = serde_json::from_str(text)
        .map_err(|e| format_err(format!("not the expected JSON: {e}")))?;
    let mut fields = SecretFields::default();
    match slug {
        "v5-note" => fields.note = data.description.map(Secret::new),
        "v5-pin-code" => {
            fields.pin = data.pin_code.map(Secret::new);
            fields.description = data.description.map(Secret::new);
        }
        _ => {
            fields.password = data.password.map(Secret::new);
            fields.description = data.description.map(Secret::new);
        }
    }
    if let Some(t) = data.totp {
        fields.totp = Some(totp(t).map_err(format_err)?);
    }
    fields.custom_fields = join_custom(meta_custom, data.custom_fields.as_deref().unwrap_or(&[]));
    Ok(fields)
}

fn is_known(slug: &str) -> bool {
    crate::secret::RESOURCE_TYPES.contains(&slug)
}

fn totp(t: TotpData) -> Result<Totp, String> {
    let number = |v: Option<serde_json::Value>, default: u64, what: &str| -> Result<u64, String> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| format!("totp {what} is not a positive integer")),
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map_err(|_| format!("totp {what} is not a number")),
            Some(_) => Err(format!("totp {what} is not a number")),
        }
    };
    Ok(Totp {
        secret_key: Secret::new(t.secret_key),
        algorithm: t.algorithm.unwrap_or_else(|| "SHA1".into()).to_uppercase(),
        digits: number(t.digits, 6, "digits")? as u32,
        period: number(t.period, 30, "period")?,
    })
}

/// Label and type from the metadata, value from the secret; either side
/// may hold either, so each falls back to the other.
fn join_custom(meta: &[CustomFieldEntry], secret: &[CustomFieldEntry]) -> Vec<CustomField> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    let mut out = Vec::new();
    let mut ids: Vec<&str> = meta.iter().map(|m| m.id.as_str()).collect();
    for s in secret {
        if !ids.contains(&s.id.as_str()) {
            ids.push(&s.id);
        }
    }
    for id in ids {
        let m = meta.iter().find(|m| m.id == id);
        let s = secret.iter().find(|s| s.id == id);
        let label = m
            .and_then(|m| m.metadata_key.clone())
            .or_else(|| s.and_then(|s| s.secret_key.clone()))
            .or_else(|| s.and_then(|s| s.metadata_key.clone()));
        let value = s
            .and_then(|s| s.secret_value.as_ref().and_then(text))
            .or_else(|| m.and_then(|m| m.metadata_value.as_ref().and_then(text)));
        let kind = m
            .and_then(|m| m.kind.clone())
            .or_else(|| s.and_then(|s| s.kind.clone()))
            .unwrap_or_else(|| "text".into());
        if let (Some(label), Some(value)) = (label, value) {
            out.push(CustomField {
                id: id.to_string(),
                label,
                kind,
                value: Secret::new(value),
            });
        }
    }
    out
}
