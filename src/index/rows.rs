//! Row decoding and encoding for the index tables: the only place that knows
//! column order and how domain types map onto SQLite values.

use rusqlite::{CachedStatement, Row, params};

use crate::types::{Base, Changes, FileKind, Meta};

/// One entry of the `file` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    /// DB-form path.
    pub path: Vec<u8>,
    /// Its last seen state.
    pub meta: Meta,
}

/// One entry of the `dirty` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyRow {
    /// DB-form path.
    pub path: Vec<u8>,
    /// The peer to push to.
    pub peer: String,
    /// This node's name in the group linking it to the peer.
    pub myname: String,
    /// This node's version wins over a conflict.
    pub forced: bool,
    /// Changes accumulated since the last push.
    pub changes: Changes,
    /// Unix seconds of the first unpushed mark.
    pub marked_at: i64,
    /// Generation: bumped by every new mark.
    pub generation: i64,
    /// What the peer should still have (the version before our change).
    pub base: Base,
}

/// How a conflict ended. Stored as text (`unresolved`, `won: younger`,
/// `lost: forced by b (csync -f)`, `resolved: in sync again`): existing
/// databases hold those strings, so they are the format at the index
/// boundary and this type is what the rest of csync compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Left for a person (`auto none`).
    Unresolved,
    /// This node's version won, by the named rule.
    Won(String),
    /// The peer's version won, by the named rule (or its `csync -f`).
    Lost(String),
    /// The two sides agree again since.
    Settled,
    /// A text this version does not know (a newer csync wrote it): kept as is.
    Other(String),
}

impl Resolution {
    /// The stored text of `Unresolved` (also used in SQL).
    pub const UNRESOLVED: &'static str = "unresolved";
    /// The stored text of `Settled` (also used in SQL).
    pub const SETTLED: &'static str = "resolved: in sync again";

    /// Reads the stored text.
    pub fn from_stored(s: &str) -> Resolution {
        if s == Self::UNRESOLVED {
            Resolution::Unresolved
        } else if s == Self::SETTLED {
            Resolution::Settled
        } else if let Some(why) = s.strip_prefix("won: ") {
            Resolution::Won(why.to_string())
        } else if let Some(why) = s.strip_prefix("lost: ") {
            Resolution::Lost(why.to_string())
        } else {
            Resolution::Other(s.to_string())
        }
    }
}

impl std::fmt::Display for Resolution {
    /// The stored text, which is also what `--status` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolution::Unresolved => f.write_str(Self::UNRESOLVED),
            Resolution::Won(why) => write!(f, "won: {why}"),
            Resolution::Lost(why) => write!(f, "lost: {why}"),
            Resolution::Settled => f.write_str(Self::SETTLED),
            Resolution::Other(s) => f.write_str(s),
        }
    }
}

/// One entry of the `conflict` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    /// DB-form path.
    pub path: Vec<u8>,
    /// The other side.
    pub peer: String,
    /// Unix seconds.
    pub detected_at: i64,
    /// How it ended (`unresolved`, `won: younger`, …).
    pub resolution: Resolution,
    /// Where the losing version was kept on this node.
    pub kept: Option<Vec<u8>>,
    /// A person acknowledged it (`--ack-conflicts`).
    pub acked: bool,
}

pub(super) const FILE_COLS: &str =
    "path, kind, mode, uid, gid, size, mtime_ns, ino, ctime_ns, rdev, target, hash";

pub(super) const UPSERT_FILE: &str = "INSERT OR REPLACE INTO file \
     (path, kind, mode, uid, gid, size, mtime_ns, ino, ctime_ns, rdev, target, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// A new mark ORs its changes into an existing one; force is sticky; the first
/// mark's time is kept so `--status` can tell how long a peer has been behind,
/// except by a delete (changes bit 128, `Changes::DELETE`): the time is then
/// when the delete was seen, the date the conflict rules give a delete. Every
/// peer's mark of one delete then carries the same date (the first marks of
/// an earlier change could differ per peer, and a delete dated by them could
/// win against one peer and lose against another).
pub(super) const UPSERT_DIRTY: &str = "INSERT INTO dirty (path, peer, myname, forced, changes, marked_at, base) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (path, peer) DO UPDATE SET myname = excluded.myname, \
     forced = max(forced, excluded.forced), changes = changes | excluded.changes, gen = gen + 1, \
     base = coalesce(base, excluded.base), \
     marked_at = CASE WHEN excluded.changes & 128 THEN excluded.marked_at ELSE marked_at END";

/// [`UPSERT_DIRTY`] for every row of `file` at once: the same mark (peer
/// ?1, myname ?2, forced ?3, changes ?4, dated ?5, base ?6) upserted by the
/// same conflict clause, in one statement instead of one per path.
pub(super) fn upsert_mark_every_file() -> String {
    let (head, conflict) = UPSERT_DIRTY
        .split_at(UPSERT_DIRTY.find(" ON CONFLICT").expect("UPSERT_DIRTY has a conflict clause"));
    let head = head.split(" VALUES").next().expect("UPSERT_DIRTY has values");
    // `WHERE true`: SQLite's parser needs it between a SELECT and ON CONFLICT.
    format!("{head} SELECT path, ?1, ?2, ?3, ?4, ?5, ?6 FROM file WHERE true{conflict}")
}

pub(super) fn file_from_row(r: &Row<'_>) -> rusqlite::Result<IndexedFile> {
    let kind: i64 = r.get(1)?;
    let kind = FileKind::from_code(kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Integer,
            format!("unknown file kind {kind}").into(),
        )
    })?;
    let hash: Option<Vec<u8>> = r.get(11)?;
    let hash = match hash {
        Some(h) => Some(<[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                11,
                rusqlite::types::Type::Blob,
                "hash is not 32 bytes".into(),
            )
        })?),
        None => None,
    };
    Ok(IndexedFile {
        path: r.get(0)?,
        meta: Meta {
            kind,
            mode: r.get::<_, i64>(2)? as u32,
            uid: r.get::<_, i64>(3)? as u32,
            gid: r.get::<_, i64>(4)? as u32,
            size: r.get::<_, i64>(5)? as u64,
            mtime_ns: r.get(6)?,
            // Inode and device numbers are u64; SQLite integers are i64: bit-cast both ways.
            ino: r.get::<_, i64>(7)? as u64,
            ctime_ns: r.get(8)?,
            rdev: r.get::<_, i64>(9)? as u64,
            target: r.get(10)?,
            hash,
        },
    })
}

/// Binds one dirty mark to [`UPSERT_DIRTY`], dated `now` (the one place
/// that knows the statement's parameter order).
pub(super) fn upsert_mark(
    st: &mut CachedStatement<'_>,
    m: &super::Mark<'_>,
    now: i64,
) -> rusqlite::Result<()> {
    st.execute(rusqlite::params![
        m.path,
        m.peer,
        m.myname,
        m.forced as i64,
        i64::from(m.changes.0),
        now,
        m.base.to_sql()
    ])
    .map(|_| ())
}

pub(super) fn upsert_file(st: &mut CachedStatement<'_>, f: &IndexedFile) -> rusqlite::Result<()> {
    let m = &f.meta;
    if m.kind == FileKind::File && m.hash.is_none() {
        // The index never vouches for content it did not hash: without the
        // row, the next check sees the file as new and hashes it.
        tracing::warn!("not recording {} without its content hash", crate::paths::display(&f.path));
        return Ok(());
    }
    st.execute(params![
        f.path,
        i64::from(m.kind.code()),
        i64::from(m.mode),
        i64::from(m.uid),
        i64::from(m.gid),
        m.size as i64,
        m.mtime_ns,
        m.ino as i64,
        m.ctime_ns,
        m.rdev as i64,
        m.target,
        m.hash.as_ref().map(|h| h.as_slice()),
    ])?;
    Ok(())
}

pub(super) fn dirty_from_row(r: &Row<'_>) -> rusqlite::Result<DirtyRow> {
    Ok(DirtyRow {
        path: r.get(0)?,
        peer: r.get(1)?,
        myname: r.get(2)?,
        forced: r.get::<_, i64>(3)? != 0,
        changes: Changes(r.get::<_, i64>(4)? as u32),
        marked_at: r.get(5)?,
        generation: r.get(6)?,
        base: Base::from_sql(r.get(7)?),
    })
}

pub(super) fn conflict_from_row(r: &Row<'_>) -> rusqlite::Result<ConflictRow> {
    Ok(ConflictRow {
        path: r.get(0)?,
        peer: r.get(1)?,
        detected_at: r.get(2)?,
        resolution: Resolution::from_stored(&r.get::<_, String>(3)?),
        kept: r.get(4)?,
        acked: r.get::<_, i64>(5)? != 0,
    })
}

#[cfg(test)]
mod resolution_tests {
    use super::Resolution;

    #[test]
    fn resolutions_keep_their_stored_text() {
        for s in [
            "unresolved",
            "won: younger",
            "lost: forced by b (csync -f)",
            "resolved: in sync again",
            "something newer",
        ] {
            assert_eq!(Resolution::from_stored(s).to_string(), s);
        }
        assert_eq!(Resolution::from_stored("unresolved"), Resolution::Unresolved);
        assert_eq!(Resolution::from_stored("lost: older"), Resolution::Lost("older".into()));
    }
}
