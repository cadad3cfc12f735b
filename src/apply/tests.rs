//! Tests of the writer (kept apart so the modules stay readable).

use super::*;
use crate::tempname::TEMP_PREFIX;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

const MTIME: i64 = 1_600_000_000_123_456_789;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Owner ids to ask for: foreign ones as root, our own otherwise.
fn ids() -> (u32, u32) {
    if is_root() {
        (1234, 2345)
    } else {
        (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
    }
}

fn entry(kind: FileKind, mode: u32) -> Entry {
    let (uid, gid) = ids();
    Entry { kind, mode, uid, gid, mtime_ns: MTIME, target: None, rdev: 0 }
}

fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

fn put(root: &Path, rel: &[u8], data: &[u8], e: &Entry) -> Result<Meta, Error> {
    let mut w = begin_file(root, rel, e, hash(data), &Options::default())?;
    w.write_all(data).unwrap();
    w.commit()
}

fn put_file(root: &Path, rel: &str, data: &[u8]) -> Meta {
    put(root, rel.as_bytes(), data, &entry(FileKind::File, 0o644)).unwrap()
}

fn mkdir(root: &Path, rel: &str) -> Meta {
    make(root, rel.as_bytes(), &entry(FileKind::Dir, 0o755), &Options::default()).unwrap()
}

/// Temporary names left anywhere below `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_name().as_bytes().starts_with(TEMP_PREFIX) {
                out.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

fn mtime_of(p: &Path) -> i64 {
    let md = std::fs::symlink_metadata(p).unwrap();
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

#[test]
fn check_rel_accepts_and_refuses() {
    for ok in [&b""[..], b"a", b"a/b/c", b".hidden", b"a/..b", b"...", &[b'x'; 255]] {
        assert!(check_rel(ok).is_ok(), "{:?}", show(ok));
    }
    let long_comp = [b'x'; 256];
    let long_path = [b"a/".as_slice(); 2048].concat();
    let bad_ones: [&[u8]; 13] = [
        b"../x",
        b"a/../b",
        b"/abs",
        b"a//b",
        b"a/./b",
        b".",
        b"..",
        b"a/",
        b"a/..",
        b"a\0b",
        &long_comp,
        &long_path[..4096],
        b"/",
    ];
    for b in bad_ones {
        assert!(matches!(check_rel(b), Err(Error::BadPath(_))), "{:?}", show(b));
    }
    // 4095 bytes in all is still fine.
    assert!(check_rel(&long_path[..4095]).is_ok());
}

#[test]
fn bad_paths_are_refused_everywhere() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let e = entry(FileKind::File, 0o644);
    for b in [&b"../x"[..], b"a/../b", b"/abs", b"a//b", b"a/./b", b"a\0b", &[b'y'; 256]] {
        let r = begin_file(root, b, &e, hash(b""), &Options::default());
        assert!(matches!(r, Err(Error::BadPath(_))), "{:?}", show(b));
        assert!(matches!(stat(root, b), Err(Error::BadPath(_))));
        assert!(matches!(delete(root, b), Err(Error::BadPath(_))));
        let d = entry(FileKind::Dir, 0o755);
        assert!(matches!(make(root, b, &d, &Options::default()), Err(Error::BadPath(_))));
    }
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
}

#[test]
fn file_is_written_exactly() {
    let t = tempfile::tempdir().unwrap();
    let e = entry(FileKind::File, 0o4750);
    let m = put(t.path(), b"f", b"hello", &e).unwrap();
    let p = t.path().join("f");
    assert_eq!(std::fs::read(&p).unwrap(), b"hello");
    let md = std::fs::symlink_metadata(&p).unwrap();
    assert!(md.is_file());
    assert_eq!(md.mode() & 0o7777, 0o4750);
    assert_eq!(mtime_of(&p), MTIME);
    assert_eq!((md.uid(), md.gid()), ids());
    assert_eq!(m.kind, FileKind::File);
    assert_eq!((m.mode, m.uid, m.gid, m.size, m.mtime_ns), (0o4750, e.uid, e.gid, 5, MTIME));
    assert_eq!(m.ino, md.ino());
    assert_eq!(m.hash, Some(hash(b"hello")));
    assert!(temps(t.path()).is_empty());
    // stat agrees, without the hash.
    let s = stat(t.path(), b"f").unwrap().unwrap();
    assert_eq!(s, Meta { hash: None, ..m });
}

#[test]
fn overwrite_replaces_atomically() {
    let t = tempfile::tempdir().unwrap();
    let m1 = put_file(t.path(), "f", b"old content");
    let mut old = std::fs::File::open(t.path().join("f")).unwrap();
    let m2 = put_file(t.path(), "f", b"new");
    assert_ne!(m1.ino, m2.ino);
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"new");
    // A reader of the old file still sees the complete old content.
    let mut s = String::new();
    old.read_to_string(&mut s).unwrap();
    assert_eq!(s, "old content");
    assert!(temps(t.path()).is_empty());
}

#[test]
fn hash_mismatch_leaves_target_untouched() {
    let t = tempfile::tempdir().unwrap();
    let m1 = put_file(t.path(), "f", b"old");
    let e = entry(FileKind::File, 0o600);
    let mut w = begin_file(t.path(), b"f", &e, hash(b"other"), &Options::default()).unwrap();
    w.write_all(b"new").unwrap();
    assert!(matches!(w.commit(), Err(Error::HashMismatch)));
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"old");
    assert_eq!(stat(t.path(), b"f").unwrap().unwrap().ino, m1.ino);
    assert!(temps(t.path()).is_empty());
    // Also for a new file: nothing appears.
    let mut w = begin_file(t.path(), b"g", &e, hash(b"other"), &Options::default()).unwrap();
    w.write_all(b"new").unwrap();
    assert!(matches!(w.commit(), Err(Error::HashMismatch)));
    assert!(stat(t.path(), b"g").unwrap().is_none());
    assert!(temps(t.path()).is_empty());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    put_file(t.path(), "f", b"old");
    let e = entry(FileKind::File, 0o600);
    let mut w = begin_file(t.path(), b"f", &e, hash(b"new"), &Options::default()).unwrap();
    w.write_all(b"ne").unwrap();
    assert_eq!(temps(t.path()).len(), 1);
    drop(w);
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"old");
    let w = begin_file(t.path(), b"g", &e, hash(b"new"), &Options::default()).unwrap();
    drop(w);
    assert!(!t.path().join("g").exists());
    assert!(temps(t.path()).is_empty());
}

#[test]
fn temp_file_is_private_and_in_target_dir() {
    let t = tempfile::tempdir().unwrap();
    mkdir(t.path(), "d");
    let e = entry(FileKind::File, 0o644);
    let w = begin_file(t.path(), b"d/f", &e, hash(b""), &Options::default()).unwrap();
    let tmp = temps(t.path());
    assert_eq!(tmp.len(), 1);
    assert_eq!(tmp[0].parent().unwrap(), t.path().join("d"));
    assert!(tmp[0].file_name().unwrap().as_bytes().starts_with(b".csync.f."));
    let md = std::fs::symlink_metadata(&tmp[0]).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    let m = w.commit().unwrap();
    assert_eq!(m.size, 0);
    assert!(temps(t.path()).is_empty());
}

#[test]
fn parent_missing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let e = entry(FileKind::File, 0o644);
    let r = begin_file(root, b"a/b/f", &e, hash(b""), &Options::default());
    assert!(matches!(r, Err(Error::ParentMissing(ref p)) if p == "a"), "{r:?}");
    let d = entry(FileKind::Dir, 0o755);
    assert!(matches!(make(root, b"a/b", &d, &Options::default()), Err(Error::ParentMissing(_))));
    assert!(matches!(stat(root, b"a/b"), Err(Error::ParentMissing(_))));
    assert!(matches!(open_file(root, b"a/b"), Err(Error::ParentMissing(_))));
    assert!(!delete(root, b"a/b").unwrap());
    assert!(stat(root, b"a").unwrap().is_none());
    assert!(open_file(root, b"a").unwrap().is_none());
    mkdir(root, "a");
    let r = begin_file(root, b"a/b/f", &e, hash(b""), &Options::default());
    assert!(matches!(r, Err(Error::ParentMissing(ref p)) if p == "a/b"), "{r:?}");
    assert_eq!(std::fs::read_dir(root.join("a")).unwrap().count(), 0);
}

#[test]
fn symlinked_parent_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x"), b"secret").unwrap();
    let root = t.path().join("root");
    ensure_root(&root).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
    mkdir(&root, "a");
    std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
    std::fs::write(root.join("plain"), b"").unwrap();
    let e = entry(FileKind::File, 0o644);
    let d = entry(FileKind::Dir, 0o755);
    let o = Options::default();
    for rel in [&b"link/x"[..], b"a/link/x", b"link/y/z", b"plain/x"] {
        let r = begin_file(&root, rel, &e, hash(b""), &o);
        assert!(matches!(r, Err(Error::Symlink(_))), "{:?}: {r:?}", show(rel));
        assert!(matches!(make(&root, rel, &d, &o), Err(Error::Symlink(_))));
        assert!(matches!(stat(&root, rel), Err(Error::Symlink(_))));
        assert!(matches!(open_file(&root, rel), Err(Error::Symlink(_))));
        assert!(matches!(delete(&root, rel), Err(Error::Symlink(_))));
        let s = Entry { target: Some(b"t".to_vec()), ..entry(FileKind::Symlink, 0o777) };
        assert!(matches!(make(&root, rel, &s, &o), Err(Error::Symlink(_))));
    }
    // Nothing was created or changed outside.
    let names: Vec<_> =
        std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    assert_eq!(std::fs::read(outside.path().join("x")).unwrap(), b"secret");
    // A symlink as the last component is the entry itself: never read
    // through, and replaced (not written through) by a file.
    std::os::unix::fs::symlink(outside.path().join("x"), root.join("lx")).unwrap();
    assert!(open_file(&root, b"lx").unwrap().is_none());
    assert_eq!(stat(&root, b"lx").unwrap().unwrap().kind, FileKind::Symlink);
    assert!(!preserve(&root, b"lx", &t.path().join("keep")).unwrap());
    put_file(&root, "lx", b"mine");
    assert_eq!(std::fs::read(outside.path().join("x")).unwrap(), b"secret");
    assert!(std::fs::symlink_metadata(root.join("lx")).unwrap().is_file());
    assert!(delete(&root, b"link").unwrap());
    assert!(outside.path().join("x").exists());
}

#[test]
fn root_may_be_reached_through_a_symlink() {
    let t = tempfile::tempdir().unwrap();
    let real = t.path().join("real");
    ensure_root(&real).unwrap();
    let via = t.path().join("via");
    std::os::unix::fs::symlink(&real, &via).unwrap();
    put_file(&via, "f", b"x");
    assert_eq!(std::fs::read(real.join("f")).unwrap(), b"x");
    assert_eq!(stat(&via, b"").unwrap().unwrap().kind, FileKind::Dir);
}

#[test]
fn root_itself() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    assert!(stat(&root, b"").unwrap().is_none());
    ensure_root(&root.join("deeper")).unwrap();
    ensure_root(&root).unwrap();
    let d = Entry { mtime_ns: MTIME, ..entry(FileKind::Dir, 0o751) };
    let m = make(&root, b"", &d, &Options::default()).unwrap();
    assert_eq!((m.kind, m.mode, m.mtime_ns), (FileKind::Dir, 0o751, MTIME));
    assert_eq!(stat(&root, b"").unwrap().unwrap(), m);
    assert!(matches!(delete(&root, b""), Err(Error::BadPath(_))));
    let e = entry(FileKind::File, 0o644);
    assert!(matches!(
        begin_file(&root, b"", &e, hash(b""), &Options::default()),
        Err(Error::BadPath(_))
    ));
    assert!(open_file(&root, b"").unwrap().is_none());
    let f = entry(FileKind::Fifo, 0o644);
    assert!(matches!(make(&root, b"", &f, &Options::default()), Err(Error::BadPath(_))));
}

#[test]
fn dir_create_and_update() {
    let t = tempfile::tempdir().unwrap();
    let e = entry(FileKind::Dir, 0o2750);
    let m = make(t.path(), b"d", &e, &Options::default()).unwrap();
    assert_eq!(
        (m.kind, m.mode, m.uid, m.gid, m.mtime_ns),
        (FileKind::Dir, 0o2750, e.uid, e.gid, MTIME)
    );
    let ino = m.ino;
    let e2 = Entry { mode: 0o700, mtime_ns: MTIME + 5, ..e };
    let m2 = make(t.path(), b"d", &e2, &Options::default()).unwrap();
    assert_eq!((m2.mode, m2.mtime_ns, m2.ino), (0o700, MTIME + 5, ino));
    // ignore_mode keeps the existing mode.
    let e3 = Entry { mode: 0o777, ..e2 };
    let o = Options { mode: true, ..Options::default() };
    assert_eq!(make(t.path(), b"d", &e3, &o).unwrap().mode, 0o700);
    // A new dir with ignore_mode gets 0755.
    assert_eq!(make(t.path(), b"d/n", &e3, &o).unwrap().mode, 0o755);
}

#[test]
fn symlink_create_and_retarget() {
    let t = tempfile::tempdir().unwrap();
    let e = Entry { target: Some(b"/etc/passwd".to_vec()), ..entry(FileKind::Symlink, 0o777) };
    let m = make(t.path(), b"l", &e, &Options::default()).unwrap();
    assert_eq!(m.kind, FileKind::Symlink);
    assert_eq!(m.target.as_deref(), Some(&b"/etc/passwd"[..]));
    assert_eq!((m.uid, m.gid, m.mtime_ns), (e.uid, e.gid, MTIME));
    assert_eq!(std::fs::read_link(t.path().join("l")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(mtime_of(&t.path().join("l")), MTIME);
    let e2 = Entry { target: Some(b"../x/y".to_vec()), mtime_ns: MTIME + 1, ..e };
    let m2 = make(t.path(), b"l", &e2, &Options::default()).unwrap();
    assert_eq!(m2.target.as_deref(), Some(&b"../x/y"[..]));
    assert_eq!(m2.mtime_ns, MTIME + 1);
    assert_ne!(m2.ino, m.ino);
    assert_eq!(stat(t.path(), b"l").unwrap().unwrap(), m2);
    assert!(temps(t.path()).is_empty());
    let bad_target = Entry { target: None, ..e };
    assert!(matches!(
        make(t.path(), b"l2", &bad_target, &Options::default()),
        Err(Error::BadPath(_))
    ));
}

#[test]
fn fifo_and_socket() {
    let t = tempfile::tempdir().unwrap();
    let m = make(t.path(), b"p", &entry(FileKind::Fifo, 0o640), &Options::default()).unwrap();
    assert_eq!((m.kind, m.mode, m.mtime_ns), (FileKind::Fifo, 0o640, MTIME));
    assert_eq!((m.uid, m.gid), ids());
    assert!(open_file(t.path(), b"p").unwrap().is_none());
    let r = make(t.path(), b"s", &entry(FileKind::Socket, 0o640), &Options::default());
    assert!(
        matches!(r, Err(Error::Io { ref source, .. }) if source.to_string().contains("sockets"))
    );
    let r = make(t.path(), b"f", &entry(FileKind::File, 0o640), &Options::default());
    assert!(matches!(r, Err(Error::Io { .. })));
    assert!(temps(t.path()).is_empty());
}

#[test]
fn char_device() {
    let t = tempfile::tempdir().unwrap();
    let e = Entry { rdev: rfs::makedev(1, 3), ..entry(FileKind::CharDevice, 0o666) };
    let r = make(t.path(), b"null", &e, &Options::default());
    if !is_root() {
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        assert!(temps(t.path()).is_empty());
        return;
    }
    let m = r.unwrap();
    assert_eq!((m.kind, m.mode, m.rdev, m.mtime_ns), (FileKind::CharDevice, 0o666, e.rdev, MTIME));
    assert_eq!((m.uid, m.gid), (1234, 2345));
    assert!(open_file(t.path(), b"null").unwrap().is_none());
    assert!(temps(t.path()).is_empty());
}

#[test]
fn type_changes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = Options::default();
    // file -> dir
    put_file(root, "a", b"x");
    assert_eq!(make(root, b"a", &entry(FileKind::Dir, 0o755), &o).unwrap().kind, FileKind::Dir);
    // empty dir -> file
    assert_eq!(put_file(root, "a", b"y").kind, FileKind::File);
    assert_eq!(std::fs::read(root.join("a")).unwrap(), b"y");
    // non-empty dir -> file: NotEmpty, dir kept.
    mkdir(root, "d");
    put_file(root, "d/child", b"c");
    let r = put(root, b"d", b"z", &entry(FileKind::File, 0o644));
    assert!(matches!(r, Err(Error::NotEmpty(_))), "{r:?}");
    assert!(root.join("d/child").is_file());
    let s = Entry { target: Some(b"t".to_vec()), ..entry(FileKind::Symlink, 0o777) };
    assert!(matches!(make(root, b"d", &s, &o), Err(Error::NotEmpty(_))));
    assert!(matches!(make(root, b"d", &entry(FileKind::Fifo, 0o644), &o), Err(Error::NotEmpty(_))));
    assert!(root.join("d/child").is_file());
    // symlink -> file, file -> symlink, fifo -> dir, empty dir -> symlink.
    make(root, b"l", &s, &o).unwrap();
    assert_eq!(put_file(root, "l", b"f").kind, FileKind::File);
    assert_eq!(make(root, b"l", &s, &o).unwrap().kind, FileKind::Symlink);
    make(root, b"p", &entry(FileKind::Fifo, 0o644), &o).unwrap();
    assert_eq!(make(root, b"p", &entry(FileKind::Dir, 0o755), &o).unwrap().kind, FileKind::Dir);
    assert_eq!(make(root, b"p", &s, &o).unwrap().kind, FileKind::Symlink);
    assert!(temps(root).is_empty());
}

#[test]
fn parent_mtime_is_restored() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = Options::default();
    make(root, b"d", &entry(FileKind::Dir, 0o755), &o).unwrap();
    let d = root.join("d");
    assert_eq!(mtime_of(&d), MTIME);
    put_file(root, "d/f", b"1");
    assert_eq!(mtime_of(&d), MTIME);
    put_file(root, "d/f", b"2");
    assert_eq!(mtime_of(&d), MTIME);
    let s = Entry { target: Some(b"f".to_vec()), ..entry(FileKind::Symlink, 0o777) };
    make(root, b"d/l", &s, &o).unwrap();
    make(root, b"d/sub", &entry(FileKind::Dir, 0o755), &o).unwrap();
    assert_eq!(mtime_of(&d), MTIME);
    let e = entry(FileKind::File, 0o644);
    drop(begin_file(root, b"d/g", &e, hash(b""), &o).unwrap());
    assert_eq!(mtime_of(&d), MTIME);
    assert!(delete(root, b"d/f").unwrap());
    assert!(delete(root, b"d/sub").unwrap());
    assert_eq!(mtime_of(&d), MTIME);
}

#[test]
fn delete_cases() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    put_file(root, "f", b"x");
    mkdir(root, "empty");
    mkdir(root, "full");
    put_file(root, "full/f", b"x");
    assert!(delete(root, b"f").unwrap());
    assert!(!root.join("f").exists());
    assert!(delete(root, b"empty").unwrap());
    assert!(!root.join("empty").exists());
    assert!(matches!(delete(root, b"full"), Err(Error::NotEmpty(_))));
    assert!(root.join("full/f").exists());
    assert!(!delete(root, b"f").unwrap());
    assert!(!delete(root, b"nope/x").unwrap());
}

#[test]
fn preserve_copies_file() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    ensure_root(&root).unwrap();
    let e = entry(FileKind::File, 0o640);
    put(&root, b"f", b"precious", &e).unwrap();
    let keep = t.path().join("keep/a/b/f.conflict");
    assert!(preserve(&root, b"f", &keep).unwrap());
    assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
    let md = std::fs::metadata(&keep).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(mtime_of(&keep), MTIME);
    assert_eq!((md.uid(), md.gid()), ids());
    let dmode = std::fs::metadata(t.path().join("keep/a")).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o700);
    assert!(temps(t.path()).is_empty());
    // Overwrites an older copy; nothing to keep for absent or non-files.
    put_file(&root, "f", b"v2");
    assert!(preserve(&root, b"f", &keep).unwrap());
    assert_eq!(std::fs::read(&keep).unwrap(), b"v2");
    assert!(!preserve(&root, b"nope", &t.path().join("k2")).unwrap());
    mkdir(&root, "d");
    assert!(!preserve(&root, b"d", &t.path().join("k3")).unwrap());
    assert!(!t.path().join("k2").exists() && !t.path().join("k3").exists());
}

#[test]
fn long_names_and_paths() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let name = "n".repeat(255);
    put_file(root, &name, b"long");
    assert_eq!(std::fs::read(root.join(&name)).unwrap(), b"long");
    let comp = "c".repeat(200);
    let mut rel = String::new();
    while rel.len() + 1 + 255 < 3995 {
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(&comp);
        mkdir(root, &rel);
    }
    rel.push('/');
    rel.push_str(&name[..3995 - rel.len()]);
    assert!(rel.len() >= 3990 && rel.len() <= 4095, "{}", rel.len());
    let m = put_file(root, &rel, b"deep");
    assert_eq!(m.size, 4);
    let mut f = open_file(root, rel.as_bytes()).unwrap().unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "deep");
    assert!(delete(root, rel.as_bytes()).unwrap());
    assert!(temps(root).is_empty());
}

#[test]
fn ignore_options() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let all = Options { uid: true, gid: true, mode: true };
    // New file: default mode, the writer's own ids.
    let m = put_with(root, "f", &entry(FileKind::File, 0o4777), &all);
    assert_eq!(m.mode, 0o644);
    let me = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    assert_eq!((m.uid, m.gid), me);
    // Existing file: its mode (and owner) are kept.
    let m = put_with(root, "g", &entry(FileKind::File, 0o600), &Options::default());
    let m2 = put_with(root, "g", &Entry { uid: 7, gid: 8, ..entry(FileKind::File, 0o777) }, &all);
    assert_eq!((m2.mode, m2.uid, m2.gid), (0o600, m.uid, m.gid));
    assert_ne!(m.ino, m2.ino);
}

fn put_with(root: &Path, rel: &str, e: &Entry, o: &Options) -> Meta {
    let mut w = begin_file(root, rel.as_bytes(), e, hash(b"data"), o).unwrap();
    w.write_all(b"data").unwrap();
    w.commit().unwrap()
}

#[test]
fn foreign_owner_is_skipped_when_not_root() {
    let t = tempfile::tempdir().unwrap();
    let e = Entry { uid: 4321, gid: 5432, ..entry(FileKind::File, 0o644) };
    let m = put(t.path(), b"f", b"x", &e).unwrap();
    let s = Entry { target: Some(b"f".to_vec()), ..e.clone() };
    let l =
        make(t.path(), b"l", &Entry { kind: FileKind::Symlink, ..s }, &Options::default()).unwrap();
    if is_root() {
        assert_eq!((m.uid, m.gid, l.uid, l.gid), (4321, 5432, 4321, 5432));
    } else {
        let me = rustix::process::geteuid().as_raw();
        assert_eq!((m.uid, l.uid), (me, me));
    }
}

#[test]
fn temp_names_fit_and_differ() {
    let a = temp_name(&[b'x'; 255]);
    let b = temp_name(&[b'x'; 255]);
    assert!(a.len() <= NAME_MAX && a != b);
    assert!(a.starts_with(TEMP_PREFIX));
    assert!(check_rel(&a).is_ok());
}

#[test]
fn anchors_follow_only_symlinks_nobody_else_controls() {
    let t = tempfile::tempdir().unwrap();
    let real = t.path().join("real");
    std::fs::create_dir_all(real.join("conf")).unwrap();
    // A link in a directory only its owner may change: followed.
    let safe = t.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&real, safe.join("www")).unwrap();
    ensure_root(&safe.join("www/conf")).unwrap();
    assert!(open_root(&safe.join("www/conf")).is_ok());
    // The same link in a directory anyone may write to: refused, since a
    // local user could have swapped it to point anywhere.
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&real, open.join("www")).unwrap();
    assert!(matches!(
        crate::confined::open_uncached(&open.join("www/conf")),
        Err(crate::confined::Error::Untrusted)
    ));
    assert!(matches!(
        make(&open.join("www"), b"conf/x", &entry(FileKind::Dir, 0o755), &Options::default()),
        Err(Error::Symlink(_))
    ));
    assert!(!real.join("conf/x").exists());
    // Sticky (like /tmp): others cannot replace our link.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(crate::confined::open_uncached(&open.join("www/conf")).is_ok());
    // A missing anchor is made, component by component.
    ensure_root(&t.path().join("new/a/b")).unwrap();
    assert!(t.path().join("new/a/b").is_dir());
}

#[test]
fn a_directory_kept_for_a_batch_is_the_one_walked_to_whatever_replaces_it() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let e = entry(FileKind::File, 0o644);
    let mut dirs = Dirs::new();
    assert!(dirs.stat(&root, b"d/one").unwrap().is_none());
    // Mid-batch, a user moves `d` away and puts a symlink in its place.
    let moved = t.path().join("moved");
    std::fs::rename(root.join("d"), &moved).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
    let mut w =
        dirs.begin_file(&root, b"d/one", &e, hash(b"1"), &Options::default(), None).unwrap();
    w.write_all(b"1").unwrap();
    let (_, touched) = w.stage().unwrap().publish().unwrap();
    finish_dirs(vec![touched]).unwrap();
    // The write went into the directory the safe walk reached, never
    // through the symlink.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(std::fs::read(moved.join("one")).unwrap(), b"1");
    // A new batch walks again: the symlink is refused.
    dirs.clear();
    let r = dirs.begin_file(&root, b"d/two", &e, hash(b"2"), &Options::default(), None);
    assert!(matches!(r, Err(Error::Symlink(_))), "{r:?}");
    // A kept directory removed meanwhile takes no new names: nothing is
    // written anywhere else.
    std::fs::remove_file(root.join("d")).unwrap();
    std::fs::create_dir(root.join("d")).unwrap();
    assert!(dirs.stat(&root, b"d/x").unwrap().is_none());
    std::fs::rename(root.join("d"), t.path().join("gone")).unwrap();
    std::fs::remove_dir(t.path().join("gone")).unwrap();
    std::fs::create_dir(root.join("d")).unwrap();
    let r = dirs.begin_file(&root, b"d/three", &e, hash(b"3"), &Options::default(), None);
    assert!(r.is_err(), "{r:?}");
    assert!(temps(&root).is_empty() && !root.join("d/three").exists());
}

#[test]
fn a_batch_sets_each_directory_mtime_once_to_the_last_wanted() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir(root.join("d")).unwrap();
    let e = entry(FileKind::File, 0o644);
    let mut dirs = Dirs::new();
    let mut touched = Vec::new();
    for (i, name) in [b"d/a", b"d/b"].iter().enumerate() {
        let t = MTIME + i as i64;
        let mut w = dirs.begin_file(root, *name, &e, hash(b"x"), &Options::default(), Some(t));
        let w2 = w.as_mut().unwrap();
        w2.write_all(b"x").unwrap();
        touched.push(w.unwrap().stage().unwrap().publish().unwrap().1);
    }
    touched.extend(dirs.delete(root, b"d/a", Some(MTIME + 7), None).unwrap());
    finish_dirs(touched).unwrap();
    let md = std::fs::metadata(root.join("d")).unwrap();
    assert_eq!(md.mtime() * 1_000_000_000 + md.mtime_nsec(), MTIME + 7);
    assert!(!root.join("d/a").exists() && root.join("d/b").exists());
}

#[test]
fn a_delete_whose_entry_changed_type_since_it_was_seen_still_removes_it() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::write(root.join("was_dir"), b"x").unwrap();
    std::fs::create_dir(root.join("was_file")).unwrap();
    std::fs::create_dir(root.join("full")).unwrap();
    std::fs::write(root.join("full/f"), b"x").unwrap();
    let mut dirs = Dirs::new();
    assert!(dirs.delete(root, b"was_dir", None, Some(FileKind::Dir)).unwrap().is_some());
    assert!(dirs.delete(root, b"was_file", None, Some(FileKind::File)).unwrap().is_some());
    assert!(!root.join("was_dir").exists() && !root.join("was_file").exists());
    let r = dirs.delete(root, b"full", None, Some(FileKind::File));
    assert!(matches!(r, Err(Error::NotEmpty(_))), "{r:?}");
    assert!(dirs.delete(root, b"gone", None, Some(FileKind::File)).unwrap().is_none());
}
