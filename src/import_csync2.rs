//! `csync --import-csync2 [DB]`: reuse what a csync2 2.0 node knows, so a
//! cluster in sync under csync2 is in sync under csync with nothing pushed.
//!
//! csync2's database (SQLite, opened read-only: rolling back to csync2 stays
//! possible) has a `file` table (path → "checktxt": mtime, mode, owner, size,
//! no content hash) and a `dirty` table (path, peer still to push to). csync
//! needs content hashes, so the files are scanned here (as `-cI` would) and
//! each entry is then classified per peer:
//!
//! * csync2 saw it exactly as it is now and owed that peer nothing: the peer
//!   has this version. It is recorded as agreed with the peer, so the first
//!   push neither sends it nor compares listings (the peer counts as met).
//! * csync2 still owed it to that peer (a `dirty` row): marked dirty for the
//!   peer, forced when csync2's row was, as a `-m` mark.
//! * changed since csync2 last looked (or never seen by csync2): marked for
//!   every peer, as the next `csync2 -c` would have (never seen: as new, so a
//!   peer lacking it just receives it).
//! * in csync2's database but gone from disk: a deletion for the peers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::engine::{CheckOptions, Node};
use crate::index::{Mark, Scope};
use crate::types::{Base, Changes, FileKind, Meta};

/// One `dirty` row of csync2 (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csync2Dirty {
    /// DB-form path.
    pub path: Vec<u8>,
    /// csync2's `forced` column.
    pub forced: bool,
    /// The name this node used towards the peer.
    pub myname: String,
    /// The peer still to push to.
    pub peer: String,
}

/// What a csync2 database holds that csync can use.
#[derive(Debug, Default)]
pub struct Csync2Db {
    /// `file`: DB-form path → checktxt (decoded).
    pub files: HashMap<Vec<u8>, String>,
    /// `dirty`.
    pub dirty: Vec<Csync2Dirty>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Entries scanned on disk.
    pub scanned: usize,
    /// (entry, peer) pairs recorded as agreed: nothing to push.
    pub agreed: usize,
    /// Dirty marks taken over from csync2's `dirty` table.
    pub dirty: usize,
    /// Marks for entries changed (or new) since csync2's last check.
    pub changed: usize,
    /// Deletions since csync2's last check, marked for the peers.
    pub deleted: usize,
    /// Peers now counted as met.
    pub peers: Vec<String>,
    /// Entries marked with the peers' version unknown (csync2's pending
    /// rows, changes since its last check): where a peer already holds a
    /// different copy, they meet as conflicts.
    pub unknown_base: usize,
    /// Paths the scan could not read, with why.
    pub errors: Vec<String>,
}

/// `(path, version)` rows agreed with one peer.
type Agreed = Vec<(Vec<u8>, [u8; 32])>;

/// A mark to make, keyed by `(path, peer)`: `(myname, changes, forced, base)`.
type Marks = HashMap<(Vec<u8>, String), (String, Changes, bool, Base)>;

/// csync2's default database for `myname` (and `-C NAME`).
pub fn default_path(myname: &str, cfgname: Option<&str>) -> PathBuf {
    let file = match cfgname {
        Some(c) => format!("{myname}_{c}.db3"),
        None => format!("{myname}.db3"),
    };
    Path::new("/var/lib/csync2").join(file)
}

/// csync2's URL decoding: `%XX` is a byte, everything else passes.
pub fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn text(v: rusqlite::types::Value) -> Vec<u8> {
    use rusqlite::types::Value;
    match v {
        Value::Text(t) => url_decode(t.as_bytes()),
        Value::Blob(b) => url_decode(&b),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Real(f) => f.to_string().into_bytes(),
        Value::Null => Vec::new(),
    }
}

/// Reads a csync2 database, read-only (csync2 keeps working on it).
///
/// # Errors
/// A sentence when the file is missing, not SQLite, or not csync2's.
pub fn read(path: &Path) -> Result<Csync2Db, String> {
    if !path.is_file() {
        return Err(format!("{}: no such csync2 database", path.display()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |e: rusqlite::Error| {
        format!("{}: not a csync2 database (tables file and dirty): {e}", path.display())
    };
    let mut db = Csync2Db::default();
    let mut st = conn.prepare("SELECT filename, checktxt FROM file").map_err(bad)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(bad)?;
    for r in rows {
        let (f, c) = r.map_err(bad)?;
        db.files.insert(text(f), String::from_utf8_lossy(&text(c)).into_owned());
    }
    let mut st =
        conn.prepare("SELECT filename, forced, myname, peername FROM dirty").map_err(bad)?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, rusqlite::types::Value>(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(bad)?;
    for r in rows {
        let (f, forced, me, peer) = r.map_err(bad)?;
        let forced = !matches!(text(forced).as_slice(), b"" | b"0");
        db.dirty.push(Csync2Dirty {
            path: text(f),
            forced,
            myname: String::from_utf8_lossy(&text(me)).to_lowercase(),
            peer: String::from_utf8_lossy(&text(peer)).to_lowercase(),
        });
    }
    Ok(db)
}

/// True when csync2's `checktxt` describes `m` as it is: every field csync2
/// wrote (it leaves out ignored ones and directory mtimes) matches. An empty
/// symlink target is csync2's prefix bug (it never read it): not compared.
pub fn matches(checktxt: &str, m: &Meta) -> bool {
    let mut fields = checktxt.split(':');
    if fields.next() != Some("v1") {
        return false;
    }
    let type_bits = match m.kind {
        FileKind::File => 0o100000,
        FileKind::Dir => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::Fifo => 0o010000,
        FileKind::CharDevice => 0o020000,
        FileKind::BlockDevice => 0o060000,
        FileKind::Socket => 0o140000,
    };
    let kind = match m.kind {
        FileKind::File => "reg",
        FileKind::Dir => "dir",
        FileKind::Symlink => "lnk",
        FileKind::Fifo => "fifo",
        FileKind::CharDevice => "chr",
        FileKind::BlockDevice => "blk",
        FileKind::Socket => "sock",
    };
    let mut saw_type = false;
    for f in fields {
        let Some((k, v)) = f.split_once('=') else { return false };
        let ok = match k {
            "mtime" => v.parse::<i64>().is_ok_and(|t| t == m.mtime_ns.div_euclid(1_000_000_000)),
            "mode" => v.parse::<u32>().is_ok_and(|x| x == type_bits | m.mode),
            "uid" => v.parse::<u32>().is_ok_and(|x| x == m.uid),
            "gid" => v.parse::<u32>().is_ok_and(|x| x == m.gid),
            "type" => {
                saw_type = true;
                v == kind
            }
            "size" => v.parse::<u64>().is_ok_and(|x| x == m.size),
            "dev" => v.parse::<u64>().is_ok_and(|x| x == m.rdev),
            "target" => {
                v.is_empty() || m.target.as_deref() == Some(url_decode(v.as_bytes()).as_slice())
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    saw_type
}

/// Imports `db` into `node`'s index: scans the files (recording them without
/// marks, as `-cI`), then records per peer what csync2 knew (see the module
/// documentation). Refused on an index that has synced with a peer already:
/// its knowledge is newer than csync2's.
///
/// # Errors
/// A sentence; the index is unchanged when the refusal comes before the scan.
pub fn import(node: &mut Node, db: &Csync2Db) -> Result<ImportReport, String> {
    let synced = node.index.synced_peers().map_err(|e| e.to_string())?;
    if !synced.is_empty() {
        return Err(format!(
            "this index ({}) has synced with {} already (or was imported before): its state \
             is newer than csync2's; import into a new index (move this one away first)",
            node.index.path().display(),
            synced.join(", ")
        ));
    }
    let mut report = ImportReport::default();
    let check = node
        .check(&CheckOptions { paths: Vec::new(), recursive: true, init: true })
        .map_err(|e| e.to_string())?;
    report.scanned = check.seen;
    report.errors =
        check.errors.iter().map(|e| format!("{}: {}", e.path.display(), e.message)).collect();
    let local = node.index.files(Scope::All).map_err(|e| e.to_string())?;
    let ignore = node.ignore_fields();
    let owed: HashMap<(&[u8], &str), &Csync2Dirty> =
        db.dirty.iter().map(|d| ((d.path.as_slice(), d.peer.as_str()), d)).collect();
    let here: HashSet<&[u8]> = local.iter().map(|f| f.path.as_slice()).collect();
    let mut agreed: HashMap<String, Agreed> = HashMap::new();
    let mut marks: Marks = HashMap::new();
    let mut peers: Vec<String> = Vec::new();
    for ag in &node.groups {
        for (peer, me) in &ag.push_to {
            if !peers.contains(peer) {
                peers.push(peer.clone());
            }
            for f in local.iter().filter(|f| ag.matcher.is_managed(&f.path)) {
                let key = (f.path.clone(), peer.clone());
                if let Some(d) = owed.get(&(f.path.as_slice(), peer.as_str())) {
                    marks.entry(key).or_insert_with(|| {
                        report.dirty += 1;
                        (me.clone(), Changes::MARKED, d.forced, Base::Unknown)
                    });
                    continue;
                }
                match db.files.get(&f.path) {
                    Some(ck) if matches(ck, &f.meta) => agreed
                        .entry(peer.clone())
                        .or_default()
                        .push((f.path.clone(), crate::engine::wire::version(&f.meta, ignore))),
                    seen => {
                        let (changes, base) = match seen {
                            None => (Changes::NEW, Base::Absent),
                            Some(_) => (Changes::MARKED, Base::Unknown),
                        };
                        marks.entry(key).or_insert_with(|| {
                            report.changed += 1;
                            (me.clone(), changes, false, base)
                        });
                    }
                }
            }
            // Known to csync2, gone from disk: a deletion still to push.
            let gone = db
                .files
                .keys()
                .chain(db.dirty.iter().filter(|d| d.peer == *peer).map(|d| &d.path))
                .filter(|p| !here.contains(p.as_slice()) && ag.matcher.is_managed(p));
            for p in gone {
                let forced = owed.get(&(p.as_slice(), peer.as_str())).is_some_and(|d| d.forced);
                marks.entry((p.clone(), peer.clone())).or_insert_with(|| {
                    report.deleted += 1;
                    (me.clone(), Changes::DELETE, forced, Base::Unknown)
                });
            }
        }
    }
    let unknown: HashSet<&[u8]> =
        marks.iter().filter(|(_, m)| m.3 == Base::Unknown).map(|(k, _)| k.0.as_slice()).collect();
    report.unknown_base = unknown.len();
    for (peer, rows) in &agreed {
        report.agreed += rows.len();
        node.index.set_peer_versions(peer, rows).map_err(|e| e.to_string())?;
    }
    let list: Vec<Mark<'_>> = marks
        .iter()
        .map(|((path, peer), (me, changes, forced, base))| Mark {
            path,
            peer,
            myname: me,
            changes: *changes,
            forced: *forced,
            base: *base,
        })
        .collect();
    node.index.mark(&list).map_err(|e| e.to_string())?;
    peers.sort();
    for p in &peers {
        node.index.set_peer_synced(p).map_err(|e| e.to_string())?;
    }
    report.peers = peers;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: FileKind) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 6,
            mtime_ns: 1_795_313_829_123_456_789,
            ino: 1,
            ctime_ns: 0,
            rdev: 0,
            target: None,
            hash: None,
        }
    }

    #[test]
    fn decodes_csync2_url_encoding() {
        assert_eq!(url_decode(b"%25data%25/a%20b%3A"), b"%data%/a b:");
        // A lone or broken escape passes as it is.
        assert_eq!(url_decode(b"50%"), b"50%");
        assert_eq!(url_decode(b"%zz"), b"%zz");
    }

    #[test]
    fn checktxt_matches_only_the_same_state() {
        let m = meta(FileKind::File);
        let ck = "v1:mtime=1795313829:mode=33188:uid=0:gid=0:type=reg:size=6";
        assert!(matches(ck, &m));
        assert!(!matches(&ck.replace("size=6", "size=7"), &m));
        assert!(!matches(&ck.replace("1795313829", "1795313830"), &m));
        assert!(!matches(&ck.replace("33188", "33261"), &m));
        // `ignore uid gid mod`: the fields are absent and not compared.
        assert!(matches("v1:mtime=1795313829:type=reg:size=6", &m));
        assert!(!matches("v2:mtime=1795313829:type=reg:size=6", &m));
        assert!(!matches("v1:mtime=1795313829", &m), "no type: not csync2's");
        let mut d = meta(FileKind::Dir);
        d.mode = 0o755;
        assert!(matches("v1:mode=16877:uid=0:gid=0:type=dir", &d));
        assert!(!matches("v1:mode=16877:uid=0:gid=0:type=dir", &m));
        let mut l = meta(FileKind::Symlink);
        l.mode = 0o777;
        l.target = Some(b"a b".to_vec());
        assert!(matches("v1:mode=41471:uid=0:gid=0:type=lnk:target=a%20b", &l));
        assert!(matches("v1:mode=41471:uid=0:gid=0:type=lnk:target=", &l));
        assert!(!matches("v1:mode=41471:uid=0:gid=0:type=lnk:target=c", &l));
    }

    #[test]
    fn reads_csync2_schema_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n1.db3");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE file (filename, checktxt, UNIQUE (filename) ON CONFLICT REPLACE);
             CREATE TABLE dirty (filename, forced, myname, peername, UNIQUE (filename, peername) ON CONFLICT IGNORE);
             INSERT INTO file VALUES ('%25data%25/a', 'v1%3Amtime=1%3Amode=33188%3Auid=0%3Agid=0%3Atype=reg%3Asize=3');
             INSERT INTO dirty VALUES ('%25data%25/a', 1, 'N1', 'n2');",
        )
        .unwrap();
        drop(c);
        let before = std::fs::read(&p).unwrap();
        let db = read(&p).unwrap();
        assert_eq!(
            db.files.get(b"%data%/a".as_slice()).map(String::as_str),
            Some("v1:mtime=1:mode=33188:uid=0:gid=0:type=reg:size=3")
        );
        assert_eq!(
            db.dirty,
            vec![Csync2Dirty {
                path: b"%data%/a".to_vec(),
                forced: true,
                myname: "n1".into(),
                peer: "n2".into()
            }]
        );
        assert_eq!(std::fs::read(&p).unwrap(), before, "the csync2 database is never written");
        let other = dir.path().join("x.db3");
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (a)").unwrap();
        assert!(read(&other).unwrap_err().contains("not a csync2 database"));
        assert!(read(&dir.path().join("none.db3")).unwrap_err().contains("no such"));
    }

    /// The classification end to end, on a node built from a config and an
    /// in-memory index (runs where csync2 is not installed, unlike the
    /// integration test with a real csync2 cluster).
    #[test]
    fn import_agrees_marks_and_deletes_as_csync2_knew() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        for f in ["same", "stale", "d/owed"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::write(
            dir.path().join("csync2.key"),
            "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr\n",
        )
        .unwrap();
        let text = format!(
            "group g {{ host n1 n2 n3; key csync2.key; include %p%; }}\n\
             prefix p {{ on n1: {}; }}\n",
            root.display()
        );
        let opts = crate::config::LoadOptions {
            myname: "n1".into(),
            sysdir: dir.path().into(),
            active_groups: None,
        };
        let config = crate::config::load_str("csync2.cfg", &text, &opts).unwrap();
        let mut node = Node::new(config, crate::index::Index::open_in_memory().unwrap()).unwrap();
        let ck = |rel: &str| {
            let md = std::fs::symlink_metadata(root.join(rel)).unwrap();
            if md.is_dir() {
                format!("v1:mode={}:uid={}:gid={}:type=dir", md.mode(), md.uid(), md.gid())
            } else {
                format!(
                    "v1:mtime={}:mode={}:uid={}:gid={}:type=reg:size={}",
                    md.mtime(),
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.size()
                )
            }
        };
        let mut db = Csync2Db::default();
        for rel in ["", "/d", "/same", "/d/owed"] {
            db.files.insert(format!("%p%{rel}").into_bytes(), ck(rel.trim_start_matches('/')));
        }
        db.files.insert(b"%p%/stale".to_vec(), ck("stale").replace("size=5", "size=4"));
        db.files.insert(b"%p%/gone".to_vec(), ck("same"));
        db.dirty.push(Csync2Dirty {
            path: b"%p%/d/owed".to_vec(),
            forced: true,
            myname: "n1".into(),
            peer: "n2".into(),
        });
        let r = import(&mut node, &db).unwrap();
        assert_eq!(r.peers, ["n2", "n3"]);
        assert_eq!((r.dirty, r.changed, r.deleted), (1, 2, 2), "{r:?}");
        // %p%, d, same for both peers; d/owed for n3 only.
        assert_eq!(r.agreed, 7, "{r:?}");
        let mut rows: Vec<(String, String, bool, Changes)> = node
            .index
            .dirty()
            .unwrap()
            .into_iter()
            .map(|d| (String::from_utf8(d.path).unwrap(), d.peer, d.forced, d.changes))
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let want = |p: &str, peer: &str, forced, c| (p.to_string(), peer.to_string(), forced, c);
        assert_eq!(
            rows,
            vec![
                want("%p%/d/owed", "n2", true, Changes::MARKED),
                want("%p%/gone", "n2", false, Changes::DELETE),
                want("%p%/gone", "n3", false, Changes::DELETE),
                want("%p%/stale", "n2", false, Changes::MARKED),
                want("%p%/stale", "n3", false, Changes::MARKED),
            ]
        );
        let same = node.index.file(b"%p%/same").unwrap().unwrap();
        let v = crate::engine::wire::version(&same, node.ignore_fields());
        assert_eq!(node.index.peer_version(b"%p%/same", "n3").unwrap(), Some(Some(v)));
        assert_eq!(node.index.synced_peers().unwrap(), ["n2", "n3"]);
        assert!(node.new_peers(&[]).unwrap().is_empty(), "first contact would list the peers");
        let again = import(&mut node, &db).unwrap_err();
        assert!(again.contains("has synced with n2, n3"), "{again}");
    }
}
