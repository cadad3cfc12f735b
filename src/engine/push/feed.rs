//! The plan, streamed: the main thread (which owns the index) plans each
//! peer's items a chunk at a time, one chunk ahead of that peer's session,
//! instead of materializing every item for every peer before the first byte
//! goes out. A 100,000-file initial sync to two peers held about 300 MB of
//! planned items that way; now a peer holds at most two chunks (plus what is
//! in flight).
//!
//! The order is the planner's: deletes first (deepest first), then the rest
//! (parents first), as the index hands the rows out ([`DirtyCursor`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::plan::{self, Filter, IndexLookup, Item, Preloaded};
use super::shared;
use crate::config::Config;
use crate::index::Pushed;
use crate::index::{DirtyCursor, Index};
use crate::policy::GroupPolicy;
use crate::scan::Root;
use crate::types::FileKind;

/// Dirty rows read (and planned) at a time per peer.
pub(super) const CHUNK: usize = 2048;

/// One chunk of a peer's items.
pub(super) type Chunk = Vec<Item>;

/// What a session tells the main thread, which owns the index.
#[derive(Debug)]
pub(super) enum ToPlanner {
    /// The session at this slot took a chunk: plan its next one.
    Demand(usize),
    /// Pushes a peer confirmed (durably applied): record them now rather
    /// than holding every one until the session ends.
    Pushed(Vec<Pushed>),
}

/// Confirmed pushes handed to the main thread at a time.
pub(super) const RECORD_EVERY: usize = 1024;

/// What planning a chunk reads besides the index.
pub(super) struct Planner<'a> {
    pub(super) filter: Filter<'a>,
    pub(super) config: &'a Config,
    pub(super) groups: &'a [GroupPolicy],
    pub(super) roots: &'a [Root],
}

impl Planner<'_> {
    /// The next non-empty chunk of `peer`'s items, `None` when none is left.
    pub(super) fn next(
        &self,
        index: &Index,
        peer: &str,
        cursor: &mut DirtyCursor,
    ) -> Result<Option<Vec<Item>>, crate::index::Error> {
        while *cursor != DirtyCursor::Done {
            let (rows, next) = index.dirty_chunk(peer, cursor, CHUNK)?;
            *cursor = next;
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else { continue };
            // Deletes come in descending order.
            let (lo, hi) = if first.path <= last.path {
                (&first.path, &last.path)
            } else {
                (&last.path, &first.path)
            };
            let pre = if rows.len() > plan::PRELOAD_ABOVE {
                Some(Preloaded::chunk(index, peer, lo, hi)?)
            } else {
                None
            };
            let lookup = IndexLookup { index, pre };
            let items =
                plan::items(&rows, &self.filter, self.config, self.groups, self.roots, &lookup)?;
            if !items.is_empty() {
                return Ok(Some(items));
            }
        }
        Ok(None)
    }
}

/// Paths read at a time when planning for several peers at once (each
/// peer's chunk is then about this long, half a [`CHUNK`]: peers of one push
/// run at about the same pace, and smaller steps keep them together).
pub(super) const SHARED_PATHS: usize = CHUNK / 2;

/// Planned chunks a peer may have waiting (it is slower than the others)
/// before it is planned on its own: a slow peer must neither hold the others
/// back nor make the planner buffer its whole share.
pub(super) const AHEAD: usize = 4;

/// Where a peer's chunks come from.
enum Source {
    /// Its own reads of its dirty rows.
    Own(DirtyCursor),
    /// The reads shared by every peer planned together.
    Shared,
}

/// One peer's state in the [`Feeder`].
struct Slot {
    peer: String,
    source: Source,
    /// Chunks planned and not yet handed over.
    queue: VecDeque<Vec<Item>>,
    /// Where its chunks go; `None` once its feed ended.
    tx: Option<UnboundedSender<Vec<Item>>>,
}

/// Plans every peer's chunks. With several peers, the dirty rows of all of
/// them are read a chunk at a time and each path is looked up and worked
/// out once for every peer it is marked for (an initial push to 8 peers
/// read every file row 8 times); each peer gets its items from that read.
/// A peer that falls [`AHEAD`] chunks behind is planned on its own from
/// where the shared read stands.
pub(super) struct Feeder<'a> {
    planner: Planner<'a>,
    shared: DirtyCursor,
    slots: Vec<Slot>,
}

impl<'a> Feeder<'a> {
    /// The planner for `peers`, with each one's first chunk (`None`: nothing
    /// to push there).
    pub(super) fn start(
        planner: Planner<'a>,
        index: &Index,
        peers: Vec<String>,
    ) -> Result<(Feeder<'a>, Vec<Option<Chunk>>), crate::index::Error> {
        let together = peers.len() >= 2;
        let slots = peers
            .into_iter()
            .map(|peer| Slot {
                peer,
                source: if together { Source::Shared } else { Source::Own(DirtyCursor::start()) },
                queue: VecDeque::new(),
                tx: None,
            })
            .collect();
        let mut f = Feeder {
            planner,
            shared: if together { DirtyCursor::start() } else { DirtyCursor::Done },
            slots,
        };
        // Shared reads until every peer has items, or one has a full
        // backlog: a peer still without any then is looked at on its own
        // (it may have none: no session).
        while f.shared != DirtyCursor::Done
            && f.slots.iter().any(|s| s.queue.is_empty())
            && f.slots.iter().all(|s| s.queue.len() < AHEAD)
        {
            f.plan_shared(index, true)?;
        }
        let mut firsts = Vec::new();
        for s in &mut f.slots {
            if s.queue.is_empty() && f.shared != DirtyCursor::Done {
                s.source = Source::Own(DirtyCursor::start());
            }
            firsts.push(match &mut s.source {
                Source::Own(cursor) => f.planner.next(index, &s.peer, cursor)?,
                Source::Shared => s.queue.pop_front(),
            });
        }
        Ok((f, firsts))
    }

    /// Keeps the peers whose `keep` is set, in order, each with the sender
    /// of its feed: slot `i` is then the `i`th kept peer.
    pub(super) fn keep(&mut self, keep: &[bool], mut txs: Vec<UnboundedSender<Vec<Item>>>) {
        let mut i = 0;
        self.slots.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        txs.reverse();
        for s in &mut self.slots {
            s.tx = txs.pop();
        }
    }

    /// Ends every feed (after an index failure).
    pub(super) fn stop(&mut self) {
        for s in &mut self.slots {
            s.tx = None;
            s.queue.clear();
        }
    }

    /// The session at `slot` took a chunk: hand it the next one, or end its
    /// feed when there is none.
    pub(super) fn serve(&mut self, index: &Index, slot: usize) -> Result<(), crate::index::Error> {
        loop {
            let s = &mut self.slots[slot];
            let Some(tx) = &s.tx else { return Ok(()) };
            if let Some(chunk) = s.queue.pop_front() {
                if tx.send(chunk).is_err() {
                    s.tx = None;
                    s.queue.clear();
                }
                return Ok(());
            }
            match &mut s.source {
                Source::Own(cursor) => {
                    let sent = match self.planner.next(index, &s.peer, cursor)? {
                        Some(items) => tx.send(items).is_ok(),
                        None => false,
                    };
                    if !sent {
                        // Dropping the sender ends that peer's feed.
                        s.tx = None;
                    }
                    return Ok(());
                }
                Source::Shared if self.shared == DirtyCursor::Done => {
                    s.tx = None;
                    return Ok(());
                }
                Source::Shared => self.plan_shared(index, false)?,
            }
        }
    }

    /// Reads and plans the next shared chunk into the queues of the peers
    /// planned together (before the sessions start: `all`, every one).
    fn plan_shared(&mut self, index: &Index, all: bool) -> Result<(), crate::index::Error> {
        let mut at: HashMap<String, usize> = HashMap::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.tx.as_ref().is_some_and(UnboundedSender::is_closed) {
                s.tx = None;
                s.queue.clear();
            }
            if matches!(s.source, Source::Shared) && (all || s.tx.is_some()) {
                at.insert(s.peer.clone(), i);
            }
        }
        let (rows, next) = index.dirty_chunk_all(&self.shared, SHARED_PATHS * at.len().max(1))?;
        self.shared = next;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(()) };
        let (lo, hi) = if first.path <= last.path {
            (&first.path, &last.path)
        } else {
            (&last.path, &first.path)
        };
        let pre = if rows.len() > plan::PRELOAD_ABOVE {
            let (files, origins) = index.chunk_states_all(lo, hi)?;
            Some(Preloaded { files, origins })
        } else {
            None
        };
        let lookup = IndexLookup { index, pre };
        let p = &self.planner;
        let items = plan::items_all(&rows, &p.filter, p.config, p.groups, p.roots, &lookup)?;
        let mut chunks: Vec<Vec<Item>> = self.slots.iter().map(|_| Vec::new()).collect();
        for (peer, it) in items {
            if let Some(&i) = at.get(&peer) {
                chunks[i].push(it);
            }
        }
        share_small_files(&mut chunks);
        for (s, chunk) in self.slots.iter_mut().zip(chunks) {
            if !chunk.is_empty() {
                s.queue.push_back(chunk);
            }
            if matches!(s.source, Source::Shared) && s.queue.len() > AHEAD {
                tracing::debug!("peer {}: behind the others, planned on its own", s.peer);
                s.source = Source::Own(self.shared.clone());
            }
        }
        Ok(())
    }
}

/// Gives the items of one small file planned for several peers one
/// [`shared::Slot`]: the first session to send it reads it for all.
fn share_small_files(chunks: &mut [Vec<Item>]) {
    if chunks.iter().filter(|c| !c.is_empty()).count() < 2 {
        return;
    }
    let small = |it: &Item| {
        it.local
            .as_ref()
            .is_some_and(|m| m.kind == FileKind::File && m.size > 0 && m.size <= shared::UP_TO)
    };
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for it in chunks.iter().flatten().filter(|it| small(it)) {
        *seen.entry(&it.path).or_default() += 1;
    }
    let slots: HashMap<Vec<u8>, Arc<shared::Slot>> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(p, _)| (p.to_vec(), shared::Slot::new()))
        .collect();
    if slots.is_empty() {
        return;
    }
    for it in chunks.iter_mut().flatten() {
        if small(it)
            && let Some(slot) = slots.get(&it.path)
        {
            it.shared = Some(slot.clone());
        }
    }
}

/// One peer's side of the stream: chunks arrive from the planner; taking one
/// asks for the next.
pub(super) struct Feed {
    chunks: UnboundedReceiver<Vec<Item>>,
    demand: std::sync::mpsc::Sender<ToPlanner>,
    slot: usize,
    current: std::vec::IntoIter<Item>,
}

impl Feed {
    /// A feed for the peer at `slot`, and the sender the planner fills it with.
    pub(super) fn new(
        slot: usize,
        demand: std::sync::mpsc::Sender<ToPlanner>,
    ) -> (Feed, UnboundedSender<Vec<Item>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Feed { chunks: rx, demand, slot, current: Vec::new().into_iter() }, tx)
    }

    /// Where this session hands confirmed pushes over.
    pub(super) fn recorder(&self) -> std::sync::mpsc::Sender<ToPlanner> {
        self.demand.clone()
    }

    /// The next item; `None` once the planner has no more for this peer.
    pub(super) async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(it) = self.current.next() {
                return Some(it);
            }
            let chunk = self.chunks.recv().await?;
            // The planner may be gone (it stopped on an error): then this
            // chunk is the last.
            let _ = self.demand.send(ToPlanner::Demand(self.slot));
            self.current = chunk.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Batch, IndexedFile, OwnedMark};
    use crate::types::{Base, Changes, Meta};

    fn config(dir: &std::path::Path) -> Config {
        crate::config::load_for_test(dir, "group g { host a b c; key k; include /srv; }")
    }

    fn meta() -> Meta {
        Meta::test_file()
    }

    /// Every peer gets each of its rows once, in push order, whether it keeps
    /// pace with the others or falls behind and is planned on its own.
    #[test]
    fn a_peer_behind_the_others_still_gets_each_item_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let groups = GroupPolicy::members(&c).unwrap();
        let roots = vec![Root { real: "/srv".into(), db: b"/srv".to_vec(), anchor: None }];
        let mut idx = Index::open_in_memory().unwrap();
        let n = SHARED_PATHS * (AHEAD + 3);
        let path = |i: usize| format!("/srv/f{i:06}").into_bytes();
        let mut batch = Batch::default();
        for i in 0..n {
            batch.upserts.push(IndexedFile { path: path(i), meta: meta() });
            for peer in ["b", "c"] {
                batch.marks.push(OwnedMark {
                    path: path(i),
                    peer: peer.into(),
                    myname: "a".into(),
                    changes: Changes::NEW,
                    forced: false,
                    base: Base::Absent,
                });
            }
        }
        // Two deletes, for b only.
        for p in ["/srv/gone", "/srv/gone/x"] {
            batch.marks.push(OwnedMark {
                path: p.as_bytes().to_vec(),
                peer: "b".into(),
                myname: "a".into(),
                changes: Changes::DELETE,
                forced: false,
                base: Base::Version([1; 32]),
            });
        }
        idx.apply(&batch).unwrap();
        let planner =
            Planner { filter: Filter::default(), config: &c, groups: &groups, roots: &roots };
        let (mut f, firsts) = Feeder::start(planner, &idx, vec!["b".into(), "c".into()]).unwrap();
        let mut got: Vec<Vec<Vec<u8>>> =
            firsts.into_iter().map(|c| c.unwrap().into_iter().map(|i| i.path).collect()).collect();
        let (tb, mut rb) = tokio::sync::mpsc::unbounded_channel();
        let (tc, mut rc) = tokio::sync::mpsc::unbounded_channel();
        f.keep(&[true, true], vec![tb, tc]);
        // b runs ahead; c takes nothing until b is done.
        loop {
            f.serve(&idx, 0).unwrap();
            match rb.try_recv() {
                Ok(chunk) => got[0].extend(chunk.into_iter().map(|i| i.path)),
                Err(_) => break,
            }
        }
        assert!(matches!(f.slots[1].source, Source::Own(_)), "c was left behind");
        assert!(f.slots[1].queue.len() <= AHEAD + 1, "c's backlog is bounded");
        loop {
            f.serve(&idx, 1).unwrap();
            match rc.try_recv() {
                Ok(chunk) => got[1].extend(chunk.into_iter().map(|i| i.path)),
                Err(_) => break,
            }
        }
        let mut want: Vec<Vec<u8>> = vec![b"/srv/gone/x".to_vec(), b"/srv/gone".to_vec()];
        want.extend((0..n).map(path));
        assert_eq!(got[0], want);
        assert_eq!(got[1], want[2..]);
    }

    #[test]
    fn a_small_file_planned_for_several_peers_is_read_once_for_all() {
        use crate::config::AutoMethod;
        let item = |path: &[u8], kind: FileKind, size: u64| {
            let mut it = crate::engine::push::replies::tests::item(AutoMethod::None);
            it.path = path.to_vec();
            it.local.as_mut().unwrap().kind = kind;
            it.local.as_mut().unwrap().size = size;
            it
        };
        let mut chunks = vec![
            vec![
                item(b"/srv/a", FileKind::File, 10),
                item(b"/srv/big", FileKind::File, shared::UP_TO + 1),
                item(b"/srv/d", FileKind::Dir, 0),
                item(b"/srv/only-here", FileKind::File, 10),
            ],
            vec![
                item(b"/srv/a", FileKind::File, 10),
                item(b"/srv/big", FileKind::File, shared::UP_TO + 1),
                item(b"/srv/d", FileKind::Dir, 0),
            ],
            Vec::new(),
        ];
        share_small_files(&mut chunks);
        let (one, two) = (&chunks[0], &chunks[1]);
        let a = (one[0].shared.as_ref().unwrap(), two[0].shared.as_ref().unwrap());
        assert!(Arc::ptr_eq(a.0, a.1), "one slot for both peers");
        assert!(one[1].shared.is_none() && two[1].shared.is_none(), "too large");
        assert!(one[2].shared.is_none() && two[2].shared.is_none(), "not a file");
        assert!(one[3].shared.is_none(), "one peer only");

        let mut alone = vec![vec![item(b"/srv/a", FileKind::File, 10)], Vec::new()];
        share_small_files(&mut alone);
        assert!(alone[0][0].shared.is_none(), "a single peer reads for itself");
    }
}
