//! The read endpoints: the user, resources with or without their secrets,
//! one resource, one secret; every secret handed out is logged as the real
//! server's secret access log does.

#![allow(clippy::result_large_err)]

use super::*;

pub(super) fn read(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let pre_v5 = state.data().faults.pre_v5;
    if pre_v5 && path.starts_with("/metadata/") {
        return error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The requested address was not found.",
        );
    }
    if let Some(r) = super::write::read(state, path, query, user_id) {
        return r;
    }
    if let Some(r) = super::revisions::read(state, path, query, user_id) {
        return r;
    }
    match path {
        "/users/me.json" => me(state, path, query, user_id),
        "/resource-types.json" => success(state, path,
            Value::Array(
                crate::seed::RESOURCE_TYPES
                    .iter()
                    .filter(|(_, slug, _)| !(pre_v5 && slug.starts_with("v5-")))
                    .map(|(id, slug, name)| json!({"id": id, "slug": slug, "name": name, "definition": {"resource": {}, "secret": {}}, "deleted": null}))
                    .collect(),
            ),
        ),
        "/resources.json" => resources_index(state, path, query, user_id),
        "/folders.json" => {
            let data = state.data();
            let items: Vec<Value> = data
                .folders
                .values()
                .filter(|f| !(pre_v5 && f.metadata.is_some()))
                .map(|f| {
                    let mut v = json!({
                        "id": f.seed.id, "folder_parent_id": f.seed.parent, "personal": false,
                        "created": f.created, "modified": f.modified,
                    });
                    match &f.metadata {
                        Some(m) => {
                            v["metadata"] = json!(m.armored);
                            v["metadata_key_id"] = json!(m.key_id);
                            v["metadata_key_type"] = json!(m.key_type);
                        }
                        None => v["name"] = json!(f.seed.name),
                    }
                    v
                })
                .collect();
            drop(data);
            success(state, path, Value::Array(items))
        }
        "/metadata/keys.json" => {
            let with_private = query.contains("metadata_private_keys");
            let data = state.data();
            let items: Vec<Value> = data
                .metadata_keys
                .iter()
                .map(|k| {
                    // Only the caller's own copy, if they have one.
                    let privates: Vec<Value> = k
                        .private_keys
                        .get(user_id)
                        .filter(|_| with_private)
                        .map(|p| json!({
                            "id": p.id, "metadata_key_id": k.id, "user_id": user_id, "data": p.data,
                            "created": p.created, "modified": p.created,
                        }))
                        .into_iter()
                        .collect();
                    json!({
                        "id": k.id,
                        "fingerprint": k.public.fingerprint(),
                        "armored_key": k.public.armored(),
                        "created": k.created, "modified": k.modified,
                        "expired": k.expired, "deleted": null,
                        "metadata_private_keys": privates,
                    })
                })
                .collect();
            drop(data);
            success(state, path, Value::Array(items))
        }
        "/metadata/session-keys.json" => success(state, path, json!([])),
        _ => {
            if let Some(id) = path.strip_prefix("/secrets/resource/").and_then(|p| p.strip_suffix(".json")) {
                return secret_view(state, path, id, user_id);
            }
            if let Some(id) = path.strip_prefix("/resources/").and_then(|p| p.strip_suffix(".json")) {
                return resource_view(state, path, query, id, user_id);
            }
            error(state, StatusCode::NOT_FOUND, path, "The requested address was not found.")
        }
    }
}

pub(super) fn me(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let account = state.account(user_id).expect("authenticated user exists");
    let mut body = json!({
        "id": account.id, "username": account.username, "active": true, "deleted": false,
        "is_mfa_enabled": !account.mfa.is_empty(),
        "gpgkey": {
            "id": crate::seed::gpgkey_id(&account.id), "user_id": account.id,
            "armored_key": account.key.armored(), "fingerprint": account.key.fingerprint(),
        },
    });
    if query.contains("missing_metadata_key_ids") {
        let missing: Vec<String> = state
            .data()
            .metadata_keys
            .iter()
            .filter(|k| !k.private_keys.contains_key(user_id))
            .map(|k| k.id.clone())
            .collect();
        body["missing_metadata_key_ids"] = json!(missing);
    }
    success(state, path, body)
}

/// `/resources.json`: what the caller can read, restricted by
/// `filter[has-id]` and `filter[has-parent]` (the folders plugin is on), with their secrets under `contain[secret]` (each one
/// handed out is logged, as the real server's secret access log does).
pub(super) fn resources_index(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let ids = match query.has_id() {
        Ok(ids) => ids,
        Err(message) => return error(state, StatusCode::BAD_REQUEST, path, &message),
    };
    let parents = match query.has_parent() {
        Ok(parents) => parents,
        Err(message) => return error(state, StatusCode::BAD_REQUEST, path, &message),
    };
    let with_secret = query.contains("secret");
    let mut data = state.data();
    let mut read = Vec::new();
    let items: Vec<Value> = match &ids {
        None => data.resources.values().collect::<Vec<_>>(),
        // In listing order, once each, whatever the order of the ids.
        Some(ids) => {
            let mut at: Vec<usize> = ids
                .iter()
                .filter_map(|id| data.resources.get_index_of(id))
                .collect();
            at.sort_unstable();
            at.dedup();
            at.into_iter().map(|i| &data.resources[i]).collect()
        }
    }
    .into_iter()
    .filter(|r| r.seed.readers.iter().any(|u| u == user_id))
    // ANDed with `has-id`, as the server's finder chains its filters.
    .filter(|r| {
        parents.as_ref().is_none_or(|p| {
            p.iter()
                .any(|f| f.as_deref() == r.seed.folder_id.as_deref())
        })
    })
    .map(|r| {
        let mut v = resource_json(r, user_id, with_secret, &mut read);
        if query.contains("permission") {
            v["permission"] = permission_json(r, &data.groups, user_id);
        }
        v
    })
    .collect();
    let items = listing_faults(items, &data.faults);
    log_secret_reads(&mut data, user_id, read);
    drop(data);
    success(state, path, Value::Array(items))
}

/// `Faults::duplicate_ids` and `Faults::unknown_type_for` on a listing.
pub(super) fn listing_faults(mut items: Vec<Value>, faults: &crate::Faults) -> Vec<Value> {
    if let Some(id) = &faults.unknown_type_for {
        for item in items.iter_mut().filter(|i| i["id"] == json!(id)) {
            item["resource_type_id"] = json!("0badc0de-0000-4000-8000-000000000000");
        }
    }
    if faults.pre_v5 {
        items.retain(|i| i.get("metadata").is_none_or(Value::is_null));
    }
    if faults.duplicate_ids {
        items = items.into_iter().flat_map(|i| [i.clone(), i]).collect();
    }
    items
}

pub(super) fn resource_view(
    state: &State,
    path: &str,
    query: &Query,
    id: &str,
    user_id: &str,
) -> Response {
    if !is_uuid(id) {
        return invalid_resource_id(state, path);
    }
    let mut data = state.data();
    let mut read = Vec::new();
    let item = data
        .resources
        .get(&id.to_ascii_lowercase())
        .filter(|r| r.seed.readers.iter().any(|u| u == user_id))
        .map(|r| {
            let mut v = resource_json(r, user_id, query.contains("secret"), &mut read);
            if query.contains("permission") {
                v["permission"] = permission_json(r, &data.groups, user_id);
            }
            v
        });
    log_secret_reads(&mut data, user_id, read);
    drop(data);
    match item {
        Some(v) => success(state, path, v),
        None => no_such_resource(state, path),
    }
}

pub(super) fn secret_view(state: &State, path: &str, id: &str, user_id: &str) -> Response {
    if !is_uuid(id) {
        return invalid_resource_id(state, path);
    }
    let id = id.to_ascii_lowercase();
    let mut data = state.data();
    let secret = data.resources.get(&id).and_then(|r| {
        r.secrets
            .get(user_id)
            .map(|s| secret_json(s, &id, user_id, &r.revisions.active.id))
    });
    if secret.is_some() {
        log_secret_reads(&mut data, user_id, vec![id]);
    }
    drop(data);
    match secret {
        Some(s) => success(state, path, s),
        None => error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The secret does not exist.",
        ),
    }
}

/// `contain[permission]`: the caller's highest permission on `r`, direct
/// or through a group (`type` 1 read, 7 update, 15 owner).
fn permission_json(
    r: &StoredResource,
    groups: &indexmap::IndexMap<String, crate::Group>,
    user_id: &str,
) -> Value {
    let kind = crate::store::permission_of(&r.permissions, groups, user_id);
    let row = r.permissions.iter().find(|p| {
        Some(p.kind) == kind
            && match &p.aro {
                crate::Aro::User(u) => u == user_id,
                crate::Aro::Group(g) => groups
                    .get(g)
                    .is_some_and(|g| g.members.iter().any(|m| m == user_id)),
            }
    });
    match row {
        Some(p) => {
            let (aro, key) = match &p.aro {
                crate::Aro::User(u) => ("User", u),
                crate::Aro::Group(g) => ("Group", g),
            };
            json!({"id": p.id, "aco": "Resource", "aco_foreign_key": r.seed.id,
                   "aro": aro, "aro_foreign_key": key, "type": p.kind})
        }
        None => Value::Null,
    }
}

pub(super) fn log_secret_reads(data: &mut crate::Data, user_id: &str, resource_ids: Vec<String>) {
    data.events.extend(
        resource_ids
            .into_iter()
            .map(|resource_id| Event::SecretRead {
                user_id: user_id.to_string(),
                resource_id,
            }),
    );
}

pub(super) fn secret_json(
    s: &crate::StoredSecret,
    resource_id: &str,
    user_id: &str,
    revision_id: &str,
) -> Value {
    json!({
        "id": s.id, "user_id": user_id, "resource_id": resource_id, "data": s.data,
        "secret_revision_id": revision_id, "created": s.created, "modified": s.modified,
    })
}

/// One resource as the caller sees it; with `with_secret`, their secret,
/// whose resource id goes into `read`.
pub(super) fn resource_json(
    r: &StoredResource,
    user_id: &str,
    with_secret: bool,
    read: &mut Vec<String>,
) -> Value {
    let s = &r.seed;
    let mut v = json!({
        "id": s.id,
        "resource_type_id": crate::seed::type_id(&s.slug),
        "folder_parent_id": s.folder_id,
        "personal": s.readers.len() == 1,
        "deleted": false,
        "expired": r.expired,
        "created": r.created,
        "modified": r.modified,
        "modified_by": r.modified_by,
    });
    match &r.metadata {
        Some(m) => {
            v["metadata"] = json!(m.armored);
            v["metadata_key_id"] = json!(m.key_id);
            v["metadata_key_type"] = json!(m.key_type);
        }
        None => {
            v["name"] = json!(s.name);
            v["username"] = json!(s.username);
            v["uri"] = json!(s.uris.first());
            v["description"] = json!(s.description);
        }
    }
    if with_secret {
        let secrets: Vec<Value> = r
            .secrets
            .get(user_id)
            .map(|secret| secret_json(secret, &s.id, user_id, &r.revisions.active.id))
            .into_iter()
            .collect();
        if !secrets.is_empty() {
            read.push(s.id.clone());
        }
        v["secrets"] = json!(secrets);
    }
    v
}
