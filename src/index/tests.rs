//! Tests of `index/mod.rs` (kept apart so the module itself stays readable).

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
        upserts: vec![file("%p%/a", 1), file("%p%/a.txt", 2), file("%p%/a/b", 3), file("%p%", 0)],
        ..Batch::default()
    };
    idx.apply(&batch).unwrap();
    let all: Vec<_> = idx.files(Scope::All).unwrap();
    let names: Vec<_> = all.iter().map(|f| String::from_utf8_lossy(&f.path).into_owned()).collect();
    assert_eq!(names, ["%p%", "%p%/a", "%p%/a.txt", "%p%/a/b"]);
    assert_eq!(all[1].meta, meta(1));
    let sub = idx.files(Scope::Path { path: b"%p%/a", recursive: true }).unwrap();
    let names: Vec<_> = sub.iter().map(|f| String::from_utf8_lossy(&f.path).into_owned()).collect();
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
fn a_delete_dates_its_mark_and_other_changes_keep_the_first_time() {
    let mut idx = Index::open_in_memory().unwrap();
    let m = |changes| Mark {
        path: b"/x",
        peer: "n2",
        myname: "n1",
        changes,
        forced: false,
        base: Base::Absent,
    };
    idx.mark(&[m(Changes::CONTENT)]).unwrap();
    idx.conn.execute("UPDATE dirty SET marked_at = 5", []).unwrap();
    idx.mark(&[m(Changes::MODE)]).unwrap();
    assert_eq!(idx.marked_at(b"/x", "n2").unwrap(), Some(5), "the first change's time");
    idx.mark(&[m(Changes::DELETE)]).unwrap();
    let at = idx.marked_at(b"/x", "n2").unwrap().unwrap();
    assert!(at >= unix_now() - 5, "dated when the delete was seen: {at}");
    assert_eq!(idx.marked_at(b"/x", "n3").unwrap(), None);
}

#[test]
fn below_is_component_wise() {
    assert!(is_below(b"/a/b", b"/a"));
    assert!(!is_below(b"/ab", b"/a"));
    assert!(!is_below(b"/a", b"/a"));
    assert!(is_below(b"/a", b"/"));
}

#[test]
fn several_paths_are_looked_up_together() {
    let mut idx = Index::open_in_memory().unwrap();
    idx.apply(&Batch { upserts: vec![file("/a", 1), file("/b", 2)], ..Batch::default() }).unwrap();
    let seen =
        Pushed { path: b"/a".to_vec(), peer: "p".into(), clear_gen: None, version: Some(None) };
    idx.record_pushed(&[seen]).unwrap();
    let got =
        idx.look_up(&[b"/b".as_slice(), b"/none", b"/a"], "p", &[b"/a".as_slice(), b"/b"]).unwrap();
    let files = vec![
        (b"/b".to_vec(), Some(meta(2))),
        (b"/none".to_vec(), None),
        (b"/a".to_vec(), Some(meta(1))),
    ];
    assert_eq!(got.files, files);
    assert_eq!(got.versions, vec![(b"/a".to_vec(), Some(None)), (b"/b".to_vec(), None)]);
    // Outside any transaction afterwards: a write goes through.
    idx.apply(&Batch { upserts: vec![file("/c", 3)], ..Batch::default() }).unwrap();
}
