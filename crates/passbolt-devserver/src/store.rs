//! How the server's data changes, the way users and admins change it:
//! resources added, edited, renamed, shared and revoked; metadata keys
//! rotated and shared. `modified` moves to now where the real server moves
//! it (any edit of a resource, a rotation of its metadata) and nowhere
//! else (sharing, revoking). Bulk encryption (seeding, batch edits,
//! rotation) runs on every core and outside the state's lock, so that
//! thousands of resources stay quick and requests are not held up
//! meanwhile; the few envelopes of a metadata key share are made under it.

use std::collections::HashMap;

use super::metadata_keys::MetadataKey;
use super::revisions::{Revisions, max_revisions};
use super::seed::{MetadataMode, Recipients, SealedMetadata, par_map};
use super::{
    Aro, DevServerError, OWNER, READ, SeedFolder, SeedResource, State, StoredFolder,
    StoredPermission, StoredResource, StoredSecret,
};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Every result, or the first error.
fn all<T>(results: Vec<Result<T, DevServerError>>) -> Result<Vec<T>, DevServerError> {
    results.into_iter().collect()
}

impl State {
    /// The accounts' keys and the current metadata key, copied out.
    fn recipients(&self) -> Recipients {
        let data = self.data();
        let current = data
            .metadata_keys
            .iter()
            .rev()
            .find(|k| k.expired.is_none())
            .or(data.metadata_keys.last())
            .expect("the server always holds a metadata key");
        Recipients {
            accounts: data
                .accounts
                .iter()
                .map(|a| (a.id.clone(), a.key.clone()))
                .collect(),
            metadata_key_id: current.id.clone(),
            metadata_key: current.public.clone(),
        }
    }

    pub fn add_folders(&self, folders: Vec<SeedFolder>) -> Result<(), DevServerError> {
        let rcpt = self.recipients();
        let sealed = all(par_map(&folders, |f| rcpt.folder_metadata(f)))?;
        let now = self.clock.stamp();
        let mut data = self.data();
        for (seed, metadata) in folders.into_iter().zip(sealed) {
            let created = data
                .folders
                .get(&seed.id)
                .map_or_else(|| now.clone(), |f| f.created.clone());
            data.folders.insert(
                seed.id.clone(),
                StoredFolder {
                    seed,
                    metadata,
                    created,
                    modified: now.clone(),
                },
            );
        }
        Ok(())
    }

    pub fn add_resources(&self, resources: Vec<SeedResource>) -> Result<(), DevServerError> {
        let rcpt = self.recipients();
        let sealed = all(par_map(&resources, |r| {
            Ok((rcpt.resource_metadata(r)?, rcpt.secrets(r)?))
        }))?;
        let now = self.clock.stamp();
        let mut data = self.data();
        for (seed, (metadata, secrets)) in resources.into_iter().zip(sealed) {
            // A replaced resource is an edit of the same row: it keeps its
            // creation stamp and its secret rows' ids.
            let previous = data.resources.get(&seed.id);
            let created = previous.map_or_else(|| now.clone(), |r| r.created.clone());
            let permissions = seeded_permissions(previous, &seed.readers);
            let expired = previous.and_then(|r| r.expired.clone());
            let type_id = super::seed::type_id(&seed.slug).unwrap_or_default();
            let revisions = previous.map_or_else(
                || Revisions::first(type_id, None, &now),
                |r| r.revisions.clone(),
            );
            let secrets = secrets
                .into_iter()
                .map(|(user, armored)| {
                    let old = previous.and_then(|r| r.secrets.get(&user));
                    let row = StoredSecret {
                        id: old.map_or_else(new_id, |s| s.id.clone()),
                        data: armored,
                        created: old.map_or_else(|| now.clone(), |s| s.created.clone()),
                        modified: now.clone(),
                    };
                    (user, row)
                })
                .collect();
            data.resources.insert(
                seed.id.clone(),
                StoredResource {
                    seed,
                    metadata,
                    secrets,
                    permissions,
                    expired,
                    created,
                    modified: now.clone(),
                    modified_by: None,
                    revisions,
                },
            );
        }
        Ok(())
    }

    pub fn seal_secret_to_other_key(&self, id: &str, user_id: &str) -> Result<(), DevServerError> {
        let plaintext = self
            .data()
            .resources
            .get(id)
            .map(|r| r.seed.secret.clone())
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        let armored = self
            .other_key
            .encrypt_and_sign(&self.other_key.public(), plaintext.as_bytes())
            .map_err(DevServerError::crypto)?;
        let now = self.clock.stamp();
        let mut data = self.data();
        let r = data
            .resources
            .get_mut(id)
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        let row = r
            .secrets
            .get_mut(user_id)
            .ok_or_else(|| DevServerError::NoAccount(user_id.to_string()))?;
        row.data = armored;
        row.modified = now.clone();
        r.modified = now;
        Ok(())
    }

    pub fn set_secrets<I: AsRef<str> + Sync, S: AsRef<str> + Sync>(
        &self,
        changes: &[(I, S)],
    ) -> Result<(), DevServerError> {
        let rcpt = self.recipients();
        let readers: Vec<Vec<String>> = {
            let data = self.data();
            changes
                .iter()
                .map(|(id, _)| {
                    data.resources
                        .get(id.as_ref())
                        .map(|r| r.seed.readers.clone())
                        .ok_or_else(|| DevServerError::NoResource(id.as_ref().to_string()))
                })
                .collect::<Result<_, _>>()?
        };
        let jobs: Vec<(&[String], &str)> = readers
            .iter()
            .zip(changes)
            .map(|(readers, (_, secret))| (readers.as_slice(), secret.as_ref()))
            .collect();
        let sealed = all(par_map(&jobs, |(readers, secret)| {
            readers
                .iter()
                .map(|u| Ok((u.clone(), rcpt.secret(u, secret)?)))
                .collect::<Result<HashMap<String, String>, DevServerError>>()
        }))?;
        let now = self.clock.stamp();
        let mut data = self.data();
        let max = max_revisions(&data.secret_revisions_settings);
        for ((id, secret), sealed) in changes.iter().zip(sealed) {
            let Some(r) = data.resources.get_mut(id.as_ref()) else {
                continue;
            };
            r.seed.secret = secret.as_ref().to_string();
            // An edit, as through the update endpoint: new secret rows in
            // a new revision, the old ones soft-deleted.
            let new: HashMap<String, StoredSecret> = sealed
                .into_iter()
                .map(|(user, armored)| {
                    let row = StoredSecret {
                        id: new_id(),
                        data: armored,
                        created: now.clone(),
                        modified: now.clone(),
                    };
                    (user, row)
                })
                .collect();
            let old = std::mem::replace(&mut r.secrets, new);
            let type_id = super::seed::type_id(&r.seed.slug).unwrap_or_default();
            r.revisions.replace(old, type_id, None, &now, max);
            r.modified = now.clone();
        }
        Ok(())
    }

    pub fn rename(&self, id: &str, name: &str) -> Result<(), DevServerError> {
        let rcpt = self.recipients();
        let mut seed = self
            .data()
            .resources
            .get(id)
            .map(|r| r.seed.clone())
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        seed.name = name.to_string();
        let metadata = rcpt.resource_metadata(&seed)?;
        let now = self.clock.stamp();
        let mut data = self.data();
        let r = data
            .resources
            .get_mut(id)
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        r.seed.name = seed.name;
        r.metadata = metadata;
        r.modified = now;
        Ok(())
    }

    pub fn share(&self, id: &str, user_id: &str) -> Result<(), DevServerError> {
        let rcpt = self.recipients();
        let secret = {
            let data = self.data();
            let r = data
                .resources
                .get(id)
                .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
            if matches!(r.seed.mode, MetadataMode::Personal { .. }) {
                return Err(DevServerError::PersonalItem(id.to_string()));
            }
            if r.seed.readers.iter().any(|u| u == user_id) {
                return Ok(());
            }
            r.seed.secret.clone()
        };
        let armored = rcpt.secret(user_id, &secret)?;
        let now = self.clock.stamp();
        let mut data = self.data();
        let r = data
            .resources
            .get_mut(id)
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        r.seed.readers.push(user_id.to_string());
        r.permissions.push(StoredPermission {
            id: new_id(),
            aro: Aro::User(user_id.to_string()),
            kind: READ,
        });
        r.secrets.insert(
            user_id.to_string(),
            StoredSecret {
                id: new_id(),
                data: armored,
                created: now.clone(),
                modified: now,
            },
        );
        Ok(())
    }

    pub fn share_with_group(
        &self,
        id: &str,
        group_id: &str,
        kind: u8,
    ) -> Result<(), DevServerError> {
        let rcpt = self.recipients();
        let (secret, new_members) = {
            let data = self.data();
            let r = data
                .resources
                .get(id)
                .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
            let g = data
                .groups
                .get(group_id)
                .ok_or_else(|| DevServerError::NoAccount(group_id.to_string()))?;
            let new: Vec<String> = g
                .members
                .iter()
                .filter(|m| !r.seed.readers.contains(m))
                .cloned()
                .collect();
            (r.seed.secret.clone(), new)
        };
        let sealed = new_members
            .iter()
            .map(|u| Ok((u.clone(), rcpt.secret(u, &secret)?)))
            .collect::<Result<Vec<_>, DevServerError>>()?;
        let now = self.clock.stamp();
        let mut data = self.data();
        let groups = data.groups.clone();
        let r = data
            .resources
            .get_mut(id)
            .ok_or_else(|| DevServerError::NoResource(id.to_string()))?;
        r.permissions.push(StoredPermission {
            id: new_id(),
            aro: Aro::Group(group_id.to_string()),
            kind,
        });
        r.seed.readers = access(&r.permissions, &groups);
        for (user, armored) in sealed {
            r.secrets.insert(
                user,
                StoredSecret {
                    id: new_id(),
                    data: armored,
                    created: now.clone(),
                    modified: now.clone(),
                },
            );
        }
        Ok(())
    }

    pub fn rotate_metadata_key(&self, bump_modified: bool) -> Result<String, DevServerError> {
        let now = self.clock.stamp();
        let mut key = MetadataKey::generate(&now)?;
        let (accounts, resources, folders) = {
            let data = self.data();
            let accounts: Vec<_> = data
                .accounts
                .iter()
                .filter(|a| !data.metadata_withheld.contains(&a.id))
                .cloned()
                .collect();
            let resources: Vec<SeedResource> = data
                .resources
                .values()
                .filter(|r| is_shared(&r.metadata))
                .map(|r| r.seed.clone())
                .collect();
            let folders: Vec<SeedFolder> = data
                .folders
                .values()
                .filter(|f| is_shared(&f.metadata))
                .map(|f| f.seed.clone())
                .collect();
            (accounts, resources, folders)
        };
        for account in &accounts {
            let envelope = key.envelope(&self.other_key, account, &self.domain())?;
            key.give(&account.id, envelope, &now);
        }
        let rcpt = Recipients {
            metadata_key_id: key.id.clone(),
            metadata_key: key.public.clone(),
            ..self.recipients()
        };
        let sealed_resources = all(par_map(&resources, |r| rcpt.resource_metadata(r)))?;
        let sealed_folders = all(par_map(&folders, |f| rcpt.folder_metadata(f)))?;
        let id = key.id.clone();
        let mut data = self.data();
        for old in data
            .metadata_keys
            .iter_mut()
            .filter(|k| k.expired.is_none())
        {
            old.expired = Some(now.clone());
            old.modified = now.clone();
        }
        data.metadata_keys.push(key);
        for (seed, metadata) in resources.iter().zip(sealed_resources) {
            if let Some(r) = data.resources.get_mut(&seed.id) {
                r.metadata = metadata;
                if bump_modified {
                    r.modified = now.clone();
                }
            }
        }
        for (seed, metadata) in folders.iter().zip(sealed_folders) {
            if let Some(f) = data.folders.get_mut(&seed.id) {
                f.metadata = metadata;
                if bump_modified {
                    f.modified = now.clone();
                }
            }
        }
        Ok(id)
    }

    pub fn unshare_metadata_key(&self, user_id: &str) {
        let mut data = self.data();
        data.metadata_withheld.insert(user_id.to_string());
        for key in &mut data.metadata_keys {
            key.private_keys.remove(user_id);
        }
    }

    pub fn share_metadata_key(&self, user_id: &str) -> Result<(), DevServerError> {
        let account = self
            .account(user_id)
            .ok_or_else(|| DevServerError::NoAccount(user_id.to_string()))?;
        let now = self.clock.stamp();
        let domain = self.domain();
        let mut data = self.data();
        data.metadata_withheld.remove(user_id);
        for key in &mut data.metadata_keys {
            if !key.private_keys.contains_key(user_id) {
                let envelope = key.envelope(&self.other_key, &account, &domain)?;
                key.give(user_id, envelope, &now);
            }
        }
        Ok(())
    }
}

/// The permissions of a seeded resource: those it had, for the readers
/// it still has, and OWNER for each new reader (seeding does not say who
/// may edit; tests lower it with `DevServer::set_permission`).
fn seeded_permissions(
    previous: Option<&StoredResource>,
    readers: &[String],
) -> Vec<StoredPermission> {
    let mut perms: Vec<StoredPermission> = previous
        .map(|r| {
            r.permissions
                .iter()
                .filter(|p| match &p.aro {
                    Aro::User(u) => readers.contains(u),
                    Aro::Group(_) => true,
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for reader in readers {
        if !perms.iter().any(|p| p.aro == Aro::User(reader.clone()))
            && previous.is_none_or(|r| !r.seed.readers.contains(reader))
        {
            perms.push(StoredPermission {
                id: new_id(),
                aro: Aro::User(reader.clone()),
                kind: OWNER,
            });
        }
    }
    perms
}

fn is_shared(metadata: &Option<SealedMetadata>) -> bool {
    metadata
        .as_ref()
        .is_some_and(|m| m.key_type == "shared_key")
}

/// The users having access through `perms`: direct, or as members of a
/// group with a permission; each once, in permission order.
pub(crate) fn access(
    perms: &[StoredPermission],
    groups: &indexmap::IndexMap<String, super::Group>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in perms {
        let users: Vec<String> = match &p.aro {
            Aro::User(u) => vec![u.clone()],
            Aro::Group(g) => groups.get(g).map(|g| g.members.clone()).unwrap_or_default(),
        };
        for u in users {
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// A user's highest permission, direct or through a group.
pub(crate) fn permission_of(
    perms: &[StoredPermission],
    groups: &indexmap::IndexMap<String, super::Group>,
    user: &str,
) -> Option<u8> {
    perms
        .iter()
        .filter(|p| match &p.aro {
            Aro::User(u) => u == user,
            Aro::Group(g) => groups
                .get(g)
                .is_some_and(|g| g.members.iter().any(|m| m == user)),
        })
        .map(|p| p.kind)
        .max()
}
