//! `GET /secret-revisions/resource/{id}.json` and
//! `GET /secret-revisions/settings.json` (the write reference's §10): the
//! active revision and up to `max_revisions - 1` soft-deleted ones, newest
//! deletion first, only those in which the caller holds a secret, with
//! only the caller's secrets; `contain[secret]` logs a secret access per
//! secret handed out that is not deleted, as the real server does.

#![allow(clippy::result_large_err)]

use super::*;
use crate::revisions::{Revision, max_revisions};
use crate::{Data, StoredSecret};

/// The revision routes; `None` for every other path.
pub(super) fn read(state: &State, path: &str, query: &Query, user_id: &str) -> Option<Response> {
    if path == "/secret-revisions/settings.json" {
        let v = state.data().secret_revisions_settings.clone();
        return Some(success(state, path, v));
    }
    let id = path
        .strip_prefix("/secret-revisions/resource/")?
        .strip_suffix(".json")?;
    Some(of_resource(state, path, query, id, user_id))
}

fn of_resource(state: &State, path: &str, query: &Query, id: &str, user_id: &str) -> Response {
    if !is_uuid(id) {
        return invalid_resource_id(state, path);
    }
    let id = id.to_ascii_lowercase();
    let with_secret = query.contains("secret");
    let with_creator = query.contains("creator") || query.contains("creator.profile");
    let mut data = state.data();
    let Some(r) = data.resources.get(&id) else {
        drop(data);
        return no_such_resource(state, path);
    };
    if crate::store::permission_of(&r.permissions, &data.groups, user_id).is_none() {
        drop(data);
        return no_such_resource(state, path);
    }
    let kept = usize::try_from(max_revisions(&data.secret_revisions_settings) - 1).unwrap_or(0);
    let mut rows: Vec<(&Revision, Option<&StoredSecret>)> =
        vec![(&r.revisions.active, r.secrets.get(user_id))];
    rows.extend(
        r.revisions
            .past
            .iter()
            .take(kept)
            .map(|p| (p, p.secrets.get(user_id))),
    );
    let mut read = false;
    let items: Vec<Value> = rows
        .into_iter()
        .filter_map(|(rev, secret)| {
            let secret = secret?;
            let mut v = revision_json(rev, &id);
            if with_secret {
                read |= rev.deleted.is_none();
                v["secrets"] = json!([secret_json(rev, secret, &id, user_id)]);
            }
            if with_creator {
                v["creator"] = creator_json(&data, rev.created_by.as_deref());
            }
            Some(v)
        })
        .collect();
    if read {
        resources::log_secret_reads(&mut data, user_id, vec![id]);
    }
    drop(data);
    success(state, path, Value::Array(items))
}

fn revision_json(rev: &Revision, resource_id: &str) -> Value {
    json!({
        "id": rev.id, "resource_id": resource_id, "resource_type_id": rev.resource_type_id,
        "created": rev.created, "created_by": rev.created_by,
        "modified": rev.modified, "modified_by": rev.modified_by,
        "deleted": rev.deleted,
    })
}

fn secret_json(rev: &Revision, s: &StoredSecret, resource_id: &str, user_id: &str) -> Value {
    json!({
        "id": s.id, "user_id": user_id, "resource_id": resource_id,
        "secret_revision_id": rev.id, "data": s.data,
        "created": s.created, "created_by": rev.created_by,
        "modified": s.modified, "modified_by": rev.modified_by,
        "deleted": rev.deleted,
    })
}

fn creator_json(data: &Data, id: Option<&str>) -> Value {
    let Some(a) = id.and_then(|id| data.accounts.iter().find(|a| a.id == id)) else {
        return Value::Null;
    };
    json!({"id": a.id, "username": a.username,
           "profile": {"first_name": a.username, "last_name": ""}})
}
