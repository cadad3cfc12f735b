//! Issue 13, watch mode: three nodes running `csync -ii --watch` on
//! loopback; every change made on one node's disk reaches the others by
//! itself, once per burst, without echo, and survives a peer being down.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::net_util::{Daemon, Net, wait_until};

const NODES: [&str; 3] = ["n1", "n2", "n3"];

const CFG: &str = r#"
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@;
    key csync2.key;
    include %p%;
    include %e%/single.conf;
    exclude %p%/skip;
    exclude *~;
    auto younger;
    action {
        pattern %p%/burst/*;
        exec "echo run >> @OUT@";
        do-local;
    }
}
prefix p { on n1: @ROOT_n1@/tree; on n2: @ROOT_n2@/tree; on n3: @ROOT_n3@/tree; }
prefix e { on n1: @ROOT_n1@/etc; on n2: @ROOT_n2@/etc; on n3: @ROOT_n3@/etc; }
"#;

/// How long a change may take to show up on the peers before a test fails
/// (the target is well under a second; this is headroom for a loaded CI).
const LIMIT: Duration = Duration::from_secs(10);

struct Watching {
    net: Net,
    daemons: BTreeMap<&'static str, Daemon>,
    extra: Vec<&'static str>,
}

impl Watching {
    fn new(test: &str) -> Watching {
        Watching::with(test, &[])
    }

    /// With `extra` arguments for every node's `csync -ii --watch`.
    fn with(test: &str, extra: &[&'static str]) -> Watching {
        let net = Net::new(test, &NODES, "");
        for n in NODES {
            let out = net.path(&format!("actions-{n}.log"));
            net.write_config_for(n, &CFG.replace("@OUT@", out.to_str().unwrap()));
            fs::create_dir_all(net.root(n).join("tree")).unwrap();
            fs::create_dir_all(net.root(n).join("etc")).unwrap();
            // A root that becomes empty holds its deletes back (a guard
            // against a lost mount): every tree keeps one file.
            fs::write(net.root(n).join("tree/keep"), b"keep").unwrap();
        }
        let mut w = Watching { net, daemons: BTreeMap::new(), extra: extra.to_vec() };
        for n in NODES {
            w.start(n);
        }
        w
    }

    fn start(&mut self, n: &'static str) {
        let mut args = vec!["--watch", "--timeout", "2"];
        args.extend(&self.extra);
        let d = self.net.daemon(n, &args);
        d.wait_log("directories watched");
        self.daemons.insert(n, d);
    }

    fn stop(&mut self, n: &str) {
        self.daemons.remove(n);
    }

    fn path(&self, n: &str, rel: &str) -> PathBuf {
        self.net.root(n).join(rel)
    }

    fn write(&self, n: &str, rel: &str, data: &[u8]) {
        let p = self.path(n, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn read(&self, n: &str, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.path(n, rel)).ok()
    }

    /// Waits until `rel` holds `want` (`None`: absent) on every other node;
    /// returns how long it took.
    fn spread(&self, from: &str, rel: &str, want: Option<&[u8]>) -> Duration {
        let t = Instant::now();
        let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != from).collect();
        wait_until(LIMIT, || {
            others.iter().all(|n| self.read(n, rel).as_deref() == want).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{rel} from {from} did not reach the peers within {LIMIT:?}: {:?}\n{}",
                others.iter().map(|n| self.read(n, rel).map(|b| b.len())).collect::<Vec<_>>(),
                self.logs()
            )
        });
        t.elapsed()
    }

    fn logs(&self) -> String {
        self.daemons.iter().map(|(n, d)| format!("--- {n}:\n{}", d.log_text())).collect()
    }

    fn actions(&self, n: &str) -> usize {
        fs::read_to_string(self.net.path(&format!("actions-{n}.log")))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn dirty(&self, n: &str) -> i64 {
        let db = self.net.path(&format!("db-{n}")).join(format!("{n}.db"));
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row("SELECT count(*) FROM dirty", [], |r| r.get(0)).unwrap()
    }

    fn dirty_rows(&self, n: &str) -> Vec<(String, String)> {
        let db = self.net.path(&format!("db-{n}")).join(format!("{n}.db"));
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c.prepare("SELECT path, peer FROM dirty").unwrap();
        st.query_map([], |r| {
            Ok((String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned(), r.get(1)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    fn tree(&self, n: &str) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        walk(&self.path(n, "tree"), Path::new(""), &mut out);
        out
    }
}

fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let r = rel.join(&name);
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.insert(r.clone(), None);
            walk(&e.path(), &r, out);
        } else {
            out.insert(r, fs::read(e.path()).ok());
        }
    }
}

#[test]
fn writes_deletes_renames_trees_and_single_files_spread_by_themselves() {
    let w = Watching::new("writes_deletes_renames_trees_and_single_files_spread_by_themselves");
    let mut took = Vec::new();
    // A write.
    w.write("n1", "tree/a.txt", b"hello");
    took.push(w.spread("n1", "tree/a.txt", Some(b"hello")));
    // An edit on another node.
    w.write("n2", "tree/a.txt", b"hello again");
    took.push(w.spread("n2", "tree/a.txt", Some(b"hello again")));
    // A rename.
    fs::rename(w.path("n3", "tree/a.txt"), w.path("n3", "tree/b.txt")).unwrap();
    took.push(w.spread("n3", "tree/b.txt", Some(b"hello again")));
    w.spread("n3", "tree/a.txt", None);
    // A delete.
    fs::remove_file(w.path("n1", "tree/b.txt")).unwrap();
    took.push(w.spread("n1", "tree/b.txt", None));
    // A new directory tree, built before its directories could be watched:
    // `mkdir -p` then files at every level, and a tree moved in whole.
    fs::create_dir_all(w.path("n2", "tree/d1/d2/d3")).unwrap();
    for rel in ["tree/d1/x", "tree/d1/d2/y", "tree/d1/d2/d3/z"] {
        w.write("n2", rel, rel.as_bytes());
    }
    for rel in ["tree/d1/x", "tree/d1/d2/y", "tree/d1/d2/d3/z"] {
        took.push(w.spread("n2", rel, Some(rel.as_bytes())));
    }
    let outside = w.net.path("outside");
    fs::create_dir_all(outside.join("m/n")).unwrap();
    fs::write(outside.join("m/n/deep"), b"moved in").unwrap();
    fs::rename(outside.join("m"), w.path("n3", "tree/m")).unwrap();
    took.push(w.spread("n3", "tree/m/n/deep", Some(b"moved in")));
    // A directory renamed: its files appear under the new name, and a file
    // written in it afterwards (through the watch under its new name) too.
    fs::rename(w.path("n1", "tree/d1"), w.path("n1", "tree/e1")).unwrap();
    took.push(w.spread("n1", "tree/e1/d2/d3/z", Some(b"tree/d1/d2/d3/z")));
    w.spread("n1", "tree/d1/x", None);
    w.write("n1", "tree/e1/d2/later", b"later");
    took.push(w.spread("n1", "tree/e1/d2/later", Some(b"later")));
    // A single-file root: its directory's other files are not managed.
    w.write("n2", "etc/other.conf", b"not managed");
    w.write("n2", "etc/single.conf", b"managed");
    took.push(w.spread("n2", "etc/single.conf", Some(b"managed")));
    assert_eq!(w.read("n1", "etc/other.conf"), None);
    fs::remove_file(w.path("n2", "etc/single.conf")).unwrap();
    took.push(w.spread("n2", "etc/single.conf", None));
    // Excluded paths stay where they are.
    w.write("n3", "tree/skip/private", b"mine");
    w.write("n3", "tree/notes~", b"mine");
    w.write("n3", "tree/after-excluded", b"x");
    w.spread("n3", "tree/after-excluded", Some(b"x"));
    assert_eq!(w.read("n1", "tree/skip/private"), None);
    assert_eq!(w.read("n1", "tree/notes~"), None);
    took.sort();
    eprintln!("latencies: {took:?}");
}

#[test]
fn a_burst_of_a_thousand_files_is_one_run_on_every_node() {
    // A burst ends after 10 quiet periods at the latest; writing 1,000 files
    // on a loaded 2-core CI runner can take longer than the default's 1 s.
    let w = Watching::with(
        "a_burst_of_a_thousand_files_is_one_run_on_every_node",
        &["--watch-delay", "500"],
    );
    fs::create_dir_all(w.path("n1", "tree/burst")).unwrap();
    wait_until(LIMIT, || NODES.iter().all(|n| w.path(n, "tree/burst").is_dir()).then_some(()))
        .expect("the directory spread");
    let dir = w.path("n1", "tree/burst");
    for i in 0..1000 {
        fs::write(dir.join(format!("f{i:04}")), format!("file {i}")).unwrap();
    }
    w.spread("n1", "tree/burst/f0999", Some(b"file 999"));
    wait_until(LIMIT, || {
        NODES
            .iter()
            .all(|n| w.read(n, "tree/burst/f0000").is_some() && w.actions(n) >= 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("actions did not run everywhere\n{}", w.logs()));
    for n in NODES {
        let files = fs::read_dir(w.path(n, "tree/burst")).unwrap().count();
        assert_eq!(files, 1000, "{n}");
    }
    // One more change, to a file of the same action: its run comes after
    // the burst's, so counting now sees every run the burst caused.
    w.write("n1", "tree/burst/zz-last", b"last");
    w.spread("n1", "tree/burst/zz-last", Some(b"last"));
    wait_until(LIMIT, || NODES.iter().all(|n| w.actions(n) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("the last change's actions did not run\n{}", w.logs()));
    for n in NODES {
        assert_eq!(
            w.actions(n),
            2,
            "{n}: one run for the burst, one for the last file\n{}",
            w.logs()
        );
    }
}

#[test]
fn what_a_node_receives_is_not_pushed_back() {
    let w = Watching::new("what_a_node_receives_is_not_pushed_back");
    w.write("n1", "tree/from-n1", b"from n1");
    w.spread("n1", "tree/from-n1", Some(b"from n1"));
    // A later local change on each receiver: its run comes after whatever
    // the received file's events caused, and must be the only thing they
    // found changed.
    w.write("n2", "tree/from-n2", b"from n2");
    w.write("n3", "tree/from-n3", b"from n3");
    w.spread("n2", "tree/from-n2", Some(b"from n2"));
    w.spread("n3", "tree/from-n3", Some(b"from n3"));
    for n in NODES {
        wait_until(LIMIT, || (w.dirty(n) == 0).then_some(()))
            .unwrap_or_else(|| panic!("{n} keeps dirty marks\n{}", w.logs()));
    }
    for n in ["n2", "n3"] {
        let log = w.daemons[n].log_text();
        // Burst runs that found changes: only the local write.
        let changed: Vec<&str> =
            log.lines().filter(|l| l.contains(" paths: ") && !l.contains(": 0 changed")).collect();
        assert!(
            changed.len() == 1 && changed[0].contains(": 1 changed,"),
            "{n} found more than its own change:\n{log}"
        );
    }
    // And a check finds nothing to do on the receivers.
    for n in ["n2", "n3"] {
        let out = w.net.csync(n).args(["-cv"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(" 0 changed"), "{n}: {err}");
    }
}

#[test]
fn a_peer_that_was_down_gets_the_changes_when_it_comes_back() {
    let mut w = Watching::new("a_peer_that_was_down_gets_the_changes_when_it_comes_back");
    // First contacts done (a node started before its peers retries them).
    wait_until(Duration::from_secs(30), || NODES.iter().all(|n| w.dirty(n) == 0).then_some(()))
        .unwrap_or_else(|| {
            let d: Vec<_> = NODES.iter().map(|n| w.dirty_rows(n)).collect();
            panic!("first contacts never completed: {d:?}\n{}", w.logs())
        });
    w.stop("n3");
    w.write("n1", "tree/while-down", b"n3 was down");
    wait_until(LIMIT, || {
        (w.read("n2", "tree/while-down").as_deref() == Some(b"n3 was down")).then_some(())
    })
    .expect("n2 got it");
    assert!(w.dirty("n1") > 0, "n1 keeps n3's mark");
    // n3 comes back (without watching, so only n1's retry can bring it);
    // nothing changes anywhere meanwhile.
    let d = w.net.daemon("n3", &["--timeout", "2"]);
    w.daemons.insert("n3", d);
    wait_until(Duration::from_secs(30), || {
        (w.read("n3", "tree/while-down").as_deref() == Some(b"n3 was down")).then_some(())
    })
    .unwrap_or_else(|| panic!("n3 never got the change\n{}", w.logs()));
    wait_until(LIMIT, || (w.dirty("n1") == 0).then_some(()))
        .unwrap_or_else(|| panic!("n1 keeps dirty marks: {:?}\n{}", w.dirty_rows("n1"), w.logs()));
}

#[test]
fn two_nodes_editing_the_same_file_at_once_converge_to_the_younger() {
    let w = Watching::new("two_nodes_editing_the_same_file_at_once_converge_to_the_younger");
    w.write("n1", "tree/c.txt", b"base");
    w.spread("n1", "tree/c.txt", Some(b"base"));
    // Both within the same second; n2's is the younger by half a second.
    let t = std::time::SystemTime::now();
    for (n, data, at) in [("n1", "from n1", t - Duration::from_millis(500)), ("n2", "from n2", t)] {
        let mut f = fs::File::create(w.path(n, "tree/c.txt")).unwrap();
        f.write_all(data.as_bytes()).unwrap();
        f.set_modified(at).unwrap();
    }
    wait_until(LIMIT, || {
        NODES.iter().all(|n| w.read(n, "tree/c.txt").as_deref() == Some(b"from n2")).then_some(())
    })
    .unwrap_or_else(|| {
        let v: Vec<_> = NODES.iter().map(|n| w.read(n, "tree/c.txt")).collect();
        panic!("no convergence to the younger version: {v:?}\n{}", w.logs())
    });
    let kept = crate::sync::find_conflict_copy(&w.net.path("db-n1"), "c.txt.conflict-")
        .unwrap_or_else(|| panic!("n1 did not keep its losing version\n{}", w.logs()));
    assert_eq!(fs::read(kept).unwrap(), b"from n1");
    for n in NODES {
        wait_until(LIMIT, || (w.dirty(n) == 0).then_some(()))
            .unwrap_or_else(|| panic!("{n} keeps dirty marks\n{}", w.logs()));
    }
}

#[test]
fn watch_alone_pushes_without_listening_and_with_dash_i_is_refused() {
    // n1 only pushes (`csync --watch`, no listener); n2 and n3 only listen.
    let net = Net::new("watch_alone_pushes_without_listening", &NODES, "");
    for n in NODES {
        let out = net.path(&format!("actions-{n}.log"));
        net.write_config_for(n, &CFG.replace("@OUT@", out.to_str().unwrap()));
        fs::create_dir_all(net.root(n).join("tree")).unwrap();
        fs::write(net.root(n).join("tree/keep"), b"keep").unwrap();
    }
    let _n2 = net.daemon("n2", &["--timeout", "2"]);
    let _n3 = net.daemon("n3", &["--timeout", "2"]);
    let log = net.path("watch-n1.log");
    let mut child = net
        .csync_std("n1")
        .args(["--watch", "--timeout", "2"])
        .stdin(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let watching = wait_until(LIMIT, || {
        fs::read_to_string(&log).unwrap_or_default().contains("directories watched").then_some(())
    });
    fs::write(net.root("n1").join("tree/pushed"), b"by a push-only node").unwrap();
    let spread = wait_until(LIMIT, || {
        ["n2", "n3"]
            .iter()
            .all(|n| {
                fs::read(net.root(n).join("tree/pushed")).ok().as_deref()
                    == Some(b"by a push-only node")
            })
            .then_some(())
    });
    let nobody_listens = std::net::TcpStream::connect((net.addr("n1").as_str(), net.port)).is_err();
    let _ = child.kill();
    let _ = child.wait();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(watching.is_some() && spread.is_some(), "csync --watch on n1:\n{text}");
    assert!(nobody_listens, "csync --watch alone must not listen");
    // -i serves one connection on stdin: there is nothing to watch beside it.
    let out = net.csync("n1").args(["-i", "--watch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch goes with -ii"));
}

/// Content that says whether it is whole: `len:hash:` then the body.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:{}:", body.len(), blake3::hash(body).to_hex()).into_bytes();
    out.extend_from_slice(body);
    out
}

fn whole(data: &[u8]) -> bool {
    let text = data;
    let Some(a) = text.iter().position(|&b| b == b':') else { return false };
    let Some(len) = std::str::from_utf8(&text[..a]).ok().and_then(|s| s.parse::<usize>().ok())
    else {
        return false;
    };
    let rest = &text[a + 1..];
    let Some(b) = rest.iter().position(|&b| b == b':') else { return false };
    let body = &rest[b + 1..];
    body.len() == len && blake3::hash(body).to_hex().as_bytes() == &rest[..b]
}

/// A tiny deterministic generator (no dependency for it).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn churn_on_every_node_converges_and_nothing_is_seen_half_written() {
    churn("churn_on_every_node_converges_and_nothing_is_seen_half_written", false);
}

/// The same churn with all three nodes replacing and deleting the *same*
/// shared files: concurrent sessions settling one path both ways. Known to
/// end, now and then, with every index clean and the trees different (a
/// file present on two nodes, deleted on the third; or two versions, each
/// node holding the other's): an engine matter (conflict settling under
/// concurrent sessions), not the watcher's; kept here as the reproduction.
/// The sequential cases behind it are `sync_conflicts` tests now (a winner
/// held by a node that did not make it; a delete dated alike by both
/// sides); under this churn about half the runs still end split.
#[test]
#[ignore = "concurrent same-path conflicts do not always converge (engine)"]
fn churn_with_same_file_conflicts_converges() {
    churn("churn_with_same_file_conflicts_converges", true);
}

fn churn(test: &str, conflicts: bool) {
    let w = Watching::new(test);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let roots: Vec<PathBuf> = NODES.iter().map(|n| w.path(n, "tree")).collect();
    // Each node rewrites files in place, renames and deletes in its own
    // area (`own-nI`), and replaces (by rename) and deletes its files in
    // `shared`. An observer reads, on every node, what only peers write
    // there: their areas, and `shared` (written only by rename, so never
    // half-written by its local writer either). Same-file conflicts are
    // the next test's, one at a time: under this churn, concurrent sessions
    // settling the same path both ways do not always converge yet (see the
    // issue).
    let observer = {
        let (roots, stop) = (roots.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (j, r) in roots.iter().enumerate() {
                    let mut files = BTreeMap::new();
                    walk(r, Path::new(""), &mut files);
                    for (p, data) in files {
                        let Some(d) = data else { continue };
                        let name = p.file_name().unwrap().to_string_lossy();
                        // Own writes, the seed file, temporaries (csync's
                        // and the writers'): not final paths from a peer.
                        if p.starts_with(format!("own-n{}", j + 1))
                            || p == Path::new("keep")
                            || name.starts_with(".csync.")
                            || name.ends_with('~')
                        {
                            continue;
                        }
                        reads += 1;
                        if !whole(&d) && bad.len() < 20 {
                            bad.push(format!("{}: {} bytes", r.join(&p).display(), d.len()));
                        }
                    }
                }
            }
            (bad, reads)
        })
    };
    let writers: Vec<_> = roots
        .iter()
        .enumerate()
        .map(|(i, root)| {
            let root = root.clone();
            let shared_name = move |i: usize, rng: &mut Rng| {
                if conflicts {
                    format!("s{}", rng.below(8))
                } else {
                    format!("s{i}-{}", rng.below(8))
                }
            };
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1234_5678_9abc));
                let own = root.join(format!("own-n{}", i + 1));
                let shared = root.join("shared");
                let end = Instant::now() + Duration::from_secs(3);
                let mut ops = 0;
                while Instant::now() < end {
                    let dir = own.join(format!("d{}", rng.below(4)));
                    let _ = fs::create_dir_all(&dir);
                    let _ = fs::create_dir_all(&shared);
                    let f = dir.join(format!("f{}", rng.below(25)));
                    match rng.below(12) {
                        // Rewrite in place (truncate, write, close).
                        0..=4 => {
                            let body: Vec<u8> = (0..rng.below(20_000))
                                .map(|j| (j as u8).wrapping_mul(i as u8 + 7))
                                .collect();
                            if let Ok(mut fh) = fs::File::create(&f) {
                                let _ = fh.write_all(&framed(&body));
                            }
                        }
                        5..=6 => {
                            let to = own.join(format!("d{}/f{}", rng.below(4), rng.below(25)));
                            let _ = fs::rename(&f, to);
                        }
                        7 => {
                            let _ = fs::remove_file(&f);
                        }
                        8..=10 => {
                            let body = format!("node {i} op {ops}").into_bytes();
                            let tmp = shared.join(format!(".tmp{i}~"));
                            let _ = fs::write(&tmp, framed(&body));
                            let _ = fs::rename(&tmp, shared.join(shared_name(i, &mut rng)));
                        }
                        _ => {
                            let _ = fs::remove_file(shared.join(shared_name(i, &mut rng)));
                        }
                    }
                    ops += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                ops
            })
        })
        .collect();
    let ops: usize = writers.into_iter().map(|t| t.join().unwrap()).sum();
    let quiet = Instant::now();
    // Every tree identical, eventually.
    let same = wait_until(Duration::from_secs(30), || {
        let a = w.tree("n1");
        (a == w.tree("n2") && a == w.tree("n3") && NODES.iter().all(|n| w.dirty(n) == 0))
            .then_some(a)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (bad, reads) = observer.join().unwrap();
    let trees: Vec<usize> = NODES.iter().map(|n| w.tree(n).len()).collect();
    let a = same.unwrap_or_else(|| {
        let (a, b, c) = (w.tree("n1"), w.tree("n2"), w.tree("n3"));
        let mut diff = Vec::new();
        for k in a.keys().chain(b.keys()).chain(c.keys()) {
            let v: Vec<Option<String>> = [&a, &b, &c]
                .iter()
                .map(|t| {
                    t.get(k).map(|d| {
                        d.as_ref().map_or("dir".into(), |d| {
                            String::from_utf8_lossy(&d[..d.len().min(100)]).into_owned()
                        })
                    })
                })
                .collect();
            let same = v[0] == v[1] && v[1] == v[2];
            if !same && !diff.iter().any(|(x, _)| x == k) {
                diff.push((k.clone(), v));
            }
        }
        let dirty: Vec<_> = NODES.iter().map(|n| w.dirty_rows(n)).collect();
        panic!(
            "trees differ {:?} after the churn: {trees:?}\n{diff:?}\ndirty: {dirty:?}\n{}",
            quiet.elapsed(),
            w.logs()
        )
    });
    assert!(bad.is_empty(), "seen half-written ({reads} reads): {bad:?}");
    assert!(a.len() > 10, "the churn left files: {}", a.len());
    eprintln!("churn: {ops} operations, {} entries at the end, {reads} reads", a.len());
}
