//! Secret revisions as the SecretRevisions plugin (passbolt 5.7 and
//! later) keeps them (the write reference's §3.4 and §10): a resource's
//! secrets belong to its active revision; an update that changes them
//! soft-deletes that revision and its secrets and opens a new one. Of the
//! soft-deleted revisions only the newest `max_revisions - 1` keep their
//! secrets; older ones lose them (hard delete) but keep their row, deleted
//! stamp set. With the default `max_revisions: 1` no past secret is kept:
//! a rotated-away value is gone from the server at once.

use std::collections::HashMap;

use crate::StoredSecret;

/// `GET /secret-revisions/settings.json` of a server nobody configured.
pub(crate) fn default_settings() -> serde_json::Value {
    serde_json::json!({"max_revisions": 1, "allow_sharing_revisions": false})
}

/// One revision's row.
#[derive(Clone, Debug)]
pub(crate) struct Revision {
    pub id: String,
    pub resource_type_id: String,
    pub created: String,
    pub created_by: Option<String>,
    pub modified: String,
    pub modified_by: Option<String>,
    /// When it stopped being active; `None` for the active one.
    pub deleted: Option<String>,
    /// A past revision's secrets by reader, kept while it is among the
    /// newest `max_revisions - 1`. The active revision's secrets are the
    /// resource's own (`StoredResource::secrets`), never copied here.
    pub secrets: HashMap<String, StoredSecret>,
}

/// A resource's revisions: the active one and the soft-deleted ones,
/// newest deletion first.
#[derive(Clone, Debug)]
pub(crate) struct Revisions {
    pub active: Revision,
    pub past: Vec<Revision>,
}

impl Revisions {
    /// The revision a new resource starts with.
    pub fn first(resource_type_id: &str, by: Option<&str>, now: &str) -> Revisions {
        Revisions {
            active: open(resource_type_id, by, now),
            past: Vec::new(),
        }
    }

    /// New secrets replaced `old` (the active revision's): the active
    /// revision and `old` are soft-deleted at `now`, a new revision opens,
    /// and past revisions beyond `max_revisions - 1` lose their secrets.
    pub fn replace(
        &mut self,
        old: HashMap<String, StoredSecret>,
        resource_type_id: &str,
        by: Option<&str>,
        now: &str,
        max_revisions: u64,
    ) {
        let mut closed = std::mem::replace(&mut self.active, open(resource_type_id, by, now));
        closed.deleted = Some(now.to_string());
        closed.modified = now.to_string();
        closed.secrets = old;
        self.past.insert(0, closed);
        let keep = usize::try_from(max_revisions.saturating_sub(1)).unwrap_or(usize::MAX);
        for gone in self.past.iter_mut().skip(keep) {
            gone.secrets.clear();
        }
    }
}

fn open(resource_type_id: &str, by: Option<&str>, now: &str) -> Revision {
    Revision {
        id: uuid::Uuid::new_v4().to_string(),
        resource_type_id: resource_type_id.to_string(),
        created: now.to_string(),
        created_by: by.map(str::to_string),
        modified: now.to_string(),
        modified_by: by.map(str::to_string),
        deleted: None,
        secrets: HashMap::new(),
    }
}

/// `max_revisions` of the settings body, 1 when it is not a number.
pub(crate) fn max_revisions(settings: &serde_json::Value) -> u64 {
    settings["max_revisions"].as_u64().unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &str) -> HashMap<String, StoredSecret> {
        HashMap::from([(
            "u".to_string(),
            StoredSecret {
                id: data.to_string(),
                data: data.to_string(),
                created: String::new(),
                modified: String::new(),
            },
        )])
    }

    #[test]
    fn past_secrets_are_kept_only_within_max_revisions() {
        let mut r = Revisions::first("t", Some("a"), "t0");
        let first = r.active.id.clone();
        r.replace(secret("s0"), "t", Some("b"), "t1", 1);
        assert_eq!(r.past.len(), 1, "the row stays");
        assert_eq!(r.past[0].id, first);
        assert_eq!(r.past[0].deleted.as_deref(), Some("t1"));
        assert!(r.past[0].secrets.is_empty(), "max 1: no past secret");
        assert_eq!(r.active.created_by.as_deref(), Some("b"));

        r.replace(secret("s1"), "t", None, "t2", 3);
        r.replace(secret("s2"), "t", None, "t3", 3);
        r.replace(secret("s3"), "t", None, "t4", 3);
        let kept: Vec<&str> = r
            .past
            .iter()
            .filter(|p| !p.secrets.is_empty())
            .map(|p| p.secrets["u"].data.as_str())
            .collect();
        assert_eq!(kept, ["s3", "s2"], "newest deletion first, max 3 - 1");
        assert_eq!(r.past.len(), 4);
    }
}
