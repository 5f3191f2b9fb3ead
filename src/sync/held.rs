//! What the daemon holds between passes: the decrypted secrets its
//! targets read, each with the `modified` stamp of the answer that carried
//! it, so that a pass downloads only what changed.
//!
//! A held secret is *current* for a listed resource when it was downloaded
//! at the `modified` the listing shows, and that stamp was *settled*: at
//! least `SETTLE_SECONDS` older than the server's clock when it was
//! downloaded. `modified` has one-second precision, so a second edit in the
//! same second as the download would keep the stamp; an unsettled secret
//! is downloaded again on the next pass.
//!
//! Nothing here talks to the server, renders or writes: the pass asks what
//! is current and hands over what it downloaded. Values are `SecretFields`,
//! which never print and are zeroized when dropped or replaced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Field;
use crate::sync::scope::{Outcome, Scope};
use crate::sync::state::{Record, RecordedScope};
use passbolt_client::secret::{Resource, Secret, SecretFields};
use passbolt_client::{FetchedSecret, Listing};

/// How much older than the server's clock a `modified` stamp must be for
/// no further edit to be able to share it.
pub const SETTLE_SECONDS: i64 = 2;

struct HeldSecret {
    modified: String,
    settled: bool,
    fields: SecretFields,
}

#[derive(Default)]
pub struct Held {
    /// The client's key identity the secrets were decrypted under.
    identity: Option<String>,
    secrets: HashMap<String, HeldSecret>,
    /// Which resources each target read in its last pass.
    used_by: HashMap<PathBuf, BTreeSet<String>>,
    /// When each target's secrets were last all downloaded again.
    full_sync: HashMap<PathBuf, Instant>,
    /// What each target's names, folders and template resolved to.
    scope: Scope,
    /// What each target's file holds, for the state directory: read at
    /// start (a target whose file and stamps match is current without a
    /// download), brought up to date by every pass.
    records: BTreeMap<PathBuf, Record>,
    /// The listed rows (metadata, never a secret) of the resources the
    /// targets used in their last pass: what a render without the server
    /// resolves against.
    rows: HashMap<String, Resource>,
    /// Values a rotation applied that passbolt does not hold yet, by
    /// resource id and field: they win over what is downloaded until
    /// they are stored. `clear` keeps them: they are in use, and only
    /// their store (or the operator) ends them.
    pending: HashMap<(String, Field), Secret>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("secrets", &self.secrets.len())
            .field("targets", &self.used_by.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// What storing one downloaded secret found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Nothing was held for it, or what was held was not current.
    New,
    /// A current value was held and the download is the same.
    Same,
    /// A current value was held, yet the download differs: an incremental
    /// pass would have missed this change.
    Missed,
}

impl Held {
    pub fn new() -> Held {
        Held::default()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.secrets.clear();
        self.used_by.clear();
        self.full_sync.clear();
        self.scope.clear();
        self.records.clear();
        self.rows.clear();
        self.identity = None;
    }

    /// Drops everything when the keys behind the secrets changed (the
    /// account's key, the set of metadata keys). Returns whether it did.
    pub fn check_identity(&mut self, identity: &str) -> bool {
        match &self.identity {
            Some(held) if held == identity => false,
            // Only the account's key was known (no metadata key loaded
            // yet: the scoped listings so far named v4 or personal items
            // only). What is held never depended on a metadata key, so
            // learning the set is no change.
            Some(held) if !held.contains(' ') && identity.split(' ').next() == Some(held) => {
                self.identity = Some(identity.to_string());
                false
            }
            Some(_) => {
                self.clear();
                self.identity = Some(identity.to_string());
                true
            }
            None => {
                self.identity = Some(identity.to_string());
                false
            }
        }
    }

    /// The held secret of `r`, when it is current (see the module docs).
    pub fn current(&self, r: &Resource) -> Option<&SecretFields> {
        let held = self.secrets.get(&r.id)?;
        (held.settled && r.modified.as_deref() == Some(held.modified.as_str()))
            .then_some(&held.fields)
    }

    /// Takes the records a state file held, with each target's last full
    /// sync: the next one follows the recorded time, not the start.
    pub fn load_records(&mut self, records: BTreeMap<PathBuf, Record>, now: Instant) {
        let unix = chrono::Utc::now().timestamp();
        for (path, r) in &records {
            if let Some(at) = r.full_sync_at {
                let age = Duration::from_secs(unix.saturating_sub(at).max(0) as u64);
                self.full_sync
                    .insert(path.clone(), now.checked_sub(age).unwrap_or(now));
            }
        }
        self.records = records;
    }

    /// The records to keep in the state directory, with each target's
    /// last full sync and name resolution as Unix seconds.
    pub fn records(&self, now: Instant) -> BTreeMap<PathBuf, Record> {
        let unix = chrono::Utc::now().timestamp();
        let at = |t: Instant| unix - now.saturating_duration_since(t).as_secs() as i64;
        self.records
            .iter()
            .map(|(p, r)| {
                let mut r = r.clone();
                r.full_sync_at = self.full_sync.get(p).map(|last| at(*last));
                r.scope = self
                    .scope
                    .resolved(p)
                    .map(|(ids, folders, t)| RecordedScope {
                        ids: ids.clone(),
                        folders: folders.clone(),
                        resolved_at: at(t),
                    });
                (p.clone(), r)
            })
            .collect()
    }

    /// Takes `target`'s recorded resolution when nothing resolved it since
    /// the start, its record is of the same planned `form` (a config whose
    /// selectors changed while stopped resolves them anew) and it is not
    /// due again; returns whether it did.
    pub fn restore_scope(
        &mut self,
        target: &Path,
        form: impl FnOnce() -> String,
        every: Duration,
        now: Instant,
    ) -> bool {
        if self.scope.has(target) {
            return false;
        }
        let Some(Record {
            scope: Some(recorded),
            form: recorded_form,
            ..
        }) = self.records.get(target)
        else {
            return false;
        };
        if *recorded_form != form() {
            return false;
        }
        let age = chrono::Utc::now().timestamp() - recorded.resolved_at;
        let Some(age) = u64::try_from(age)
            .ok()
            .map(Duration::from_secs)
            .filter(|age| *age < every)
        else {
            // From the future, or due anyway.
            return false;
        };
        // Older than the machine's uptime (a timer run after a reboot):
        // counted from the start, as a recorded full sync is.
        let at = now.checked_sub(age).unwrap_or(now);
        let outcome = Outcome::Resolved {
            ids: recorded.ids.clone(),
            folders: recorded.folders.clone(),
        };
        self.scope.record(target, outcome, at);
        true
    }

    pub fn record(&self, target: &Path) -> Option<&Record> {
        self.records.get(target)
    }

    pub fn set_record(&mut self, target: &Path, record: Option<Record>) {
        match record {
            Some(r) => self.records.insert(target.to_path_buf(), r),
            None => self.records.remove(target),
        };
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn scope_mut(&mut self) -> &mut Scope {
        &mut self.scope
    }

    /// The held secret of `id`, current or not.
    pub fn get(&self, id: &str) -> Option<&SecretFields> {
        self.secrets.get(id).map(|h| &h.fields)
    }

    /// Keeps a downloaded secret, replacing (and so zeroizing) the one held.
    pub fn store(&mut self, id: &str, fetched: FetchedSecret) -> Stored {
        let Ok(fields) = fetched.fields else {
            self.secrets.remove(id);
            return Stored::New;
        };
        let modified = fetched.modified.unwrap_or_default();
        let settled = match (modified_epoch(&modified), fetched.servertime) {
            (Some(m), Some(now)) => m + SETTLE_SECONDS <= now,
            // Without both stamps nothing proves the value current later.
            _ => false,
        };
        let outcome = match self.secrets.get(id) {
            Some(h) if h.settled && h.modified == modified => {
                if h.fields == fields {
                    Stored::Same
                } else {
                    Stored::Missed
                }
            }
            _ => Stored::New,
        };
        self.secrets.insert(
            id.to_string(),
            HeldSecret {
                modified,
                settled,
                fields,
            },
        );
        outcome
    }

    /// Forgets a secret, e.g. of a resource that left the listing.
    pub fn forget(&mut self, id: &str) {
        self.secrets.remove(id);
    }

    /// Forgets the secrets of every resource `listed` does not contain.
    pub fn forget_unlisted(&mut self, listed: impl Fn(&str) -> bool) {
        self.secrets.retain(|id, _| listed(id));
    }

    /// Records which resources a target read in this pass.
    pub fn record_use(&mut self, target: &Path, ids: BTreeSet<String>) {
        self.used_by.insert(target.to_path_buf(), ids);
    }

    /// The targets whose last pass read the secret of `id`.
    pub fn targets_using(&self, id: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .used_by
            .iter()
            .filter(|(_, ids)| ids.contains(id))
            .map(|(p, _)| p.clone())
            .collect();
        out.sort();
        out
    }

    /// Keeps the listed rows of `ids`, for a render without the server.
    pub fn keep_rows<'a>(&mut self, listing: &Listing, ids: impl IntoIterator<Item = &'a String>) {
        for id in ids {
            if let Some(r) = listing.get(id) {
                self.rows.insert(id.clone(), r.clone());
            }
        }
    }

    /// The kept rows as a listing (without a server time: nothing
    /// rendered from it is recorded as settled).
    pub fn kept_listing(&self) -> Listing {
        let mut rows: Vec<Resource> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Listing::from_resources(rows, None)
    }

    /// A rotated value in use that passbolt does not hold yet.
    pub fn set_pending(&mut self, id: &str, field: &Field, value: Secret) {
        self.pending.insert((id.to_string(), field.clone()), value);
    }

    /// The pending value of `field` of `id`, if any.
    pub fn pending(&self, id: &str, field: &Field) -> Option<&Secret> {
        self.pending.get(&(id.to_string(), field.clone()))
    }

    /// The value is stored (or given up by the operator): what passbolt
    /// holds is the truth again. The held secret is dropped, so that the
    /// next pass downloads it.
    pub fn end_pending(&mut self, id: &str, field: &Field) {
        if self
            .pending
            .remove(&(id.to_string(), field.clone()))
            .is_some()
        {
            self.secrets.remove(id);
            // Files written from the value hold what no stamp vouches for.
            for path in self.targets_using(id) {
                self.records.remove(&path);
            }
        }
    }

    /// Whether some field of `id` has a pending value: content made from
    /// it is not what the server's stamps vouch for, so it is not recorded.
    pub fn has_pending(&self, id: &str) -> bool {
        self.pending.keys().any(|(p, _)| p == id)
    }

    /// Keeps only what the targets at `paths` use: after a config reload
    /// removed targets, their secrets are no longer held.
    pub fn retain_targets(&mut self, paths: &[&Path]) {
        self.used_by.retain(|p, _| paths.contains(&p.as_path()));
        self.full_sync.retain(|p, _| paths.contains(&p.as_path()));
        self.scope.retain_targets(paths);
        self.records.retain(|p, _| paths.contains(&p.as_path()));
        let used: BTreeSet<&String> = self.used_by.values().flatten().collect();
        self.secrets.retain(|id, _| used.contains(id));
        self.rows.retain(|id, _| used.contains(id));
    }

    /// Whether `target`'s full sync is due (see `full_sync_due`), without
    /// starting its period.
    pub fn full_sync_pending(&self, target: &Path, every: Option<Duration>, now: Instant) -> bool {
        match (every, self.full_sync.get(target)) {
            (Some(every), Some(last)) => now.duration_since(*last) >= every,
            _ => false,
        }
    }

    /// Whether `target`'s secrets are due to be downloaded again whatever
    /// their stamps: `every` after the last time (`None`: never). A target
    /// seen for the first time starts its period now.
    pub fn full_sync_due(&mut self, target: &Path, every: Option<Duration>, now: Instant) -> bool {
        let Some(every) = every else { return false };
        match self.full_sync.get(target) {
            Some(last) => now.duration_since(*last) >= every,
            None => {
                self.full_sync.insert(target.to_path_buf(), now);
                false
            }
        }
    }

    pub fn mark_full_sync(&mut self, target: &Path, now: Instant) {
        self.full_sync.insert(target.to_path_buf(), now);
    }
}

/// A passbolt `modified` stamp (RFC 3339, e.g. `2026-12-01T13:22:24+00:00`)
/// as Unix seconds.
pub fn modified_epoch(modified: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(modified)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_the_metadata_keys_is_no_change_but_a_new_set_or_key_is() {
        let mut h = Held::new();
        assert!(!h.check_identity("USER"));
        // A scoped listing of v4 items only, then one that loads the keys.
        assert!(!h.check_identity("USER META1"));
        h.used_by.insert(PathBuf::from("/t"), BTreeSet::new());
        assert!(h.check_identity("USER META2"), "another set of keys");
        assert!(h.used_by.is_empty());
        assert!(h.check_identity("OTHER META2"), "another account key");
        assert!(h.check_identity("USER"), "from keys back to none");
    }
}
