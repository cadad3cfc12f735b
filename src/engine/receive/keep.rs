//! What the receiver keeps of the versions a peer's change replaces:
//! `backup-generations` copies before a replace or delete, and the copy of
//! this node's own version when it loses a conflict (with the record of why
//! it lost).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::session::Session;
use crate::apply;
use crate::engine::conflict::{Decision, Side, decide};
use crate::index::{Index, Resolution};
use crate::policy::GroupPolicy;
use crate::types::{FileKind, Meta};

/// One entry as the receiver addresses it: its real root, the path below
/// it, and its DB form.
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    /// The anchor the path is written from.
    pub(super) root: &'a Path,
    /// The path below it.
    pub(super) rel: &'a [u8],
    /// DB form.
    pub(super) path: &'a [u8],
}

/// `backup-generations`: before a peer's version replaces or deletes a
/// regular file, its content is kept (owner, mode and mtime too) as
/// `<backup-directory>/<path>.1`, the previous `.1` becoming `.2` and so
/// on; the oldest beyond N goes. `<path>` is the DB form without a
/// leading `/` (`%www%/a/f`, `etc/nginx/nginx.conf`). `backup`: the group's
/// `(directory, generations)`, `None` when backups are off.
pub(super) fn back_up(backup: Option<&(PathBuf, u32)>, at: At<'_>) {
    let Some((dir, n)) = backup else { return };
    let n = *n;
    let stem = dir.join(OsStr::from_bytes(at.path.strip_prefix(b"/").unwrap_or(at.path)));
    let generation = |k: u32| {
        let mut s = stem.clone().into_os_string();
        s.push(format!(".{k}"));
        PathBuf::from(s)
    };
    // Missing generations are normal (the first backups of a path); any
    // other failure is logged, and the newest backup is still written.
    let logged = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            warn!("backup of {}: {what}: {e}", crate::paths::display(at.path));
        }
        _ => {}
    };
    logged("dropping the oldest generation", std::fs::remove_file(generation(n)));
    for k in (1..n).rev() {
        logged("rotating generations", std::fs::rename(generation(k), generation(k + 1)));
    }
    if let Err(e) = apply::preserve(at.root, at.rel, &generation(1)) {
        warn!("backup of {}: {e}", crate::paths::display(at.path));
    }
}

/// Keeps the version about to be replaced after a conflict with `peer`, in
/// `conflict_dir`. Returns where.
pub(super) fn keep_loser(conflict_dir: &Path, peer: &str, at: At<'_>) -> Option<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rel_store = at.path.strip_prefix(b"/").unwrap_or(at.path).to_vec();
    rel_store.extend_from_slice(format!(".conflict-{stamp}-{peer}").as_bytes());
    let first = conflict_dir.join(OsStr::from_bytes(&rel_store));
    // A second loser of the same path within the same second must not
    // replace the first one's copy.
    let mut dest = first.clone();
    for k in 2..1000 {
        if std::fs::symlink_metadata(&dest).is_err() {
            break;
        }
        let mut name = first.clone().into_os_string();
        name.push(format!(".{k}"));
        dest = PathBuf::from(name);
    }
    match apply::preserve(at.root, at.rel, &dest) {
        Ok(true) => Some(dest),
        Ok(false) => None,
        Err(e) => {
            warn!("keeping the losing version of {}: {e}", crate::paths::display(at.path));
            None
        }
    }
}

/// A forced push is about to replace (or delete) `cur`: when `cur` is
/// this node's own version, keep it and say why it lost: the group's rule
/// when the rule gives the peer's version the win (`lost: younger`), else
/// a person's `csync -f` there. A version this node only received from
/// another host (a bystander) is neither kept nor recorded: its maker
/// keeps its own. Returns the record to write once the change is made.
pub(super) fn lose(
    s: &Session,
    index: &Index,
    gi: usize,
    at: At<'_>,
    cur: &Meta,
    new: Option<&Meta>,
    new_origin: &str,
) -> Option<(Resolution, Option<PathBuf>)> {
    // Unknown origin (the index failed): treated as ours, so the version is
    // kept rather than lost; the failure is logged.
    let my_origin = index.origin(at.path).unwrap_or_else(|e| {
        warn!("reading the origin of {}: {e}", crate::paths::display(at.path));
        None
    });
    if my_origin.as_ref().is_some_and(|o| *o != s.config.myname) {
        return None;
    }
    let group = &s.groups[gi];
    let why = match rule_verdict(group, &s.config.myname, &s.peer, cur, new, new_origin) {
        Some(rule) => Resolution::Lost(rule),
        None => Resolution::Lost(format!("forced by {} (csync -f)", s.peer)),
    };
    let kept = if cur.kind == FileKind::File {
        keep_loser(&group.conflict_dir, &s.peer, at)
    } else {
        None
    };
    Some((why, kept))
}

/// The rule that makes the incoming version from `peer` (`new`, `None`: a
/// delete; made by `new_origin`) win over ours, if the `auto` rule of
/// `group` does.
pub(super) fn rule_verdict(
    g: &GroupPolicy,
    myname: &str,
    peer: &str,
    cur: &Meta,
    new: Option<&Meta>,
    new_origin: &str,
) -> Option<String> {
    let pos = |h: &str| g.hosts.iter().position(|x| x == h).unwrap_or(usize::MAX);
    // A delete is dated 0 here, as the pusher dates a peer's delete when
    // it decides: the label names the rule the pusher applied.
    let them = Side {
        host: peer,
        position: pos(new_origin),
        receive_only: g.is_receive_only(peer),
        time_ns: new.map_or(0, |m| m.mtime_ns),
        size: new.map_or(-1, |m| m.size as i64),
    };
    let me = Side {
        host: myname,
        position: pos(myname),
        receive_only: g.is_receive_only(myname),
        time_ns: cur.mtime_ns,
        size: cur.size as i64,
    };
    match decide(g.auto, them, me) {
        Decision::Win(why) => Some(why),
        _ => None,
    }
}

/// Writes a conflict record (a failure to do so is logged: the change
/// itself stands).
pub(super) fn note_conflict(
    index: &mut Index,
    peer: &str,
    path: &[u8],
    why: &Resolution,
    kept: Option<&Path>,
) {
    if let Err(e) = index.record_conflict(path, peer, why, kept) {
        warn!("recording the conflict on {}: {e}", crate::paths::display(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::receive::tests::{config_for, meta};
    use std::time::Duration;

    fn at<'a>(root: &'a Path, rel: &'a [u8], path: &'a [u8]) -> At<'a> {
        At { root, rel, path }
    }

    #[test]
    fn backups_rotate_and_the_oldest_goes() {
        let t = tempfile::tempdir().unwrap();
        let (root, bak) = (t.path().join("root"), t.path().join("bak"));
        std::fs::create_dir_all(&root).unwrap();
        let backup = (bak.clone(), 2);
        for v in ["one", "two", "three"] {
            std::fs::write(root.join("f"), v).unwrap();
            back_up(Some(&backup), at(&root, b"f", b"/srv/f"));
        }
        let read = |n: &str| std::fs::read_to_string(bak.join("srv").join(n)).ok();
        assert_eq!(read("f.1").as_deref(), Some("three"));
        assert_eq!(read("f.2").as_deref(), Some("two"));
        assert_eq!(read("f.3"), None);
        // Backups off: nothing is written.
        back_up(None, at(&root, b"f", b"/srv/g"));
        assert!(!bak.join("srv/g.1").exists());
    }

    #[test]
    fn two_losers_of_one_path_keep_two_copies() {
        let t = tempfile::tempdir().unwrap();
        let (root, dir) = (t.path().join("root"), t.path().join("conflicts"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), "mine").unwrap();
        let a = keep_loser(&dir, "b", at(&root, b"f", b"/srv/f")).unwrap();
        std::fs::write(root.join("f"), "mine again").unwrap();
        let b = keep_loser(&dir, "b", at(&root, b"f", b"/srv/f")).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(dir.join("srv")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("f.conflict-") && name.ends_with("-b"), "{name}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "mine");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "mine again");
        // Nothing there: nothing kept.
        assert_eq!(keep_loser(&dir, "b", at(&root, b"gone", b"/srv/gone")), None);
    }

    #[test]
    fn the_rule_names_why_the_peer_won() {
        let t = tempfile::tempdir().unwrap();
        let text = "group g { host a b; key k; include /srv; auto younger; }\n\
                    group n { host a b; key k; include /opt; }";
        let config = config_for(t.path(), text);
        let p = GroupPolicy::members(&config).unwrap();
        let (g, n) = (&p[0], &p[1]);
        let ours = Meta { mtime_ns: 100, ..meta(FileKind::File) };
        let newer = Meta { mtime_ns: 200, ..meta(FileKind::File) };
        let older = Meta { mtime_ns: 50, ..meta(FileKind::File) };
        assert_eq!(rule_verdict(g, "a", "b", &ours, Some(&newer), "b").as_deref(), Some("younger"));
        assert_eq!(rule_verdict(g, "a", "b", &ours, Some(&older), "b"), None);
        // A delete is dated 0: it never wins by age.
        assert_eq!(rule_verdict(g, "a", "b", &ours, None, "b"), None);
        // `auto none`: no rule wins; a person forced it.
        assert_eq!(rule_verdict(n, "a", "b", &ours, Some(&newer), "b"), None);
    }

    #[test]
    fn only_this_nodes_own_version_is_kept_and_recorded() {
        let t = tempfile::tempdir().unwrap();
        let srv = t.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        std::fs::write(srv.join("f"), "mine").unwrap();
        let text = format!("group g {{ host a b c; key k; include {}; }}", srv.display());
        let config = std::sync::Arc::new(config_for(t.path(), &text));
        let policies = GroupPolicy::members(&config).unwrap();
        let s = Session::open(config, &policies, t.path(), "b", &["g".to_string()]);
        let mut index = Index::open(&t.path().join("i.db"), Duration::from_secs(5)).unwrap();
        let path = format!("{}/f", srv.display());
        let here = at(t.path(), b"srv/f", path.as_bytes());
        let cur = meta(FileKind::File);
        let (why, kept) = lose(&s, &index, 0, here, &cur, None, "b").unwrap();
        assert_eq!(why.to_string(), "lost: forced by b (csync -f)");
        let kept = kept.unwrap();
        assert!(kept.starts_with(t.path().join("a.conflicts")));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "mine");
        note_conflict(&mut index, "b", path.as_bytes(), &why, Some(&kept));
        let rows = index.conflicts().unwrap();
        assert_eq!((rows.len(), rows[0].peer.as_str()), (1, "b"));
        // A version made by c and only received here: c keeps its own.
        let f = crate::index::Received {
            file: Some(crate::index::IndexedFile {
                path: path.as_bytes().to_vec(),
                meta: cur.clone(),
            }),
            removed: None,
            peer: "c".into(),
            version: Some([1; 32]),
            origin: Some("c".into()),
            actions: Vec::new(),
            forward: Vec::new(),
        };
        index.record_received_batch(&[f]).unwrap();
        assert_eq!(lose(&s, &index, 0, here, &cur, None, "b"), None);
    }
}
