//! Between the index's view of an entry ([`Meta`]) and the wire's
//! ([`WireEntry`]), and the version fingerprint both sides compare to tell
//! "changed since we last agreed".

use crate::proto::WireEntry;
use crate::types::{FileKind, IgnoreFields, Meta};

/// An entry as it travels.
pub fn to_wire(m: &Meta) -> WireEntry {
    WireEntry {
        kind: m.kind.code(),
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        size: m.size,
        mtime_ns: m.mtime_ns,
        rdev: m.rdev,
        target: m.target.clone(),
        hash: m.hash,
        origin: None,
    }
}

/// The kind code of an entry that is not there: a conflict answer for a
/// path the receiver deleted, dated by `mtime_ns` (no file kind uses it;
/// a node that does not know it reads an unknown kind, an undated delete).
pub const DELETED: u8 = 0;

/// A delete seen at `at_ns`, made by `origin`, as a conflict answer.
pub fn deleted(at_ns: i64, origin: &str) -> WireEntry {
    WireEntry {
        kind: DELETED,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        mtime_ns: at_ns,
        rdev: 0,
        target: None,
        hash: None,
        origin: Some(origin.to_string()),
    }
}

/// A received entry, or `None` for an unknown kind.
pub fn from_wire(w: &WireEntry) -> Option<Meta> {
    Some(Meta {
        kind: FileKind::from_code(i64::from(w.kind))?,
        mode: w.mode & 0o7777,
        uid: w.uid,
        gid: w.gid,
        size: w.size,
        mtime_ns: w.mtime_ns,
        ino: 0,
        ctime_ns: 0,
        rdev: w.rdev,
        target: w.target.clone(),
        hash: w.hash,
    })
}

/// The version of an entry: what two nodes must share to be "in sync".
/// Content (hash, link target, device), type, and the owner and mode unless
/// the config ignores them. Not the mtime: a bare `touch` on one side must not
/// turn a later change on the other into a conflict.
pub fn version(m: &Meta, ignore: IgnoreFields) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"csync-version-1");
    h.update(&[m.kind.code()]);
    if !ignore.mode && m.kind != FileKind::Symlink {
        h.update(&m.mode.to_be_bytes());
    }
    if !ignore.uid {
        h.update(&m.uid.to_be_bytes());
    }
    if !ignore.gid {
        h.update(&m.gid.to_be_bytes());
    }
    match m.kind {
        FileKind::File => {
            h.update(&m.hash.unwrap_or([0; 32]));
        }
        FileKind::Symlink => {
            let t = m.target.as_deref().unwrap_or_default();
            h.update(&(t.len() as u64).to_be_bytes());
            h.update(t);
        }
        FileKind::CharDevice | FileKind::BlockDevice => {
            h.update(&m.rdev.to_be_bytes());
        }
        _ => {}
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Meta {
        Meta {
            kind: FileKind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            size: 3,
            mtime_ns: 4,
            ino: 5,
            ctime_ns: 6,
            rdev: 0,
            target: None,
            hash: Some([9; 32]),
        }
    }

    #[test]
    fn wire_round_trip_keeps_what_travels() {
        let m = file();
        let back = from_wire(&to_wire(&m)).unwrap();
        assert_eq!(back.hash, m.hash);
        assert_eq!(
            (back.mode, back.uid, back.gid, back.mtime_ns),
            (m.mode, m.uid, m.gid, m.mtime_ns)
        );
    }

    #[test]
    fn version_ignores_mtime_and_ignored_fields() {
        let a = file();
        let mut b = file();
        b.mtime_ns = 99;
        b.ino = 77;
        assert_eq!(version(&a, IgnoreFields::default()), version(&b, IgnoreFields::default()));
        b.mode = 0o600;
        assert_ne!(version(&a, IgnoreFields::default()), version(&b, IgnoreFields::default()));
        let ign = IgnoreFields { mode: true, ..IgnoreFields::default() };
        assert_eq!(version(&a, ign), version(&b, ign));
        b.hash = Some([8; 32]);
        assert_ne!(version(&a, ign), version(&b, ign));
    }
}
