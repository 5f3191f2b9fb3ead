//! Who is at the other end of a Unix socket, from the kernel's own record
//! (`SO_PEERCRED`: the uid and gid of the process that connected, taken at
//! `connect`, which the peer cannot forge), and whether that may be let in.
//!
//! Group membership is the group database's (`getgrouplist` of the peer's
//! user), not the peer process's current groups: `/proc/<pid>` could by
//! then be another process's.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

/// Who may use a socket: root, the process's own user, and the members
/// of one group when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    own_uid: u32,
    group: Option<u32>,
}

/// A group name the system does not know.
#[derive(Debug, thiserror::Error)]
#[error("no group named {0:?} on this host")]
pub struct UnknownGroup(pub String);

impl PeerPolicy {
    /// Root and this process's effective user only.
    pub fn own_user() -> PeerPolicy {
        PeerPolicy {
            own_uid: Uid::effective().as_raw(),
            group: None,
        }
    }

    /// Also the members of the group `name_or_id` (a name, or a number),
    /// resolved now.
    pub fn with_group(mut self, name_or_id: &str) -> Result<PeerPolicy, UnknownGroup> {
        let group = match name_or_id.parse::<u32>() {
            Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
            Err(_) => Group::from_name(name_or_id),
        };
        let group = group
            .ok()
            .flatten()
            .ok_or_else(|| UnknownGroup(name_or_id.to_string()))?;
        self.group = Some(group.gid.as_raw());
        Ok(self)
    }

    pub fn group(&self) -> Option<u32> {
        self.group
    }

    /// Whether a peer of `uid` and primary `gid` may be let in.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.own_uid {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        gid == group || member_of(uid, gid, group)
    }
}

/// Whether the user `uid` (primary group `gid`) is a member of `group` in
/// the group database. A uid with no user entry is a member of nothing.
fn member_of(uid: u32, gid: u32, group: u32) -> bool {
    let Some(user) = User::from_uid(Uid::from_raw(uid)).ok().flatten() else {
        return false;
    };
    let Ok(name) = CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        .map(|groups| groups.iter().any(|g| g.as_raw() == group))
        .unwrap_or(false)
}

/// Whether the process answering on a socket may be trusted with a
/// request (and its answer believed): root or this process's own user.
/// Anyone else could have bound a socket of that name in a directory they
/// can write.
pub fn trusted_server(uid: u32) -> bool {
    uid == 0 || uid == Uid::effective().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_own_user_are_let_in_and_nobody_else_without_a_group() {
        let p = PeerPolicy {
            own_uid: 1000,
            group: None,
        };
        assert!(p.allows(0, 0));
        assert!(p.allows(1000, 1000));
        assert!(!p.allows(65534, 65534));
        assert!(
            !p.allows(1001, 1000),
            "a shared primary group is not enough"
        );
    }

    #[test]
    fn a_group_lets_in_its_primary_and_its_listed_members() {
        let p = PeerPolicy {
            own_uid: 1000,
            group: Some(4242),
        };
        assert!(p.allows(1234, 4242), "primary group");
        assert!(!p.allows(1234, 1234), "no such user: member of nothing");
        // root's group list always holds root's primary group, 0.
        let root_group = PeerPolicy {
            own_uid: 1000,
            group: Some(0),
        };
        assert!(member_of(0, 0, 0));
        assert!(root_group.allows(0, 0));
    }

    #[test]
    fn a_server_is_trusted_when_root_or_this_user() {
        let me = Uid::effective().as_raw();
        assert!(trusted_server(0));
        assert!(trusted_server(me));
        let other = if me == 65534 { 65533 } else { 65534 };
        assert!(!trusted_server(other));
    }

    #[test]
    fn an_unknown_group_is_named() {
        let e = PeerPolicy::own_user()
            .with_group("no-such-group-passbolt-sync")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no group named \"no-such-group-passbolt-sync\" on this host"
        );
    }
}
