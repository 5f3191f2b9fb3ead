//! Writing secrets back: one field of a resource's secret changed and
//! encrypted to every user who has access, as one `PUT`.
//!
//! The server checks almost nothing inside what it stores (a PUT without
//! `resource_type_id` turns a resource into `password-string`, secrets
//! are never checked against their recipient, v5 metadata is opaque to
//! it), so correctness is the client's: every recipient key is checked
//! before anything is sent, the resource must not have moved since it was
//! read, and every write is read back and compared.

use std::collections::HashSet;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::generate::PasswordPolicy;
use crate::metadata::Keyring;
use crate::model::{self, CustomFieldEntry};
use crate::pgp::{self, PgpError, PublicKey, normalize_fingerprint};
use crate::secret::{Field, Secret, type_has_field};
use crate::{Client, ClientError, decode};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no resource {id} is readable by this account")]
    NotFound { id: String },
    #[error(
        "resource {id} ({name:?}): this account may only read it; an owner must give it \"can update\" permission before its secret can be changed. Nothing was written"
    )]
    ReadOnly { id: String, name: String },
    #[error(
        "resource {id} ({name:?}) was changed by someone else (modified {read} when read, {now} before writing); nothing was written: run the command again to apply the change to the new version"
    )]
    Concurrent {
        id: String,
        name: String,
        read: String,
        now: String,
    },
    #[error(
        "resource {id}: the key of {user} ({fingerprint}) cannot receive the secret: {problem}. Nothing was written: the user must renew or replace their key in passbolt, or lose access, first"
    )]
    RecipientKey {
        id: String,
        user: String,
        fingerprint: String,
        problem: String,
    },
    #[error(
        "resource {id}: the server lists {user}'s key as {listed}, but the key it serves is {actual}; nothing was written"
    )]
    FingerprintMismatch {
        id: String,
        user: String,
        listed: String,
        actual: String,
    },
    #[error(
        "resource {id}: the server's list of users with access does not include this account; nothing was written"
    )]
    NotARecipient { id: String },
    #[error("resource {id} ({name:?}, {slug}): cannot set {field}: {detail}")]
    Field {
        id: String,
        name: String,
        slug: String,
        field: String,
        detail: String,
    },
    #[error("resource {id}: cannot read its current secret: {detail}")]
    Current { id: String, detail: String },
    #[error("resource {id}: cannot encrypt: {source}")]
    Crypto {
        id: String,
        #[source]
        source: PgpError,
    },
    #[error(
        "resource {id}: the server accepted the write, but reading it back shows {detail}; check the resource in passbolt"
    )]
    Verify { id: String, detail: String },
}

/// A user the secret is encrypted to, as the server listed them.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user_id: String,
    pub username: String,
    pub fingerprint: String,
    key: PublicKey,
}

/// One field to change in one resource's secret.
pub struct SetRequest<'a> {
    pub id: &'a str,
    pub field: &'a Field,
    pub value: &'a Secret,
    /// Send `"expired": null`: the server never clears the mark itself.
    pub clear_expired: bool,
    /// The `modified` the caller based the change on; the write is
    /// refused if the resource moved since. `None`: the one read here.
    pub expected_modified: Option<&'a str>,
}

/// What a write changed.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub modified_before: Option<String>,
    pub modified: Option<String>,
    pub recipients: Vec<Recipient>,
}

/// A resource row as a writer reads it: the listing's fields and the
/// password expiry mark.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Row {
    #[serde(flatten)]
    pub base: model::Resource,
    #[serde(default)]
    pub expired: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UserRow {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    gpgkey: Option<GpgkeyRow>,
}

#[derive(Debug, Deserialize)]
struct GpgkeyRow {
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    armored_key: Option<String>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    deleted: Option<bool>,
}

pub(crate) fn resource_path(id: &str, with_secret: bool) -> String {
    if with_secret {
        format!("/resources/{id}.json?contain%5Bsecret%5D=1")
    } else {
        format!("/resources/{id}.json")
    }
}

impl Client {
    /// The organisation's password policy, or `None` when the server has
    /// no such endpoint (before passbolt 4.1).
    pub async fn password_policy(&self) -> Result<Option<PasswordPolicy>, ClientError> {
        match self
            .session
            .get::<PasswordPolicy>("/password-policies/settings.json")
            .await
        {
            Ok(p) => Ok(Some(p)),
            Err(ClientError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// This account's copy of the resource's secret in `row`, decrypted.
    fn own_secret(&self, id: &str, row: &Row) -> Result<Zeroizing<Vec<u8>>, WriteError> {
        let armored = row
            .base
            .secrets
            .as_ref()
            .and_then(|s| s.first())
            .ok_or_else(|| WriteError::Current {
                id: id.into(),
                detail: "the server sent no secret for this account".into(),
            })?;
        self.session
            .user_key()
            .decrypt(armored.data.as_bytes())
            .map_err(|e| WriteError::Current {
                id: id.into(),
                detail: e.to_string(),
            })
    }

    pub(crate) async fn read_row(&self, id: &str, with_secret: bool) -> Result<Row, WriteError> {
        match self
            .session
            .get::<Row>(&resource_path(id, with_secret))
            .await
        {
            Ok(row) => Ok(row),
            Err(ClientError::Http {
                status: 404 | 403, ..
            }) => Err(WriteError::NotFound { id: id.into() }),
            Err(e) => Err(e.into()),
        }
    }

    /// The active users the server says have access to `id` (directly or
    /// through a group), each key checked: listed fingerprint, usable for
    /// encryption, not expired, not revoked. This is the exact set a
    /// secret update must carry.
    pub async fn recipients(&self, id: &str) -> Result<Vec<Recipient>, WriteError> {
        let path = format!(
            "/users.json?filter%5Bhas-access%5D={id}&filter%5Bis-active%5D=1&contain%5Bgpgkey%5D=1"
        );
        let users: Vec<UserRow> = self.session.get(&path).await?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            if !seen.insert(u.id.clone()) {
                continue;
            }
            out.push(check_user(id, u)?);
        }
        if !out
            .iter()
            .any(|r| r.user_id == self.session.options().user_id)
        {
            return Err(WriteError::NotARecipient { id: id.into() });
        }
        Ok(out)
    }

    /// Encrypts `plaintext` to every recipient, signed with this account's
    /// key, on the blocking pool: `(user_id, armored)` pairs.
    pub(crate) async fn seal_for(
        &self,
        id: &str,
        recipients: &[Recipient],
        plaintext: &Zeroizing<String>,
    ) -> Result<Vec<(String, String)>, WriteError> {
        let key = self.session.user_key().clone();
        let jobs: Vec<(String, PublicKey)> = recipients
            .iter()
            .map(|r| (r.user_id.clone(), r.key.clone()))
            .collect();
        let plaintext = plaintext.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            crate::par_map(jobs, |(user, pk)| {
                key.encrypt_and_sign(&pk, plaintext.as_bytes())
                    .map(|a| (user, a))
            })
        })
        .await
        .expect("encryption task");
        sealed
            .into_iter()
            .collect::<Result<Vec<_>, PgpError>>()
            .map_err(|source| WriteError::Crypto {
                id: id.into(),
                source,
            })
    }

    /// Decodes a row's metadata (name, custom field entries).
    pub(crate) async fn row_metadata(
        &self,
        row: &model::Resource,
        slug: &str,
    ) -> Result<(crate::secret::Resource, Vec<CustomFieldEntry>), WriteError> {
        let keyring = match (&row.metadata, row.metadata_key_type.as_deref()) {
            (Some(_), Some("shared_key")) | (Some(_), None) => {
                let key_id = row.metadata_key_id.clone().unwrap_or_default();
                self.keyring(&[key_id.as_str()]).await?
            }
            _ => Keyring::default(),
        };
        decode::decode_metadata(row, slug, None, &keyring, self.session.user_key()).map_err(|e| {
            WriteError::Current {
                id: row.id.clone(),
                detail: e.to_string(),
            }
        })
    }

    /// Changes one field of a resource's secret for every user with
    /// access. Nothing is written when a check fails; the write is read
    /// back and compared before this returns.
    pub async fn set_field(&self, req: SetRequest<'_>) -> Result<Written, WriteError> {
        let id = req.id.to_ascii_lowercase();
        let row = self.read_row(&id, true).await?;
        let type_id = row.base.resource_type_id.clone();
        let slug = self
            .slugs(&[type_id.as_str()])
            .await?
            .get(&type_id)
            .cloned()
            .ok_or_else(|| WriteError::Current {
                id: id.clone(),
                detail: format!("unknown resource type id {type_id}"),
            })?;
        let (meta, custom) = self.row_metadata(&row.base, &slug).await?;
        let field_err = |detail: String| WriteError::Field {
            id: id.clone(),
            name: meta.name.clone(),
            slug: slug.clone(),
            field: req.field.to_string(),
            detail,
        };
        let old = self.own_secret(&id, &row)?;
        let new = apply_field(&slug, &old, req.field, req.value, &custom).map_err(field_err)?;
        let base_modified = match req.expected_modified {
            Some(m) => Some(m.to_string()),
            None => row.base.modified.clone(),
        };
        let recipients = self.recipients(&id).await?;
        let secrets = self.seal_for(&id, &recipients, &new).await?;

        // The last look before writing: someone else's edit since the read
        // would be overwritten without ever being seen.
        let now = self.read_row(&id, false).await?;
        if now.base.modified != base_modified {
            return Err(WriteError::Concurrent {
                id: id.clone(),
                name: meta.name.clone(),
                read: base_modified.unwrap_or_default(),
                now: now.base.modified.unwrap_or_default(),
            });
        }

        let mut body = json!({
            // Without it the server turns the resource into password-string.
            "resource_type_id": type_id,
            "secrets": secrets
                .iter()
                .map(|(user, data)| json!({"user_id": user, "data": data}))
                .collect::<Vec<_>>(),
        });
        if let Some(m) = &row.base.metadata {
            // v5 is decided by the request: the metadata goes with the
            // secrets, unchanged.
            body["metadata"] = json!(m);
            body["metadata_key_id"] = json!(row.base.metadata_key_id);
            body["metadata_key_type"] = json!(row.base.metadata_key_type);
        }
        if req.clear_expired {
            body["expired"] = Value::Null;
        }
        let path = format!("/resources/{id}.json");
        let sent: Result<Value, ClientError> =
            self.session.send_json(Method::PUT, &path, &body).await;
        match sent {
            Ok(_) => {}
            Err(ClientError::Http { status: 403, .. }) => {
                return Err(WriteError::ReadOnly {
                    id,
                    name: meta.name,
                });
            }
            Err(ClientError::Http { status: 404, .. }) => {
                return Err(WriteError::NotFound { id });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(resource_id = %id, field = %req.field, recipients = recipients.len(), "secret updated");

        let after = self.read_row(&id, true).await?;
        verify_unchanged(&id, &row, &after, req.clear_expired)?;
        let back = after
            .base
            .secrets
            .as_ref()
            .and_then(|s| s.first())
            .ok_or_else(|| WriteError::Verify {
                id: id.clone(),
                detail: "no secret for this account".into(),
            })?;
        let plain = self
            .session
            .user_key()
            .decrypt(back.data.as_bytes())
            .map_err(|e| WriteError::Verify {
                id: id.clone(),
                detail: format!("a secret that does not decrypt ({e})"),
            })?;
        if plain.as_slice() != new.as_bytes() {
            return Err(WriteError::Verify {
                id,
                detail: "a secret other than the one sent".into(),
            });
        }
        Ok(Written {
            id,
            name: meta.name,
            slug,
            modified_before: row.base.modified,
            modified: after.base.modified,
            recipients,
        })
    }
}

/// Everything but the secret (and `modified`) must read back as it was:
/// type, v5 metadata and its key, v4 fields, folder, and the expiry mark
/// unless it was cleared.
fn verify_unchanged(id: &str, before: &Row, after: &Row, cleared: bool) -> Result<(), WriteError> {
    let (b, a) = (&before.base, &after.base);
    let mut changed = Vec::new();
    let mut check = |what: &str, same: bool| {
        if !same {
            changed.push(what.to_string());
        }
    };
    check("resource_type_id", b.resource_type_id == a.resource_type_id);
    check("metadata", b.metadata == a.metadata);
    check("metadata_key_id", b.metadata_key_id == a.metadata_key_id);
    check(
        "metadata_key_type",
        b.metadata_key_type == a.metadata_key_type,
    );
    check("name", b.name == a.name);
    check("username", b.username == a.username);
    check("uri", b.uri == a.uri);
    check("description", b.description == a.description);
    check("folder_parent_id", b.folder_parent_id == a.folder_parent_id);
    if cleared {
        check("expired (not cleared)", after.expired.is_none());
    } else {
        check("expired", before.expired == after.expired);
    }
    if changed.is_empty() {
        Ok(())
    } else {
        Err(WriteError::Verify {
            id: id.into(),
            detail: format!("changed {}", changed.join(", ")),
        })
    }
}

/// The plaintext `old` with `field` set to `value`, everything else kept
/// as it was (unknown keys included). Errors never quote a value.
pub fn apply_field(
    slug: &str,
    old: &[u8],
    field: &Field,
    value: &Secret,
    meta_custom: &[CustomFieldEntry],
) -> Result<Zeroizing<String>, String> {
    match field {
        Field::Name | Field::Username | Field::Uri => {
            return Err("it is metadata, not part of the secret; set changes secrets only".into());
        }
        Field::TotpUri => {
            return Err("totp_uri is derived; set the seed with --field totp".into());
        }
        _ => {}
    }
    if !type_has_field(slug, field) {
        return Err(format!("resources of type {slug} have no {field} field"));
    }
    if matches!(slug, "password-string" | "v5-password-string") {
        // The secret is the bare password; a description is metadata.
        if *field != Field::Password {
            return Err(format!(
                "the secret of a {slug} resource is its password alone; its {field} is metadata"
            ));
        }
        return Ok(Zeroizing::new(value.expose().to_string()));
    }
    let text =
        std::str::from_utf8(old).map_err(|_| "the current secret is not UTF-8".to_string())?;
    let mut data: serde_json::Map<String, Value> = if text.trim().is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("the current secret is not a JSON object ({e})"))?
    };
    if slug.starts_with("v5-") && !data.contains_key("object_type") {
        data.insert("object_type".into(), json!("PASSBOLT_SECRET_DATA"));
    }
    let v = json!(value.expose());
    match field {
        Field::Password => {
            data.insert("password".into(), v);
        }
        Field::Description | Field::Note => {
            data.insert("description".into(), v);
        }
        Field::Pin => {
            data.insert("pin_code".into(), v);
        }
        Field::Totp => {
            let seed: String = value
                .expose()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase();
            if seed.is_empty()
                || !seed
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c) || c == '=')
            {
                return Err("a TOTP seed must be base32 (A-Z, 2-7)".into());
            }
            let totp = data
                .entry("totp")
                .or_insert_with(|| json!({"algorithm": "SHA1", "digits": 6, "period": 30}));
            if !totp.is_object() {
                *totp = json!({"algorithm": "SHA1", "digits": 6, "period": 30});
            }
            totp["secret_key"] = json!(seed);
        }
        Field::Custom(label) => {
            let entry = meta_custom
                .iter()
                .find(|c| c.metadata_key.as_deref() == Some(label.as_str()))
                .ok_or_else(|| {
                    format!(
                        "its metadata declares no custom field labelled {label:?}; adding one changes metadata, which set does not"
                    )
                })?;
            let list = data.entry("custom_fields").or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            let list = list.as_array_mut().expect("made an array");
            match list.iter_mut().find(|c| c["id"] == json!(entry.id)) {
                Some(c) => c["secret_value"] = v,
                None => list.push(json!({
                    "id": entry.id,
                    "type": entry.kind.clone().unwrap_or_else(|| "text".into()),
                    "secret_value": v,
                })),
            }
        }
        Field::Name | Field::Username | Field::Uri | Field::TotpUri => {
            unreachable!("refused above")
        }
    }
    let out = serde_json::to_string(&data).map_err(|e| e.to_string())?;
    Ok(Zeroizing::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(slug: &str, old: &str, field: &str, value: &str) -> Result<Value, String> {
        let custom: Vec<CustomFieldEntry> =
            serde_json::from_str(r#"[{"id":"c1","type":"password","metadata_key":"api"}]"#)
                .unwrap();
        let out = apply_field(
            slug,
            old.as_bytes(),
            &Field::parse(field).unwrap(),
            &Secret::new(value),
            &custom,
        )?;
        Ok(serde_json::from_str(&out).unwrap_or(Value::String(out.to_string())))
    }

    #[test]
    fn changes_one_field_and_keeps_the_rest() {
        let v = set(
            "v5-default-with-totp",
            r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"a","description":"d","totp":{"secret_key":"JBSW","algorithm":"SHA256","digits":8,"period":60},"future":1}"#,
            "password",
            "b",
        )
        .unwrap();
        assert_eq!(v["password"], "b");
        assert_eq!(v["description"], "d");
        assert_eq!(v["totp"]["algorithm"], "SHA256");
        assert_eq!(v["future"], 1);
        let v = set("v5-default-with-totp", &v.to_string(), "totp", "gezd gnbv").unwrap();
        assert_eq!(v["totp"]["secret_key"], "GEZDGNBV");
        assert_eq!(v["totp"]["digits"], 8);
        assert_eq!(v["password"], "b");
    }

    #[test]
    fn string_types_are_the_value() {
        assert_eq!(
            set("password-string", "old", "password", "new").unwrap(),
            Value::String("new".into())
        );
        assert!(set("password-string", "old", "description", "new").is_err());
    }

    #[test]
    fn custom_fields_by_label_and_notes_and_pins() {
        let v = set(
            "v5-custom-fields",
            r#"{"object_type":"PASSBOLT_SECRET_DATA","custom_fields":[{"id":"c1","type":"password","secret_value":"x"}]}"#,
            "custom:api",
            "y",
        )
        .unwrap();
        assert_eq!(v["custom_fields"][0]["secret_value"], "y");
        assert!(set("v5-custom-fields", "{}", "custom:nope", "y").is_err());
        let v = set("v5-note", r#"{"description":"n"}"#, "note", "m").unwrap();
        assert_eq!(v["description"], "m");
        assert_eq!(v["object_type"], "PASSBOLT_SECRET_DATA");
        let v = set("v5-pin-code", r#"{"pin_code":"1"}"#, "pin", "2").unwrap();
        assert_eq!(v["pin_code"], "2");
    }

    #[test]
    fn refusals_never_quote_the_value() {
        for (slug, field) in [
            ("v5-default", "username"),
            ("v5-default", "totp_uri"),
            ("v5-note", "password"),
            ("v5-default-with-totp", "totp"),
        ] {
            let e = set(slug, "{}", field, "s3cr3t-value").unwrap_err();
            assert!(!e.contains("s3cr3t-value"), "{e}");
        }
        let e = set("v5-default", "not json s3cr3t", "password", "v").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}

/// A resource to create: its metadata and its password.
pub struct NewResource<'a> {
    pub name: &'a str,
    pub username: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub folder_parent_id: Option<&'a str>,
    pub password: &'a Secret,
}

/// A created resource.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub slug: String,
    /// Users the secret was encrypted to, the creator included.
    pub recipients: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct TypesSettings {
    #[serde(default)]
    default_resource_types: Option<String>,
    #[serde(default)]
    allow_creation_of_v5_resources: bool,
    #[serde(default)]
    allow_creation_of_v4_resources: bool,
}

#[derive(Debug, Deserialize)]
struct GroupRow {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Changes {
    changes: ChangeSet,
}

#[derive(Debug, Deserialize)]
struct ChangeSet {
    #[serde(default)]
    added: Vec<Value>,
}

impl Client {
    /// Whether new resources should be v5: the organisation's metadata
    /// settings ask for it (`default_resource_types`) and allow it; v4 on
    /// servers before v5 (no `/metadata` endpoints) or where only v4 is
    /// allowed.
    async fn create_v5(&self) -> Result<bool, ClientError> {
        match self
            .session
            .get::<TypesSettings>("/metadata/types/settings.json")
            .await
        {
            Ok(s) => Ok(match s.default_resource_types.as_deref() {
                Some("v5") => s.allow_creation_of_v5_resources || !s.allow_creation_of_v4_resources,
                _ => !s.allow_creation_of_v4_resources && s.allow_creation_of_v5_resources,
            }),
            Err(ClientError::Http { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn type_id_of(&self, slug: &str) -> Result<String, WriteError> {
        self.slugs(&[])
            .await?
            .into_iter()
            .find(|(_, s)| s == slug)
            .map(|(id, _)| id)
            .ok_or_else(|| {
                WriteError::Client(ClientError::Malformed {
                    path: "/resource-types.json".into(),
                    detail: format!("the server has no {slug} resource type"),
                })
            })
    }

    /// The id of the folder at `path` (`Parent/Child`), if the account
    /// sees one.
    pub async fn folder_id(&self, path: &str) -> Result<Option<String>, ClientError> {
        let paths = self.folder_paths().await?;
        let mut found: Vec<&String> = paths
            .iter()
            .filter(|(_, p)| p.as_str() == path)
            .map(|(id, _)| id)
            .collect();
        found.sort();
        Ok(found.first().map(|s| s.to_string()))
    }

    /// The id of the active user whose username is `email`.
    pub async fn user_id_by_email(&self, email: &str) -> Result<Option<String>, ClientError> {
        let path = format!("/users.json?filter%5Bsearch%5D={}", url_encode(email));
        let users: Vec<UserRow> = self.session.get(&path).await?;
        Ok(users
            .into_iter()
            .find(|u| {
                u.username
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(email))
            })
            .map(|u| u.id))
    }

    /// The id of the group named `name`.
    pub async fn group_id_by_name(&self, name: &str) -> Result<Option<String>, ClientError> {
        let groups: Vec<GroupRow> = self.session.get("/groups.json").await?;
        Ok(groups.into_iter().find(|g| g.name == name).map(|g| g.id))
    }

    /// Creates a personal resource of the server's default format (v5
    /// with the shared metadata key, signed by this account, when the
    /// metadata settings ask for it; v4 otherwise), then reads it back.
    pub async fn create(&self, new: NewResource<'_>) -> Result<Created, WriteError> {
        let v5 = self.create_v5().await?;
        let slug = if v5 {
            "v5-default"
        } else {
            "password-and-description"
        };
        let type_id = self.type_id_of(slug).await?;
        let key = self.session.user_key().clone();
        let secret = Zeroizing::new(if v5 {
            json!({"object_type": "PASSBOLT_SECRET_DATA", "password": new.password.expose(),
                   "description": null, "custom_fields": null})
            .to_string()
        } else {
            json!({"password": new.password.expose(), "description": ""}).to_string()
        });
        let own = key
            .encrypt_and_sign(&key.public(), secret.as_bytes())
            .map_err(|source| WriteError::Crypto {
                id: "(new)".into(),
                source,
            })?;
        let mut body = json!({
            "resource_type_id": type_id,
            "folder_parent_id": new.folder_parent_id,
            "expired": null,
            "secrets": [{"data": own}],
        });
        let mut sent_metadata = None;
        if v5 {
            let listed = crate::api::metadata_keys(&self.session).await?;
            let current = listed
                .iter()
                .filter(|k| k.expired.is_none() && k.deleted.is_none())
                .find_map(|k| {
                    let pk = PublicKey::from_armor(k.armored_key.as_deref()?.as_bytes()).ok()?;
                    (pk.fingerprint() == normalize_fingerprint(&k.fingerprint))
                        .then(|| (k.id.clone(), pk))
                })
                .ok_or_else(|| {
                    WriteError::Client(ClientError::Malformed {
                        path: "/metadata/keys.json".into(),
                        detail: "no active shared metadata key to encrypt the new resource's metadata with".into(),
                    })
                })?;
            let metadata = json!({
                "object_type": "PASSBOLT_RESOURCE_METADATA",
                "resource_type_id": type_id,
                "name": new.name,
                "username": new.username,
                "uris": new.uri.into_iter().collect::<Vec<_>>(),
                "description": null,
                "icon": null,
                "custom_fields": null,
            });
            // Signed by the account, as the browser extension does; never
            // by the metadata key.
            let armored = key
                .encrypt_and_sign(&current.1, metadata.to_string().as_bytes())
                .map_err(|source| WriteError::Crypto {
                    id: "(new)".into(),
                    source,
                })?;
            body["metadata"] = json!(armored);
            body["metadata_key_id"] = json!(current.0);
            body["metadata_key_type"] = json!("shared_key");
            sent_metadata = Some(armored);
        } else {
            body["name"] = json!(new.name);
            body["username"] = json!(new.username);
            body["uri"] = json!(new.uri);
        }
        let row: Row = self
            .session
            .send_json(Method::POST, "/resources.json", &body)
            .await?;
        let id = row.base.id.clone();
        tracing::info!(resource_id = %id, %slug, "resource created");
        let back = self.read_row(&id, true).await?;
        let plain = back
            .base
            .secrets
            .as_ref()
            .and_then(|s| s.first())
            .and_then(|s| key.decrypt(s.data.as_bytes()).ok());
        if plain.as_deref().map(Vec::as_slice) != Some(secret.as_bytes())
            || back.base.metadata != sent_metadata
            || back.base.resource_type_id != type_id
        {
            return Err(WriteError::Verify {
                id,
                detail: "a resource other than the one sent".into(),
            });
        }
        Ok(Created {
            id,
            slug: slug.into(),
            recipients: vec![self.session.options().user_id.clone()],
        })
    }

    /// Gives `users` and `groups` read access to `id`, with the secret
    /// encrypted to every user who gains access (each key checked), then
    /// checks that the server's list of users with access is what was
    /// shared. Returns that list.
    pub async fn share_read(
        &self,
        id: &str,
        users: &[String],
        groups: &[String],
    ) -> Result<Vec<Recipient>, WriteError> {
        let mut permissions: Vec<Value> = users
            .iter()
            .filter(|u| **u != self.session.options().user_id)
            .map(|u| json!({"aro": "User", "aro_foreign_key": u, "type": 1}))
            .collect();
        permissions.extend(
            groups
                .iter()
                .map(|g| json!({"aro": "Group", "aro_foreign_key": g, "type": 1})),
        );
        if permissions.is_empty() {
            return self.recipients(id).await;
        }
        let body = json!({"permissions": permissions});
        let simulated: Changes = self
            .session
            .send_json(
                Method::POST,
                &format!("/share/simulate/resource/{id}.json"),
                &body,
            )
            .await?;
        let added: Vec<String> = simulated
            .changes
            .added
            .iter()
            .filter_map(|a| a["User"]["id"].as_str().map(str::to_string))
            .collect();
        let mut rcpts = Vec::new();
        for user in &added {
            let row: UserRow = self.session.get(&format!("/users/{user}.json")).await?;
            rcpts.push(check_user(id, row)?);
        }
        let row = self.read_row(id, true).await?;
        let plain = self.own_secret(id, &row)?;
        let plain =
            Zeroizing::new(
                String::from_utf8(plain.to_vec()).map_err(|_| WriteError::Current {
                    id: id.into(),
                    detail: "the secret is not UTF-8".into(),
                })?,
            );
        let secrets = self.seal_for(id, &rcpts, &plain).await?;
        let mut body = body;
        body["secrets"] = json!(
            secrets
                .iter()
                .map(|(u, d)| json!({"user_id": u, "data": d}))
                .collect::<Vec<_>>()
        );
        let _: Value = self
            .session
            .send_json(Method::PUT, &format!("/share/resource/{id}.json"), &body)
            .await?;
        let now = self.recipients(id).await?;
        if let Some(missing) = added.iter().find(|u| !now.iter().any(|r| &r.user_id == *u)) {
            return Err(WriteError::Verify {
                id: id.into(),
                detail: format!("user {missing} without access after the share"),
            });
        }
        Ok(now)
    }
}

/// A listed user turned into a recipient, their key checked.
fn check_user(id: &str, u: UserRow) -> Result<Recipient, WriteError> {
    let user = u.username.clone().unwrap_or_else(|| u.id.clone());
    let problem = |fingerprint: &str, problem: &str| WriteError::RecipientKey {
        id: id.into(),
        user: user.clone(),
        fingerprint: fingerprint.into(),
        problem: problem.into(),
    };
    let Some(g) = u.gpgkey else {
        return Err(problem(
            "no key",
            "the server lists no OpenPGP key for them",
        ));
    };
    let listed = normalize_fingerprint(g.fingerprint.as_deref().unwrap_or_default());
    if g.deleted == Some(true) {
        return Err(problem(&listed, "the server marks the key deleted"));
    }
    if let Some(exp) = g.expires.as_deref()
        && chrono::DateTime::parse_from_rfc3339(exp).is_ok_and(|t| t <= chrono::Utc::now())
    {
        return Err(problem(&listed, &format!("the key expired on {exp}")));
    }
    let key = PublicKey::from_armor(g.armored_key.as_deref().unwrap_or_default().as_bytes())
        .map_err(|e| problem(&listed, &e.to_string()))?;
    if key.fingerprint() != listed {
        return Err(WriteError::FingerprintMismatch {
            id: id.into(),
            user,
            listed,
            actual: key.fingerprint(),
        });
    }
    pgp::check_encryption_key(&key).map_err(|e| problem(&listed, &e.to_string()))?;
    Ok(Recipient {
        user_id: u.id,
        username: user,
        fingerprint: listed,
        key,
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
