//! The node's SQLite index: the last seen state of every managed entry, the
//! dirty marks still to push, and what each peer was last known to have.
//!
//! The index knows nothing of the config, the scanner or the network: callers
//! hand it rows and marks in domain terms. Every multi-row change runs in one
//! transaction, so a crash leaves either the old or the new state.

mod chunks;
mod failures;
mod owed;
mod peers;
mod rows;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

pub use chunks::DirtyCursor;
pub use failures::{ActionFailure, ActionRun};
pub use owed::{OwedAction, OwedRow};
pub use peers::PeerContact;
pub use rows::{ConflictRow, DirtyRow, IndexedFile, Resolution};

use crate::types::{Base, Changes, Meta};

/// The numbered schema files, applied in order (see `schema/README.md`).
const MIGRATIONS: &[(&str, &str)] = &[
    ("001-initial.sql", include_str!("../../schema/001-initial.sql")),
    ("002-sync.sql", include_str!("../../schema/002-sync.sql")),
    ("003-actions.sql", include_str!("../../schema/003-actions.sql")),
    ("004-first-contact.sql", include_str!("../../schema/004-first-contact.sql")),
    ("005-action-failures.sql", include_str!("../../schema/005-action-failures.sql")),
];

/// `PRAGMA application_id`: lets `file(1)` and we ourselves recognise an index ("CSYN").
const APPLICATION_ID: i64 = 0x4353_594E;

/// Errors from the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite reported an error.
    #[error("index {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The directory of the index could not be created.
    #[error("cannot create index directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is a SQLite database but not a csync index, or from a newer csync.
    #[error("index {path}: {reason}")]
    Incompatible {
        /// The database file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Result alias for index operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Which part of the index an operation looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every row.
    All,
    /// One path, and with `recursive` everything below it.
    Path {
        /// DB-form path.
        path: &'a [u8],
        /// Include the subtree.
        recursive: bool,
    },
}

impl Scope<'_> {
    /// True when `p` lies in this scope.
    pub fn contains(&self, p: &[u8]) -> bool {
        match *self {
            Scope::All => true,
            Scope::Path { path, recursive } => p == path || (recursive && is_below(p, path)),
        }
    }
}

/// True when `p` is strictly below directory `dir` (`dir/…`).
pub fn is_below(p: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return p.len() > 1 && p[0] == b'/';
    }
    p.len() > dir.len() + 1 && p.starts_with(dir) && p[dir.len()] == b'/'
}

/// One dirty mark to record: push `path` to `peer`.
#[derive(Debug, Clone, Copy)]
pub struct Mark<'a> {
    /// DB-form path.
    pub path: &'a [u8],
    /// Peer host name.
    pub peer: &'a str,
    /// This node's name in the group linking it to the peer.
    pub myname: &'a str,
    /// What changed (accumulated with any earlier unpushed mark).
    pub changes: Changes,
    /// Set the force flag (never cleared by a later plain mark).
    pub forced: bool,
    /// The version before this change (kept from the first unpushed mark).
    pub base: Base,
}

/// A batch of scan results to store in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Entries to insert or replace.
    pub upserts: Vec<IndexedFile>,
    /// Entries that no longer exist (or are no longer managed) to remove.
    pub removals: Vec<Vec<u8>>,
    /// Dirty marks to add.
    pub marks: Vec<OwnedMark>,
    /// Entries whose current version this node made (forget where it came from).
    pub local: Vec<Vec<u8>>,
    /// Actions the change owes, recorded with it (`do-local` actions of a check).
    pub actions: Vec<OwedAction>,
}

/// One entry applied on the receiver, for [`Index::record_received_batch`].
#[derive(Debug, Clone)]
pub struct Received {
    /// The entry's new state (`None` with `removed`: it was deleted).
    pub file: Option<IndexedFile>,
    /// The path deleted.
    pub removed: Option<Vec<u8>>,
    /// The sender.
    pub peer: String,
    /// What the sender now has (`None`: absent).
    pub version: Option<[u8; 32]>,
    /// The host whose change this is (`None`: leave as it was).
    pub origin: Option<String>,
    /// Owed actions of this change (rows already recorded), now ready to run.
    pub actions: Vec<i64>,
    /// Marks for other peers recorded with it: a conflict's winner that
    /// replaced this node's own change, which those peers may hold.
    pub forward: Vec<OwnedMark>,
}

/// The result of one confirmed push, for [`Index::record_pushed`].
#[derive(Debug, Clone)]
pub struct Pushed {
    /// DB-form path.
    pub path: Vec<u8>,
    /// The peer.
    pub peer: String,
    /// Clear the dirty row if its generation is still this.
    pub clear_gen: Option<i64>,
    /// What the peer now has (`Some(None)`: absent), if known.
    pub version: Option<Option<[u8; 32]>>,
}

/// An owned [`Mark`], for batches built before the transaction starts.
#[derive(Debug, Clone)]
pub struct OwnedMark {
    /// DB-form path.
    pub path: Vec<u8>,
    /// Peer host name.
    pub peer: String,
    /// This node's name in the group linking it to the peer.
    pub myname: String,
    /// What changed.
    pub changes: Changes,
    /// Force flag.
    pub forced: bool,
    /// The version before this change.
    pub base: Base,
}

impl OwnedMark {
    /// The same mark, borrowed.
    pub fn as_mark(&self) -> Mark<'_> {
        Mark {
            path: &self.path,
            peer: &self.peer,
            myname: &self.myname,
            changes: self.changes,
            forced: self.forced,
            base: self.base,
        }
    }
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.removals.is_empty()
            && self.marks.is_empty()
            && self.local.is_empty()
            && self.actions.is_empty()
    }
}

/// An open index.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish()
    }
}

/// Makes the index 0600 whatever the umask: SQLite would create it `0644 &
/// ~umask` and gives its `-wal`/`-shm`/`-journal` files the database's mode,
/// so creating the database 0600 first covers those too. Files left more open
/// by an older csync are tightened (when we own them). Best effort: a failure
/// here shows up as SQLite's own error when it opens the file.
fn private_files(path: &Path) {
    use rustix::fs::{self as rfs, Mode, OFlags};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // No descriptor is ever opened (and closed) on a file that exists:
    // closing one drops every POSIX lock this process holds on that file,
    // SQLite's locks of its other connections included (the listener's
    // sessions, the watcher). Another process may then take the WAL for
    // unused, checkpoint and remove it under them: "disk I/O error".
    if std::fs::symlink_metadata(path).is_err() {
        let create =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let _ = rfs::open(path, create, Mode::from_raw_mode(0o600));
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let Ok(md) = std::fs::symlink_metadata(&name) else { continue };
        let mode = md.mode();
        if md.file_type().is_file()
            && mode & 0o077 != 0
            && md.uid() == rustix::process::geteuid().as_raw()
        {
            let _ = std::fs::set_permissions(&name, std::fs::Permissions::from_mode(mode & 0o700));
        }
    }
}

impl Index {
    /// Opens (creating if needed) the index at `path`, applying missing migrations.
    ///
    /// `busy_timeout` is how long a writer waits for another process (the daemon,
    /// a concurrent run) before giving up; WAL lets readers proceed meanwhile.
    ///
    /// # Errors
    /// When the directory cannot be created, the file is not a csync index, or
    /// SQLite fails.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Index> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // 0700: the index lists every managed path and who has what; the
            // directories csync creates are its own (existing ones are left alone).
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| Error::CreateDir { path: dir.to_path_buf(), source })?;
        }
        private_files(path);
        let sql = |source| Error::Sqlite { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(busy_timeout).map_err(sql)?;
        // WAL: the daemon and a local run read and write without "database is locked";
        // NORMAL: durable at checkpoints, consistent always (no fsync per commit).
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        let mut index = Index { conn, path: path.to_path_buf() };
        index.migrate()?;
        Ok(index)
    }

    /// Opens a private in-memory index (tests).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn open_in_memory() -> Result<Index> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory()
            .map_err(|source| Error::Sqlite { path: path.clone(), source })?;
        let mut index = Index { conn, path };
        index.migrate()?;
        Ok(index)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Sqlite { path: self.path.clone(), source }
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite { path: path.clone(), source };
        let app: i64 =
            self.conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
        let version: i64 =
            self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
        if app != 0 && app != APPLICATION_ID {
            return Err(Error::Incompatible {
                path: path.clone(),
                reason: "this SQLite file is not a csync index".into(),
            });
        }
        if version > MIGRATIONS.len() as i64 {
            return Err(Error::Incompatible {
                path: path.clone(),
                reason: format!(
                    "schema version {version} is newer than this csync knows ({}); upgrade csync",
                    MIGRATIONS.len()
                ),
            });
        }
        if version == MIGRATIONS.len() as i64 {
            return Ok(());
        }
        // Several processes may open a new index at once (inetd starts one per
        // connection): take the write lock first, then look again.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let version: i64 =
            tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
        for (n, (_name, text)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(text).map_err(sql)?;
            tx.pragma_update(None, "user_version", (n + 1) as i64).map_err(sql)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(())
    }

    /// The schema version (number of migrations applied).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(self.sql())
    }

    /// Entries in `scope`, in byte order of their paths: the one ordered pass a
    /// check needs.
    ///
    /// # Errors
    /// When SQLite fails or a row is corrupt.
    pub fn files(&self, scope: Scope<'_>) -> Result<Vec<IndexedFile>> {
        let mut out = Vec::new();
        let sql = self.sql();
        match scope {
            Scope::All => {
                let mut st = self
                    .conn
                    .prepare_cached(&format!("SELECT {} FROM file ORDER BY path", rows::FILE_COLS))
                    .map_err(&sql)?;
                let it = st.query_map([], rows::file_from_row).map_err(&sql)?;
                for r in it {
                    out.push(r.map_err(&sql)?);
                }
            }
            Scope::Path { path, recursive } => {
                let mut st = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {} FROM file WHERE path = ?1",
                        rows::FILE_COLS
                    ))
                    .map_err(&sql)?;
                if let Some(f) =
                    st.query_row([path], rows::file_from_row).optional().map_err(&sql)?
                {
                    out.push(f);
                }
                if recursive {
                    let (lo, hi) = subtree_range(path);
                    let mut st = self
                        .conn
                        .prepare_cached(&format!(
                            "SELECT {} FROM file WHERE path > ?1 AND path < ?2 ORDER BY path",
                            rows::FILE_COLS
                        ))
                        .map_err(&sql)?;
                    let it = st.query_map(params![lo, hi], rows::file_from_row).map_err(&sql)?;
                    for r in it {
                        out.push(r.map_err(&sql)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One entry, if indexed.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn file(&self, path: &[u8]) -> Result<Option<Meta>> {
        let sql = self.sql();
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {} FROM file WHERE path = ?1", rows::FILE_COLS))
            .map_err(&sql)?;
        Ok(st.query_row([path], rows::file_from_row).optional().map_err(&sql)?.map(|f| f.meta))
    }

    /// The entries of several paths (absent ones are `None`), and what
    /// `peer` was last known to have at others ([`Index::peer_version`]),
    /// read in one read transaction: the receiver looks up a whole batch of
    /// requests at once instead of locking and unlocking the database once
    /// per path and question.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn look_up(&self, files: &[&[u8]], peer: &str, versions: &[&[u8]]) -> Result<LookedUp> {
        let sql = self.sql();
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let mut out = LookedUp::default();
        {
            let mut st = tx
                .prepare_cached(&format!("SELECT {} FROM file WHERE path = ?1", rows::FILE_COLS))
                .map_err(&sql)?;
            for p in files {
                let m = st.query_row([p], rows::file_from_row).optional().map_err(&sql)?;
                out.files.push((p.to_vec(), m.map(|f| f.meta)));
            }
        }
        for p in versions {
            out.versions.push((p.to_vec(), self.peer_version(p, peer)?));
        }
        tx.finish().map_err(&sql)?;
        Ok(out)
    }

    /// Stores a batch (upserts, removals, marks) in one transaction.
    ///
    /// # Errors
    /// When SQLite fails; nothing of the batch is then stored.
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let sql = |source| Error::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        write_batch(&tx, batch).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Adds dirty marks (in one transaction).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn mark(&mut self, marks: &[Mark<'_>]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        // Written straight from the borrowed marks: first contact marks
        // every entry a new peer lacks (100,000 for an empty one).
        let now = unix_now();
        self.write(|c| {
            let mut st = c.prepare_cached(rows::UPSERT_DIRTY)?;
            for m in marks {
                rows::upsert_mark(&mut st, m, now)?;
            }
            Ok(())
        })
    }

    /// Sets the base of the mark `(path, peer)`: what the peer is now known
    /// to have (it told us, yielding a conflict), whatever the mark had.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn rebase_mark(&mut self, path: &[u8], peer: &str, base: Base) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE dirty SET base = ?3 WHERE path = ?1 AND peer = ?2",
                params![path, peer, base.to_sql()],
            )
        })
        .map(|_| ())
    }

    /// Runs `f` in one write transaction and commits it.
    fn write<T>(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        let v = f(&tx).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(v)
    }

    /// Every row a parameterless query returns, decoded by `row`.
    fn query_all<T>(
        &self,
        query: &str,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let sql = self.sql();
        let mut st = self.conn.prepare_cached(query).map_err(&sql)?;
        let it = st.query_map([], row).map_err(&sql)?;
        it.map(|r| r.map_err(&sql)).collect()
    }

    /// When the mark of `path` for `peer` was made (unix seconds; `None`:
    /// not marked).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn marked_at(&self, path: &[u8], peer: &str) -> Result<Option<i64>> {
        let sql = self.sql();
        let mut st = self
            .conn
            .prepare_cached("SELECT marked_at FROM dirty WHERE path = ?1 AND peer = ?2")
            .map_err(&sql)?;
        st.query_row(params![path, peer], |r| r.get(0)).optional().map_err(&sql)
    }

    /// Every dirty row, ordered by peer then path.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn dirty(&self) -> Result<Vec<DirtyRow>> {
        self.query_all(
            "SELECT path, peer, myname, forced, changes, marked_at, gen, base FROM dirty ORDER BY peer, path",
            rows::dirty_from_row,
        )
    }

    /// Removes the given dirty rows `(path, peer)` and every `file` row whose path
    /// `drop_file` accepts, in one transaction. Used by `-R`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn prune(&mut self, dirty: &[(Vec<u8>, String)], files: &[Vec<u8>]) -> Result<()> {
        let path = self.path.clone();
        let sql = |source| Error::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut d = tx
                .prepare_cached("DELETE FROM dirty WHERE path = ?1 AND peer = ?2")
                .map_err(sql)?;
            for (p, peer) in dirty {
                d.execute(params![p, peer]).map_err(sql)?;
            }
            let mut f = tx.prepare_cached("DELETE FROM file WHERE path = ?1").map_err(sql)?;
            let mut s = tx.prepare_cached("DELETE FROM peer_state WHERE path = ?1").map_err(sql)?;
            for p in files {
                f.execute([p]).map_err(sql)?;
                s.execute([p]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }
}

/// Writes a batch's rows (inside the caller's transaction).
fn write_batch(tx: &Connection, batch: &Batch) -> rusqlite::Result<()> {
    let mut up = tx.prepare_cached(rows::UPSERT_FILE)?;
    for f in &batch.upserts {
        rows::upsert_file(&mut up, f)?;
    }
    let mut del = tx.prepare_cached("DELETE FROM file WHERE path = ?1")?;
    for p in &batch.removals {
        del.execute([p])?;
    }
    let mut mine = tx.prepare_cached("DELETE FROM origin WHERE path = ?1")?;
    for p in batch.local.iter().chain(&batch.removals) {
        mine.execute([p])?;
    }
    let now = unix_now();
    let mut mark = tx.prepare_cached(rows::UPSERT_DIRTY)?;
    for m in &batch.marks {
        rows::upsert_mark(&mut mark, &m.as_mark(), now)?;
    }
    owed::insert(tx, &batch.actions)?;
    Ok(())
}

/// The `(lo, hi)` exclusive byte range holding everything below directory `p`:
/// `p/` < x < `p0`, since `0` follows `/` in byte order.
fn subtree_range(p: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let base: &[u8] = if p == b"/" { b"" } else { p };
    let mut lo = base.to_vec();
    lo.push(b'/');
    let mut hi = base.to_vec();
    hi.push(b'0');
    (lo, hi)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What a peer was last known to have at a path ([`Index::peer_version`]).
pub type PeerVersion = Option<Option<[u8; 32]>>;

/// What [`Index::look_up`] found.
#[derive(Debug, Default, PartialEq)]
pub struct LookedUp {
    /// Each path's entry (`None`: not indexed).
    pub files: Vec<(Vec<u8>, Option<Meta>)>,
    /// Each path's version at the peer, as [`Index::peer_version`] says.
    pub versions: Vec<(Vec<u8>, PeerVersion)>,
}

#[cfg(test)]
mod tests;
