//! Tests of the scanner (kept apart so the module itself stays readable).

use super::*;
use crate::types::IgnoreFields;
use compare::below_pruned;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

struct K(Vec<u8>, Meta);
impl Known for K {
    fn path(&self) -> &[u8] {
        &self.0
    }
    fn meta(&self) -> &Meta {
        &self.1
    }
}

fn managed(_: &[u8]) -> Level {
    Level::Managed
}

fn setup() -> (tempfile::TempDir, Vec<Root>) {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("a/b")).unwrap();
    fs::write(d.path().join("a/f"), b"hello").unwrap();
    fs::write(d.path().join("a/b/g"), b"world").unwrap();
    std::os::unix::fs::symlink("f", d.path().join("a/l")).unwrap();
    let roots = vec![Root { real: d.path().join("a"), db: b"%p%".to_vec(), anchor: None }];
    (d, roots)
}

fn known_from(deltas: &[Delta]) -> Vec<K> {
    deltas
        .iter()
        .filter_map(|d| match d {
            Delta::New(o) | Delta::Changed(o, _, _) | Delta::Refreshed(o) => {
                Some(K(o.path.clone(), o.meta.clone()))
            }
            Delta::Deleted(..) => None,
        })
        .collect()
}

#[test]
fn walk_maps_to_db_form_and_reads_links() {
    let (_d, roots) = setup();
    let w = walk(&roots, true, managed);
    let names: Vec<_> =
        w.observed.iter().map(|o| String::from_utf8_lossy(&o.path).into_owned()).collect();
    assert_eq!(names, ["%p%", "%p%/b", "%p%/b/g", "%p%/f", "%p%/l"]);
    let l = w.observed.iter().find(|o| o.path == b"%p%/l").unwrap();
    assert_eq!(l.meta.target.as_deref(), Some(&b"f"[..]));
}

#[test]
fn second_compare_of_unchanged_tree_is_empty() {
    let (_d, roots) = setup();
    let (d1, e) =
        compare::<K, _>(walk(&roots, true, managed), &roots, &[], IgnoreFields::default(), |_| {
            true
        });
    assert!(e.is_empty());
    assert_eq!(d1.len(), 5);
    assert!(d1.iter().all(|d| matches!(d, Delta::New(_))));
    let f = d1.iter().find_map(|d| match d {
        Delta::New(o) if o.path == b"%p%/f" => Some(o.meta.hash),
        _ => None,
    });
    assert_eq!(f.unwrap().unwrap(), *blake3::hash(b"hello").as_bytes());
    let known = known_from(&d1);
    let (d2, _) =
        compare(walk(&roots, true, managed), &roots, &known, IgnoreFields::default(), |_| true);
    assert!(d2.is_empty(), "{d2:?}");
}

#[test]
fn content_change_delete_and_pruned_subtree() {
    let (d, roots) = setup();
    let (d1, _) =
        compare::<K, _>(walk(&roots, true, managed), &roots, &[], IgnoreFields::default(), |_| {
            true
        });
    let known = known_from(&d1);
    fs::write(d.path().join("a/f"), b"HELLO").unwrap();
    fs::remove_file(d.path().join("a/l")).unwrap();
    // b is now excluded: its indexed child must not count as deleted.
    let lvl = |p: &[u8]| if p == b"%p%/b" { Level::Ignore } else { Level::Managed };
    let (d2, _) = compare(walk(&roots, true, lvl), &roots, &known, IgnoreFields::default(), |p| {
        p != b"%p%/b"
    });
    let summary: Vec<String> = d2
        .iter()
        .map(|d| match d {
            Delta::New(o) => format!("new {}", String::from_utf8_lossy(&o.path)),
            Delta::Changed(o, c, _) => format!("{c} {}", String::from_utf8_lossy(&o.path)),
            Delta::Refreshed(o) => format!("refresh {}", String::from_utf8_lossy(&o.path)),
            Delta::Deleted(p, _) => format!("delete {}", String::from_utf8_lossy(p)),
        })
        .collect();
    assert!(summary.contains(&"delete %p%/l".to_string()), "{summary:?}");
    assert!(
        summary.iter().any(|s| s.starts_with("content") && s.ends_with("%p%/f")),
        "{summary:?}"
    );
    assert!(!summary.iter().any(|s| s.contains("%p%/b")), "{summary:?}");
}

#[test]
fn pruned_lookup_is_component_wise() {
    let mut p = HashSet::new();
    p.insert(b"%p%/a".to_vec());
    assert!(below_pruned(b"%p%/a/x/y", &p));
    assert!(!below_pruned(b"%p%/a.x/y", &p));
    assert!(!below_pruned(b"%p%/a", &p));
}

fn ident(p: &Path) -> Expected {
    let md = fs::symlink_metadata(p).unwrap();
    Expected { dev: Some(md.dev()), ino: md.ino() }
}

#[test]
fn open_checked_reads_the_file_that_was_seen() {
    let (d, _roots) = setup();
    let root = d.path().join("a");
    let mut s = String::new();
    open_checked(&root, b"/b/g", ident(&root.join("b/g"))).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "world");
    // A single-file root: the root itself, opened in its (trusted) parent.
    let f = root.join("f");
    let mut s = String::new();
    open_checked(&f, b"", ident(&f)).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
}

#[test]
fn open_checked_refuses_a_swapped_in_symlink_or_inode() {
    let (d, _roots) = setup();
    let root = d.path().join("a");
    let secret = d.path().join("secret");
    fs::write(&secret, b"root only").unwrap();
    let seen = ident(&root.join("f"));
    // The file the walk saw is replaced by a symlink to the secret.
    fs::remove_file(root.join("f")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("f")).unwrap();
    let e = open_checked(&root, b"/f", seen).unwrap_err();
    assert!(e.to_string().contains("now a symlink"), "{e}");
    // ... or by a hard link to it, or any other file: another inode.
    fs::remove_file(root.join("f")).unwrap();
    fs::hard_link(&secret, root.join("f")).unwrap();
    let e = open_checked(&root, b"/f", seen).unwrap_err();
    assert!(e.to_string().contains("now another file"), "{e}");
    // A directory above it swapped for a symlink to a directory outside.
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("g"), b"root only").unwrap();
    let g = ident(&outside.join("g"));
    fs::remove_dir_all(root.join("b")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
    let e = open_checked(&root, b"/b/g", g).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    // A single-file root that became a symlink.
    let single = d.path().join("single");
    fs::write(&single, b"x").unwrap();
    let seen = ident(&single);
    fs::remove_file(&single).unwrap();
    std::os::unix::fs::symlink(&secret, &single).unwrap();
    assert!(open_checked(&single, b"", seen).is_err());
    // A fifo: refused without hanging.
    let fifo = root.join("p");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = open_checked(&root, b"/p", ident(&fifo)).unwrap_err();
    assert!(e.to_string().contains("no longer a regular file"), "{e}");
}

#[test]
fn a_kept_directory_swapped_for_a_symlink_redirects_nothing() {
    let (d, _roots) = setup();
    let root = d.path().join("a");
    fs::write(root.join("b/h"), b"second").unwrap();
    let (g, h) = (ident(&root.join("b/g")), ident(&root.join("b/h")));
    let mut s = String::new();
    open_checked(&root, b"/b/g", g).unwrap().read_to_string(&mut s).unwrap();
    // The thread now keeps `b` open. It moves away and a symlink to a
    // directory outside takes its place, holding a file `h` of its own.
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("h"), b"root only").unwrap();
    fs::rename(root.join("b"), d.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
    // Asked for the outside file, the kept directory has no such inode and
    // the fresh walk meets the symlink: refused.
    let e = open_checked(&root, b"/b/h", ident(&outside.join("h"))).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    // Asked for the file the check saw, only that inode is ever read.
    let mut s = String::new();
    let r = open_checked(&root, b"/b/h", h).map(|mut f| f.read_to_string(&mut s));
    assert!(r.is_err() || s == "second", "{r:?} {s}");
    // A new directory at the same path (a deployment swapping trees) is
    // found through a fresh walk, not missed through the kept one.
    fs::remove_file(root.join("b")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    fs::write(root.join("b/g"), b"new").unwrap();
    let mut s = String::new();
    open_checked(&root, b"/b/g", ident(&root.join("b/g"))).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "new");
}

#[test]
fn compare_skips_a_file_swapped_after_the_walk() {
    let (d, roots) = setup();
    let secret = d.path().join("secret");
    fs::write(&secret, b"root only").unwrap();
    let w = walk(&roots, true, managed);
    fs::remove_file(d.path().join("a/f")).unwrap();
    std::os::unix::fs::symlink(&secret, d.path().join("a/f")).unwrap();
    let (deltas, errors) = compare::<K, _>(w, &roots, &[], IgnoreFields::default(), |_| true);
    assert!(!deltas.iter().any(|d| matches!(d, Delta::New(o) if o.path == b"%p%/f")));
    assert!(
        errors.iter().any(|e| e.path.ends_with("a/f") && e.message.contains("symlink")),
        "{errors:?}"
    );
    let secret_hash = *blake3::hash(b"root only").as_bytes();
    assert!(!deltas.iter().any(|d| match d {
        Delta::New(o) => o.meta.hash == Some(secret_hash),
        _ => false,
    }));
}

#[test]
fn walk_never_descends_into_a_symlinked_directory() {
    // (The race, a directory swapped after its lstat, is what opening it
    // relative to its parent with O_NOFOLLOW closes; this is the plain case.)
    let (d, roots) = setup();
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"x").unwrap();
    fs::remove_dir_all(d.path().join("a/b")).unwrap();
    std::os::unix::fs::symlink(&outside, d.path().join("a/b")).unwrap();
    let w = walk(&roots, true, managed);
    assert!(!w.observed.iter().any(|o| o.path.starts_with(b"%p%/b/")));
}

#[test]
fn a_scoped_walk_trusts_only_the_include_root() {
    // `csync -c ROOT/b/sub` after b became a symlink to a directory outside.
    let (d, _roots) = setup();
    let outside = d.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/secret"), b"x").unwrap();
    fs::remove_dir_all(d.path().join("a/b")).unwrap();
    std::os::unix::fs::symlink(&outside, d.path().join("a/b")).unwrap();
    let scoped = vec![Root {
        real: d.path().join("a/b/sub"),
        db: b"%p%/b/sub".to_vec(),
        anchor: Some(d.path().join("a")),
    }];
    let w = walk(&scoped, true, managed);
    assert!(w.observed.is_empty(), "{:?}", w.observed);
    assert_eq!(w.errors.len(), 1, "{:?}", w.errors);
    // A scoped walk of a real subdirectory works as before.
    fs::remove_file(d.path().join("a/b")).unwrap();
    fs::create_dir_all(d.path().join("a/b/sub")).unwrap();
    fs::write(d.path().join("a/b/sub/g"), b"world").unwrap();
    let (deltas, errors) = compare::<K, _>(
        walk(&scoped, true, managed),
        &scoped,
        &[],
        IgnoreFields::default(),
        |_| true,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let g = deltas.iter().find_map(|d| match d {
        Delta::New(o) if o.path == b"%p%/b/sub/g" => o.meta.hash,
        _ => None,
    });
    assert_eq!(g, Some(*blake3::hash(b"world").as_bytes()));
}
