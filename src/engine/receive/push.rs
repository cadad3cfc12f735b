//! Applying a peer's `Push`: authorize it, compare it with the state here
//! (apply, in sync, or conflict), keep what it replaces, and write it:
//! directly for everything but file content, which streams into a
//! temporary (whole, or rebuilt from a block delta) and is staged for the
//! batch's durability point.

use std::io::Write;
use std::path::PathBuf;

use tracing::{info, warn};

use super::Receiver;
use super::keep::{self, At};
use super::roots::real_of;
use crate::apply::{self, FileWriter};
use crate::blockdelta;
use crate::engine::wire::{from_wire, version};
use crate::index::IndexedFile;
use crate::proto::{Content, ErrorCode, Outcome, WireEntry};
use crate::types::{FileKind, Meta};

/// What to do with the `Data` frames of a stream.
pub(super) enum Stream {
    /// Write them into a new file (whole content).
    Whole(Box<Pending>, FileWriter),
    /// Rebuild from the current file plus delta ops.
    Delta(Box<Pending>, blockdelta::Decoder<std::fs::File, FileWriter>),
    /// Refused or conflicting: read and drop (the sender pipelined them).
    Discard,
}

/// An apply waiting for its content.
pub(super) struct Pending {
    pub(super) path: Vec<u8>,
    pub(super) new_version: [u8; 32],
    /// The host whose change this is.
    pub(super) origin: String,
    /// A regular file this replaces, to back up first: `(group, root, rel)`.
    pub(super) replaces: Option<(usize, PathBuf, Vec<u8>)>,
    /// The entry's local path.
    pub(super) real: PathBuf,
    /// Owed actions of this change (ready once it is recorded).
    pub(super) actions: Vec<i64>,
    /// This node's own version loses a conflict to this change: the record
    /// (reason, where the loser was kept), written once the change is made.
    pub(super) lost: Option<(crate::index::Resolution, Option<PathBuf>)>,
    /// Content bytes the entry's declared size still allows (whole-file
    /// streams): a sender may not grow a file beyond what it announced.
    pub(super) allowed: u64,
    /// Marks passing this version on to the other peers (a conflict's
    /// winner replacing our own change, see [`Receiver::forward_marks`]).
    pub(super) forward: Vec<crate::index::OwnedMark>,
}

impl Receiver {
    /// A `Push`: authorize, compare with the state here, and apply it (or
    /// start a stream for its content: `None` until the stream ends). A
    /// streamed file gives its parent `parent_t` (the sender's mtime, when
    /// the parent is managed here) when it is published.
    // The fields of one `Push` message, as they arrive.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
        &mut self,
        id: u32,
        group: &str,
        path: Vec<u8>,
        entry: WireEntry,
        base: Option<[u8; 32]>,
        force: bool,
        content: Content,
        parent_t: Option<i64>,
    ) -> Option<Outcome> {
        let (gi, root, rel) = match self.session.resolve(group, &path) {
            Ok(x) => x,
            Err((code, message)) => {
                self.session.refused(&path, &message);
                self.discard(id, content);
                return Some(Outcome::Failed { code, message });
            }
        };
        let Some(mut new) = from_wire(&entry) else {
            self.discard(id, content);
            self.session.refused(&path, "unknown entry kind");
            return Some(Outcome::Failed {
                code: ErrorCode::Protocol,
                message: "unknown entry kind".into(),
            });
        };
        if new.kind == FileKind::File && new.hash.is_none() {
            self.discard(id, content);
            self.session.refused(&path, "regular file without hash");
            return Some(Outcome::Failed {
                code: ErrorCode::Protocol,
                message: "regular file without hash".into(),
            });
        }
        match self.session.groups[gi].policy.admit(group, &mut new) {
            Ok(None) => {}
            Ok(Some(note)) => {
                info!(peer = %self.session.peer, "{}: {note}", crate::paths::display(&path));
            }
            Err(why) => {
                self.discard(id, content);
                self.session.refused(&path, &why);
                return Some(Outcome::Failed { code: ErrorCode::PathRefused, message: why });
            }
        }
        // An outermost root's own directory may be missing on a fresh node
        // (`/root/.ssh` for `include /root/.ssh/authorized_keys;`).
        if !rel.contains(&b'/')
            && !rel.is_empty()
            && let Err(e) = apply::ensure_root(&root)
        {
            self.discard(id, content);
            return Some(outcome_of(e));
        }
        let (cur, local_change) = match self.current(&root, &rel, &path) {
            Ok(c) => c,
            Err(e) => {
                self.discard(id, content);
                return Some(outcome_of(e));
            }
        };
        if let Some(why) = self.session.roots().refusal(&root, &rel, cur.as_ref(), Some(new.kind)) {
            self.discard(id, content);
            self.session.refused(&path, &why);
            return Some(Outcome::Failed { code: ErrorCode::PathRefused, message: why });
        }
        let new_v = version(&new, self.session.ignore);
        let cur_v = cur.as_ref().map(|c| version(c, self.session.ignore));
        let same = cur_v == Some(new_v);
        if !same && !force && base != cur_v {
            // Refused: our own change stands, and our next run must push it.
            if local_change.is_real() {
                self.record_local(gi, &path, &real_of(&root, &rel), cur.as_ref(), local_change);
            }
            self.discard(id, content);
            info!(peer = %self.session.peer, "conflict on {}: changed here too", crate::paths::display(&path));
            // The sender's version, should it yield: our push must then find
            // that version there to be a plain fast-forward.
            self.answered.insert(path.clone(), Some(new_v));
            let ours = match &cur {
                Some(c) => Some(self.wire_with_origin(&path, c)),
                None => self.deleted_wire(&path),
            };
            return Some(Outcome::Conflict(ours));
        }
        // Our own version, which the sender never had, gives way: forced by a
        // person, or (a fast-forward from the version the sender yielded
        // with) because the rule let the sender's version win. Kept either way.
        let never_had = || self.peer_version(&path) != Some(cur_v);
        let lost = match &cur {
            Some(c) if !same && ((force && base != cur_v) || (base == cur_v && never_had())) => {
                let origin = entry.origin.as_deref().unwrap_or(&self.session.peer).to_string();
                let at = At { root: &root, rel: &rel, path: &path };
                keep::lose(&self.session, &self.index, gi, at, c, Some(&new), &origin)
            }
            _ => None,
        };
        // Only a winner its sender did not make: a sender pushes its own
        // changes to every peer itself.
        let made_by_sender = entry.origin.as_deref().is_none_or(|o| o == self.session.peer);
        let forward =
            if !same && base == cur_v && !made_by_sender && self.yielded_to(&path, Some(new_v)) {
                self.forward_marks(gi, &path)
            } else {
                Vec::new()
            };
        let ae = apply::Entry {
            kind: new.kind,
            mode: new.mode,
            uid: new.uid,
            gid: new.gid,
            mtime_ns: new.mtime_ns,
            target: new.target.clone(),
            rdev: new.rdev,
        };
        let origin = entry.origin.clone().unwrap_or_else(|| self.session.peer.clone());
        let replaces = cur
            .as_ref()
            .filter(|c| c.kind == FileKind::File && !same)
            .map(|_| (gi, root.clone(), rel.clone()));
        let mut pending = Box::new(Pending {
            path: path.clone(),
            new_version: new_v,
            origin,
            replaces,
            real: real_of(&root, &rel),
            actions: Vec::new(),
            lost,
            allowed: new.size,
            forward,
        });
        if same {
            // Identical already: no conflict, no content needed.
            self.discard(id, content);
            let cur = cur.expect("same implies present");
            if cur.mtime_ns == new.mtime_ns || new.kind == FileKind::Symlink {
                let f = IndexedFile { path: path.clone(), meta: cur };
                self.batch.defer(Some(f), None, Some(new_v), None, Vec::new());
                return Some(Outcome::InSync);
            }
            let r = if new.kind == FileKind::File {
                self.dirs.set_file_attrs(&root, &rel, &ae, &self.session.ignore).map(|m| {
                    m.map(|mut m| {
                        m.hash = new.hash;
                        m
                    })
                })
            } else {
                self.dirs.make(&root, &rel, &ae, &self.session.ignore).map(|(m, dir)| {
                    // Durable with the batch, before the ack.
                    self.batch.dirty_dir(dir);
                    Some(m)
                })
            };
            return Some(self.finish(&pending, r));
        }
        if new.kind != FileKind::File {
            self.discard(id, content);
            pending.actions =
                match self.owed.record(&mut self.index, Some(id), &path, &pending.real, false) {
                    Ok(ids) => ids,
                    Err(o) => return Some(o),
                };
            self.back_up(&pending);
            let r = self.dirs.make(&root, &rel, &ae, &self.session.ignore).map(|(m, dir)| {
                // Durable with the batch, before the ack.
                self.batch.dirty_dir(dir);
                Some(m)
            });
            return Some(self.finish(&pending, r));
        }
        match content {
            Content::None => {
                // Metadata only (mode, owner, mtime): fine when our content is already theirs.
                let content_same =
                    cur.as_ref().is_some_and(|c| c.kind == FileKind::File && c.hash == new.hash);
                if !content_same {
                    return Some(Outcome::ContentNeeded);
                }
                pending.actions = match self.owed.record(
                    &mut self.index,
                    Some(id),
                    &path,
                    &pending.real,
                    false,
                ) {
                    Ok(ids) => ids,
                    Err(o) => return Some(o),
                };
                let r = self.dirs.set_file_attrs(&root, &rel, &ae, &self.session.ignore).map(|m| {
                    m.map(|mut m| {
                        m.hash = new.hash;
                        m
                    })
                });
                Some(self.finish(&pending, r))
            }
            Content::Whole => {
                let hash = new.hash.expect("checked above");
                match self.dirs.begin_file(&root, &rel, &ae, hash, &self.session.ignore, parent_t) {
                    Ok(w) => {
                        self.streams.insert(id, Stream::Whole(pending, w));
                        None
                    }
                    Err(e) => {
                        self.streams.insert(id, Stream::Discard);
                        Some(outcome_of(e))
                    }
                }
            }
            Content::Delta => {
                let hash = new.hash.expect("checked above");
                let base_file = match self.dirs.open_file(&root, &rel) {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        self.streams.insert(id, Stream::Discard);
                        return Some(Outcome::Failed {
                            code: ErrorCode::Io,
                            message: "no base file for a delta".into(),
                        });
                    }
                    Err(e) => {
                        self.streams.insert(id, Stream::Discard);
                        return Some(outcome_of(e));
                    }
                };
                // The block size of the signature this node sent: the same
                // rule on the same base file (a sender cannot choose it).
                let Some(bs) =
                    blockdelta::block_size_for(base_file.metadata().map_or(u64::MAX, |m| m.len()))
                else {
                    self.streams.insert(id, Stream::Discard);
                    return Some(Outcome::Failed {
                        code: ErrorCode::Io,
                        message: "base file too large for a delta".into(),
                    });
                };
                match self
                    .dirs
                    .begin_file(&root, &rel, &ae, hash, &self.session.ignore, parent_t)
                    .map_err(outcome_of)
                    .and_then(|w| {
                        blockdelta::Decoder::new(base_file, bs, entry.size, w).map_err(|e| {
                            Outcome::Failed { code: ErrorCode::Io, message: e.to_string() }
                        })
                    }) {
                    Ok(d) => {
                        self.streams.insert(id, Stream::Delta(pending, d));
                        None
                    }
                    Err(o) => {
                        self.streams.insert(id, Stream::Discard);
                        Some(o)
                    }
                }
            }
        }
    }

    /// Backs up the regular file `p` replaces, when the group keeps backups.
    fn back_up(&self, p: &Pending) {
        if let Some((gi, root, rel)) = &p.replaces {
            let backup = self.session.groups[*gi].backup.as_ref();
            keep::back_up(backup, At { root, rel, path: &p.path });
        }
    }

    /// Content that follows a refused request is read and dropped.
    pub(super) fn discard(&mut self, id: u32, content: Content) {
        if content != Content::None {
            self.streams.insert(id, Stream::Discard);
        }
    }

    /// Records an applied entry (or reports why it failed).
    pub(super) fn finish(&mut self, p: &Pending, r: Result<Option<Meta>, apply::Error>) -> Outcome {
        match r {
            Ok(Some(meta)) => {
                if let Some((why, kept)) = &p.lost {
                    let peer = &self.session.peer;
                    keep::note_conflict(&mut self.index, peer, &p.path, why, kept.as_deref());
                }
                let f = IndexedFile { path: p.path.clone(), meta };
                let (v, o) = (Some(p.new_version), Some(p.origin.clone()));
                self.batch.defer(Some(f), None, v, o, p.actions.clone());
                self.batch.forward(p.forward.clone());
                Outcome::Applied
            }
            Ok(None) => {
                self.owed.not_made(&p.actions);
                Outcome::Failed {
                    code: ErrorCode::Io,
                    message: "the entry changed type while being applied".into(),
                }
            }
            Err(e) => {
                self.owed.not_made(&p.actions);
                outcome_of(e)
            }
        }
    }

    /// A `Data` frame of stream `stream`: an outcome only when it ends the stream.
    pub(super) fn data(&mut self, stream: u32, bytes: &[u8]) -> Option<Outcome> {
        let r = match self.streams.get_mut(&stream) {
            Some(Stream::Whole(p, _)) if bytes.len() as u64 > p.allowed => {
                // Refused before a byte of the excess is written; dropping
                // the writer removes its temporary.
                let path = crate::paths::display(&p.path);
                self.streams.insert(stream, Stream::Discard);
                warn!(peer = %self.session.peer, "{path}: content longer than its declared size; refused");
                return Some(Outcome::Failed {
                    code: ErrorCode::Protocol,
                    message: "content longer than its declared size; refused".into(),
                });
            }
            Some(Stream::Whole(p, w)) => {
                p.allowed -= bytes.len() as u64;
                w.write_all(bytes).map_err(|e| e.to_string())
            }
            Some(Stream::Delta(_, d)) => d.apply(bytes).map_err(|e| e.to_string()),
            Some(Stream::Discard) => return None,
            None => {
                return Some(Outcome::Failed {
                    code: ErrorCode::Protocol,
                    message: "data for an unknown stream".into(),
                });
            }
        };
        match r {
            Ok(()) => None,
            Err(message) => {
                self.streams.insert(stream, Stream::Discard);
                Some(Outcome::Failed { code: ErrorCode::Io, message })
            }
        }
    }

    /// The end of stream `stream`: its file is staged (answered at publish).
    pub(super) fn data_end(&mut self, stream: u32) -> Option<Outcome> {
        match self.streams.remove(&stream)? {
            Stream::Discard => None,
            Stream::Whole(p, w) => self.stage(stream, p, w),
            Stream::Delta(p, d) => self.stage(stream, p, d.into_inner()),
        }
    }

    /// A file's content is complete: record the actions it owes, back up what it
    /// replaces, and stage it. It becomes durable and visible with the rest
    /// of the batch ([`super::batch::Batch::publish`]), which also answers it.
    fn stage(&mut self, id: u32, mut p: Box<Pending>, w: FileWriter) -> Option<Outcome> {
        p.actions = match self.owed.record(&mut self.index, Some(id), &p.path, &p.real, false) {
            Ok(ids) => ids,
            Err(o) => return Some(o),
        };
        self.back_up(&p);
        match w.stage() {
            Ok(st) => {
                let path = p.path.clone();
                self.batch.stage(id, &path, p, st);
                None
            }
            Err(e) => Some(self.finish(&p, Err(e))),
        }
    }
}

/// How a failed apply is answered.
pub(super) fn outcome_of(e: apply::Error) -> Outcome {
    match e {
        apply::Error::ParentMissing(_) => Outcome::ParentMissing,
        apply::Error::NotEmpty(_) => Outcome::NotEmpty,
        apply::Error::BadPath(m) => Outcome::Failed { code: ErrorCode::PathRefused, message: m },
        apply::Error::Symlink(m) => Outcome::Failed {
            code: ErrorCode::PathRefused,
            message: format!("{m}: a symlink or non-directory on the way; never followed"),
        },
        apply::Error::HashMismatch => Outcome::Failed {
            code: ErrorCode::Io,
            message: "content does not match its hash (changed during the transfer?)".into(),
        },
        apply::Error::Io { what, source } => {
            Outcome::Failed { code: ErrorCode::Io, message: format!("{what}: {source}") }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::receive::tests::{Node, file_entry, push_msg as push, push_whole};
    use crate::proto::Msg;

    fn failed(m: &Msg) -> (u32, ErrorCode, &str) {
        match m {
            Msg::Ack { id, outcome: Outcome::Failed { code, message } } => (*id, *code, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_path_outside_the_group_is_refused_and_its_content_dropped() {
        let mut n = Node::new("");
        let mut msgs = push_whole(1, b"/etc/passwd", b"root::0:0::/:/bin/sh\n");
        msgs.extend(push_whole(2, &n.path("ok"), b"fine"));
        let replies = n.send(msgs);
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert_eq!(failed(&replies[0]).1, ErrorCode::PathRefused);
        assert_eq!(replies[1], Msg::Ack { id: 2, outcome: Outcome::Applied });
        assert_eq!(std::fs::read(n.srv.join("ok")).unwrap(), b"fine");
    }

    #[test]
    fn content_beyond_the_declared_size_is_refused() {
        let mut n = Node::new("");
        let p = n.path("f");
        let mut msgs = push_whole(1, &p, b"four");
        msgs[1] = Msg::Data { stream: 1, bytes: b"four and more".to_vec() };
        let replies = n.send(msgs);
        let (id, code, why) = failed(&replies[0]);
        assert_eq!((id, code), (1, ErrorCode::Protocol));
        assert!(why.contains("longer than its declared size"), "{why}");
        assert!(!n.srv.join("f").exists());
        assert_eq!(n.rx.index.file(&p).unwrap(), None);
    }

    #[test]
    fn metadata_alone_is_not_enough_for_new_content() {
        let mut n = Node::new("");
        let p = n.path("f");
        let replies = n.send(vec![push(1, &p, file_entry(b"new"), None, Content::None)]);
        // On the wire: the Failed reply with `proto::CONTENT_NEEDED`, as ever.
        assert_eq!(replies[0], Msg::Ack { id: 1, outcome: Outcome::ContentNeeded });
    }

    #[test]
    fn a_change_made_here_too_is_a_conflict_and_stays() {
        let mut n = Node::new("");
        let p = n.path("f");
        std::fs::write(n.srv.join("f"), b"mine").unwrap();
        let replies = n.send(push_whole(1, &p, b"theirs"));
        match &replies[0] {
            Msg::Ack { id: 1, outcome: Outcome::Conflict(Some(ours)) } => {
                assert_eq!(ours.hash, Some(*blake3::hash(b"mine").as_bytes()));
                assert_eq!(ours.origin.as_deref(), Some("a"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(n.srv.join("f")).unwrap(), b"mine");
        // Our own change is recorded, to be pushed to b on our next run.
        let dirty = n.rx.index.dirty().unwrap();
        assert_eq!((dirty.len(), dirty[0].peer.as_str()), (1, "b"));
    }

    #[test]
    fn a_winner_we_yielded_to_goes_on_to_the_other_peers_unless_its_sender_made_it() {
        for (maker, marked) in [("c", vec!["c"]), ("b", vec![])] {
            let mut n = Node::new("host c;");
            let p = n.path("f");
            let mut msgs = push_whole(1, &p, b"winner");
            let Msg::Push { entry, .. } = &mut msgs[0] else { panic!() };
            entry.origin = Some(maker.into());
            let v = version(&from_wire(entry).unwrap(), n.rx.session.ignore);
            // We yielded to it: the push recorded that b holds it.
            let seen = crate::index::Pushed {
                path: p.clone(),
                peer: "b".into(),
                clear_gen: None,
                version: Some(Some(v)),
            };
            n.rx.index.record_pushed(&[seen]).unwrap();
            let acks = n.send(msgs);
            assert_eq!(acks, vec![Msg::Ack { id: 1, outcome: Outcome::Applied }]);
            let dirty = n.rx.index.dirty().unwrap();
            let peers: Vec<&str> = dirty.iter().map(|d| d.peer.as_str()).collect();
            assert_eq!(peers, marked, "made by {maker}");
        }
    }

    #[test]
    fn an_identical_entry_is_in_sync_without_content() {
        let mut n = Node::new("");
        let p = n.path("f");
        assert_eq!(
            n.send(push_whole(1, &p, b"same"))[0],
            Msg::Ack { id: 1, outcome: Outcome::Applied }
        );
        let again = n.send(vec![push(2, &p, file_entry(b"same"), None, Content::Whole)]);
        assert_eq!(again, vec![Msg::Ack { id: 2, outcome: Outcome::InSync }]);
    }

    #[test]
    fn failed_applies_map_to_their_answers() {
        assert_eq!(outcome_of(apply::Error::ParentMissing("x".into())), Outcome::ParentMissing);
        assert_eq!(outcome_of(apply::Error::NotEmpty("x".into())), Outcome::NotEmpty);
        let Outcome::Failed { code, message } = outcome_of(apply::Error::Symlink("/a".into()))
        else {
            panic!()
        };
        assert_eq!(code, ErrorCode::PathRefused);
        assert!(message.contains("never followed"), "{message}");
    }
}
