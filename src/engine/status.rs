//! What this node still owes and what needs a person, read from the index
//! as one typed value: the aggregation behind `--status`, and what a status
//! endpoint or a watch loop would report. Printing stays in the CLI.

use std::collections::BTreeMap;

use super::{Error, Node};
use crate::index::{ActionFailure, ConflictRow, DirtyRow, Resolution};

/// Entries waiting to be pushed to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The peer.
    pub peer: String,
    /// Dirty entries.
    pub entries: usize,
    /// Of those, forced (`csync -f`).
    pub forced: usize,
    /// Unix seconds of the oldest mark.
    pub oldest_mark: i64,
}

/// A recorded conflict and whether it is still open.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The record.
    pub row: ConflictRow,
    /// Unresolved, unacknowledged, and its path still dirty towards that
    /// peer (once the two agree again it is history).
    pub open: bool,
}

/// The node's state for `--status`.
#[derive(Debug, Clone)]
pub struct Status {
    /// This node.
    pub node: String,
    /// Per peer with something pending, in name order.
    pub pending: Vec<Pending>,
    /// Every recorded conflict, newest first.
    pub conflicts: Vec<Conflict>,
    /// Actions that failed (here or on peers) and have not run well since.
    pub failed_actions: Vec<ActionFailure>,
    /// Peers the last push could not reach: `(peer, when, why)`.
    pub unreachable: Vec<(String, i64, String)>,
}

impl Status {
    /// Nothing pending, no open conflict, no failed action, every peer
    /// reached: what `--status` exits 0 on.
    pub fn is_clear(&self) -> bool {
        self.pending.is_empty()
            && !self.conflicts.iter().any(|c| c.open)
            && self.failed_actions.is_empty()
            && self.unreachable.is_empty()
    }
}

impl Node {
    /// Reads the node's state from the index.
    ///
    /// # Errors
    /// When the index fails.
    pub fn status(&self) -> Result<Status, Error> {
        let dirty = self.index.dirty()?;
        let conflicts = self.index.conflicts()?;
        Ok(Status {
            node: self.config.myname.clone(),
            pending: pending(&dirty),
            conflicts: classify(conflicts, &dirty),
            failed_actions: self.index.action_failures()?,
            unreachable: self.index.failing_peers()?,
        })
    }
}

/// Dirty rows counted per peer.
fn pending(dirty: &[DirtyRow]) -> Vec<Pending> {
    let mut peers: BTreeMap<&str, Pending> = BTreeMap::new();
    for d in dirty {
        let e = peers.entry(&d.peer).or_insert_with(|| Pending {
            peer: d.peer.clone(),
            entries: 0,
            forced: 0,
            oldest_mark: i64::MAX,
        });
        e.entries += 1;
        e.forced += usize::from(d.forced);
        e.oldest_mark = e.oldest_mark.min(d.marked_at);
    }
    peers.into_values().collect()
}

/// Each conflict with whether it is open.
fn classify(rows: Vec<ConflictRow>, dirty: &[DirtyRow]) -> Vec<Conflict> {
    rows.into_iter()
        .map(|row| {
            let open = row.resolution == Resolution::Unresolved
                && !row.acked
                && dirty.iter().any(|d| d.path == row.path && d.peer == row.peer);
            Conflict { row, open }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Base, Changes};

    fn dirty(path: &str, peer: &str, forced: bool, at: i64) -> DirtyRow {
        DirtyRow {
            path: path.as_bytes().to_vec(),
            peer: peer.into(),
            myname: "a".into(),
            forced,
            changes: Changes::CONTENT,
            marked_at: at,
            generation: 1,
            base: Base::Unknown,
        }
    }

    fn conflict(path: &str, peer: &str, r: Resolution, acked: bool) -> ConflictRow {
        ConflictRow {
            path: path.as_bytes().to_vec(),
            peer: peer.into(),
            detected_at: 1,
            resolution: r,
            kept: None,
            acked,
        }
    }

    #[test]
    fn pending_is_counted_per_peer_with_the_oldest_mark() {
        let d = [dirty("/a", "c", false, 9), dirty("/b", "b", true, 5), dirty("/c", "b", false, 3)];
        let p = pending(&d);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].peer.as_str(), p[0].entries, p[0].forced, p[0].oldest_mark),
            ("b", 2, 1, 3)
        );
        assert_eq!((p[1].peer.as_str(), p[1].entries), ("c", 1));
    }

    #[test]
    fn a_conflict_is_open_while_unresolved_unacknowledged_and_still_dirty() {
        let d = [dirty("/a", "b", false, 1)];
        let rows = vec![
            conflict("/a", "b", Resolution::Unresolved, false),
            conflict("/a", "b", Resolution::Unresolved, true),
            conflict("/a", "c", Resolution::Unresolved, false),
            conflict("/a", "b", Resolution::Won("younger".into()), false),
        ];
        let open: Vec<bool> = classify(rows, &d).iter().map(|c| c.open).collect();
        assert_eq!(open, [true, false, false, false]);
        let s = Status {
            node: "a".into(),
            pending: Vec::new(),
            conflicts: classify(vec![conflict("/a", "b", Resolution::Settled, false)], &d),
            failed_actions: Vec::new(),
            unreachable: Vec::new(),
        };
        assert!(s.is_clear());
    }
}
