//! What a receiving session records of the actions its changes owe: rows
//! written to the index's owed list before a change is made (ahead for a
//! whole batch where it can), dropped again for changes not made after all,
//! and run through the listener's [`Gate`] when the session ends.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use crate::actions::{ActionTable, Gate, Ran};
use crate::index::{Index, OwedAction};
use crate::proto::{ErrorCode, Outcome};

/// One session's owed rows and its place at the gate.
pub(super) struct Owed {
    /// The node's actions.
    actions: Arc<ActionTable>,
    /// The daemon's gate: where this session's actions run, shared with
    /// the sessions that overlap it.
    gate: Arc<Gate>,
    /// The peer, as the source of received changes.
    peer: String,
    /// Whether this session counts as a writer at the gate.
    entered: bool,
    /// Owed rows this session wrote.
    recorded: Vec<i64>,
    /// Rows recorded ahead for the requests of the current batch, by request
    /// id; taken when the change is made.
    ahead: HashMap<u32, Vec<i64>>,
    /// Rows recorded ahead for changes that were not made after all.
    stale: Vec<i64>,
}

impl Owed {
    /// Nothing owed yet, for a session of `peer`.
    pub(super) fn new(actions: Arc<ActionTable>, gate: Arc<Gate>, peer: &str) -> Owed {
        Owed {
            actions,
            gate,
            peer: peer.to_string(),
            entered: false,
            recorded: Vec::new(),
            ahead: HashMap::new(),
            stale: Vec::new(),
        }
    }

    /// True when no group has an action: nothing is ever owed.
    pub(super) fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Records the actions a change of `path` owes, before it is made
    /// (`local`: a change made here, already on disk). Returns the rows;
    /// an error refuses the change, which must not land without its actions.
    pub(super) fn record(
        &mut self,
        index: &mut Index,
        req: Option<u32>,
        path: &[u8],
        real: &Path,
        local: bool,
    ) -> Result<Vec<i64>, Outcome> {
        if self.actions.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(ids) = req.and_then(|id| self.ahead.remove(&id)) {
            return Ok(ids);
        }
        let from = (!local).then_some(self.peer.as_str());
        let owed = self.actions.owed(path, real, from, local);
        if owed.is_empty() {
            return Ok(Vec::new());
        }
        match self.add(index, &owed) {
            Ok(ids) => Ok(ids),
            Err(e) => {
                warn!("journalling the actions of {}: {e}", crate::paths::display(path));
                Err(Outcome::Failed {
                    code: ErrorCode::Internal,
                    message: "cannot journal its actions".into(),
                })
            }
        }
    }

    /// Records `owed` in one transaction, as this session's rows. The session
    /// enters the gate first: no run may start between its owed rows and
    /// its changes.
    fn add(&mut self, index: &mut Index, owed: &[OwedAction]) -> crate::index::Result<Vec<i64>> {
        if !self.entered {
            self.gate.enter();
            self.entered = true;
        }
        let ids = index.add_owed(owed)?;
        self.recorded.extend_from_slice(&ids);
        Ok(ids)
    }

    /// Records, in one transaction, the actions every change of a batch
    /// would owe if made (`(request id, DB path, real path)` of each `Push`
    /// and `Delete` the session may make): one commit per batch instead of
    /// one per file. Rows of requests that end up not applied are dropped
    /// after.
    pub(super) fn record_ahead(&mut self, index: &mut Index, changes: &[(u32, &[u8], PathBuf)]) {
        let mut owed = Vec::new();
        let mut owners = Vec::new();
        for (id, path, real) in changes {
            let rows = self.actions.owed(path, real, Some(&self.peer), false);
            owners.extend(std::iter::repeat_n(*id, rows.len()));
            owed.extend(rows);
        }
        if owed.is_empty() {
            return;
        }
        match self.add(index, &owed) {
            Ok(ids) => {
                for (id, row) in owners.into_iter().zip(ids) {
                    self.ahead.entry(id).or_default().push(row);
                }
            }
            // Each request records its own rows then (or is refused).
            Err(e) => warn!("journalling actions ahead: {e}"),
        }
    }

    /// A request is answered: rows recorded ahead for it and not taken
    /// belong to a change that was not made.
    pub(super) fn settle(&mut self, id: u32) {
        if let Some(ids) = self.ahead.remove(&id) {
            self.stale.extend(ids);
        }
    }

    /// Every request still open is settled (the peer never finished them).
    pub(super) fn settle_all(&mut self) {
        let open: Vec<u32> = self.ahead.keys().copied().collect();
        for id in open {
            self.settle(id);
        }
    }

    /// The change owing `ids` was not made: its rows go at the next
    /// [`Owed::drop_stale`].
    pub(super) fn not_made(&mut self, ids: &[i64]) {
        self.stale.extend_from_slice(ids);
    }

    /// Drops the rows of changes that were not made after all (once per
    /// flush). Rows that cannot be dropped now are kept for the next flush:
    /// dropped later, never run for a change that was not made.
    pub(super) fn drop_stale(&mut self, index: &mut Index) {
        if self.stale.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.stale);
        if let Err(e) = index.remove_owed(&ids) {
            warn!("dropping journalled actions: {e}");
            self.stale.extend_from_slice(&ids);
            return;
        }
        let gone: HashSet<i64> = ids.iter().copied().collect();
        self.recorded.retain(|i| !gone.contains(i));
    }

    /// Owed rows whose process is gone (a daemon killed before it ran them).
    fn has_orphans(&self, index: &Index) -> bool {
        let mine = self.actions.owner();
        index.owed_actions().is_ok_and(|rows| {
            rows.iter()
                .any(|r| r.action.owner != mine && !crate::actions::owner_alive(&r.action.owner))
        })
    }

    /// The session ended with its changes recorded: runs what it owes (with
    /// the sessions that overlap it, through the gate) and returns the runs
    /// that covered its rows. A session that owes nothing runs nothing,
    /// unless a killed predecessor left rows behind: those run now (with
    /// `-i` this process ends with the session and must not leave them half
    /// run). `tick` runs while waiting.
    pub(super) fn run_at_end(&mut self, index: &Index, tick: &mut dyn FnMut()) -> Vec<Ran> {
        let orphans = self.has_orphans(index);
        if self.entered && self.recorded.is_empty() && !orphans {
            // Every row went stale (nothing changed): no run is owed.
            self.gate.exit();
            self.entered = false;
        }
        if !self.entered {
            if !orphans {
                return Vec::new();
            }
            self.gate.enter();
            self.entered = true;
        }
        self.entered = false;
        let ids = std::mem::take(&mut self.recorded);
        self.gate.leave(&ids, tick)
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        // A session that ended without `end` (its worker panicked) must not
        // keep the others waiting for it at the gate.
        if self.entered {
            self.gate.exit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::receive::tests::config_for;
    use std::time::Duration;

    struct Fixture {
        _dir: tempfile::TempDir,
        index: Index,
        owed: Owed,
        out: PathBuf,
        srv: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let srv = dir.path().join("srv");
        let out = dir.path().join("out");
        let text = format!(
            "group g {{ host a b; key k; include {}; action {{ pattern {}/*.conf; exec \"echo ran %% >> {}\"; }} }}",
            srv.display(),
            srv.display(),
            out.display()
        );
        let config = config_for(dir.path(), &text);
        let db = dir.path().join("i.db");
        let index = Index::open(&db, Duration::from_secs(5)).unwrap();
        let policies = crate::policy::GroupPolicy::members(&config).unwrap();
        let actions = Arc::new(ActionTable::new(&config, &policies).unwrap());
        let gate =
            Arc::new(Gate::new(db, Duration::from_secs(5), actions.owner().into(), "a".into()));
        let owed = Owed::new(actions, gate, "b");
        Fixture { _dir: dir, index, owed, out, srv }
    }

    fn rows(index: &Index) -> Vec<i64> {
        index.owed_actions().unwrap().iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_change_owes_its_rows_before_it_is_made_and_they_run_at_the_end() {
        let mut f = fixture();
        let conf = f.srv.join("a.conf");
        let path = conf.to_str().unwrap().as_bytes().to_vec();
        let ids = f.owed.record(&mut f.index, Some(1), &path, &conf, false).unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(rows(&f.index), ids);
        let row = &f.index.owed_actions().unwrap()[0];
        assert_eq!((row.action.peer.as_deref(), row.action.ready), (Some("b"), false));
        // A path no action matches owes nothing.
        let txt = f.srv.join("a.txt");
        let none = f.owed.record(&mut f.index, None, txt.to_str().unwrap().as_bytes(), &txt, false);
        assert_eq!(none, Ok(Vec::new()));
        // The change was made (the index marks the rows ready with it).
        f.index.mark_owed_ready(&ids).unwrap();
        let ran = f.owed.run_at_end(&f.index, &mut || {});
        assert_eq!(ran.len(), 1);
        assert_eq!(ran[0].ids, ids);
        assert_eq!(std::fs::read_to_string(&f.out).unwrap(), format!("ran {}\n", conf.display()));
        assert!(rows(&f.index).is_empty());
    }

    #[test]
    fn rows_recorded_ahead_are_taken_or_dropped() {
        let mut f = fixture();
        let (a, b) = (f.srv.join("a.conf"), f.srv.join("b.conf"));
        let pa = a.to_str().unwrap().as_bytes().to_vec();
        let pb = b.to_str().unwrap().as_bytes().to_vec();
        f.owed.record_ahead(&mut f.index, &[(1, &pa, a.clone()), (2, &pb, b.clone())]);
        let ahead = rows(&f.index);
        assert_eq!(ahead.len(), 2);
        // Request 1 takes the row recorded for it; no second row is written.
        let taken = f.owed.record(&mut f.index, Some(1), &pa, &a, false).unwrap();
        assert_eq!(taken, vec![ahead[0]]);
        assert_eq!(rows(&f.index), ahead);
        // Request 2 was answered without its change: its row goes.
        f.owed.settle(1);
        f.owed.settle(2);
        f.owed.drop_stale(&mut f.index);
        assert_eq!(rows(&f.index), vec![ahead[0]]);
        // A change that failed after taking its rows gives them back too.
        f.owed.not_made(&taken);
        f.owed.drop_stale(&mut f.index);
        assert!(rows(&f.index).is_empty());
        // Nothing left owed by this session: nothing runs.
        assert!(f.owed.run_at_end(&f.index, &mut || {}).is_empty());
        assert!(!f.out.exists());
    }

    #[test]
    fn a_dead_process_rows_run_even_when_the_session_owes_nothing() {
        let mut f = fixture();
        let conf = f.srv.join("x.conf");
        let orphan = OwedAction {
            command: format!("echo orphan %% >> {}", f.out.display()),
            logfile: None,
            timeout_s: 10,
            group: "g".into(),
            path: conf.to_str().unwrap().as_bytes().to_vec(),
            real: conf.clone(),
            peer: Some("b".into()),
            owner: "999999999:1".into(),
            ready: true,
        };
        f.index.add_owed(&[orphan]).unwrap();
        assert!(f.owed.run_at_end(&f.index, &mut || {}).is_empty());
        assert_eq!(
            std::fs::read_to_string(&f.out).unwrap(),
            format!("orphan {}\n", conf.display())
        );
        assert!(rows(&f.index).is_empty());
    }
}
