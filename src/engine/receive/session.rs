//! Session authorization: which groups and paths this authenticated peer may
//! touch here, and what it may create in them. Everything is decided from
//! this node's own config; nothing the peer says widens it.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::roots::Roots;
use crate::apply;
use crate::config::Config;
use crate::pattern::Level;
use crate::policy::GroupPolicy;
use crate::proto::ErrorCode;
use crate::types::{FileKind, IgnoreFields, Meta};

/// Refused pushes of one session logged one by one.
pub const LOGGED_REFUSALS: u64 = 10;

/// A group this session may write into: its compiled policy (through
/// `Deref`: name, matcher, push targets, walk roots, backups) and what this
/// session adds to it.
pub(super) struct Allowed {
    /// The group, compiled once per config load.
    group: GroupPolicy,
    /// The sender is receive-only in this group: it may not push.
    sender_receive_only: bool,
    /// What a peer may create here (`allow-devices`, `allow-setid`, `owners`).
    pub(super) policy: Policy,
    /// Where versions that lose a conflict are kept.
    pub(super) conflict_dir: PathBuf,
}

impl std::ops::Deref for Allowed {
    type Target = GroupPolicy;
    fn deref(&self) -> &GroupPolicy {
        &self.group
    }
}

/// The receiver's say over what a peer may create in a group: device nodes
/// and setuid/setgid bits would turn "a write inside a root" into root on
/// this host, so they are off unless the group allows them; owners may be
/// limited to a range. Compiled with the group's policy.
pub(super) type Policy = crate::policy::Admission;

impl crate::policy::Admission {
    /// Refuses (with why) what the group does not allow, and strips the
    /// setuid/setgid bits it does not allow (saying so).
    pub(crate) fn admit(&self, group: &str, new: &mut Meta) -> Result<Option<String>, String> {
        if matches!(new.kind, FileKind::CharDevice | FileKind::BlockDevice) && !self.allow_devices {
            return Err(format!(
                "device nodes from peers are refused in group '{group}' (allow them with 'allow-devices;')"
            ));
        }
        if let Some((lo, hi)) = self.owners
            && (!(lo..=hi).contains(&new.uid) || !(lo..=hi).contains(&new.gid))
        {
            return Err(format!(
                "owner {}:{} is outside the range {lo}-{hi} group '{group}' allows ('owners')",
                new.uid, new.gid
            ));
        }
        if new.mode & 0o6000 != 0 && !self.allow_setid && new.kind != FileKind::Dir {
            new.mode &= !0o6000;
            return Ok(Some(format!(
                "setuid/setgid bits stripped (group '{group}' does not say 'allow-setid;')"
            )));
        }
        Ok(None)
    }
}

/// What one authenticated peer may do here, fixed when its session opens.
pub(super) struct Session {
    /// This node's config.
    pub(super) config: std::sync::Arc<Config>,
    /// The authenticated peer.
    pub(super) peer: String,
    /// The groups it opened that this node is in.
    pub(super) groups: Vec<Allowed>,
    roots: Roots,
    /// `ignore uid gid mod;`, for versions, comparisons and the writer.
    pub(super) ignore: IgnoreFields,
    /// Pushes refused so far: the first [`LOGGED_REFUSALS`] are logged one
    /// by one, the rest as one count at the session's end (a peer must not
    /// be able to fill the log).
    refusals: u64,
}

impl Session {
    /// The session of `peer`, which opened `groups`, from the member groups'
    /// compiled `policies`; conflict copies go beside the index in
    /// `index_dir` unless a group has a backup directory.
    pub(super) fn open(
        config: std::sync::Arc<Config>,
        policies: &[GroupPolicy],
        index_dir: &Path,
        peer: &str,
        groups: &[String],
    ) -> Session {
        let allowed = policies
            .iter()
            .filter(|g| groups.contains(&g.name))
            .map(|g| Allowed {
                group: g.clone(),
                sender_receive_only: g.is_receive_only(peer),
                policy: g.admission,
                conflict_dir: g.conflict_dir(index_dir, &config.myname),
            })
            .collect();
        let roots = Roots::of(&config, policies);
        let ignore = config.ignore;
        Session { config, peer: peer.to_string(), groups: allowed, roots, ignore, refusals: 0 }
    }

    /// The roots of the member groups.
    pub(super) fn roots(&self) -> &Roots {
        &self.roots
    }

    /// Authorizes `path` for `group` and finds where it lives: `(group index,
    /// real root, path below the root)`.
    pub(super) fn resolve(
        &self,
        group: &str,
        path: &[u8],
    ) -> Result<(usize, PathBuf, Vec<u8>), (ErrorCode, String)> {
        let shown = crate::paths::display(path);
        let Some(gi) = self.groups.iter().position(|g| g.name == group) else {
            return Err((
                ErrorCode::UnknownGroup,
                format!("group '{}' is not open on this session", crate::paths::escape(group)),
            ));
        };
        let g = &self.groups[gi];
        if g.sender_receive_only {
            return Err((
                ErrorCode::ReceiveOnly,
                format!("{} is receive-only in group '{group}'", self.peer),
            ));
        }
        if g.matcher.level(path) != Level::Managed {
            return Err((
                ErrorCode::PathRefused,
                format!("{shown} is not managed by group '{group}' here"),
            ));
        }
        for root in &g.roots {
            let rb = root.as_bytes();
            let rel: &[u8] = if path == rb {
                b""
            } else if crate::index::is_below(path, rb) {
                let skip = if rb == b"/" { 1 } else { rb.len() + 1 };
                &path[skip..]
            } else {
                continue;
            };
            apply::check_rel(rel).map_err(|e| (ErrorCode::PathRefused, e.to_string()))?;
            let Some(real) = crate::paths::real_path(&self.config, path) else {
                return Err((ErrorCode::PathRefused, format!("{shown}: prefix not defined here")));
            };
            let Some((anchor, rel)) = self.roots.place(&real) else {
                return Err((ErrorCode::PathRefused, format!("{shown}: no include root here")));
            };
            apply::check_rel(&rel).map_err(|e| (ErrorCode::PathRefused, e.to_string()))?;
            return Ok((gi, anchor, rel));
        }
        Err((
            ErrorCode::PathRefused,
            format!("{shown} is under no include root of group '{group}' here"),
        ))
    }

    /// Where `path` lives, if its parent directory is part of what the group
    /// manages here (only then does it take the sender's mtime; the
    /// directory holding an include root, `/etc` for `/etc/hosts`, is not).
    pub(super) fn parent_in_tree(&self, group: &str, path: &[u8]) -> Option<(PathBuf, Vec<u8>)> {
        let (gi, root, rel) = self.resolve(group, path).ok()?;
        let slash = path.iter().rposition(|&b| b == b'/')?;
        let parent = &path[..slash];
        if parent.is_empty() || self.groups[gi].matcher.level(parent) != Level::Managed {
            return None;
        }
        Some((root, rel))
    }

    /// Logs a refused push: one by one up to [`LOGGED_REFUSALS`] per
    /// session, then only counted (see [`Session::log_refusal_count`]).
    pub(super) fn refused(&mut self, path: &[u8], why: &str) {
        self.refusals += 1;
        if self.refusals <= LOGGED_REFUSALS {
            warn!(peer = %self.peer, "refused push of {}: {why}", crate::paths::display(path));
        }
    }

    /// At the session's end: the refusals not logged one by one, as a count.
    pub(super) fn log_refusal_count(&self) {
        if self.refusals > LOGGED_REFUSALS {
            let more = self.refusals - LOGGED_REFUSALS;
            warn!(peer = %self.peer, "refused {} pushes in this session ({more} not logged above)", self.refusals);
        }
    }

    /// Pushes refused so far.
    #[cfg(test)]
    pub(super) fn refusals(&self) -> u64 {
        self.refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::receive::tests::{config_for, meta};

    fn session(dir: &Path, peer: &str, extra: &str) -> Session {
        let www = dir.join("www");
        let text = format!(
            "group web {{ host a b (c); key k; include {}; exclude {}/tmp; {extra} }}\n\
             group other {{ host a d; key k; include {}/other; }}",
            www.display(),
            www.display(),
            dir.display()
        );
        let config = std::sync::Arc::new(config_for(dir, &text));
        let groups = vec!["web".to_string()];
        let policies = GroupPolicy::members(&config).unwrap();
        Session::open(config, &policies, dir, peer, &groups)
    }

    #[test]
    fn only_managed_paths_of_open_groups_from_a_pushing_peer() {
        let t = tempfile::tempdir().unwrap();
        let s = session(t.path(), "b", "");
        let www = t.path().join("www");
        let ok = format!("{}/index.html", www.display());
        let (gi, anchor, rel) = s.resolve("web", ok.as_bytes()).unwrap();
        assert_eq!((s.groups[gi].name.as_str(), anchor.as_path()), ("web", t.path()));
        assert_eq!(rel, b"www/index.html");
        // `other` was not opened on this session.
        let code = |g: &str, p: &str| s.resolve(g, p.as_bytes()).unwrap_err().0;
        assert_eq!(
            code("other", &format!("{}/other/x", t.path().display())),
            ErrorCode::UnknownGroup
        );
        assert_eq!(code("nope", &ok), ErrorCode::UnknownGroup);
        assert_eq!(code("web", &format!("{}/tmp/x", www.display())), ErrorCode::PathRefused);
        assert_eq!(code("web", "/etc/passwd"), ErrorCode::PathRefused);
        assert_eq!(code("web", &format!("{}/a/../../x", www.display())), ErrorCode::PathRefused);
        // Only a managed parent takes the sender's mtime: not the directory
        // holding the include root.
        assert!(s.parent_in_tree("web", ok.as_bytes()).is_some());
        assert!(s.parent_in_tree("web", www.as_os_str().as_encoded_bytes()).is_none());
        // The conflict copies go beside the index without a backup directory.
        assert_eq!(s.groups[gi].conflict_dir, t.path().join("a.conflicts"));
        assert!(s.groups[gi].backup.is_none());
    }

    #[test]
    fn a_receive_only_peer_may_not_push() {
        let t = tempfile::tempdir().unwrap();
        let s = session(t.path(), "c", "");
        let p = format!("{}/www/f", t.path().display());
        let (code, why) = s.resolve("web", p.as_bytes()).unwrap_err();
        assert_eq!(code, ErrorCode::ReceiveOnly);
        assert!(why.contains("c is receive-only in group 'web'"), "{why}");
    }

    #[test]
    fn devices_owners_and_setid_bits_follow_the_group() {
        let t = tempfile::tempdir().unwrap();
        let strict = session(t.path(), "b", "owners 1000-2000;");
        let p = strict.groups[0].policy;
        let mut dev = meta(FileKind::CharDevice);
        assert!(p.admit("web", &mut dev).unwrap_err().contains("allow-devices"));
        let mut root_owned = Meta { uid: 0, gid: 0, ..meta(FileKind::File) };
        assert!(
            p.admit("web", &mut root_owned).unwrap_err().contains("outside the range 1000-2000")
        );
        let mut suid = Meta { uid: 1500, gid: 1500, mode: 0o4755, ..meta(FileKind::File) };
        assert!(p.admit("web", &mut suid).unwrap().unwrap().contains("stripped"));
        assert_eq!(suid.mode, 0o755);
        let open = session(t.path(), "b", "allow-devices; allow-setid;").groups[0].policy;
        let mut dev = meta(FileKind::CharDevice);
        assert_eq!(open.admit("web", &mut dev), Ok(None));
        let mut suid = Meta { mode: 0o4755, ..meta(FileKind::File) };
        assert_eq!(open.admit("web", &mut suid), Ok(None));
        assert_eq!(suid.mode, 0o4755);
    }

    #[test]
    fn refusals_are_counted() {
        let t = tempfile::tempdir().unwrap();
        let mut s = session(t.path(), "b", "");
        for _ in 0..LOGGED_REFUSALS + 3 {
            s.refused(b"/x", "no");
        }
        assert_eq!(s.refusals(), LOGGED_REFUSALS + 3);
        s.log_refusal_count();
    }
}
