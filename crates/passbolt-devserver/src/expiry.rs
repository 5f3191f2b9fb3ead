//! Password expiry as the PasswordExpiry plugin handles it (the write
//! reference's §8): `expired` is a plain mark that clients set and clear
//! (a secret update leaves it alone), and with `automatic_expiry` on, a
//! resource is marked expired when a user who had read its secret loses
//! access to it (`PasswordExpiryExpireResourcesService`).

use serde_json::{Value, json};

use crate::{Data, Event, clock};

/// `GET /password-expiry/settings.json` of a CE server: the feature off.
pub(crate) fn default_settings() -> Value {
    json!({"automatic_expiry": false, "automatic_update": false})
}

/// Called once `lost` lost access to resource `id`: with automatic expiry
/// on, a resource not yet expired whose secret one of them had read (the
/// server's `secret_accesses`, here the secret read events) gets
/// `expired` two seconds before `now`, as the server stamps it.
pub(crate) fn after_access_lost(data: &mut Data, id: &str, lost: &[String], now: i64) {
    if data.password_expiry_settings["automatic_expiry"] != json!(true) || lost.is_empty() {
        return;
    }
    let read_by_one = data.events.iter().any(|e| {
        matches!(e, Event::SecretRead { user_id, resource_id }
            if resource_id == id && lost.contains(user_id))
    });
    if !read_by_one {
        return;
    }
    if let Some(r) = data.resources.get_mut(id)
        && r.expired.is_none()
    {
        r.expired = Some(clock::stamp(now - 2));
    }
}
