//! The write endpoints and what a writer reads first: users with access,
//! groups, password policies, metadata settings; create, update and share
//! of resources with the real 5.12 server's checks, in its order and with
//! its messages (see the write reference). Like the real server it never
//! decrypts a secret: it checks shapes, recipients of v5 metadata by key
//! id, who holds a secret, and permissions.

#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::revisions::{Revisions, max_revisions};
use crate::seed::{MetadataMode, SeedResource, gpgkey_id};
use crate::store::{access, permission_of};
use crate::{Aro, Data, OWNER, StoredPermission, StoredSecret, UPDATE};
use passbolt_client::pgp;

const INVALID: &str = "Could not validate resource data.";
const NO_RESOURCE: &str = "The resource does not exist.";
const SECRETS_PROVIDED_UPDATE: &str =
    "The secrets should contain the secrets of all the users having access to the resource.";
const SECRETS_PROVIDED_SHARE: &str =
    "The secrets of all the users having access to the resource are required.";
const V4_TYPES: &[&str] = &[
    "password-string",
    "password-and-description",
    "totp",
    "password-description-totp",
];
const V5_TYPES: &[&str] = &[
    "v5-password-string",
    "v5-default",
    "v5-totp-standalone",
    "v5-default-with-totp",
    "v5-custom-fields",
    "v5-note",
    "v5-pin-code",
];

pub(crate) fn default_password_policy() -> Value {
    json!({"default_generator":"password","password_generator_settings":{"length":18,"mask_upper":true,"mask_lower":true,
        "mask_digit":true,"mask_parenthesis":true,"mask_emoji":false,"mask_char1":true,"mask_char2":true,"mask_char3":true,
        "mask_char4":true,"mask_char5":true,"exclude_look_alike_chars":true},"passphrase_generator_settings":{"words":9,
        "word_separator":" ","word_case":"lowercase"},"source":"default","external_dictionary_check":true})
}

pub(crate) fn default_metadata_types_settings() -> Value {
    json!({"default_resource_types":"v5","default_folder_type":"v4",
        "default_tag_type":"v4","default_comment_type":"v4",
        "allow_creation_of_v5_resources":true,"allow_creation_of_v5_folders":true,
        "allow_creation_of_v5_tags":false,"allow_creation_of_v5_comments":false,
        "allow_creation_of_v4_resources":true,"allow_creation_of_v4_folders":true,
        "allow_creation_of_v4_tags":true,"allow_creation_of_v4_comments":true,
        "allow_v5_v4_downgrade":false,"allow_v4_v5_upgrade":true})
}

fn invalid(state: &State, path: &str, body: Value) -> Response {
    envelope(state, StatusCode::BAD_REQUEST, path, INVALID, body)
}

/// The GET endpoints a writer needs; `None` for every other path.
pub(super) fn read(state: &State, path: &str, query: &Query, user_id: &str) -> Option<Response> {
    Some(match path {
        "/users.json" => users_index(state, path, query, user_id),
        "/groups.json" => {
            let items: Vec<Value> = state
                .data()
                .groups
                .values()
                .map(|g| json!({"id": g.id, "name": g.name, "deleted": false, "created": "", "modified": ""}))
                .collect();
            success(state, path, Value::Array(items))
        }
        "/password-policies/settings.json" => match state.data().password_policy.clone() {
            Some(p) => success(state, path, p),
            None => error(
                state,
                StatusCode::NOT_FOUND,
                path,
                "The requested address was not found.",
            ),
        },
        "/password-expiry/settings.json" => {
            let v = state.data().password_expiry_settings.clone();
            success(state, path, v)
        }
        "/metadata/types/settings.json" => {
            let v = state.data().metadata_types_settings.clone();
            success(state, path, v)
        }
        "/metadata/keys/settings.json" => {
            let v = state.data().metadata_keys_settings.clone();
            success(state, path, v)
        }
        _ => {
            let id = path.strip_prefix("/users/")?.strip_suffix(".json")?;
            if id == "me" {
                return None;
            }
            let data = state.data();
            let user = data.accounts.iter().find(|a| a.id == id).map(user_json);
            drop(data);
            match user {
                Some(u) => success(state, path, u),
                None => error(
                    state,
                    StatusCode::NOT_FOUND,
                    path,
                    "The user does not exist.",
                ),
            }
        }
    })
}

fn user_json(a: &crate::Account) -> Value {
    let fp = a.key.fingerprint();
    let expires = a.key.expires().map(|t| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .format("%Y-%m-%dT%H:%M:%S+00:00")
            .to_string()
    });
    json!({
        "id": a.id, "username": a.username, "active": true, "deleted": false, "disabled": null,
        "role": {"name": "user"},
        "profile": {"first_name": a.username, "last_name": ""},
        "gpgkey": {
            "id": gpgkey_id(&a.id), "user_id": a.id, "armored_key": a.key.armored(),
            "fingerprint": fp, "key_id": &fp[fp.len().saturating_sub(16)..],
            "expires": expires, "deleted": false,
        },
    })
}

/// `/users.json`: every active user, or those having access to one
/// resource (`filter[has-access]`, the caller needing access too), or
/// those matching `filter[search]`.
fn users_index(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let has_access = query.values("filter[has-access]");
    let search = query
        .values("filter[search]")
        .first()
        .map(|s| s.to_lowercase());
    let data = state.data();
    let mut users: Vec<&crate::Account> = data.accounts.iter().collect();
    if has_access.len() > 1 {
        drop(data);
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "Multiple has-access filters are not supported.",
        );
    }
    if let Some(id) = has_access.first() {
        let id = id.to_ascii_lowercase();
        let Some(r) = data.resources.get(&id) else {
            drop(data);
            return error(
                state,
                StatusCode::FORBIDDEN,
                path,
                "This operation is not allowed for this user.",
            );
        };
        if permission_of(&r.permissions, &data.groups, user_id).is_none() {
            drop(data);
            return error(
                state,
                StatusCode::FORBIDDEN,
                path,
                "This operation is not allowed for this user.",
            );
        }
        let with = access(&r.permissions, &data.groups);
        users.retain(|a| with.contains(&a.id));
    }
    if let Some(s) = search {
        users.retain(|a| a.username.to_lowercase().contains(&s));
    }
    let items: Vec<Value> = users.into_iter().map(user_json).collect();
    drop(data);
    success(state, path, Value::Array(items))
}

/// PUT and POST routes.
pub(super) fn write(
    state: &State,
    method: &Method,
    path: &str,
    user_id: &str,
    body: &Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let Some(body) = parsed else {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "The data is required.",
        );
    };
    if *method == Method::POST && path == "/resources.json" {
        return create(state, path, user_id, &body);
    }
    let tail = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|p| p.strip_suffix(".json"))
    };
    if *method == Method::PUT
        && let Some(id) = tail("/resources/")
    {
        return update(state, path, id, user_id, &body);
    }
    if *method == Method::POST
        && let Some(id) = tail("/share/simulate/resource/")
    {
        return share(state, path, id, user_id, &body, true);
    }
    if *method == Method::PUT
        && let Some(id) = tail("/share/resource/")
    {
        return share(state, path, id, user_id, &body, false);
    }
    error(
        state,
        StatusCode::NOT_FOUND,
        path,
        "The requested address was not found.",
    )
}

fn present(body: &Value, key: &str) -> bool {
    body.get(key).is_some_and(|v| !v.is_null())
}

/// §2.2 step 2: a v5 body carries all three metadata fields and none of
/// the v4 ones. `Ok(true)` for v5.
fn payload_shape(state: &State, path: &str, body: &Value) -> Result<bool, Response> {
    if state.data().faults.pre_v5 {
        return Ok(false);
    }
    let v5 = ["metadata", "metadata_key_id", "metadata_key_type"];
    let given = v5.iter().filter(|k| present(body, k)).count();
    if given == 0 {
        return Ok(false);
    }
    if given < 3 {
        return Err(error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "Few fields are missing for the V5.",
        ));
    }
    if ["name", "username", "uri", "description"]
        .iter()
        .any(|k| present(body, k))
    {
        return Err(error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "V4 related fields are not supported for V5.",
        ));
    }
    Ok(true)
}

fn armored_message(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let s = s.trim();
        s.starts_with("-----BEGIN PGP MESSAGE-----") && s.ends_with("-----END PGP MESSAGE-----")
    })
}

/// The type slug a body names (`password-string` when it names none), or
/// the validation error.
fn body_type(state: &State, path: &str, body: &Value, v5: bool) -> Result<&'static str, Response> {
    let id = match body.get("resource_type_id") {
        None | Some(Value::Null) => crate::seed::type_id("password-string").expect("known"),
        Some(v) => v.as_str().unwrap_or_default(),
    };
    let slug = crate::seed::RESOURCE_TYPES
        .iter()
        .find(|(tid, _, _)| *tid == id)
        .map(|(_, slug, _)| *slug);
    let (list, text) = if v5 {
        (
            V5_TYPES,
            "v5-password-string, v5-default, v5-totp-standalone, v5-default-with-totp, v5-custom-fields, v5-note, v5-pin-code",
        )
    } else {
        (
            V4_TYPES,
            "password-string, password-and-description, totp, password-description-totp",
        )
    };
    match slug {
        Some(s) if list.contains(&s) => Ok(s),
        Some(_) => Err(invalid(
            state,
            path,
            json!({"resource_type_id": {"inList": format!("The resource type should be one of the following: {text}.")}}),
        )),
        None => Err(invalid(
            state,
            path,
            json!({"resource_type_id": {"resource_type_exists": "The resource type does not exist."}}),
        )),
    }
}

/// What a v5 body's metadata is encrypted with, once checked (§2.2 step 5,
/// §2.3): exactly one recipient, the claimed key.
fn check_metadata(
    state: &State,
    path: &str,
    body: &Value,
    user_id: &str,
    personal_ok: bool,
) -> Result<crate::seed::SealedMetadata, Response> {
    let armored = body["metadata"].clone();
    let key_id = body["metadata_key_id"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let key_type = match body["metadata_key_type"].as_str() {
        Some("shared_key") => "shared_key",
        Some("user_key") => "user_key",
        _ => {
            return Err(invalid(
                state,
                path,
                json!({"metadata_key_type": {"inList": "The metadata key type should be one of the following: user_key, shared_key."}}),
            ));
        }
    };
    if !armored_message(&armored) {
        return Err(invalid(
            state,
            path,
            json!({"metadata": {"isValidOpenPGPMessage": "The message should be a valid ASCII-armored OpenPGP message."}}),
        ));
    }
    if !is_uuid(&key_id) {
        return Err(invalid(
            state,
            path,
            json!({"metadata_key_id": {"uuid": "The metadata key identifier should be a valid UUID."}}),
        ));
    }
    let data = state.data();
    if key_type == "user_key"
        && data.metadata_keys_settings["allow_usage_of_personal_keys"] != json!(true)
    {
        drop(data);
        return Err(invalid(
            state,
            path,
            json!({"metadata_key_type": {"isMetadataKeyTypeAllowedBySettings": "The settings selected by your administrator prevent from using that key type."}}),
        ));
    }
    if key_type == "user_key" && !personal_ok {
        drop(data);
        return Err(invalid(
            state,
            path,
            json!({"metadata_key_type": {"isValidMetadataKeyType": "A resource of type personal cannot be shared with other users or a group."}}),
        ));
    }
    let key = if key_type == "shared_key" {
        let Some(k) = data.metadata_keys.iter().find(|k| k.id == key_id) else {
            drop(data);
            return Err(invalid(
                state,
                path,
                json!({"metadata_key_id": {"isMetadataKeyExists": "The metadata key does not exist or was deleted."}}),
            ));
        };
        if k.expired.is_some() {
            drop(data);
            return Err(invalid(
                state,
                path,
                json!({"metadata_key_id": {"isMetadataKeyNotExpired": "The metadata key is marked as expired."}}),
            ));
        }
        k.public.clone()
    } else {
        let Some(a) = data.accounts.iter().find(|a| a.id == user_id) else {
            drop(data);
            return Err(error(state, StatusCode::NOT_FOUND, path, NO_RESOURCE));
        };
        if key_id != gpgkey_id(user_id) {
            drop(data);
            return Err(invalid(
                state,
                path,
                json!({"metadata_key_id": {"isMetadataKeyExists": "The metadata key does not exist or was deleted."}}),
            ));
        }
        if a.key.expires().is_some() {
            drop(data);
            return Err(invalid(
                state,
                path,
                json!({"metadata_key_id": {"isMetadataKeyNotExpired": "The metadata key is marked as expired."}}),
            ));
        }
        a.key.clone()
    };
    drop(data);
    let text = armored.as_str().unwrap_or_default();
    let ids = key.encryption_key_ids();
    let ok = matches!(
        pgp::message_recipients(text.as_bytes()).as_deref(),
        Ok([Some(only)]) if ids.iter().any(|k| k == only)
    );
    if !ok {
        return Err(invalid(
            state,
            path,
            json!({"metadata": {"isValidEncryptedResourceMetadata": "The resource metadata provided can not be decrypted."}}),
        ));
    }
    Ok(crate::seed::SealedMetadata {
        armored: text.to_string(),
        key_id,
        key_type,
    })
}

/// `secrets[i].data` must each be an armored message.
fn check_secret_data(state: &State, path: &str, secrets: &[Value]) -> Result<(), Response> {
    let errors: Vec<Value> = secrets
        .iter()
        .map(|s| {
            if armored_message(&s["data"]) {
                json!({})
            } else {
                json!({"data": {"isValidOpenPGPMessage": "The message should be a valid ASCII-armored OpenPGP message."}})
            }
        })
        .collect();
    if errors.iter().any(|e| e != &json!({})) {
        return Err(invalid(state, path, json!({"secrets": errors})));
    }
    Ok(())
}

/// The decryptable content of client-written metadata, for the dev
/// server's own helpers (renames, key rotations) to keep working on it.
/// The real server never does this; nothing is refused on its account.
fn adopt_metadata(state: &State, seed: &mut SeedResource, m: &crate::seed::SealedMetadata) {
    let data = state.data();
    let Some(key) = data.metadata_keys.iter().find(|k| k.id == m.key_id) else {
        return;
    };
    let Some(plain) = key.open(m.armored.as_bytes()) else {
        return;
    };
    drop(data);
    let Ok(v) = serde_json::from_slice::<Value>(&plain) else {
        return;
    };
    if let Some(n) = v["name"].as_str() {
        seed.name = n.to_string();
    }
    seed.username = v["username"].as_str().map(str::to_string);
    seed.uris = v["uris"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    seed.description = v["description"].as_str().map(str::to_string);
}

fn create(state: &State, path: &str, user_id: &str, body: &Value) -> Response {
    let v5 = match payload_shape(state, path, body) {
        Ok(v5) => v5,
        Err(r) => return r,
    };
    let settings = state.data().metadata_types_settings.clone();
    if v5 && settings["allow_creation_of_v5_resources"] != json!(true) {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "Resource creation/modification with encrypted metadata not allowed.",
        );
    }
    if !v5
        && !state.data().faults.pre_v5
        && settings["allow_creation_of_v4_resources"] != json!(true)
    {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "Resource creation with cleartext metadata not allowed.",
        );
    }
    if !v5 {
        let name = body["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            return invalid(
                state,
                path,
                json!({"name": {"_required": "A name is required."}}),
            );
        }
        if name.chars().count() > 255 {
            return invalid(
                state,
                path,
                json!({"name": {"maxLength": "The name length should be maximum 255 characters."}}),
            );
        }
    }
    let slug = match body_type(state, path, body, v5) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let secrets = body["secrets"].as_array().cloned().unwrap_or_default();
    if secrets.is_empty() {
        return invalid(
            state,
            path,
            json!({"secrets": {"_required": "The owner secret is required."}}),
        );
    }
    if secrets.len() > 1 {
        return invalid(
            state,
            path,
            json!({"secrets": {"hasAtMost": "The secrets should contain only the secret of the owner."}}),
        );
    }
    if let Err(r) = check_secret_data(state, path, &secrets) {
        return r;
    }
    let metadata = if v5 {
        if slug == "v5-password-string" {
            return invalid(
                state,
                path,
                json!({"resource_type_id": {"isNotV5PasswordStringType": "It is not allowed to create v5-password-string resource types."}}),
            );
        }
        match check_metadata(state, path, body, user_id, true) {
            Ok(m) => Some(m),
            Err(r) => return r,
        }
    } else {
        None
    };
    let folder = body["folder_parent_id"]
        .as_str()
        .map(str::to_ascii_lowercase);
    if let Some(f) = &folder {
        if !is_uuid(f) {
            return invalid(
                state,
                path,
                json!({"folder_parent_id": {"uuid": "The folder parent identifier should be a valid UUID."}}),
            );
        }
        if !state.data().folders.contains_key(f) {
            return invalid(
                state,
                path,
                json!({"folder_parent_id": {"folder_exists": "The folder parent does not exist."}}),
            );
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let text = |k: &str| {
        body[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut seed = SeedResource {
        id: id.clone(),
        slug: slug.to_string(),
        name: text("name").unwrap_or_default(),
        username: text("username"),
        uris: text("uri").into_iter().collect(),
        // A cleartext description of password-and-description is dropped.
        description: text("description").filter(|_| slug == "password-string"),
        folder_id: folder,
        secret: String::new(),
        custom_fields: Vec::new(),
        readers: vec![user_id.to_string()],
        mode: match metadata.as_ref().map(|m| m.key_type) {
            None => MetadataMode::Cleartext,
            Some("user_key") => MetadataMode::Personal {
                owner: user_id.to_string(),
            },
            Some(_) => MetadataMode::Shared,
        },
    };
    if let Some(m) = &metadata {
        adopt_metadata(state, &mut seed, m);
    }
    let now = state.clock.stamp();
    let expired = body["expired"].as_str().map(str::to_string);
    let stored = crate::StoredResource {
        seed,
        metadata,
        secrets: HashMap::from([(
            user_id.to_string(),
            StoredSecret {
                id: uuid::Uuid::new_v4().to_string(),
                data: secrets[0]["data"].as_str().unwrap_or_default().to_string(),
                created: now.clone(),
                modified: now.clone(),
            },
        )]),
        permissions: vec![StoredPermission {
            id: uuid::Uuid::new_v4().to_string(),
            aro: Aro::User(user_id.to_string()),
            kind: OWNER,
        }],
        expired,
        created: now.clone(),
        modified: now.clone(),
        modified_by: Some(user_id.to_string()),
        revisions: Revisions::first(
            crate::seed::type_id(slug).unwrap_or_default(),
            Some(user_id),
            &now,
        ),
    };
    let mut data = state.data();
    data.resources.insert(id.clone(), stored);
    let mut read = Vec::new();
    let mut out = resource_json(&data.resources[&id], user_id, true, &mut read);
    out["permission"] = json!({"type": OWNER, "aro": "User", "aro_foreign_key": user_id});
    drop(data);
    envelope(
        state,
        StatusCode::OK,
        path,
        "The resource has been added successfully.",
        out,
    )
}

fn update(state: &State, path: &str, id: &str, user_id: &str, body: &Value) -> Response {
    if !is_uuid(id) {
        return invalid_resource_id(state, path);
    }
    let id = id.to_ascii_lowercase();
    let v5 = match payload_shape(state, path, body) {
        Ok(v5) => v5,
        Err(r) => return r,
    };
    let (old_slug, perms_len_user, kind, access_set) = {
        let data = state.data();
        let Some(r) = data.resources.get(&id) else {
            drop(data);
            return error(state, StatusCode::NOT_FOUND, path, NO_RESOURCE);
        };
        let kind = permission_of(&r.permissions, &data.groups, user_id);
        let single_user = r.permissions.len() == 1 && matches!(r.permissions[0].aro, Aro::User(_));
        (
            r.seed.slug.clone(),
            single_user,
            kind,
            access(&r.permissions, &data.groups),
        )
    };
    match kind {
        None => return error(state, StatusCode::NOT_FOUND, path, NO_RESOURCE),
        Some(k) if k < UPDATE => {
            return error(
                state,
                StatusCode::FORBIDDEN,
                path,
                "You are not allowed to update this resource.",
            );
        }
        Some(_) => {}
    }
    let slug = match body_type(state, path, body, v5) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let settings = state.data().metadata_types_settings.clone();
    if old_slug.starts_with("v5-") && !v5 && settings["allow_v5_v4_downgrade"] != json!(true) {
        return invalid(
            state,
            path,
            json!({"resource_type_id": {"v5_to_v4_downgrade_allowed": "The settings selected by your administrator prevent from downgrading resource type."}}),
        );
    }
    if !old_slug.starts_with("v5-") && v5 && settings["allow_v4_v5_upgrade"] != json!(true) {
        return invalid(
            state,
            path,
            json!({"resource_type_id": {"v4_to_v5_upgrade_allowed": "The settings selected by your administrator prevent from upgrading v4 to v5."}}),
        );
    }
    let metadata = if v5 {
        match check_metadata(state, path, body, user_id, perms_len_user) {
            Ok(m) => Some(m),
            Err(r) => return r,
        }
    } else {
        None
    };
    let secrets = match body.get("secrets") {
        None | Some(Value::Null) => None,
        Some(Value::Array(s)) => Some(s.clone()),
        Some(_) => {
            return invalid(
                state,
                path,
                json!({"secrets": {"_required": "The secrets should be an array."}}),
            );
        }
    };
    if let Some(secrets) = &secrets {
        if let Err(r) = check_secret_data(state, path, secrets) {
            return r;
        }
        // Exactly the users having access, each once.
        let given: Vec<String> = secrets
            .iter()
            .map(|s| {
                s["user_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            })
            .collect();
        let unique: BTreeSet<&String> = given.iter().collect();
        let wanted: BTreeSet<&String> = access_set.iter().collect();
        if unique.len() != given.len() || unique != wanted {
            return invalid(
                state,
                path,
                json!({"secrets": {"secrets_provided": SECRETS_PROVIDED_UPDATE}}),
            );
        }
    }
    let now = state.clock.stamp();
    let mut seed_update = {
        let data = state.data();
        data.resources[&id].seed.clone()
    };
    seed_update.slug = slug.to_string();
    if let Some(m) = &metadata {
        seed_update.mode = if m.key_type == "user_key" {
            MetadataMode::Personal {
                owner: user_id.to_string(),
            }
        } else {
            MetadataMode::Shared
        };
        adopt_metadata(state, &mut seed_update, m);
    } else {
        seed_update.mode = MetadataMode::Cleartext;
        let text = |k: &str| body[k].as_str().map(str::to_string);
        if let Some(n) = text("name") {
            seed_update.name = n;
        }
        if body.get("username").is_some() {
            seed_update.username = text("username");
        }
        if body.get("uri").is_some() {
            seed_update.uris = text("uri").into_iter().collect();
        }
        if body.get("description").is_some() && slug == "password-string" {
            seed_update.description = text("description");
        }
    }
    let mut data = state.data();
    let max = max_revisions(&data.secret_revisions_settings);
    let r = data.resources.get_mut(&id).expect("checked above");
    r.seed = seed_update;
    if v5 {
        r.metadata = metadata;
    } else {
        r.metadata = None;
    }
    if let Some(secrets) = secrets {
        let new = secrets
            .iter()
            .map(|s| {
                (
                    s["user_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    StoredSecret {
                        id: uuid::Uuid::new_v4().to_string(),
                        data: s["data"].as_str().unwrap_or_default().to_string(),
                        created: now.clone(),
                        modified: now.clone(),
                    },
                )
            })
            .collect();
        // Old secrets are soft-deleted with their revision (§3.4).
        let old = std::mem::replace(&mut r.secrets, new);
        let type_id = crate::seed::type_id(slug).unwrap_or_default();
        r.revisions.replace(old, type_id, Some(user_id), &now, max);
    }
    if let Some(e) = body.get("expired") {
        r.expired = e.as_str().map(str::to_string);
    }
    r.modified = now;
    r.modified_by = Some(user_id.to_string());
    let mut read = Vec::new();
    let out = resource_json(&data.resources[&id], user_id, true, &mut read);
    drop(data);
    envelope(
        state,
        StatusCode::OK,
        path,
        "The resource has been updated successfully.",
        out,
    )
}

/// The permission list after applying `changes`, or the refusal.
fn apply_permissions(
    state: &State,
    path: &str,
    data: &Data,
    current: &[StoredPermission],
    changes: &[Value],
) -> Result<Vec<StoredPermission>, Response> {
    let mut perms = current.to_vec();
    let mut errors = vec![json!({}); changes.len()];
    for (i, c) in changes.iter().enumerate() {
        let kind = c["type"].as_u64();
        if c["delete"] != json!(true) && !matches!(kind, Some(1 | 7 | 15)) {
            errors[i] =
                json!({"type": {"inList": "The type should be one of the following: 1, 7, 15."}});
            continue;
        }
        match c["id"].as_str() {
            Some(pid) => {
                let Some(at) = perms.iter().position(|p| p.id == pid) else {
                    errors[i] = json!({"id": {"exists": "The permission does not exist."}});
                    continue;
                };
                if c["delete"] == json!(true) {
                    perms.remove(at);
                } else {
                    perms[at].kind = kind.unwrap_or(1) as u8;
                }
            }
            None => {
                let key = c["aro_foreign_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let aro = match c["aro"].as_str() {
                    Some("User") if data.accounts.iter().any(|a| a.id == key) => Aro::User(key),
                    Some("Group") if data.groups.contains_key(&key) => Aro::Group(key),
                    _ => {
                        errors[i] = json!({"aro_foreign_key": {"aro_exists": "The access request object does not exist."}});
                        continue;
                    }
                };
                if perms.iter().any(|p| p.aro == aro) {
                    errors[i] = json!({"aco_foreign_key": {"permission_unique": "A permission already exists for the given access control object and access request object."}});
                    continue;
                }
                perms.push(StoredPermission {
                    id: uuid::Uuid::new_v4().to_string(),
                    aro,
                    kind: kind.unwrap_or(1) as u8,
                });
            }
        }
    }
    if errors.iter().any(|e| e != &json!({})) {
        return Err(invalid(state, path, json!({"permissions": errors})));
    }
    if !perms.iter().any(|p| p.kind == OWNER) {
        return Err(invalid(
            state,
            path,
            json!({"permissions": {"at_least_one_owner": "At least one owner permission must be provided."}}),
        ));
    }
    Ok(perms)
}

fn share(
    state: &State,
    path: &str,
    id: &str,
    user_id: &str,
    body: &Value,
    dry_run: bool,
) -> Response {
    if !is_uuid(id) {
        return invalid_resource_id(state, path);
    }
    let id = id.to_ascii_lowercase();
    let changes = match body.get("permissions") {
        Some(Value::Array(c)) => c.clone(),
        _ => {
            return invalid(
                state,
                path,
                json!({"permissions": {"_required": "The permissions data array keys must be integers."}}),
            );
        }
    };
    let mut data = state.data();
    let Some(r) = data.resources.get(&id) else {
        drop(data);
        return error(state, StatusCode::NOT_FOUND, path, NO_RESOURCE);
    };
    match permission_of(&r.permissions, &data.groups, user_id) {
        None => {
            drop(data);
            return error(state, StatusCode::NOT_FOUND, path, NO_RESOURCE);
        }
        Some(k) if k < OWNER => {
            drop(data);
            return error(
                state,
                StatusCode::FORBIDDEN,
                path,
                "You are not authorized to share this resource.",
            );
        }
        Some(_) => {}
    }
    if r.metadata
        .as_ref()
        .is_some_and(|m| m.key_type == "user_key")
    {
        drop(data);
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "Resource metadata key type is invalid.",
        );
    }
    let perms = match apply_permissions(state, path, &data, &r.permissions, &changes) {
        Ok(p) => p,
        Err(resp) => {
            drop(data);
            return resp;
        }
    };
    let before = access(&r.permissions, &data.groups);
    let after = access(&perms, &data.groups);
    let added: Vec<&String> = after.iter().filter(|u| !before.contains(u)).collect();
    let removed: Vec<&String> = before.iter().filter(|u| !after.contains(u)).collect();
    if dry_run {
        let body = json!({"changes": {
            "added": added.iter().map(|u| json!({"User": {"id": u}})).collect::<Vec<_>>(),
            "removed": removed.iter().map(|u| json!({"User": {"id": u}})).collect::<Vec<_>>(),
        }});
        drop(data);
        return success(state, path, body);
    }
    let given = body["secrets"].as_array().cloned().unwrap_or_default();
    if let Err(resp) = check_secret_data(state, path, &given) {
        drop(data);
        return resp;
    }
    let mut secrets: HashMap<String, (String, bool)> = r
        .secrets
        .iter()
        .map(|(u, s)| (u.clone(), (s.data.clone(), false)))
        .collect();
    for (i, s) in given.iter().enumerate() {
        let u = s["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !after.contains(&u) {
            let mut errors = vec![json!({}); given.len()];
            errors[i] = json!({"user_id": {"has_access": "Access denied."}});
            drop(data);
            return invalid(state, path, json!({"secrets": errors}));
        }
        secrets.insert(
            u,
            (s["data"].as_str().unwrap_or_default().to_string(), true),
        );
    }
    secrets.retain(|u, _| after.contains(u));
    if after.iter().any(|u| !secrets.contains_key(u)) {
        drop(data);
        return invalid(
            state,
            path,
            json!({"secrets": {"secrets_provided": SECRETS_PROVIDED_SHARE}}),
        );
    }
    // Sharing does not move `modified`.
    let now = state.clock.stamp();
    let r = data.resources.get_mut(&id).expect("checked above");
    r.permissions = perms;
    r.seed.readers = after;
    for (u, (armored, new)) in secrets {
        if !new {
            continue;
        }
        let row = r.secrets.entry(u).or_insert_with(|| StoredSecret {
            id: uuid::Uuid::new_v4().to_string(),
            data: String::new(),
            created: now.clone(),
            modified: now.clone(),
        });
        row.data = armored;
        row.modified = now.clone();
    }
    let readers = r.seed.readers.clone();
    r.secrets.retain(|u, _| readers.contains(u));
    let lost: Vec<String> = removed.into_iter().cloned().collect();
    crate::expiry::after_access_lost(&mut data, &id, &lost, state.clock.now());
    drop(data);
    envelope(state, StatusCode::OK, path, OK, Value::Null)
}
