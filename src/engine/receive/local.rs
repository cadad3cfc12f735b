//! This node's own side of a received request: the entry's state on disk
//! now (re-checked, since the last check may be old), a change found that
//! way recorded as local, and the peer yielding a conflict to our version.

use std::path::Path;

use tracing::{info, warn};

use super::Receiver;
use crate::apply;
use crate::engine::wire::{to_wire, version};
use crate::index::{IndexedFile, OwnedMark};
use crate::pattern::Level;
use crate::proto::WireEntry;
use crate::types::{Base, Changes, FileKind, Meta};

impl Receiver {
    /// The entry's state on disk now, hashed when the index cannot vouch for
    /// the content, and what changed since this node's last check (the caller
    /// records that as a local change only if it refuses the push).
    pub(super) fn current(
        &mut self,
        root: &Path,
        rel: &[u8],
        path: &[u8],
    ) -> Result<(Option<Meta>, Changes), apply::Error> {
        // Read with the request batch ([`Receiver::prepare`]), once: a later
        // request for the same path (after this one's commit) reads again.
        let known = match self.known.remove(path) {
            Some(k) => k,
            None => self.index.file(path).ok().flatten(),
        };
        let Some(mut m) = self.dirs.stat(root, rel)? else {
            let known = known.is_some();
            return Ok((None, if known { Changes::DELETE } else { Changes::default() }));
        };
        if m.kind == FileKind::File {
            m.hash = match &known {
                Some(k) if k.kind == FileKind::File && !m.content_may_differ(k) => k.hash,
                _ => match self.dirs.open_file(root, rel)? {
                    Some(mut f) => {
                        Some(crate::scan::hash_reader(&mut f).map_err(|e| apply::Error::Io {
                            what: format!("read {}", crate::paths::display(rel)),
                            source: e,
                        })?)
                    }
                    None => None,
                },
            };
        }
        let changed = match &known {
            None => Changes::NEW,
            Some(k) => crate::types::classify(k, &m, self.session.ignore),
        };
        Ok((Some(m), changed))
    }

    /// Records a change found here by a re-check (the push is refused):
    /// in the index, marked for the peers this node pushes to, with its
    /// `do-local` actions owed.
    pub(super) fn record_local(
        &mut self,
        gi: usize,
        path: &[u8],
        real: &Path,
        m: Option<&Meta>,
        changes: Changes,
    ) {
        let base = match self.index.file(path).ok().flatten() {
            Some(old) => Base::Version(version(&old, self.session.ignore)),
            None => Base::Absent,
        };
        let g = &self.session.groups[gi];
        let batch = crate::index::Batch {
            upserts: m
                .map(|m| IndexedFile { path: path.to_vec(), meta: m.clone() })
                .into_iter()
                .collect(),
            removals: if m.is_none() { vec![path.to_vec()] } else { vec![] },
            local: vec![path.to_vec()],
            actions: Vec::new(),
            marks: g
                .push_to
                .iter()
                .map(|(peer, me)| OwnedMark {
                    path: path.to_vec(),
                    peer: peer.clone(),
                    myname: me.clone(),
                    changes,
                    forced: false,
                    base,
                })
                .collect(),
        };
        if let Err(e) = self.index.apply(&batch) {
            warn!("recording local change of {}: {e}", crate::paths::display(path));
            return;
        }
        // A change made here, found by this re-check rather than by a check:
        // it owes its `do-local` actions all the same.
        // A failure is logged there; the change itself stands and the next
        // check finds it again.
        if self.owed.record(&mut self.index, None, path, real, true).is_err() {
            warn!(
                "the actions owed by the local change of {} are not journalled",
                crate::paths::display(path)
            );
        }
    }

    /// The peer yields a conflict to our version (its rule said ours wins):
    /// mark ours, forced, for that peer, so our next run brings it there.
    pub(super) fn yield_to_us(&mut self, group: &str, path: &[u8], rule: &str) {
        let Some(g) = self.session.groups.iter().find(|g| g.name == group) else { return };
        if g.matcher.level(path) != Level::Managed {
            return;
        }
        let Some((_, me)) = g.push_to.iter().find(|(p, _)| *p == self.session.peer) else { return };
        // The peer lacks it altogether: an ordinary push brings it (and meets
        // a conflict if the peer made one meanwhile). Otherwise our version
        // won by the rule: forced.
        let missing = rule == crate::engine::remote::MISSING;
        if missing && self.index.file(path).ok().flatten().is_none() {
            return;
        }
        // Not forced: based on the version the peer yielded with, our push is
        // a fast-forward there (its own version kept as the loser); should
        // it change that version again meanwhile, the rule decides anew.
        let base = if missing {
            Base::Absent
        } else {
            match self.answered.get(path) {
                Some(Some(v)) => Base::Version(*v),
                Some(None) => Base::Absent,
                None => return,
            }
        };
        let mark = crate::index::Mark {
            path,
            peer: &self.session.peer,
            myname: me,
            changes: Changes::MARKED,
            forced: false,
            base,
        };
        let shown = crate::paths::display(path);
        let marked = self
            .index
            .mark(&[mark])
            .and_then(|()| self.index.rebase_mark(path, &self.session.peer, base));
        match marked {
            Ok(()) if missing => {
                info!(peer = %self.session.peer, "{shown}: missing there; it goes there on our next run")
            }
            Ok(()) => {
                info!(peer = %self.session.peer, "{shown}: our version won ({rule}); it goes there on our next run")
            }
            Err(e) => warn!(peer = %self.session.peer, "{shown}: marking our winning version: {e}"),
        }
    }

    /// True when the peer pushes `new` (`None`: a delete) as the winner of a
    /// conflict this node yielded: our push met its version `new`, our rule
    /// gave it the win, and we recorded that the peer holds it (see
    /// `report.yielded` of the push). Its fast-forward from our version
    /// then replaces a change of ours that other peers may have applied.
    pub(super) fn yielded_to(&self, path: &[u8], new: Option<[u8; 32]>) -> bool {
        self.peer_version(path) == Some(new)
    }

    /// What the peer was last known to have at `path` (`None`: unknown),
    /// as read with the request batch when it was.
    pub(super) fn peer_version(&self, path: &[u8]) -> Option<Option<[u8; 32]>> {
        match self.peer_versions.get(path) {
            Some(v) => *v,
            None => self.index.peer_version(path, &self.session.peer).ok().flatten(),
        }
    }

    /// Marks `path` for every other peer of group `gi`: the winner of a
    /// conflict this node lost reaches the peers that may hold the loser.
    /// A node forwards only its own changes otherwise (no echo); this is
    /// the exception that keeps a third node from keeping the loser when
    /// the winner was held by a node that did not make it (it pushes it to
    /// the loser alone). Based on what each peer was last known to have:
    /// a plain fast-forward where it holds our lost change, in sync where it
    /// holds the winner already, the rule again where it changed meanwhile.
    pub(super) fn forward_marks(&self, gi: usize, path: &[u8]) -> Vec<OwnedMark> {
        let g = &self.session.groups[gi];
        g.push_to
            .iter()
            .filter(|(peer, _)| *peer != self.session.peer)
            .map(|(peer, me)| OwnedMark {
                path: path.to_vec(),
                peer: peer.clone(),
                myname: me.clone(),
                changes: Changes::MARKED,
                forced: false,
                base: Base::Unknown,
            })
            .collect()
    }

    /// Our delete of `path`, not yet pushed to this peer, as a conflict
    /// answer shows it: an entry of no kind (`wire::DELETED`) dated when we
    /// marked it, the time our own push of it would give it. Both sides then
    /// date it alike and agree on the winner (a sender dating the peer's
    /// delete 0 and its own by its mark could both win). `None` when no
    /// delete of ours is pending there (received, or long pushed): undated.
    pub(super) fn deleted_wire(&self, path: &[u8]) -> Option<WireEntry> {
        let at = self.index.marked_at(path, &self.session.peer).ok().flatten()?;
        Some(crate::engine::wire::deleted(
            at.saturating_mul(1_000_000_000),
            &self.session.config.myname,
        ))
    }

    /// Our state of `path` as the wire shows it, with the host that made it.
    pub(super) fn wire_with_origin(&self, path: &[u8], m: &Meta) -> WireEntry {
        let mut w = to_wire(m);
        w.origin = Some(
            self.index
                .origin(path)
                .ok()
                .flatten()
                .unwrap_or_else(|| self.session.config.myname.clone()),
        );
        w
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::receive::tests::Node;
    use crate::types::{Changes, FileKind};

    #[test]
    fn a_change_found_here_is_hashed_and_recorded_for_the_peers() {
        let mut n = Node::new("");
        let p = n.path("f");
        std::fs::write(n.srv.join("f"), b"made here").unwrap();
        let root = n.dir.path().to_path_buf();
        let (cur, changes) = n.rx.current(&root, b"srv/f", &p).unwrap();
        let cur = cur.unwrap();
        assert_eq!(cur.kind, FileKind::File);
        assert_eq!(cur.hash, Some(*blake3::hash(b"made here").as_bytes()));
        assert_eq!(changes, Changes::NEW);
        n.rx.record_local(0, &p, &n.srv.join("f"), Some(&cur), changes);
        assert_eq!(n.rx.index.file(&p).unwrap(), Some(cur.clone()));
        let dirty = n.rx.index.dirty().unwrap();
        assert_eq!((dirty[0].path.as_slice(), dirty[0].peer.as_str()), (p.as_slice(), "b"));
        // Recorded: no change any more.
        let (_, again) = n.rx.current(&root, b"srv/f", &p).unwrap();
        assert!(!again.is_real());
        // Gone from disk while indexed: a delete.
        std::fs::remove_file(n.srv.join("f")).unwrap();
        assert_eq!(n.rx.current(&root, b"srv/f", &p).unwrap(), (None, Changes::DELETE));
    }

    #[test]
    fn a_yield_marks_our_version_for_the_peer() {
        let mut n = Node::new("");
        let p = n.path("f");
        std::fs::write(n.srv.join("f"), b"ours").unwrap();
        let root = n.dir.path().to_path_buf();
        let (cur, _) = n.rx.current(&root, b"srv/f", &p).unwrap();
        let f = crate::index::IndexedFile { path: p.clone(), meta: cur.unwrap() };
        n.rx.index.apply(&crate::index::Batch { upserts: vec![f], ..Default::default() }).unwrap();
        assert!(n.rx.index.dirty().unwrap().is_empty());
        // A yield for a push this session never answered changes nothing.
        n.rx.yield_to_us("g", &p, "younger");
        assert!(n.rx.index.dirty().unwrap().is_empty());
        n.rx.answered.insert(p.clone(), Some([3; 32]));
        n.rx.yield_to_us("g", &p, "younger");
        let dirty = n.rx.index.dirty().unwrap();
        assert_eq!((dirty.len(), dirty[0].peer.as_str(), dirty[0].forced), (1, "b", false));
    }
}
