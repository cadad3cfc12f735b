//! The node's SQLite index: the last seen state of every managed entry, the
//! dirty marks still to push, and what each peer was last known to have.
//!
//! The index knows nothing of the config, the scanner or the network: callers
//! hand it rows and marks in domain terms. Every multi-row change runs in one
//! transaction, so a crash leaves either the old or the new state.

mod failures;
mod owed;
mod rows;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

pub use failures::{ActionFailure, ActionRun};
pub use owed::{OwedAction, OwedRow};
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
    let create =
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let _ = rfs::open(path, create, Mode::from_raw_mode(0o600));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rfs::open(Path::new(&name), flags, Mode::empty()) else { continue };
        let Ok(st) = rfs::fstat(&fd) else { continue };
        let is_file = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile;
        if is_file && st.st_mode & 0o077 != 0 && st.st_uid == rustix::process::geteuid().as_raw() {
            let _ = rfs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o700));
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
        {
            let mut up = tx.prepare_cached(rows::UPSERT_FILE).map_err(sql)?;
            for f in &batch.upserts {
                rows::upsert_file(&mut up, f).map_err(sql)?;
            }
            let mut del = tx.prepare_cached("DELETE FROM file WHERE path = ?1").map_err(sql)?;
            for p in &batch.removals {
                del.execute([p]).map_err(sql)?;
            }
            let mut mine = tx.prepare_cached("DELETE FROM origin WHERE path = ?1").map_err(sql)?;
            for p in batch.local.iter().chain(&batch.removals) {
                mine.execute([p]).map_err(sql)?;
            }
            let now = unix_now();
            let mut mark = tx.prepare_cached(rows::UPSERT_DIRTY).map_err(sql)?;
            for m in &batch.marks {
                mark.execute(params![
                    m.path,
                    m.peer,
                    m.myname,
                    m.forced as i64,
                    i64::from(m.changes.0),
                    now,
                    m.base.to_sql()
                ])
                .map_err(sql)?;
            }
            owed::insert(&tx, &batch.actions).map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// Adds dirty marks (in one transaction).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn mark(&mut self, marks: &[Mark<'_>]) -> Result<()> {
        let batch = Batch {
            marks: marks
                .iter()
                .map(|m| OwnedMark {
                    path: m.path.to_vec(),
                    peer: m.peer.to_string(),
                    myname: m.myname.to_string(),
                    changes: m.changes,
                    forced: m.forced,
                    base: m.base,
                })
                .collect(),
            ..Batch::default()
        };
        self.apply(&batch)
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
        let tx = self.conn.transaction().map_err(sql)?;
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
            for d in done {
                if let Some(generation) = d.clear_gen {
                    clear.execute(params![d.path, d.peer, generation]).map_err(sql)?;
                    settled.execute(params![d.path, d.peer]).map_err(sql)?;
                }
                if let Some(v) = &d.version {
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
        resolution: &Resolution,
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

/// An open conflict with a peer is settled once the two agree on the path
/// again (a push confirmed, or the peer's version received).
const SETTLE_CONFLICT: &str = "UPDATE conflict SET resolution = 'resolved: in sync again' \
     WHERE path = ?1 AND peer = ?2 AND resolution = 'unresolved'";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FileKind;

    fn meta(size: u64) -> Meta {
        Meta {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime_ns: 1_700_000_000_123_456_789,
            ino: u64::MAX - 3,
            ctime_ns: 5,
            rdev: 0,
            target: None,
            hash: Some([7; 32]),
        }
    }

    fn file(p: &str, size: u64) -> IndexedFile {
        IndexedFile { path: p.as_bytes().to_vec(), meta: meta(size) }
    }

    #[test]
    fn migrations_apply_once_and_record_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/n1.db");
        let idx = Index::open(&p, Duration::from_secs(1)).unwrap();
        assert_eq!(idx.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(idx);
        let idx = Index::open(&p, Duration::from_secs(1)).unwrap();
        assert_eq!(idx.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = idx.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn refuses_foreign_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("other.db");
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "application_id", 42).unwrap();
        drop(c);
        let err = Index::open(&p, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("not a csync index"), "{err}");
    }

    #[test]
    fn round_trips_rows_in_byte_order_and_scopes_subtrees() {
        let mut idx = Index::open_in_memory().unwrap();
        let batch = Batch {
            upserts: vec![
                file("%p%/a", 1),
                file("%p%/a.txt", 2),
                file("%p%/a/b", 3),
                file("%p%", 0),
            ],
            ..Batch::default()
        };
        idx.apply(&batch).unwrap();
        let all: Vec<_> = idx.files(Scope::All).unwrap();
        let names: Vec<_> =
            all.iter().map(|f| String::from_utf8_lossy(&f.path).into_owned()).collect();
        assert_eq!(names, ["%p%", "%p%/a", "%p%/a.txt", "%p%/a/b"]);
        assert_eq!(all[1].meta, meta(1));
        let sub = idx.files(Scope::Path { path: b"%p%/a", recursive: true }).unwrap();
        let names: Vec<_> =
            sub.iter().map(|f| String::from_utf8_lossy(&f.path).into_owned()).collect();
        assert_eq!(names, ["%p%/a", "%p%/a/b"]);
        let one = idx.files(Scope::Path { path: b"%p%/a", recursive: false }).unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn marks_accumulate_changes_and_keep_force() {
        let mut idx = Index::open_in_memory().unwrap();
        let m = |changes, forced| Mark {
            path: b"/x",
            peer: "n2",
            myname: "n1",
            changes,
            forced,
            base: Base::Absent,
        };
        idx.mark(&[m(Changes::CONTENT, true)]).unwrap();
        idx.mark(&[m(Changes::MODE, false)]).unwrap();
        let rows = idx.dirty().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].changes, Changes::CONTENT | Changes::MODE);
        assert!(rows[0].forced);
    }

    #[test]
    fn below_is_component_wise() {
        assert!(is_below(b"/a/b", b"/a"));
        assert!(!is_below(b"/ab", b"/a"));
        assert!(!is_below(b"/a", b"/a"));
        assert!(is_below(b"/a", b"/"));
    }
}
