//! Applying a peer's `Delete`: authorize it, compare it with the state here
//! (a delete of a version we changed since is a conflict), keep what it
//! removes, and remove it; the directory is made durable with the batch.

use super::Receiver;
use super::keep::{self, At};
use super::push::outcome_of;
use super::roots::real_of;
use crate::apply;
use crate::engine::wire::version;
use crate::proto::{ErrorCode, Outcome};
use crate::types::{Changes, FileKind};

impl Receiver {
    /// A `Delete`: authorize, compare, keep what it removes, and remove it
    /// (durable with the batch, before the ack).
    pub(super) fn delete(
        &mut self,
        id: u32,
        group: &str,
        path: Vec<u8>,
        base: Option<[u8; 32]>,
        force: bool,
        parent_mtime: Option<i64>,
    ) -> Option<Outcome> {
        let (gi, root, rel) = match self.session.resolve(group, &path) {
            Ok(x) => x,
            Err((code, message)) => {
                self.session.refused(&path, &format!("delete: {message}"));
                return Some(Outcome::Failed { code, message });
            }
        };
        let (cur, local_change) = match self.current(&root, &rel, &path) {
            Ok(c) => c,
            Err(apply::Error::ParentMissing(_)) => (None, Changes::default()),
            Err(e) => return Some(outcome_of(e)),
        };
        if rel.is_empty() {
            self.session.refused(&path, "refusing to delete /");
            return Some(Outcome::Failed {
                code: ErrorCode::PathRefused,
                message: "refusing to delete /".into(),
            });
        }
        if let Some(why) = self.session.roots().refusal(&root, &rel, cur.as_ref(), None) {
            self.session.refused(&path, &format!("delete: {why}"));
            return Some(Outcome::Failed { code: ErrorCode::PathRefused, message: why });
        }
        let Some(cur) = cur else {
            self.batch.defer(None, Some(path.clone()), None, None, Vec::new());
            return Some(Outcome::InSync);
        };
        let cur_v = version(&cur, self.session.ignore);
        if !force && base != Some(cur_v) {
            if local_change.is_real() {
                self.record_local(gi, &path, &real_of(&root, &rel), Some(&cur), local_change);
            }
            self.answered.insert(path.clone(), None);
            return Some(Outcome::Conflict(Some(self.wire_with_origin(&path, &cur))));
        }
        // As for a push: our own version the sender never had gives way
        // (forced, or after yielding a conflict), and is kept.
        let never_had = self.peer_version(&path) != Some(Some(cur_v));
        let lost = if (force && base != Some(cur_v)) || (base == Some(cur_v) && never_had) {
            let peer = self.session.peer.clone();
            let at = At { root: &root, rel: &rel, path: &path };
            keep::lose(&self.session, &self.index, gi, at, &cur, None, &peer)
        } else {
            None
        };
        let forward = if base == Some(cur_v) && self.yielded_to(&path, None) {
            self.forward_marks(gi, &path)
        } else {
            Vec::new()
        };
        let actions = match self.owed.record(
            &mut self.index,
            Some(id),
            &path,
            &real_of(&root, &rel),
            false,
        ) {
            Ok(ids) => ids,
            Err(o) => return Some(o),
        };
        if cur.kind == FileKind::File {
            let backup = self.session.groups[gi].backup.as_ref();
            keep::back_up(backup, At { root: &root, rel: &rel, path: &path });
        }
        let removal = Box::new(Removal { path, actions, lost, forward });
        match self.dirs.prepare_delete(&root, &rel, parent_mtime, Some(cur.kind)) {
            // Run with the batch's other deletes, durable with it, answered
            // then; only if it is still what was judged here.
            Ok(Some(d)) => {
                let d = d.expecting(cur.ino, cur.ctime_ns);
                let path = removal.path.clone();
                self.batch.delete_later(id, &path, removal, d);
                None
            }
            // A parent gone meanwhile: nothing left to remove.
            Ok(None) => Some(self.deleted(*removal, Ok(()))),
            Err(e) => Some(self.deleted(*removal, Err(e))),
        }
    }

    /// Records a delete run at the batch's durability point (or reports
    /// why it failed).
    pub(super) fn deleted(&mut self, d: Removal, r: Result<(), apply::Error>) -> Outcome {
        match r {
            Ok(()) => {
                if let Some((why, kept)) = &d.lost {
                    let peer = &self.session.peer;
                    keep::note_conflict(&mut self.index, peer, &d.path, why, kept.as_deref());
                }
                self.batch.defer(None, Some(d.path), None, None, d.actions);
                self.batch.forward(d.forward);
                Outcome::Applied
            }
            Err(e) => {
                self.owed.not_made(&d.actions);
                outcome_of(e)
            }
        }
    }
}

/// A delete waiting for the batch's durability point.
pub(super) struct Removal {
    path: Vec<u8>,
    /// Owed actions of this change (ready once it is recorded).
    actions: Vec<i64>,
    /// Our own version lost to this delete: the record to write once made.
    lost: Option<(crate::index::Resolution, Option<std::path::PathBuf>)>,
    /// Marks passing the delete on to the other peers.
    forward: Vec<crate::index::OwnedMark>,
}

#[cfg(test)]
mod tests {
    use crate::engine::receive::tests::{Node, push_whole};
    use crate::engine::wire::version;
    use crate::proto::{ErrorCode, Msg, Outcome};
    use crate::types::IgnoreFields;

    fn delete(id: u32, path: &[u8], base: Option<[u8; 32]>, force: bool) -> Msg {
        Msg::Delete { id, group: "g".into(), path: path.to_vec(), base, force, parent_mtime: None }
    }

    #[test]
    fn a_delete_of_the_version_we_agree_on_removes_it() {
        let mut n = Node::new("");
        let p = n.path("f");
        n.send(push_whole(1, &p, b"x"));
        let ours = n.rx.index.file(&p).unwrap().unwrap();
        let base = version(&ours, IgnoreFields::default());
        let replies = n.send(vec![delete(2, &p, Some(base), false)]);
        assert_eq!(replies, vec![Msg::Ack { id: 2, outcome: Outcome::Applied }]);
        assert!(!n.srv.join("f").exists());
        assert_eq!(n.rx.index.file(&p).unwrap(), None);
        // Already gone: in sync.
        let again = n.send(vec![delete(3, &p, Some(base), false)]);
        assert_eq!(again, vec![Msg::Ack { id: 3, outcome: Outcome::InSync }]);
    }

    /// The unlink waits for the batch's durability point: a file rewritten
    /// here in between (by a local user, or another session) is kept, and
    /// the delete fails instead of removing what nobody judged.
    #[test]
    fn a_file_changed_between_the_delete_and_its_durability_point_is_kept() {
        use crate::net::server::Handler;
        let mut n = Node::new("");
        let p = n.path("f");
        n.send(push_whole(1, &p, b"x"));
        let ours = n.rx.index.file(&p).unwrap().unwrap();
        let base = version(&ours, IgnoreFields::default());
        let msgs = vec![delete(2, &p, Some(base), false)];
        let mut out = Vec::new();
        n.rx.prepare(&msgs);
        for m in msgs {
            assert!(n.rx.handle(m, &mut |r| out.push(r)));
        }
        assert!(out.is_empty(), "answered only at the durability point: {out:?}");
        // Replaced by a new file (another inode), as an editor saves.
        std::fs::write(n.srv.join("g.tmp"), b"written meanwhile").unwrap();
        std::fs::rename(n.srv.join("g.tmp"), n.srv.join("f")).unwrap();
        n.rx.idle(&mut |r| out.push(r));
        assert!(
            matches!(&out[..], [Msg::Ack { id: 2, outcome: Outcome::Failed { .. } }]),
            "{out:?}"
        );
        assert_eq!(std::fs::read(n.srv.join("f")).unwrap(), b"written meanwhile");
        assert!(n.rx.index.file(&p).unwrap().is_some(), "the row stays until judged again");
    }

    #[test]
    fn a_delete_of_a_version_changed_here_is_a_conflict_unless_forced() {
        let mut n = Node::new("");
        let p = n.path("f");
        std::fs::write(n.srv.join("f"), b"mine").unwrap();
        let replies = n.send(vec![delete(1, &p, Some([9; 32]), false)]);
        assert!(matches!(&replies[..], [Msg::Ack { id: 1, outcome: Outcome::Conflict(Some(_)) }]));
        assert!(n.srv.join("f").exists());
        // Forced (`csync -f` there): our version goes, and is kept.
        let replies = n.send(vec![delete(2, &p, Some([9; 32]), true)]);
        assert_eq!(replies, vec![Msg::Ack { id: 2, outcome: Outcome::Applied }]);
        assert!(!n.srv.join("f").exists());
        let kept = n.rx.index.conflicts().unwrap()[0].kept.clone().unwrap();
        let kept = std::path::PathBuf::from(String::from_utf8(kept).unwrap());
        assert!(kept.starts_with(n.dir.path().join("a.conflicts")), "{}", kept.display());
        assert_eq!(std::fs::read(kept).unwrap(), b"mine");
    }

    #[test]
    fn a_directory_emptied_and_replaced_in_one_batch_is_replaced() {
        use crate::engine::receive::tests::file_entry;
        use crate::proto::{Content, WireEntry};
        use crate::types::FileKind;
        let mut n = Node::new("");
        let (d, f) = (n.path("d"), n.path("d/f"));
        let push = |id: u32, path: &[u8], entry: WireEntry, base: Option<[u8; 32]>| {
            crate::engine::receive::tests::push_msg(id, path, entry, base, Content::None)
        };
        let dir = WireEntry { kind: FileKind::Dir.code(), size: 0, hash: None, ..file_entry(b"") };
        assert_eq!(n.send(vec![push(1, &d, dir, None)]).len(), 1);
        n.send(push_whole(2, &f, b"x"));
        let v = |n: &Node, p: &[u8]| {
            version(&n.rx.index.file(p).unwrap().unwrap(), IgnoreFields::default())
        };
        let (vf, vd) = (v(&n, &f), v(&n, &d));
        let link = WireEntry {
            kind: FileKind::Symlink.code(),
            size: 0,
            hash: None,
            target: Some(b"/nonexistent".to_vec()),
            ..file_entry(b"")
        };
        // The sender's order: the directory's entries deleted, then the
        // symlink in its place, in one request batch.
        let replies = n.send(vec![delete(3, &f, Some(vf), false), push(4, &d, link, Some(vd))]);
        let mut ids: Vec<(u32, Outcome)> = replies
            .into_iter()
            .map(|m| match m {
                Msg::Ack { id, outcome } => (id, outcome),
                other => panic!("{other:?}"),
            })
            .collect();
        ids.sort_by_key(|(id, _)| *id);
        assert_eq!(ids, vec![(3, Outcome::Applied), (4, Outcome::Applied)]);
        assert!(std::fs::symlink_metadata(n.srv.join("d")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn an_include_root_is_never_deleted() {
        let mut n = Node::new("");
        let root = n.srv.clone().into_os_string().into_encoded_bytes();
        let replies = n.send(vec![delete(1, &root, None, true)]);
        match &replies[..] {
            [Msg::Ack { id: 1, outcome: Outcome::Failed { code, message } }] => {
                assert_eq!(*code, ErrorCode::PathRefused);
                assert!(message.contains("it is not deleted"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(n.srv.is_dir());
    }
}
