//! What the index knows of peers: the version each peer has of each entry,
//! pushes and receives recorded with it, who made the current version
//! (origin), conflicts, and when each peer was last reached.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::{
    ConflictRow, Error, Index, IndexedFile, Pushed, Received, Result, owed, rows, subtree_range,
    unix_now,
};
use crate::types::Base;

/// An open conflict with a peer is settled once the two agree on the path
/// again (a push confirmed, or the peer's version received).
const SETTLE_CONFLICT: &str = "UPDATE conflict SET resolution = 'resolved: in sync again' \
     WHERE path = ?1 AND peer = ?2 AND resolution = 'unresolved'";

impl Index {
    /// What `peer` was last known to have at `path` (`None` inside: absent there;
    /// outer `None`: never synced).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn peer_version(&self, path: &[u8], peer: &str) -> Result<Option<Option<[u8; 32]>>> {
        let sql = self.sql();
        let mut st = self
            .conn
            .prepare_cached("SELECT version FROM peer_state WHERE path = ?1 AND peer = ?2")
            .map_err(&sql)?;
        let v: Option<Option<Vec<u8>>> =
            st.query_row(params![path, peer], |r| r.get(0)).optional().map_err(&sql)?;
        Ok(v.map(|v| v.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())))
    }

    /// After a push to `peer` was confirmed: clears the mark (only if no newer
    /// mark arrived meanwhile, see `gen`) and records what the peer now has.
    /// Many results go in one transaction.
    ///
    /// # Errors
    /// When SQLite fails; nothing is then recorded.
    pub fn record_pushed(&mut self, done: &[Pushed]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let sql = |source| Error::Sqlite { path: path.clone(), source };
        // Immediate: the transaction reads (is a conflict open?) before it
        // writes, and a read snapshot that a concurrent writer (the daemon
        // receiving) has moved past cannot be upgraded to a write: SQLite
        // then says "database is locked" at once instead of waiting its
        // busy timeout. Taking the write lock first waits like every write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        {
            let mut clear = tx
                .prepare_cached("DELETE FROM dirty WHERE path = ?1 AND peer = ?2 AND gen = ?3")
                .map_err(sql)?;
            // A newer mark arrived during the push: the peer now has what we
            // pushed, which is what that newer change must be compared with.
            let mut rebase = tx
                .prepare_cached("UPDATE dirty SET base = ?3 WHERE path = ?1 AND peer = ?2")
                .map_err(sql)?;
            let mut state = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO peer_state (path, peer, version) VALUES (?1, ?2, ?3)",
                )
                .map_err(sql)?;
            let mut settled = tx.prepare_cached(SETTLE_CONFLICT).map_err(sql)?;
            // Nothing in this transaction opens a conflict: when none is
            // open now, settling one per push finds nothing (one statement
            // per push saved; an initial push to 8 peers makes 80,000).
            let open: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM conflict WHERE resolution = 'unresolved')",
                )
                .and_then(|mut st| st.query_row([], |r| r.get(0)))
                .map_err(sql)?;
            for d in done {
                let mut cleared = false;
                if let Some(generation) = d.clear_gen {
                    cleared = clear.execute(params![d.path, d.peer, generation]).map_err(sql)? > 0;
                    if open {
                        settled.execute(params![d.path, d.peer]).map_err(sql)?;
                    }
                }
                // A cleared mark has no row left to rebase.
                if let Some(v) = d.version.as_ref().filter(|_| !cleared) {
                    let base = v.map_or(Base::Absent, Base::Version);
                    rebase.execute(params![d.path, d.peer, base.to_sql()]).map_err(sql)?;
                }
                if let Some(v) = &d.version {
                    state
                        .execute(params![d.path, d.peer, v.as_ref().map(|h| h.as_slice())])
                        .map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// On the receiver, in one transaction: the entry's new state (or its
    /// removal), what the sender now has, and the sender's mark cleared.
    ///
    /// # Errors
    /// When SQLite fails; nothing is then recorded.
    pub fn record_received(
        &mut self,
        file: Option<&IndexedFile>,
        removed: Option<&[u8]>,
        peer: &str,
        version: Option<[u8; 32]>,
        origin: Option<&str>,
    ) -> Result<()> {
        let r = Received {
            file: file.cloned(),
            removed: removed.map(<[u8]>::to_vec),
            peer: peer.to_string(),
            version,
            origin: origin.map(str::to_string),
            actions: Vec::new(),
            forward: Vec::new(),
        };
        self.record_received_batch(std::slice::from_ref(&r))
    }

    /// Many [`Index::record_received`] in one transaction: a receiver applying
    /// thousands of small files pays one commit per batch, not per file.
    ///
    /// # Errors
    /// When SQLite fails; nothing of the batch is then recorded.
    pub fn record_received_batch(&mut self, batch: &[Received]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let sql = |source| Error::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut up = tx.prepare_cached(rows::UPSERT_FILE).map_err(sql)?;
            let mut del_file =
                tx.prepare_cached("DELETE FROM file WHERE path = ?1").map_err(sql)?;
            let mut del_dirty = tx
                .prepare_cached("DELETE FROM dirty WHERE path = ?1 AND peer = ?2")
                .map_err(sql)?;
            let mut settled = tx.prepare_cached(SETTLE_CONFLICT).map_err(sql)?;
            let mut set_origin = tx
                .prepare_cached("INSERT OR REPLACE INTO origin (path, node) VALUES (?1, ?2)")
                .map_err(sql)?;
            let mut del_origin =
                tx.prepare_cached("DELETE FROM origin WHERE path = ?1").map_err(sql)?;
            let mut state = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO peer_state (path, peer, version) VALUES (?1, ?2, ?3)",
                )
                .map_err(sql)?;
            let mut mark = tx.prepare_cached(rows::UPSERT_DIRTY).map_err(sql)?;
            let now = unix_now();
            for r in batch {
                owed::set_ready(&tx, &r.actions).map_err(sql)?;
                let p: &[u8] = match (&r.file, &r.removed) {
                    (Some(f), _) => {
                        rows::upsert_file(&mut up, f).map_err(sql)?;
                        &f.path
                    }
                    (None, Some(p)) => {
                        del_file.execute([p]).map_err(sql)?;
                        p
                    }
                    (None, None) => continue,
                };
                del_dirty.execute(params![p, r.peer]).map_err(sql)?;
                settled.execute(params![p, r.peer]).map_err(sql)?;
                match (&r.origin, &r.file) {
                    (Some(o), Some(_)) => {
                        set_origin.execute(params![p, o]).map_err(sql)?;
                    }
                    (_, None) => {
                        del_origin.execute([p]).map_err(sql)?;
                    }
                    (None, Some(_)) => {}
                }
                state
                    .execute(params![p, r.peer, r.version.as_ref().map(|h| h.as_slice())])
                    .map_err(sql)?;
                for m in &r.forward {
                    rows::upsert_mark(&mut mark, &m.as_mark(), now).map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// The host that made the current version of `path`, if it was received
    /// (`None`: this node made it).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn origin(&self, path: &[u8]) -> Result<Option<String>> {
        let sql = self.sql();
        let mut st =
            self.conn.prepare_cached("SELECT node FROM origin WHERE path = ?1").map_err(&sql)?;
        st.query_row([path], |r| r.get(0)).optional().map_err(&sql)
    }

    /// Every `(path, node)` of the origin table: who made each received version.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn origins(&self) -> Result<Vec<(Vec<u8>, String)>> {
        self.query_all("SELECT path, node FROM origin", |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// Records a conflict and how it ended.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn record_conflict(
        &mut self,
        path: &[u8],
        peer: &str,
        resolution: &super::Resolution,
        kept: Option<&Path>,
    ) -> Result<()> {
        let sql = self.sql();
        self.conn
            .execute(
                // Two conflicts on one path within a second keep both records.
                "INSERT INTO conflict (path, peer, detected_at, resolution, kept) VALUES (?1, ?2, \
                 max(?3, coalesce((SELECT max(detected_at) + 1 FROM conflict WHERE path = ?1 AND peer = ?2), 0)), ?4, ?5)",
                params![
                    path,
                    peer,
                    unix_now(),
                    resolution.to_string(),
                    kept.map(|k| k.as_os_str().as_encoded_bytes().to_vec())
                ],
            )
            .map_err(&sql)?;
        Ok(())
    }

    /// Every peer's last contact: when a push last reached it, and when and
    /// why the last one failed (for `--status`).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn peer_contacts(&self) -> Result<Vec<PeerContact>> {
        self.query_all("SELECT peer, ok_at, failed_at, error FROM peer_sync ORDER BY peer", |r| {
            Ok(PeerContact {
                peer: r.get(0)?,
                ok_at: r.get(1)?,
                failed_at: r.get(2)?,
                error: r.get(3)?,
            })
        })
    }

    /// Peers this node has completed a sync with (see `peer_sync`).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn synced_peers(&self) -> Result<Vec<String>> {
        self.query_all(
            "SELECT peer FROM peer_sync WHERE synced_at IS NOT NULL ORDER BY peer",
            |r| r.get(0),
        )
    }

    /// Records how a push to `peer` went: `Ok` when it reached the peer,
    /// else why not.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn record_contact(
        &mut self,
        peer: &str,
        outcome: std::result::Result<(), &str>,
    ) -> Result<()> {
        let now = unix_now();
        self.write(|c| match outcome {
            Ok(()) => c.execute(
                "INSERT INTO peer_sync (peer, ok_at) VALUES (?1, ?2) \
                 ON CONFLICT (peer) DO UPDATE SET ok_at = ?2, failed_at = NULL, error = NULL",
                params![peer, now],
            ),
            Err(why) => c.execute(
                "INSERT INTO peer_sync (peer, failed_at, error) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (peer) DO UPDATE SET failed_at = ?2, error = ?3",
                params![peer, now, why],
            ),
        })
        .map(|_| ())
    }

    /// Peers whose last push failed: `(peer, when, why)`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn failing_peers(&self) -> Result<Vec<(String, i64, String)>> {
        self.query_all(
            "SELECT peer, failed_at, coalesce(error, '') FROM peer_sync \
             WHERE failed_at IS NOT NULL ORDER BY peer",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// Records that a first sync with `peer` completed.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn set_peer_synced(&mut self, peer: &str) -> Result<()> {
        let now = unix_now();
        self.write(|c| {
            c.execute(
                "INSERT INTO peer_sync (peer, synced_at) VALUES (?1, ?2) \
                 ON CONFLICT (peer) DO UPDATE SET synced_at = coalesce(synced_at, ?2)",
                params![peer, now],
            )
        })
        .map(|_| ())
    }

    /// Records that `peer` holds the same version as we do for many paths,
    /// as found by comparing listings at first contact, in one transaction:
    /// its state is known, and nothing is left to push there for them.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn set_peer_versions(&mut self, peer: &str, rows: &[(Vec<u8>, [u8; 32])]) -> Result<()> {
        self.write(|c| {
            let mut st = c.prepare_cached(
                "INSERT OR REPLACE INTO peer_state (path, peer, version) VALUES (?1, ?2, ?3)",
            )?;
            let mut clear = c.prepare_cached("DELETE FROM dirty WHERE path = ?1 AND peer = ?2")?;
            for (p, v) in rows {
                st.execute(params![p, peer, v.as_slice()])?;
                clear.execute(params![p, peer])?;
            }
            Ok(())
        })
    }

    /// Marks every indexed entry for `m.peer` (`m.path` is ignored) in one
    /// statement, as [`Index::mark`] would one mark per entry: first contact
    /// with an empty peer marks all of them, and a row at a time cost the
    /// push's main thread one statement per entry and peer.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn mark_every_file(&mut self, m: &super::Mark<'_>) -> Result<usize> {
        let now = unix_now();
        self.write(|c| {
            c.prepare_cached(&rows::upsert_mark_every_file())?.execute(params![
                m.peer,
                m.myname,
                m.forced as i64,
                i64::from(m.changes.0),
                now,
                m.base.to_sql()
            ])
        })
    }

    /// Acknowledges the conflicts on `paths` (all when empty): `--status` no
    /// longer lists them as open. Returns how many.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn ack_conflicts(&mut self, paths: &[Vec<u8>]) -> Result<usize> {
        self.write(|c| {
            if paths.is_empty() {
                return c.execute("UPDATE conflict SET acked = 1 WHERE acked = 0", []);
            }
            let mut n = 0;
            for p in paths {
                let (lo, hi) = subtree_range(p);
                n += c.execute(
                    "UPDATE conflict SET acked = 1 WHERE acked = 0 \
                     AND (path = ?1 OR (path > ?2 AND path < ?3))",
                    params![p, lo, hi],
                )?;
            }
            Ok(n)
        })
    }

    /// Every recorded conflict, newest first.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn conflicts(&self) -> Result<Vec<ConflictRow>> {
        self.query_all(
            "SELECT path, peer, detected_at, resolution, kept, acked FROM conflict ORDER BY detected_at DESC, path",
            rows::conflict_from_row,
        )
    }
}

/// How pushes to one peer went lately (`peer_sync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerContact {
    /// The peer's host name.
    pub peer: String,
    /// Unix seconds of the last push that reached it.
    pub ok_at: Option<i64>,
    /// Unix seconds of the last push that could not (`None` once a later
    /// push reached the peer).
    pub failed_at: Option<i64>,
    /// Why that one failed.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Batch, Mark, OwnedMark};
    use crate::types::{Changes, Meta};

    fn meta() -> Meta {
        Meta::test_file()
    }

    /// Every dirty column but `marked_at` (the two indexes may be a second apart).
    #[allow(clippy::type_complexity)]
    fn dirty_rows(idx: &Index) -> Vec<(Vec<u8>, String, String, i64, i64, i64, Option<Vec<u8>>)> {
        let mut st = idx
            .conn
            .prepare("SELECT path, peer, myname, forced, changes, gen, base FROM dirty ORDER BY path, peer")
            .unwrap();
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    }

    #[test]
    fn marking_every_file_at_once_leaves_what_marking_each_would() {
        let files = ["/r/a", "/r/b", "/r/c", "/r/d"];
        // Earlier marks of every kind: plain, forced, a delete, another peer's.
        let earlier = |p: &str, peer: &str, changes, forced, base| OwnedMark {
            path: p.as_bytes().to_vec(),
            peer: peer.into(),
            myname: "old".into(),
            changes,
            forced,
            base,
        };
        let batch = || Batch {
            upserts: files
                .iter()
                .map(|p| IndexedFile { path: p.as_bytes().to_vec(), meta: meta() })
                .collect(),
            marks: vec![
                earlier("/r/a", "b", Changes::NEW, false, Base::Absent),
                earlier("/r/b", "b", Changes::MODE, true, Base::Version([3; 32])),
                earlier("/r/gone", "b", Changes::DELETE, false, Base::Version([4; 32])),
                earlier("/r/c", "other", Changes::CONTENT, false, Base::Unknown),
            ],
            ..Batch::default()
        };
        let (mut one, mut each) =
            (Index::open_in_memory().unwrap(), Index::open_in_memory().unwrap());
        one.apply(&batch()).unwrap();
        each.apply(&batch()).unwrap();
        let mark = |path: &'static [u8]| Mark {
            path,
            peer: "b",
            myname: "me",
            changes: Changes::MARKED,
            forced: false,
            base: Base::Unknown,
        };
        let marks: Vec<Mark<'_>> = files.iter().map(|p| mark(p.as_bytes())).collect();
        each.mark(&marks).unwrap();
        assert_eq!(one.mark_every_file(&mark(b"")).unwrap(), files.len());
        let rows = dirty_rows(&one);
        assert_eq!(rows, dirty_rows(&each));
        assert_eq!(rows.len(), 6, "four files for b, b's delete, other's mark");
    }
}
