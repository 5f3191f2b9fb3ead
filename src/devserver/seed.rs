//! Resources and folders of the dev server, and the sample set that covers
//! every resource type of passbolt v5.12 in both metadata modes.

use super::{DevServerError, State, StoredFolder, StoredResource};
use crate::pgp;

/// The resource types of v5.12 with their deterministic ids.
pub const RESOURCE_TYPES: &[(&str, &str, &str)] = &[
    (
        "669f8c64-242a-59fb-92fc-81f660975fd3",
        "password-string",
        "Simple password",
    ),
    (
        "a28a04cd-6f53-518a-967c-9963bf9cec51",
        "password-and-description",
        "Password with description",
    ),
    (
        "05ba5c75-504d-5ad6-819a-83af68867d86",
        "totp",
        "Standalone TOTP",
    ),
    (
        "8cca88d9-a3f6-56df-b860-3ef08de5c5c4",
        "password-description-totp",
        "Password, Description and TOTP",
    ),
    (
        "761e5863-e17e-5ded-b3c2-76ffd5d0a2dc",
        "v5-password-string",
        "Simple password (Deprecated)",
    ),
    (
        "dd1f723d-0d1e-513f-8218-4055dc0530d0",
        "v5-default",
        "Default resource type",
    ),
    (
        "7438294d-f71c-5164-ba95-d9e60e295564",
        "v5-default-with-totp",
        "Default resource type with TOTP",
    ),
    (
        "bb2280b5-c4d9-569c-9337-62b307f1139c",
        "v5-totp-standalone",
        "Standalone TOTP",
    ),
    (
        "0551544e-2ccd-5ce8-95cf-86f0aab0f827",
        "v5-custom-fields",
        "Standalone custom fields",
    ),
    (
        "0a72c76b-b8e6-53f0-8bef-0a8ca6b5c764",
        "v5-note",
        "Standalone note",
    ),
    (
        "4357bbc7-ed4d-52ff-b59d-9f7f17881bb3",
        "v5-pin-code",
        "PIN code",
    ),
];

pub fn type_id(slug: &str) -> Option<&'static str> {
    RESOURCE_TYPES
        .iter()
        .find(|(_, s, _)| *s == slug)
        .map(|(id, _, _)| *id)
}

/// How a resource's metadata is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataMode {
    /// v4: cleartext name, username, uri, description.
    Cleartext,
    /// v5, encrypted with the shared metadata key.
    Shared,
    /// v5, encrypted with the owner's own key (a personal item).
    Personal { owner: String },
}

#[derive(Clone)]
pub struct SeedResource {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub username: Option<String>,
    pub uris: Vec<String>,
    /// Cleartext (v4) or metadata (v5) description.
    pub description: Option<String>,
    pub folder_id: Option<String>,
    /// The secret's plaintext exactly as the type stores it: a bare string
    /// for the password-string types, JSON for the others.
    pub secret: String,
    /// Custom fields declared in the metadata: (id, label, type).
    pub custom_fields: Vec<(String, String, String)>,
    pub readers: Vec<String>,
    pub mode: MetadataMode,
}

impl std::fmt::Debug for SeedResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedResource")
            .field("id", &self.id)
            .field("slug", &self.slug)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct SeedFolder {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    /// v5 folders carry encrypted metadata instead of a cleartext name.
    pub encrypted: bool,
}

pub(super) fn store_folder(state: &State, f: SeedFolder) -> Result<StoredFolder, DevServerError> {
    let metadata = if f.encrypted {
        let plaintext = serde_json::json!({
            "object_type": "PASSBOLT_FOLDER_METADATA",
            "name": f.name, "color": null, "description": null, "icon": null,
        });
        Some(
            pgp::encrypt(
                &state.metadata_key.public(),
                None,
                plaintext.to_string().as_bytes(),
            )
            .map_err(|e| DevServerError::Crypto(e.to_string()))?,
        )
    } else {
        None
    };
    Ok(StoredFolder { seed: f, metadata })
}

pub(super) fn store_resource(
    state: &State,
    r: SeedResource,
) -> Result<StoredResource, DevServerError> {
    let crypto = |e: pgp::PgpError| DevServerError::Crypto(e.to_string());
    let type_id =
        type_id(&r.slug).ok_or_else(|| DevServerError::Seed(format!("unknown type {}", r.slug)))?;
    let (metadata, metadata_key_id, metadata_key_type) = match &r.mode {
        MetadataMode::Cleartext => (None, None, None),
        mode => {
            let custom: Vec<serde_json::Value> = r
                .custom_fields
                .iter()
                .map(|(id, label, kind)| {
                    serde_json::json!({"id": id, "type": kind, "metadata_key": label, "metadata_value": null})
                })
                .collect();
            let plaintext = serde_json::json!({
                "object_type": "PASSBOLT_RESOURCE_METADATA",
                "resource_type_id": type_id,
                "name": r.name,
                "username": r.username,
                "uris": r.uris,
                "description": r.description,
                "icon": null,
                "custom_fields": if custom.is_empty() { serde_json::Value::Null } else { custom.into() },
            });
            match mode {
                MetadataMode::Personal { owner } => {
                    let account = state
                        .account(owner)
                        .ok_or_else(|| DevServerError::Seed(format!("no account {owner}")))?;
                    let armored =
                        pgp::encrypt(&account.key, None, plaintext.to_string().as_bytes())
                            .map_err(crypto)?;
                    // For personal items the key id is the owner's gpgkey id.
                    (Some(armored), Some(gpgkey_id(owner)), Some("user_key"))
                }
                _ => {
                    let armored = pgp::encrypt(
                        &state.metadata_key.public(),
                        None,
                        plaintext.to_string().as_bytes(),
                    )
                    .map_err(crypto)?;
                    (
                        Some(armored),
                        Some(state.metadata_key_id.clone()),
                        Some("shared_key"),
                    )
                }
            }
        }
    };
    let mut secrets = std::collections::HashMap::new();
    for reader in &r.readers {
        let account = state
            .account(reader)
            .ok_or_else(|| DevServerError::Seed(format!("no account {reader}")))?;
        secrets.insert(
            reader.clone(),
            pgp::encrypt(&account.key, None, r.secret.as_bytes()).map_err(crypto)?,
        );
    }
    Ok(StoredResource {
        seed: r,
        metadata,
        metadata_key_id,
        metadata_key_type,
        secrets,
        modified: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
    })
}

/// A user's gpgkey id, derived from the user id so it is stable.
pub fn gpgkey_id(user_id: &str) -> String {
    let mut bytes = *uuid::Uuid::parse_str(user_id)
        .unwrap_or_default()
        .as_bytes();
    bytes[0] ^= 0x5a;
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// Fixed ids, so that configs written against the sample set keep working
/// across runs of the demo.
pub mod ids {
    pub const FOLDER_PRODUCTION: &str = "5f0c7a3e-0000-4000-8000-000000000001";
    pub const FOLDER_MYAPP: &str = "5f0c7a3e-0000-4000-8000-000000000002";
    pub const V4_PASSWORD_STRING: &str = "3c2b5e1a-0000-4000-8000-000000000001";
    pub const V4_PASSWORD_DESCRIPTION: &str = "3c2b5e1a-0000-4000-8000-000000000002";
    pub const V4_TOTP: &str = "3c2b5e1a-0000-4000-8000-000000000003";
    pub const V4_PASSWORD_DESCRIPTION_TOTP: &str = "3c2b5e1a-0000-4000-8000-000000000004";
    pub const V5_PASSWORD_STRING: &str = "3c2b5e1a-0000-4000-8000-000000000005";
    pub const V5_DEFAULT: &str = "3c2b5e1a-0000-4000-8000-000000000006";
    pub const V5_DEFAULT_TOTP: &str = "3c2b5e1a-0000-4000-8000-000000000007";
    pub const V5_TOTP: &str = "3c2b5e1a-0000-4000-8000-000000000008";
    pub const V5_CUSTOM_FIELDS: &str = "3c2b5e1a-0000-4000-8000-000000000009";
    pub const V5_NOTE: &str = "3c2b5e1a-0000-4000-8000-00000000000a";
    pub const V5_PIN: &str = "3c2b5e1a-0000-4000-8000-00000000000b";
    pub const MYAPP_DB: &str = "3c2b5e1a-0000-4000-8000-00000000000c";
    pub const MYAPP_API: &str = "3c2b5e1a-0000-4000-8000-00000000000d";
    pub const CUSTOM_FIELD_HOST: &str = "9d1e4c22-0000-4000-8000-000000000001";
    pub const CUSTOM_FIELD_TOKEN: &str = "9d1e4c22-0000-4000-8000-000000000002";
}

/// The sample folders: `Production` (v4) and `Production/myapp` (v5).
pub fn sample_folders() -> Vec<SeedFolder> {
    vec![
        SeedFolder {
            id: ids::FOLDER_PRODUCTION.into(),
            name: "Production".into(),
            parent: None,
            encrypted: false,
        },
        SeedFolder {
            id: ids::FOLDER_MYAPP.into(),
            name: "myapp".into(),
            parent: Some(ids::FOLDER_PRODUCTION.into()),
            encrypted: true,
        },
    ]
}

const TOTP: &str = r#"{"secret_key":"JBSWY3DPEHPK3PXP","algorithm":"SHA1","digits":6,"period":30}"#;

/// One resource of every type, shared with every account, plus one
/// personal (user_key) resource per account. Sample data only.
pub fn sample_resources(readers: &[String]) -> Vec<SeedResource> {
    let shared = |id: &str, slug: &str, name: &str, mode: MetadataMode| SeedResource {
        id: id.into(),
        slug: slug.into(),
        name: name.into(),
        username: None,
        uris: Vec::new(),
        description: None,
        folder_id: None,
        secret: String::new(),
        custom_fields: Vec::new(),
        readers: readers.to_vec(),
        mode,
    };
    use MetadataMode::{Cleartext, Shared};
    let mut out = vec![
        SeedResource {
            username: Some("legacy".into()),
            uris: vec!["postgres://legacy-db.internal:5432".into()],
            description: Some("v4 cleartext description".into()),
            secret: "legacy-db-pass".into(),
            ..shared(ids::V4_PASSWORD_STRING, "password-string", "Legacy DB", Cleartext)
        },
        SeedResource {
            username: Some("mailer".into()),
            uris: vec!["smtp://mail.internal".into()],
            secret: r#"{"password":"smtp-pass-v4","description":"rotated monthly"}"#.into(),
            ..shared(ids::V4_PASSWORD_DESCRIPTION, "password-and-description", "SMTP relay", Cleartext)
        },
        SeedResource {
            uris: vec!["https://vpn.internal".into()],
            secret: format!(r#"{{"totp":{TOTP}}}"#),
            ..shared(ids::V4_TOTP, "totp", "VPN 2FA", Cleartext)
        },
        SeedResource {
            username: Some("root".into()),
            uris: vec!["https://backup.internal".into()],
            secret: format!(r#"{{"password":"backup-pass","description":null,"totp":{TOTP}}}"#),
            ..shared(ids::V4_PASSWORD_DESCRIPTION_TOTP, "password-description-totp", "Backup console", Cleartext)
        },
        SeedResource {
            username: Some("cache".into()),
            uris: vec!["redis://cache.internal".into()],
            secret: "redis-pass-v5".into(),
            ..shared(ids::V5_PASSWORD_STRING, "v5-password-string", "Redis", Shared)
        },
        SeedResource {
            username: Some("gitlab-admin".into()),
            uris: vec!["https://gitlab.internal".into(), "https://git.internal".into()],
            description: Some("metadata description".into()),
            folder_id: Some(ids::FOLDER_PRODUCTION.into()),
            // Characters every dotenv consumer must get back intact.
            secret: r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"g1t$lab \"pa ss\" `x` #1 ü","description":"secret description","custom_fields":[]}"#.into(),
            ..shared(ids::V5_DEFAULT, "v5-default", "GitLab", Shared)
        },
        SeedResource {
            username: Some("ops".into()),
            uris: vec!["https://cloud.internal".into()],
            secret: format!(r#"{{"object_type":"PASSBOLT_SECRET_DATA","password":"cloud-pass-v5","description":"","totp":{TOTP}}}"#),
            ..shared(ids::V5_DEFAULT_TOTP, "v5-default-with-totp", "Cloud console", Shared)
        },
        SeedResource {
            uris: vec!["https://2fa.internal".into()],
            secret: format!(r#"{{"object_type":"PASSBOLT_SECRET_DATA","totp":{TOTP}}}"#),
            ..shared(ids::V5_TOTP, "v5-totp-standalone", "Admin 2FA", Shared)
        },
        SeedResource {
            description: Some("custom fields resource".into()),
            custom_fields: vec![
                (ids::CUSTOM_FIELD_HOST.into(), "API host".into(), "text".into()),
                (ids::CUSTOM_FIELD_TOKEN.into(), "API token".into(), "password".into()),
            ],
            secret: format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","custom_fields":[{{"id":"{}","type":"text","secret_value":"api.internal"}},{{"id":"{}","type":"password","secret_value":"tok-123456"}}]}}"#,
                ids::CUSTOM_FIELD_HOST,
                ids::CUSTOM_FIELD_TOKEN
            ),
            ..shared(ids::V5_CUSTOM_FIELDS, "v5-custom-fields", "API credentials", Shared)
        },
        SeedResource {
            secret: r#"{"object_type":"PASSBOLT_SECRET_DATA","description":"line one\nline two"}"#.into(),
            ..shared(ids::V5_NOTE, "v5-note", "Recovery note", Shared)
        },
        SeedResource {
            description: Some("door code".into()),
            secret: r#"{"object_type":"PASSBOLT_SECRET_DATA","pin_code":"73019468","description":null}"#.into(),
            ..shared(ids::V5_PIN, "v5-pin-code", "Server room", Shared)
        },
        SeedResource {
            username: Some("myapp".into()),
            uris: vec!["postgres://db.internal/myapp".into()],
            folder_id: Some(ids::FOLDER_MYAPP.into()),
            secret: r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"myapp-db-pass","description":null}"#.into(),
            ..shared(ids::MYAPP_DB, "v5-default", "db password", Shared)
        },
        SeedResource {
            folder_id: Some(ids::FOLDER_MYAPP.into()),
            secret: r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"myapp-api-key","description":null}"#.into(),
            ..shared(ids::MYAPP_API, "v5-default", "api key", Shared)
        },
    ];
    for (i, owner) in readers.iter().enumerate() {
        out.push(SeedResource {
            username: Some("me".into()),
            secret: format!(
                r#"{{"object_type":"PASSBOLT_SECRET_DATA","password":"personal-pass-{i}","description":null}}"#
            ),
            readers: vec![owner.clone()],
            ..shared(
                &format!("3c2b5e1a-0000-4000-8001-{:012x}", i + 1),
                "v5-default",
                &format!("Personal {i}"),
                MetadataMode::Personal {
                    owner: owner.clone(),
                },
            )
        });
    }
    out
}
