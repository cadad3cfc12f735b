//! Dirty rows read a chunk at a time, for the push: a 100,000-file initial
//! sync to several peers must not hold every row (and every planned item)
//! for every peer in memory at once.

use std::collections::HashMap;

use rusqlite::params;

use super::{Index, Result, rows};
use crate::types::{Changes, Meta};

/// Where a chunked read of one peer's dirty rows stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyCursor {
    /// Rows whose path has no `file` row (deletes), deepest first
    /// (descending path order), below this path.
    Deletes(Vec<u8>),
    /// Rows whose path has a `file` row, ascending, above this path.
    Present(Vec<u8>),
    /// Everything was read.
    Done,
}

impl DirtyCursor {
    /// The first chunk: deletes first. DB paths start with `/` or `%`, so
    /// every one of them sorts below `0xff`.
    pub fn start() -> DirtyCursor {
        DirtyCursor::Deletes(vec![0xff])
    }
}

const CHUNK_COLS: &str =
    "d.path, d.peer, d.myname, d.forced, d.changes, d.marked_at, d.gen, d.base";

impl Index {
    /// Opens a transaction that [`Index::apply_part`] adds to, so that a
    /// check of 100,000 entries stores them (and their marks) in one
    /// transaction without holding every row in memory first.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn begin_parts(&mut self) -> Result<()> {
        // Immediate: the write lock is waited for here (busy timeout), never
        // asked for by a read snapshot that a concurrent writer has moved
        // past, which SQLite refuses at once ("database is locked").
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.sql())
    }

    /// Writes one part of a batch inside the transaction [`Index::begin_parts`]
    /// opened; nothing is visible to others before [`Index::commit_parts`].
    ///
    /// # Errors
    /// When SQLite fails: then call [`Index::rollback_parts`].
    pub fn apply_part(&mut self, batch: &super::Batch) -> Result<()> {
        super::write_batch(&self.conn, batch).map_err(self.sql())
    }

    /// Commits what the parts wrote.
    ///
    /// # Errors
    /// When SQLite fails (then nothing of the parts is stored).
    pub fn commit_parts(&mut self) -> Result<()> {
        let r = self.conn.execute_batch("COMMIT").map_err(self.sql());
        if r.is_err() {
            self.rollback_parts();
        }
        r
    }

    /// Drops what the parts wrote (after a failure).
    pub fn rollback_parts(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Whether any dirty row is left: what a run asks before connecting,
    /// without reading the rows (200,000 after a first check with 2 peers).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn has_dirty(&self) -> Result<bool> {
        let sql = self.sql();
        let mut st =
            self.conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM dirty)").map_err(&sql)?;
        st.query_row([], |r| r.get(0)).map_err(&sql)
    }

    /// The peers that have dirty rows, in name order, with how many each.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn dirty_peers(&self) -> Result<Vec<(String, usize)>> {
        self.query_all("SELECT peer, count(*) FROM dirty GROUP BY peer ORDER BY peer", |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as usize))
        })
    }

    /// Unforced deletes still to push (what the mass-delete guard counts).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn dirty_deletes(&self) -> Result<Vec<super::DirtyRow>> {
        let sql = self.sql();
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CHUNK_COLS} FROM dirty d WHERE d.forced = 0 AND (d.changes & ?1) != 0"
            ))
            .map_err(&sql)?;
        let it =
            st.query_map([i64::from(Changes::DELETE.0)], rows::dirty_from_row).map_err(&sql)?;
        it.map(|r| r.map_err(&sql)).collect()
    }

    /// The paths with a delete still to push to some peer.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn dirty_delete_paths(&self) -> Result<Vec<Vec<u8>>> {
        let sql = self.sql();
        let mut st = self
            .conn
            .prepare_cached("SELECT DISTINCT path FROM dirty WHERE (changes & ?1) != 0")
            .map_err(&sql)?;
        let it = st.query_map([i64::from(Changes::DELETE.0)], |r| r.get(0)).map_err(&sql)?;
        it.map(|r| r.map_err(&sql)).collect()
    }

    /// Up to `limit` of `peer`'s dirty rows from `cursor` on, and where the
    /// next chunk starts. Deletes come first (deepest first), then the rest
    /// (parents first): the order the push needs.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn dirty_chunk(
        &self,
        peer: &str,
        cursor: &DirtyCursor,
        limit: usize,
    ) -> Result<(Vec<super::DirtyRow>, DirtyCursor)> {
        let sql = self.sql();
        let (query, after) = match cursor {
            DirtyCursor::Deletes(below) => (
                format!(
                    "SELECT {CHUNK_COLS} FROM dirty d WHERE d.peer = ?1 AND d.path < ?2 \
                     AND NOT EXISTS (SELECT 1 FROM file f WHERE f.path = d.path) \
                     ORDER BY d.path DESC LIMIT ?3"
                ),
                below,
            ),
            DirtyCursor::Present(above) => (
                format!(
                    "SELECT {CHUNK_COLS} FROM dirty d WHERE d.peer = ?1 AND d.path > ?2 \
                     AND EXISTS (SELECT 1 FROM file f WHERE f.path = d.path) \
                     ORDER BY d.path LIMIT ?3"
                ),
                above,
            ),
            DirtyCursor::Done => return Ok((Vec::new(), DirtyCursor::Done)),
        };
        let mut st = self.conn.prepare_cached(&query).map_err(&sql)?;
        let it =
            st.query_map(params![peer, after, limit as i64], rows::dirty_from_row).map_err(&sql)?;
        let out: Vec<super::DirtyRow> = it.map(|r| r.map_err(&sql)).collect::<Result<_>>()?;
        let next = match (cursor, out.last()) {
            (DirtyCursor::Deletes(_), Some(last)) if out.len() == limit => {
                DirtyCursor::Deletes(last.path.clone())
            }
            (DirtyCursor::Deletes(_), _) => DirtyCursor::Present(Vec::new()),
            (DirtyCursor::Present(_), Some(last)) if out.len() == limit => {
                DirtyCursor::Present(last.path.clone())
            }
            _ => DirtyCursor::Done,
        };
        Ok((out, next))
    }

    /// Every peer's dirty rows, for about `limit` rows from `cursor` on, in
    /// the order of [`Index::dirty_chunk`] (each peer's rows in that order),
    /// and where the next chunk starts. A chunk holds every row of each of
    /// its paths, so planning reads a path's state once for all its peers
    /// and the cursor stands between paths (a cursor every peer can resume
    /// from on its own).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn dirty_chunk_all(
        &self,
        cursor: &DirtyCursor,
        limit: usize,
    ) -> Result<(Vec<super::DirtyRow>, DirtyCursor)> {
        let sql = self.sql();
        let (query, after, deletes) = match cursor {
            DirtyCursor::Deletes(below) => (
                format!(
                    "SELECT {CHUNK_COLS} FROM dirty d WHERE d.path < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM file f WHERE f.path = d.path) \
                     ORDER BY d.path DESC LIMIT ?2"
                ),
                below,
                true,
            ),
            DirtyCursor::Present(above) => (
                format!(
                    "SELECT {CHUNK_COLS} FROM dirty d WHERE d.path > ?1 \
                     AND EXISTS (SELECT 1 FROM file f WHERE f.path = d.path) \
                     ORDER BY d.path LIMIT ?2"
                ),
                above,
                false,
            ),
            DirtyCursor::Done => return Ok((Vec::new(), DirtyCursor::Done)),
        };
        let limit = limit.max(1);
        let mut st = self.conn.prepare_cached(&query).map_err(&sql)?;
        let it = st.query_map(params![after, limit as i64], rows::dirty_from_row).map_err(&sql)?;
        let mut out: Vec<super::DirtyRow> = it.map(|r| r.map_err(&sql)).collect::<Result<_>>()?;
        let full = out.len() == limit;
        let next = match out.last().map(|r| r.path.clone()) {
            // The limit may have cut the last path's rows: take all of them.
            Some(last) if full => {
                out.retain(|r| r.path != last);
                let mut st = self
                    .conn
                    .prepare_cached(&format!("SELECT {CHUNK_COLS} FROM dirty d WHERE d.path = ?1"))
                    .map_err(&sql)?;
                let it = st.query_map([&last], rows::dirty_from_row).map_err(&sql)?;
                for r in it {
                    out.push(r.map_err(&sql)?);
                }
                if deletes { DirtyCursor::Deletes(last) } else { DirtyCursor::Present(last) }
            }
            _ if deletes => DirtyCursor::Present(Vec::new()),
            _ => DirtyCursor::Done,
        };
        Ok((out, next))
    }

    /// The file states and origins of every dirty row with a path from `lo`
    /// to `hi` (inclusive), whichever its peer: [`Index::chunk_states`] for
    /// a chunk of [`Index::dirty_chunk_all`].
    ///
    /// # Errors
    /// When SQLite fails.
    #[allow(clippy::type_complexity)]
    pub fn chunk_states_all(
        &self,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<(HashMap<Vec<u8>, Meta>, HashMap<Vec<u8>, String>)> {
        self.states_of_dirty("SELECT path FROM dirty WHERE path BETWEEN ?1 AND ?2", params![lo, hi])
    }

    /// The file states and origins of `peer`'s dirty rows with paths from
    /// `lo` to `hi` (inclusive): what planning one chunk looks up, read in
    /// two queries instead of two per row.
    ///
    /// # Errors
    /// When SQLite fails.
    #[allow(clippy::type_complexity)]
    pub fn chunk_states(
        &self,
        peer: &str,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<(HashMap<Vec<u8>, Meta>, HashMap<Vec<u8>, String>)> {
        self.states_of_dirty(
            "SELECT path FROM dirty WHERE peer = ?1 AND path BETWEEN ?2 AND ?3",
            params![peer, lo, hi],
        )
    }

    /// The file states and origins of the paths `dirty` (a `SELECT path
    /// FROM dirty ...` taking `args`) selects: two queries for a chunk.
    #[allow(clippy::type_complexity)]
    fn states_of_dirty(
        &self,
        dirty: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<(HashMap<Vec<u8>, Meta>, HashMap<Vec<u8>, String>)> {
        let sql = self.sql();
        let mut files = HashMap::new();
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM file WHERE path IN ({dirty})",
                rows::FILE_COLS
            ))
            .map_err(&sql)?;
        for f in st.query_map(args, rows::file_from_row).map_err(&sql)? {
            let f = f.map_err(&sql)?;
            files.insert(f.path, f.meta);
        }
        let mut origins = HashMap::new();
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT path, node FROM origin WHERE path IN ({dirty})"))
            .map_err(&sql)?;
        let it = st.query_map(args, |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?))).map_err(&sql)?;
        for o in it {
            let (p, n) = o.map_err(&sql)?;
            origins.insert(p, n);
        }
        Ok((files, origins))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::index::{Batch, IndexedFile, Mark};
    use crate::types::Base;

    const PRESENT: [&str; 4] = ["/r/a", "/r/a/b", "/r/c", "/r/d"];
    const GONE: [&str; 3] = ["/r/x", "/r/x/y", "/r/x/y/z"];

    /// An index in `dir` holding [`PRESENT`] (and not [`GONE`], which the
    /// tests mark as deletes).
    fn indexed(dir: &std::path::Path) -> (Index, [&'static str; 4], [&'static str; 3]) {
        let mut idx = Index::open(&dir.join("i.db"), Duration::from_secs(1)).unwrap();
        let batch = Batch {
            upserts: PRESENT
                .iter()
                .map(|p| IndexedFile { path: p.as_bytes().to_vec(), meta: Meta::test_file() })
                .collect(),
            ..Batch::default()
        };
        idx.apply(&batch).unwrap();
        (idx, PRESENT, GONE)
    }

    #[test]
    fn chunks_give_deletes_deepest_first_then_the_rest_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, present, gone) = indexed(dir.path());
        let mark = |p: &'static str, peer: &'static str| Mark {
            path: p.as_bytes(),
            peer,
            myname: "me",
            changes: Changes::NEW,
            forced: false,
            base: Base::Absent,
        };
        let mut marks: Vec<Mark<'_>> = present.iter().chain(&gone).map(|p| mark(p, "b")).collect();
        marks.push(mark("/r/c", "other"));
        idx.mark(&marks).unwrap();
        let mut cursor = DirtyCursor::start();
        let mut seen = Vec::new();
        let mut chunks = 0;
        while cursor != DirtyCursor::Done {
            let (rows, next) = idx.dirty_chunk("b", &cursor, 2).unwrap();
            assert!(rows.len() <= 2);
            assert!(rows.iter().all(|r| r.peer == "b"));
            seen.extend(rows.into_iter().map(|r| String::from_utf8(r.path).unwrap()));
            cursor = next;
            chunks += 1;
            assert!(chunks < 10, "the cursor always moves on");
        }
        assert_eq!(seen, ["/r/x/y/z", "/r/x/y", "/r/x", "/r/a", "/r/a/b", "/r/c", "/r/d"]);
        let (files, origins) = idx.chunk_states("b", b"/r/a/b", b"/r/d").unwrap();
        let mut got: Vec<_> = files.keys().map(|p| String::from_utf8(p.clone()).unwrap()).collect();
        got.sort();
        assert_eq!(got, ["/r/a/b", "/r/c", "/r/d"]);
        assert!(origins.is_empty());
        assert_eq!(idx.dirty_peers().unwrap(), [("b".to_string(), 7), ("other".to_string(), 1)]);
    }

    #[test]
    fn shared_chunks_hold_whole_paths_and_each_peer_its_own_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, present, gone) = indexed(dir.path());
        let mut marks = Vec::new();
        for p in present.iter().chain(&gone) {
            for peer in ["b", "c", "d"] {
                // c lacks /r/c: peers need not share every path.
                if (*p, peer) != ("/r/c", "c") {
                    marks.push(Mark {
                        path: p.as_bytes(),
                        peer,
                        myname: "me",
                        changes: Changes::NEW,
                        forced: false,
                        base: Base::Absent,
                    });
                }
            }
        }
        idx.mark(&marks).unwrap();
        for limit in [1, 2, 4, 100] {
            let mut cursor = DirtyCursor::start();
            let mut seen: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
            let mut chunks = 0;
            while cursor != DirtyCursor::Done {
                let (rows, next) = idx.dirty_chunk_all(&cursor, limit).unwrap();
                // Every row of each path read is in the chunk.
                for r in &rows {
                    let all = marks.iter().filter(|m| m.path == r.path.as_slice()).count();
                    assert_eq!(rows.iter().filter(|x| x.path == r.path).count(), all);
                }
                for r in rows {
                    seen.entry(r.peer).or_default().push(r.path);
                }
                cursor = next;
                chunks += 1;
                assert!(chunks < 20, "the cursor always moves on");
            }
            for peer in ["b", "c", "d"] {
                let mut cursor = DirtyCursor::start();
                let mut alone = Vec::new();
                while cursor != DirtyCursor::Done {
                    let (rows, next) = idx.dirty_chunk(peer, &cursor, 2).unwrap();
                    alone.extend(rows.into_iter().map(|r| r.path));
                    cursor = next;
                }
                assert_eq!(seen[peer], alone, "peer {peer}, limit {limit}");
            }
        }
        let (files, _) = idx.chunk_states_all(b"/r/a/b", b"/r/d").unwrap();
        assert_eq!(files.len(), 3);
    }

    #[test]
    fn parts_are_stored_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("i.db"), Duration::from_secs(1)).unwrap();
        let part = |p: &str| Batch {
            upserts: vec![IndexedFile { path: p.as_bytes().to_vec(), meta: Meta::test_file() }],
            ..Batch::default()
        };
        idx.begin_parts().unwrap();
        idx.apply_part(&part("/r/a")).unwrap();
        idx.apply_part(&part("/r/b")).unwrap();
        idx.rollback_parts();
        assert!(idx.file(b"/r/a").unwrap().is_none(), "rolled back");
        idx.begin_parts().unwrap();
        idx.apply_part(&part("/r/a")).unwrap();
        idx.apply_part(&part("/r/b")).unwrap();
        idx.commit_parts().unwrap();
        assert!(idx.file(b"/r/a").unwrap().is_some() && idx.file(b"/r/b").unwrap().is_some());
    }
}
