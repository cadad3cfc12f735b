//! Requests that only read: a block signature for a delta, the entries of a
//! group, a file's content.

use std::io::Read;

use super::Receiver;
use super::push::outcome_of;
use crate::apply;
use crate::blockdelta;
use crate::engine::wire::to_wire;
use crate::proto::{ErrorCode, Msg, Outcome};

impl Receiver {
    /// The signature of our file for a block delta (empty: send it whole).
    pub(super) fn sig(&mut self, id: u32, group: &str, path: &[u8]) -> Msg {
        // No signature (no file, or one too large to describe): the sender
        // pushes the whole file.
        let empty =
            Msg::SigReply { id, block_size: blockdelta::BASE_BLOCK, size: 0, blocks: vec![] };
        let Ok((_, root, rel)) = self.session.resolve(group, path) else { return empty };
        let Ok(Some(mut f)) = apply::open_file(&root, &rel) else { return empty };
        let size = f.metadata().map_or(0, |m| m.len());
        let Some(bs) = blockdelta::block_size_for(size) else { return empty };
        match blockdelta::signature(&mut f, bs) {
            Ok((size, blocks)) => Msg::SigReply { id, block_size: bs, size, blocks },
            Err(_) => empty,
        }
    }

    /// Every indexed entry of `group`, for a peer comparing (`-T`).
    pub(super) fn list(&mut self, id: u32, group: &str, reply: &mut dyn FnMut(Msg)) {
        if let Some(g) = self.session.groups.iter().find(|g| g.name == group)
            && let Ok(files) = self.index.files(crate::index::Scope::All)
        {
            for f in files.into_iter().filter(|f| g.matcher.is_managed(&f.path)) {
                reply(Msg::ListEntry { id, path: f.path, entry: to_wire(&f.meta) });
            }
        }
        reply(Msg::ListEnd { id });
    }

    /// Our file's content, streamed (first contact fetching a missing file).
    pub(super) fn fetch(&mut self, id: u32, group: &str, path: &[u8], reply: &mut dyn FnMut(Msg)) {
        let file = match self.session.resolve(group, path) {
            Ok((_, root, rel)) => apply::open_file(&root, &rel),
            Err((code, message)) => {
                return reply(Msg::Ack { id, outcome: Outcome::Failed { code, message } });
            }
        };
        let mut f = match file {
            Ok(Some(f)) => f,
            Ok(None) => {
                return reply(Msg::Ack {
                    id,
                    outcome: Outcome::Failed {
                        code: ErrorCode::Io,
                        message: "no regular file there".into(),
                    },
                });
            }
            Err(e) => return reply(Msg::Ack { id, outcome: outcome_of(e) }),
        };
        let mut h = blake3::Hasher::new();
        // Sized to the file (one byte more, to see its end in one read): a
        // first contact fetches thousands of small files, each of which
        // would otherwise zero a 256 KiB buffer of its own.
        let size = f.metadata().map_or(u64::MAX, |m| m.len());
        let mut buf =
            vec![
                0u8;
                usize::try_from(size.saturating_add(1)).unwrap_or(usize::MAX).min(256 * 1024)
            ];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    reply(Msg::Data { stream: id, bytes: buf[..n].to_vec() });
                }
                Err(e) => {
                    return reply(Msg::Ack {
                        id,
                        outcome: Outcome::Failed { code: ErrorCode::Io, message: e.to_string() },
                    });
                }
            }
        }
        reply(Msg::DataEnd { stream: id, hash: *h.finalize().as_bytes() });
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::receive::tests::{Node, push_whole};
    use crate::proto::{ErrorCode, Msg, Outcome};

    #[test]
    fn a_file_is_fetched_with_its_hash_and_listed() {
        let mut n = Node::new("");
        let p = n.path("f");
        n.send(push_whole(1, &p, b"content"));
        let replies = n.send(vec![Msg::Fetch { id: 2, group: "g".into(), path: p.clone() }]);
        assert_eq!(
            replies,
            vec![
                Msg::Data { stream: 2, bytes: b"content".to_vec() },
                Msg::DataEnd { stream: 2, hash: *blake3::hash(b"content").as_bytes() },
            ]
        );
        let listed = n.send(vec![Msg::List { id: 3, group: "g".into() }]);
        assert!(
            matches!(&listed[..], [Msg::ListEntry { id: 3, path, .. }, Msg::ListEnd { id: 3 }] if *path == p)
        );
        // A group not open on the session lists nothing.
        let none = n.send(vec![Msg::List { id: 4, group: "h".into() }]);
        assert_eq!(none, vec![Msg::ListEnd { id: 4 }]);
    }

    #[test]
    fn nothing_to_fetch_or_describe_is_said_plainly() {
        let mut n = Node::new("");
        let p = n.path("missing");
        let replies = n.send(vec![
            Msg::Fetch { id: 1, group: "g".into(), path: p.clone() },
            Msg::Fetch { id: 2, group: "g".into(), path: b"/etc/shadow".to_vec() },
            Msg::Sig { id: 3, group: "g".into(), path: p },
        ]);
        match &replies[..] {
            [
                Msg::Ack { id: 1, outcome: Outcome::Failed { code: ErrorCode::Io, .. } },
                Msg::Ack { id: 2, outcome: Outcome::Failed { code: ErrorCode::PathRefused, .. } },
                Msg::SigReply { id: 3, size: 0, blocks, .. },
            ] => assert!(blocks.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
