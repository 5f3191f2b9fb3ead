//! The read endpoints, typed. Each is one request through the session,
//! which handles tokens and the 401 retry.

use super::ClientError;
use super::model::{Folder, Me, MetadataKey, Resource, ResourceType};
use super::session::Session;

pub async fn me(s: &Session) -> Result<Me, ClientError> {
    s.get("/users/me.json").await
}

pub async fn resource_types(s: &Session) -> Result<Vec<ResourceType>, ClientError> {
    s.get("/resource-types.json").await
}

/// One `filter[has-id][]=` parameter, percent-encoded, before its id.
pub const HAS_ID_PARAM: &str = "filter%5Bhas-id%5D%5B%5D=";

/// One `filter[has-parent][]=` parameter, percent-encoded, before its
/// folder id. The server ANDs it with `has-id`, so a listing uses one or
/// the other.
pub const HAS_PARENT_PARAM: &str = "filter%5Bhas-parent%5D%5B%5D=";

/// The path and query of a listing: with the caller's secrets when
/// `with_secrets`, restricted to `ids` when not empty.
pub fn resources_path(with_secrets: bool, ids: &[String]) -> String {
    resources_query(with_secrets, ids, HAS_ID_PARAM)
}

/// The path and query of a listing of the resources directly inside the
/// folders `parents` (not empty), without secrets.
pub fn resources_in_path(parents: &[String]) -> String {
    resources_query(false, parents, HAS_PARENT_PARAM)
}

fn resources_query(with_secrets: bool, ids: &[String], param: &str) -> String {
    let mut query = Vec::new();
    // The server includes a contain as soon as the key is present, even
    // with value 0: leave it out instead.
    if with_secrets {
        query.push("contain%5Bsecret%5D=1".to_string());
    }
    for id in ids {
        query.push(format!("{param}{id}"));
    }
    if query.is_empty() {
        "/resources.json".to_string()
    } else {
        format!("/resources.json?{}", query.join("&"))
    }
}

/// `/resources.json` (see `resources_path`), with the answer's
/// `header.servertime`.
pub async fn resources(
    s: &Session,
    with_secrets: bool,
    ids: Option<&[String]>,
) -> Result<(Vec<Resource>, Option<i64>), ClientError> {
    s.get_timed(&resources_path(with_secrets, ids.unwrap_or_default()))
        .await
}

/// The resources directly inside the folders `parents`, without secrets,
/// with the answer's `header.servertime`.
pub async fn resources_in(
    s: &Session,
    parents: &[String],
) -> Result<(Vec<Resource>, Option<i64>), ClientError> {
    s.get_timed(&resources_in_path(parents)).await
}

pub async fn folders(s: &Session) -> Result<Vec<Folder>, ClientError> {
    s.get("/folders.json").await
}

pub async fn metadata_keys(s: &Session) -> Result<Vec<MetadataKey>, ClientError> {
    s.get("/metadata/keys.json?contain%5Bmetadata_private_keys%5D=1")
        .await
}
