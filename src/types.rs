//! Plain domain types shared by every layer: file kinds, observed metadata and
//! the kinds of change the scanner reports.
//!
//! Nothing here does I/O; `scan` fills these in from `lstat`, `index` stores them.

use std::fmt;

/// The type of a managed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FileKind {
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
    /// Symbolic link (never followed).
    Symlink = 3,
    /// Named pipe.
    Fifo = 4,
    /// Character device.
    CharDevice = 5,
    /// Block device.
    BlockDevice = 6,
    /// Unix socket (recorded, never transferred).
    Socket = 7,
}

impl FileKind {
    /// The number stored in the index.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`FileKind::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::File,
            2 => Self::Dir,
            3 => Self::Symlink,
            4 => Self::Fifo,
            5 => Self::CharDevice,
            6 => Self::BlockDevice,
            7 => Self::Socket,
            _ => return None,
        })
    }

    /// Short name used in listings (`reg`, `dir`, … as csync2's checktxt).
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "reg",
            Self::Dir => "dir",
            Self::Symlink => "lnk",
            Self::Fifo => "fifo",
            Self::CharDevice => "chr",
            Self::BlockDevice => "blk",
            Self::Socket => "sock",
        }
    }

    /// The kind in words, with an article, for messages ("a symlink").
    pub fn describe(self) -> &'static str {
        match self {
            Self::File => "a regular file",
            Self::Dir => "a directory",
            Self::Symlink => "a symlink",
            Self::Fifo => "a fifo",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Socket => "a socket",
        }
    }
}

impl FileKind {
    /// The kind of a file type from `stat` (anything unknown counts as a socket,
    /// which is recorded and never transferred).
    pub fn from_file_type(t: rustix::fs::FileType) -> Self {
        use rustix::fs::FileType as T;
        match t {
            T::RegularFile => Self::File,
            T::Directory => Self::Dir,
            T::Symlink => Self::Symlink,
            T::Fifo => Self::Fifo,
            T::CharacterDevice => Self::CharDevice,
            T::BlockDevice => Self::BlockDevice,
            _ => Self::Socket,
        }
    }
}

/// The last seen state of one entry: what `lstat` said, plus the content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Entry type.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes (regular files; 0 otherwise).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number: a changed inode means the content may have changed.
    pub ino: u64,
    /// Status change time (ns): catches content rewrites that restore the mtime.
    pub ctime_ns: i64,
    /// Device number of character and block devices (0 otherwise).
    pub rdev: u64,
    /// Symlink target bytes (symlinks only).
    pub target: Option<Vec<u8>>,
    /// BLAKE3 of the content (regular files only).
    pub hash: Option<[u8; 32]>,
}

impl Meta {
    /// The metadata csync tracks, from a raw `fstatat` result (no hash, no
    /// link target: the caller adds those).
    pub fn from_stat(st: &rustix::fs::Stat) -> Meta {
        let kind = FileKind::from_file_type(rustix::fs::FileType::from_raw_mode(st.st_mode));
        let is_dev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if kind == FileKind::File { st.st_size as u64 } else { 0 },
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ino: st.st_ino,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
            rdev: if is_dev { st.st_rdev } else { 0 },
            target: None,
            hash: None,
        }
    }

    /// True when the stat fields say the content may differ from `old`, so the
    /// file must be hashed again. Cheap fields first; no I/O.
    pub fn content_may_differ(&self, old: &Meta) -> bool {
        // A regular file recorded without its hash (an index written by an
        // older release) vouches for nothing: hash it again.
        (old.kind == FileKind::File && old.hash.is_none())
            || self.kind != old.kind
            || self.size != old.size
            || self.mtime_ns != old.mtime_ns
            || self.ino != old.ino
            || self.ctime_ns != old.ctime_ns
    }
}

/// Which fields to leave out of change detection (`ignore uid gid mod;`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoreFields {
    /// Ignore owner uid.
    pub uid: bool,
    /// Ignore owner gid.
    pub gid: bool,
    /// Ignore permission bits.
    pub mode: bool,
}

/// What changed about an entry since the index last saw it (a bit set, since
/// one edit can change several things and marks accumulate until pushed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Changes(pub u32);

impl Changes {
    /// The entry did not exist before.
    pub const NEW: Changes = Changes(1);
    /// Regular file content (by hash).
    pub const CONTENT: Changes = Changes(1 << 1);
    /// Symlink target.
    pub const TARGET: Changes = Changes(1 << 2);
    /// Entry type (file ↔ dir ↔ symlink …).
    pub const TYPE: Changes = Changes(1 << 3);
    /// Permission bits.
    pub const MODE: Changes = Changes(1 << 4);
    /// Owner or group.
    pub const OWNER: Changes = Changes(1 << 5);
    /// Modification time only (a metadata change; triggers no action).
    pub const MTIME: Changes = Changes(1 << 6);
    /// The entry was deleted.
    pub const DELETE: Changes = Changes(1 << 7);
    /// Device number.
    pub const RDEV: Changes = Changes(1 << 8);
    /// Marked by hand (`-m`, `-f`): push whatever the state is.
    pub const MARKED: Changes = Changes(1 << 9);

    const NAMES: [(Changes, &'static str); 10] = [
        (Self::NEW, "new"),
        (Self::CONTENT, "content"),
        (Self::TARGET, "target"),
        (Self::TYPE, "type"),
        (Self::MODE, "mode"),
        (Self::OWNER, "owner"),
        (Self::MTIME, "mtime"),
        (Self::DELETE, "delete"),
        (Self::RDEV, "rdev"),
        (Self::MARKED, "marked"),
    ];

    /// No change.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Changes) -> bool {
        self.0 & other.0 == other.0
    }

    /// True for changes that matter beyond the mtime (what actions react to).
    pub fn is_real(self) -> bool {
        self.0 & !Self::MTIME.0 != 0
    }
}

impl std::ops::BitOr for Changes {
    type Output = Changes;
    fn bitor(self, rhs: Changes) -> Changes {
        Changes(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Changes {
    fn bitor_assign(&mut self, rhs: Changes) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Changes {
    /// Comma-separated names, e.g. `content,mode`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// What a peer should still have before a local change is pushed: the version
/// this node had before it (see `engine::wire::version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Base {
    /// Not known (a mark made by hand): use what the peer was last known to have.
    #[default]
    Unknown,
    /// The entry did not exist.
    Absent,
    /// This version.
    Version([u8; 32]),
}

impl Base {
    /// The SQL value (NULL / empty / 32 bytes).
    pub fn to_sql(self) -> Option<Vec<u8>> {
        match self {
            Base::Unknown => None,
            Base::Absent => Some(Vec::new()),
            Base::Version(v) => Some(v.to_vec()),
        }
    }

    /// From the SQL value.
    pub fn from_sql(v: Option<Vec<u8>>) -> Self {
        match v {
            None => Base::Unknown,
            Some(b) if b.is_empty() => Base::Absent,
            Some(b) => <[u8; 32]>::try_from(b.as_slice()).map_or(Base::Unknown, Base::Version),
        }
    }
}

/// Compares a fresh observation with the indexed state and says what changed.
///
/// `new.hash` must already be filled in when the content may have changed
/// (see [`Meta::content_may_differ`]); when it is `None` for a regular file the
/// old hash is assumed to still hold. Directory mtimes are ignored, as in
/// csync2: they change whenever an entry is added and say nothing of their own.
pub fn classify(old: &Meta, new: &Meta, ignore: IgnoreFields) -> Changes {
    let mut c = Changes::default();
    if old.kind != new.kind {
        return Changes::TYPE;
    }
    match new.kind {
        FileKind::File if new.hash.is_some() && new.hash != old.hash => c |= Changes::CONTENT,
        FileKind::Symlink if new.target != old.target => c |= Changes::TARGET,
        FileKind::CharDevice | FileKind::BlockDevice if new.rdev != old.rdev => c |= Changes::RDEV,
        _ => {}
    }
    // Symlink permission bits are meaningless on Linux.
    if !ignore.mode && new.kind != FileKind::Symlink && new.mode != old.mode {
        c |= Changes::MODE;
    }
    if (!ignore.uid && new.uid != old.uid) || (!ignore.gid && new.gid != old.gid) {
        c |= Changes::OWNER;
    }
    if new.kind != FileKind::Dir && new.mtime_ns != old.mtime_ns {
        c |= Changes::MTIME;
    }
    c
}

#[cfg(test)]
impl Meta {
    /// A one-byte regular file owned by root, hashed: the row the index and
    /// planner tests store when only its presence matters.
    pub(crate) fn test_file() -> Meta {
        Meta {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            mtime_ns: 1,
            ino: 1,
            ctime_ns: 1,
            rdev: 0,
            target: None,
            hash: Some([7; 32]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Meta {
        Meta {
            kind: FileKind::File,
            mode: 0o644,
            uid: 1,
            gid: 1,
            size: 3,
            mtime_ns: 10,
            ino: 5,
            ctime_ns: 10,
            rdev: 0,
            target: None,
            hash: Some([1; 32]),
        }
    }

    #[test]
    fn unchanged_is_empty() {
        assert!(classify(&file(), &file(), IgnoreFields::default()).is_empty());
    }

    #[test]
    fn touch_is_mtime_only_and_not_real() {
        let mut n = file();
        n.mtime_ns = 20;
        let c = classify(&file(), &n, IgnoreFields::default());
        assert_eq!(c, Changes::MTIME);
        assert!(!c.is_real());
    }

    #[test]
    fn content_and_mode_accumulate() {
        let mut n = file();
        n.hash = Some([2; 32]);
        n.mode = 0o600;
        let c = classify(&file(), &n, IgnoreFields::default());
        assert_eq!(c.to_string(), "content,mode");
        assert!(c.is_real());
    }

    #[test]
    fn ignored_fields_do_not_count() {
        let mut n = file();
        n.mode = 0o600;
        n.uid = 7;
        let ign = IgnoreFields { uid: true, gid: false, mode: true };
        assert!(classify(&file(), &n, ign).is_empty());
    }

    #[test]
    fn type_change_wins() {
        let mut n = file();
        n.kind = FileKind::Dir;
        assert_eq!(classify(&file(), &n, IgnoreFields::default()), Changes::TYPE);
    }

    #[test]
    fn dir_mtime_is_ignored() {
        let mut o = file();
        o.kind = FileKind::Dir;
        o.hash = None;
        let mut n = o.clone();
        n.mtime_ns = 99;
        assert!(classify(&o, &n, IgnoreFields::default()).is_empty());
    }
}
