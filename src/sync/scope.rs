//! Which resources a pass lists: only those its due targets map, not
//! everything the account can read.
//!
//! A selector by id is listed by id (`filter[has-id][]`) at every pass; it
//! needs no resolution. Names (v5 names are encrypted: the server cannot
//! filter them), folder paths and templates are *resolved* on a full
//! listing: at a target's first pass, every `resolve_every`, and whenever
//! a scoped pass finds one of its resolved resources gone, renamed or
//! otherwise not resolving any more. Between those, the resolved ids are
//! listed by id and the resolved folders by `filter[has-parent][]`, so a
//! resource moved into or out of a selected folder shows at the next pass,
//! while a new or renamed resource that starts to match a name is noticed
//! at the next resolution.
//!
//! Nothing here talks to the server: the pass asks what to list and
//! records what a full listing resolved.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a target resolved on the last full listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every selector resolved, to `ids` and the folders `folders`.
    Resolved {
        ids: BTreeSet<String>,
        folders: BTreeSet<String>,
    },
    /// A selector named nothing: the scoped pass reports it missing just
    /// as a full listing would, until the next resolution.
    Missing {
        ids: BTreeSet<String>,
        folders: BTreeSet<String>,
    },
    /// Resolution failed otherwise (ambiguous name, variable collision,
    /// undecodable row, ...): the target is resolved on a full listing at
    /// every pass until fixed, so that a scoped listing never turns such a
    /// failure into a "missing" that `on_missing` would act on.
    Failed,
}

#[derive(Debug)]
struct Resolution {
    outcome: Outcome,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct Scope {
    targets: HashMap<PathBuf, Resolution>,
}

impl Scope {
    /// Whether a due target with names, folders or a template must be
    /// resolved on a full listing in this pass.
    pub fn needs_full(&self, target: &Path, every: Duration, now: Instant) -> bool {
        match self.targets.get(target) {
            None => true,
            Some(r) => matches!(r.outcome, Outcome::Failed) || now.duration_since(r.at) >= every,
        }
    }

    /// Whether the last resolution of `target` was complete: then a
    /// scoped pass that no longer resolves it resolves it again in full.
    pub fn was_resolved(&self, target: &Path) -> bool {
        matches!(
            self.targets.get(target).map(|r| &r.outcome),
            Some(Outcome::Resolved { .. })
        )
    }

    /// Adds what `target` lists by id and by folder.
    pub fn add_request(
        &self,
        target: &Path,
        ids: &mut BTreeSet<String>,
        folders: &mut BTreeSet<String>,
    ) {
        if let Some(Resolution {
            outcome:
                Outcome::Resolved { ids: i, folders: f } | Outcome::Missing { ids: i, folders: f },
            ..
        }) = self.targets.get(target)
        {
            ids.extend(i.iter().cloned());
            folders.extend(f.iter().cloned());
        }
    }

    /// What `target`'s selectors resolved to (ids, folders) and when, if
    /// its last resolution was complete: what a state file may keep
    /// across a restart.
    pub fn resolved(
        &self,
        target: &Path,
    ) -> Option<(&BTreeSet<String>, &BTreeSet<String>, Instant)> {
        match self.targets.get(target)? {
            Resolution {
                outcome: Outcome::Resolved { ids, folders },
                at,
            } => Some((ids, folders, *at)),
            _ => None,
        }
    }

    pub fn has(&self, target: &Path) -> bool {
        self.targets.contains_key(target)
    }

    pub fn record(&mut self, target: &Path, outcome: Outcome, now: Instant) {
        self.targets
            .insert(target.to_path_buf(), Resolution { outcome, at: now });
    }

    /// Forgets what `target` resolved to, e.g. after its selectors changed
    /// in a config reload: its next pass resolves them on a full listing.
    pub fn forget(&mut self, target: &Path) {
        self.targets.remove(target);
    }

    pub fn clear(&mut self) {
        self.targets.clear();
    }

    pub fn retain_targets(&mut self, paths: &[&Path]) {
        self.targets.retain(|p, _| paths.contains(&p.as_path()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_target_is_resolved_first_then_every_period_and_always_when_failed() {
        let mut s = Scope::default();
        let t = Path::new("/t");
        let now = Instant::now();
        let every = Duration::from_secs(60);
        assert!(s.needs_full(t, every, now));
        s.record(
            t,
            Outcome::Resolved {
                ids: set(&["a"]),
                folders: set(&["f"]),
            },
            now,
        );
        assert!(!s.needs_full(t, every, now + Duration::from_secs(59)));
        assert!(s.needs_full(t, every, now + every));
        assert!(s.was_resolved(t));
        let (mut ids, mut folders) = (BTreeSet::new(), BTreeSet::new());
        s.add_request(t, &mut ids, &mut folders);
        assert_eq!((ids, folders), (set(&["a"]), set(&["f"])));

        s.record(t, Outcome::Failed, now);
        assert!(s.needs_full(t, every, now));
        assert!(!s.was_resolved(t));
        let (mut ids, mut folders) = (BTreeSet::new(), BTreeSet::new());
        s.add_request(t, &mut ids, &mut folders);
        assert!(ids.is_empty() && folders.is_empty());
    }
}
