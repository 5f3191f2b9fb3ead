//! Resources and folders of the dev server, and the sample set that covers
//! every resource type of passbolt v5.12 in both metadata modes.

use std::collections::{HashMap, HashSet};

use super::DevServerError;
use passbolt_client::pgp::{self, PublicKey};

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

/// Metadata as stored: armored, with the key that encrypted it.
pub(crate) struct SealedMetadata {
    pub armored: String,
    /// A `metadata_keys.id` for `shared_key`, the owner's gpgkey id for
    /// `user_key`.
    pub key_id: String,
    pub key_type: &'static str,
}

/// The public keys encrypting needs, copied out of the server's state so
/// that many items encrypt in parallel without holding its lock.
pub(super) struct Recipients {
    pub accounts: HashMap<String, PublicKey>,
    /// The current (newest, not expired) shared metadata key.
    pub metadata_key_id: String,
    pub metadata_key: PublicKey,
}

impl Recipients {
    fn account(&self, id: &str) -> Result<&PublicKey, DevServerError> {
        self.accounts
            .get(id)
            .ok_or_else(|| DevServerError::NoAccount(id.to_string()))
    }

    fn shared(&self, plaintext: &serde_json::Value) -> Result<SealedMetadata, DevServerError> {
        Ok(SealedMetadata {
            armored: pgp::encrypt(&self.metadata_key, None, plaintext.to_string().as_bytes())
                .map_err(DevServerError::crypto)?,
            key_id: self.metadata_key_id.clone(),
            key_type: "shared_key",
        })
    }

    /// A v5 folder's metadata, encrypted with the shared metadata key.
    pub fn folder_metadata(
        &self,
        f: &SeedFolder,
    ) -> Result<Option<SealedMetadata>, DevServerError> {
        if !f.encrypted {
            return Ok(None);
        }
        let plaintext = serde_json::json!({
            "object_type": "PASSBOLT_FOLDER_METADATA",
            "name": f.name, "color": null, "description": null, "icon": null,
        });
        self.shared(&plaintext).map(Some)
    }

    /// A v5 resource's metadata, encrypted with the shared metadata key or
    /// the owner's key; `None` for v4 (cleartext) resources.
    pub fn resource_metadata(
        &self,
        r: &SeedResource,
    ) -> Result<Option<SealedMetadata>, DevServerError> {
        let type_id =
            type_id(&r.slug).ok_or_else(|| DevServerError::UnknownType(r.slug.clone()))?;
        if r.mode == MetadataMode::Cleartext {
            return Ok(None);
        }
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
        match &r.mode {
            MetadataMode::Personal { owner } => Ok(Some(SealedMetadata {
                armored: pgp::encrypt(self.account(owner)?, None, plaintext.to_string().as_bytes())
                    .map_err(DevServerError::crypto)?,
                // For personal items the key id is the owner's gpgkey id.
                key_id: gpgkey_id(owner),
                key_type: "user_key",
            })),
            _ => self.shared(&plaintext).map(Some),
        }
    }

    /// The secret encrypted for one reader.
    pub fn secret(&self, reader: &str, secret: &str) -> Result<String, DevServerError> {
        pgp::encrypt(self.account(reader)?, None, secret.as_bytes()).map_err(DevServerError::crypto)
    }

    /// The secret encrypted for each of its readers.
    pub fn secrets(&self, r: &SeedResource) -> Result<HashMap<String, String>, DevServerError> {
        r.readers
            .iter()
            .map(|reader| Ok((reader.clone(), self.secret(reader, &r.secret)?)))
            .collect()
    }
}

/// `f` over `items` on every core: seeding thousands of resources is
/// thousands of independent encryptions.
pub(super) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|chunk| s.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("encryption worker"))
            .collect()
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
    /// The parent folder of the generated set (`seed::generated`).
    pub const FOLDER_GENERATED: &str = "5f0c7a3e-0000-4000-8001-000000000000";

    /// The id of generated resource `gen-{i:05}` (from 1).
    pub fn generated(i: usize) -> String {
        format!("3c2b5e1a-0000-4000-8002-{i:012x}")
    }

    /// The id of generated folder `gen-{j:03}` (from 0).
    pub fn generated_folder(j: usize) -> String {
        format!("5f0c7a3e-0000-4000-8002-{j:012x}")
    }
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

/// Resources per generated folder: a dotenv target on one folder takes
/// this many variables.
pub const GENERATED_PER_FOLDER: usize = 500;

/// `n` resources for scale tests and benchmarks, readable by `readers`:
/// `gen-00001`, `gen-00002`, ... alternating v4 `password-and-description`
/// and v5 `v5-default` (shared metadata key), each with its own random
/// password, `GENERATED_PER_FOLDER` to a folder `gen-000`, `gen-001`, ...
/// (v5) inside one folder `Generated` (v4). Ids are deterministic
/// (`ids::generated`); nothing for `n == 0`.
pub fn generated(n: usize, readers: &[String]) -> (Vec<SeedFolder>, Vec<SeedResource>) {
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut folders = vec![SeedFolder {
        id: ids::FOLDER_GENERATED.into(),
        name: "Generated".into(),
        parent: None,
        encrypted: false,
    }];
    folders.extend((0..n.div_ceil(GENERATED_PER_FOLDER)).map(|j| SeedFolder {
        id: ids::generated_folder(j),
        name: format!("gen-{j:03}"),
        parent: Some(ids::FOLDER_GENERATED.into()),
        encrypted: true,
    }));
    let mut passwords = HashSet::with_capacity(n);
    let resources = (1..=n)
        .map(|i| {
            let password = loop {
                let p: String = std::iter::repeat_with(fastrand::alphanumeric)
                    .take(24)
                    .collect();
                if passwords.insert(p.clone()) {
                    break p;
                }
            };
            let v4 = i % 2 == 1;
            let (slug, mode, secret) = if v4 {
                (
                    "password-and-description",
                    MetadataMode::Cleartext,
                    serde_json::json!({"password": password, "description": null}),
                )
            } else {
                (
                    "v5-default",
                    MetadataMode::Shared,
                    serde_json::json!({"object_type": "PASSBOLT_SECRET_DATA", "password": password, "description": null}),
                )
            };
            SeedResource {
                id: ids::generated(i),
                slug: slug.into(),
                name: format!("gen-{i:05}"),
                username: Some(format!("user-{i:05}")),
                uris: Vec::new(),
                description: None,
                folder_id: Some(ids::generated_folder((i - 1) / GENERATED_PER_FOLDER)),
                secret: secret.to_string(),
                custom_fields: Vec::new(),
                readers: readers.to_vec(),
                mode,
            }
        })
        .collect();
    (folders, resources)
}

/// A fresh TOTP seed, base32, as passbolt's TOTP setup would make one
/// (20 bytes, about 150 of their bits random: v4 UUIDs fix a few).
pub fn random_totp_seed() -> zeroize::Zeroizing<String> {
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(32));
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let secret = totp_rs::Secret::from(bytes[..20].to_vec());
    zeroize::Zeroizing::new(secret.to_base32())
}
