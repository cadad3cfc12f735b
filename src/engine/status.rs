//! What this node still owes and what needs a person, read from the index
//! as one typed value: the aggregation behind `--status`, and what a status
//! endpoint or a watch loop would report. Printing stays in the CLI.

use std::collections::BTreeMap;

use super::{Error, Node};
use crate::index::{ActionFailure, ConflictRow, DirtyRow, Resolution};

/// One peer of this node's groups: what waits for it and how pushes to it
/// went lately.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// The peer.
    pub peer: String,
    /// Dirty entries waiting to be pushed there.
    pub pending: usize,
    /// Of those, forced (`csync -f`).
    pub forced: usize,
    /// Unix seconds of the oldest mark (`None`: nothing pending).
    pub oldest_mark: Option<i64>,
    /// Unix seconds of the last push that reached it.
    pub last_ok_at: Option<i64>,
    /// Unix seconds of the last push that could not (`None` once a later one
    /// reached it).
    pub last_failed_at: Option<i64>,
    /// Why that push failed.
    pub last_error: Option<String>,
    /// Open conflicts with this peer.
    pub open_conflicts: usize,
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
    /// Every peer of this node's groups (and any other the index knows of),
    /// in name order, also those with nothing to report.
    pub peers: Vec<PeerState>,
    /// Every recorded conflict, newest first.
    pub conflicts: Vec<Conflict>,
    /// Actions that failed (here or on peers) and have not run well since.
    pub failed_actions: Vec<ActionFailure>,
}

impl Status {
    /// Nothing pending, no open conflict, no failed action, every peer
    /// reached: what `--status` exits 0 on.
    pub fn is_clear(&self) -> bool {
        self.peers.iter().all(|p| p.pending == 0 && p.last_failed_at.is_none())
            && !self.conflicts.iter().any(|c| c.open)
            && self.failed_actions.is_empty()
    }

    /// Entries pending towards all peers together.
    pub fn pending(&self) -> usize {
        self.peers.iter().map(|p| p.pending).sum()
    }

    /// Peers the last push could not reach.
    pub fn unreachable(&self) -> usize {
        self.peers.iter().filter(|p| p.last_failed_at.is_some()).count()
    }
}

impl Node {
    /// Reads the node's state from the index.
    ///
    /// # Errors
    /// When the index fails.
    pub fn status(&self) -> Result<Status, Error> {
        let dirty = self.index.dirty()?;
        let conflicts = classify(self.index.conflicts()?, &dirty);
        let mut peers: BTreeMap<String, PeerState> = BTreeMap::new();
        for g in &self.groups {
            for (p, _) in &g.push_to {
                peers.entry(p.clone()).or_default();
            }
        }
        // A receive-only node pushes nowhere but still has peers to show.
        for g in self.config.my_groups() {
            for h in g.peers(&self.config.myname) {
                peers.entry(h.name.clone()).or_default();
            }
        }
        count_pending(&mut peers, &dirty);
        for c in self.index.peer_contacts()? {
            let e = peers.entry(c.peer).or_default();
            e.last_ok_at = c.ok_at;
            e.last_failed_at = c.failed_at;
            e.last_error = c.error;
        }
        for c in conflicts.iter().filter(|c| c.open) {
            peers.entry(c.row.peer.clone()).or_default().open_conflicts += 1;
        }
        Ok(Status {
            node: self.config.myname.clone(),
            peers: peers
                .into_iter()
                .map(|(peer, mut s)| {
                    s.peer = peer;
                    s
                })
                .collect(),
            conflicts,
            failed_actions: self.index.action_failures()?,
        })
    }
}

/// Dirty rows counted per peer.
fn count_pending(peers: &mut BTreeMap<String, PeerState>, dirty: &[DirtyRow]) {
    for d in dirty {
        let e = peers.entry(d.peer.clone()).or_default();
        e.pending += 1;
        e.forced += usize::from(d.forced);
        e.oldest_mark = Some(e.oldest_mark.map_or(d.marked_at, |o| o.min(d.marked_at)));
    }
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
        let mut peers = BTreeMap::new();
        count_pending(&mut peers, &d);
        let p: Vec<_> = peers.into_iter().collect();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].0.as_str(), p[0].1.pending, p[0].1.forced, p[0].1.oldest_mark),
            ("b", 2, 1, Some(3))
        );
        assert_eq!((p[1].0.as_str(), p[1].1.pending), ("c", 1));
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
            peers: vec![PeerState { peer: "b".into(), ..PeerState::default() }],
            conflicts: classify(vec![conflict("/a", "b", Resolution::Settled, false)], &d),
            failed_actions: Vec::new(),
        };
        assert!(s.is_clear());
    }
}
