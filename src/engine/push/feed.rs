//! The plan, streamed: the main thread (which owns the index) plans each
//! peer's items a chunk at a time, one chunk ahead of that peer's session,
//! instead of materializing every item for every peer before the first byte
//! goes out. A 100,000-file initial sync to two peers held about 300 MB of
//! planned items that way; now a peer holds at most two chunks (plus what is
//! in flight).
//!
//! The order is the planner's: deletes first (deepest first), then the rest
//! (parents first), as the index hands the rows out ([`DirtyCursor`]).

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::plan::{self, Filter, IndexLookup, Item, Preloaded};
use crate::config::Config;
use crate::index::Pushed;
use crate::index::{DirtyCursor, Index};
use crate::policy::GroupPolicy;
use crate::scan::Root;

/// Dirty rows read (and planned) at a time per peer.
pub(super) const CHUNK: usize = 2048;

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
