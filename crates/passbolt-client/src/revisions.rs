//! What a rotator reads before deciding that a secret is due: when the
//! current secret was set (the active secret revision's `created`, passbolt
//! 5.7 and later), the resource's `modified`, and passbolt's password
//! expiry mark. No secret is read.

use serde::Deserialize;
use serde_json::Value;

use crate::write::WriteError;
use crate::{Client, ClientError};

/// A resource's stamps, as the server gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretStamps {
    /// Moves with every update of the resource, its secret's included.
    pub modified: Option<String>,
    /// The password expiry mark: a date, past when the password expired.
    pub expired: Option<String>,
    /// When the active secret revision was created, i.e. when the current
    /// secret was set; `None` on servers without secret revisions.
    pub secret_set: Option<String>,
    /// This account's highest permission on it: 1 read, 7 update, 15 owner.
    pub permission: Option<u8>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    modified: Option<String>,
    #[serde(default)]
    expired: Option<String>,
    #[serde(default)]
    permission: Option<Permission>,
}

#[derive(Deserialize)]
struct Permission {
    #[serde(rename = "type")]
    kind: u8,
}

#[derive(Deserialize)]
struct RevisionRow {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    deleted: Option<Value>,
}

impl Client {
    /// The stamps of resource `id`; the revision is asked for only with
    /// `with_revision` (one more request).
    pub async fn secret_stamps(
        &self,
        id: &str,
        with_revision: bool,
    ) -> Result<SecretStamps, WriteError> {
        let path = format!("/resources/{id}.json?contain%5Bpermission%5D=1");
        let row: Row = match self.session.get(&path).await {
            Ok(row) => row,
            Err(ClientError::Http {
                status: 404 | 403, ..
            }) => return Err(WriteError::NotFound { id: id.into() }),
            Err(e) => return Err(e.into()),
        };
        let secret_set = if with_revision {
            self.secret_set_at(id).await?
        } else {
            None
        };
        Ok(SecretStamps {
            modified: row.modified,
            expired: row.expired,
            secret_set,
            permission: row.permission.map(|p| p.kind),
        })
    }

    /// The active secret revision's `created`, or `None` when the server
    /// has no secret revisions (before passbolt 5.7 the route is a 404).
    pub async fn secret_set_at(&self, id: &str) -> Result<Option<String>, ClientError> {
        let path = format!("/secret-revisions/resource/{id}.json");
        match self.session.get::<Vec<RevisionRow>>(&path).await {
            Ok(rows) => Ok(rows
                .into_iter()
                .find(|r| r.deleted.as_ref().is_none_or(Value::is_null))
                .and_then(|r| r.created)),
            Err(ClientError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
