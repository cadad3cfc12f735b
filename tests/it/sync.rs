//! Issue 4 end to end: three real nodes on loopback (real daemons, real
//! certificates, separate roots via `prefix`), asserting bytes, types, modes,
//! owners and mtimes on every node.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::net_util::{Daemon, Net};
use crate::util::{stderr, stdout};

/// The shared config; `@AUTO@` is the group's conflict rule.
pub const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@;
    key csync2.key;
    include %p%;
    exclude *~;
    auto @AUTO@;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; on n3: @ROOT_n3@; }
";

/// Three nodes with daemons running; `auto` is the conflict rule.
pub struct Cluster {
    pub net: Net,
    pub daemons: Vec<Option<Daemon>>,
}

impl Cluster {
    pub fn new(test: &str, auto: &str) -> Cluster {
        let net = Net::new(test, &["n1", "n2", "n3"], &CFG.replace("@AUTO@", auto));
        let daemons =
            ["n1", "n2", "n3"].iter().map(|n| Some(net.daemon(n, &["--timeout", "2"]))).collect();
        Cluster { net, daemons }
    }

    pub fn root(&self, n: &str) -> std::path::PathBuf {
        self.net.root(n)
    }

    pub fn write(&self, n: &str, rel: &str, data: &[u8]) {
        let p = self.root(n).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// `csync -x` (plus extra args) on node `n`; returns (exit code, stdout, stderr).
    pub fn run(&self, n: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.net.csync(n).args(args).args(["--timeout", "2"]).output().unwrap();
        (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
    }

    pub fn x(&self, n: &str) -> (i32, String, String) {
        self.run(n, &["-x"])
    }

    pub fn x_ok(&self, n: &str) {
        let (code, o, e) = self.x(n);
        assert_eq!(code, 0, "csync -x on {n} failed:\n{o}{e}");
    }

    pub fn stop(&mut self, n: &str) {
        let i = ["n1", "n2", "n3"].iter().position(|x| *x == n).unwrap();
        self.daemons[i] = None;
    }

    pub fn start(&mut self, n: &str) {
        let i = ["n1", "n2", "n3"].iter().position(|x| *x == n).unwrap();
        self.daemons[i] = Some(self.net.daemon(n, &["--timeout", "2"]));
    }

    pub fn assert_converged(&self) {
        let a = snapshot(&self.root("n1"));
        for n in ["n2", "n3"] {
            let b = snapshot(&self.root(n));
            assert_eq!(a, b, "n1 and {n} differ");
        }
    }
}

/// Everything about a tree that must be equal on every node.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryState {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    /// BLAKE3 of the content (bytes would flood a failure message).
    content: Option<String>,
    target: Option<std::path::PathBuf>,
    rdev: u64,
}

pub fn snapshot(root: &Path) -> BTreeMap<String, EntryState> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, EntryState>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.ends_with('~') {
            continue;
        }
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chr"
        } else {
            "other"
        };
        out.insert(
            rel,
            EntryState {
                kind,
                mode: if ft.is_symlink() { 0 } else { md.mode() & 0o7777 },
                uid: md.uid(),
                gid: md.gid(),
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                content: ft
                    .is_file()
                    .then(|| blake3::hash(&fs::read(&p).unwrap()).to_hex()[..16].to_string()),
                target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                rdev: if ft.is_char_device() { md.rdev() } else { 0 },
            },
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

fn populate(c: &Cluster) {
    c.write("n1", "etc/nginx/nginx.conf", b"worker_processes 4;\n");
    c.write("n1", "etc/nginx/sites/default", b"server { listen 80; }\n");
    c.write("n1", "www/index.html", b"<h1>hello</h1>\n");
    c.write("n1", "www/big.bin", &vec![7u8; 3 << 20]);
    c.write("n1", "www/skip.html~", b"editor backup, excluded\n");
    fs::set_permissions(
        c.root("n1").join("etc/nginx/nginx.conf"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("sites/default", c.root("n1").join("etc/nginx/current")).unwrap();
    set_mtime(
        &c.root("n1").join("www/index.html"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000),
    );
    rustix::fs::mknodat(
        rustix::fs::CWD,
        c.root("n1").join("www/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
}

#[test]
fn change_on_any_node_reaches_the_other_two() {
    let c = Cluster::new("change_on_any_node_reaches_the_other_two", "none");
    populate(&c);
    c.x_ok("n1");
    c.assert_converged();
    assert!(!c.root("n2").join("www/skip.html~").exists(), "excluded files stay home");
    // A change on n2 reaches n1 and n3.
    c.write("n2", "www/index.html", b"<h1>changed on n2</h1>\n");
    fs::set_permissions(
        c.root("n2").join("etc/nginx/sites/default"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    c.x_ok("n2");
    c.assert_converged();
    assert_eq!(fs::read(c.root("n3").join("www/index.html")).unwrap(), b"<h1>changed on n2</h1>\n");
    // A delete on n3 reaches n1 and n2, deepest first.
    fs::remove_dir_all(c.root("n3").join("etc/nginx/sites")).unwrap();
    fs::remove_file(c.root("n3").join("etc/nginx/current")).unwrap();
    c.x_ok("n3");
    c.assert_converged();
    assert!(!c.root("n1").join("etc/nginx/sites").exists());
}

#[test]
fn receivers_do_not_echo() {
    let c = Cluster::new("receivers_do_not_echo", "none");
    populate(&c);
    c.x_ok("n1");
    for n in ["n2", "n3"] {
        let (code, o, e) = c.run(n, &["-cr"]);
        assert_eq!(code, 0, "{o}{e}");
        let (code, o, _) = c.run(n, &["-M"]);
        assert_eq!(code, 2, "{n} queued an echo of what it received:\n{o}");
    }
    let (code, o, _) = c.run("n1", &["-M"]);
    assert_eq!(code, 2, "n1 still has dirty rows:\n{o}");
}

#[test]
fn a_node_that_was_down_catches_up() {
    let mut c = Cluster::new("a_node_that_was_down_catches_up", "none");
    populate(&c);
    c.x_ok("n1");
    c.stop("n3");
    c.write("n1", "www/index.html", b"<h1>while n3 was down</h1>\n");
    let (code, _, e) = c.x("n1");
    assert_eq!(code, 1);
    assert!(e.contains("peer n3") && e.contains("cannot connect"), "{e}");
    assert_eq!(e.lines().count(), 1, "one line per failed peer: {e}");
    assert_eq!(
        fs::read(c.root("n2").join("www/index.html")).unwrap(),
        b"<h1>while n3 was down</h1>\n"
    );
    let (_, m, _) = c.run("n1", &["-M"]);
    assert!(m.lines().all(|l| l.contains("\tn3\t")), "only n3 stays dirty:\n{m}");
    c.start("n3");
    c.x_ok("n1");
    c.assert_converged();
}

#[test]
fn type_changes_propagate() {
    let c = Cluster::new("type_changes_propagate", "none");
    populate(&c);
    c.x_ok("n1");
    let r = c.root("n1");
    // file -> dir, symlink -> file, dir -> symlink
    fs::remove_file(r.join("www/index.html")).unwrap();
    fs::create_dir(r.join("www/index.html")).unwrap();
    fs::write(r.join("www/index.html/inner"), b"x").unwrap();
    fs::remove_file(r.join("etc/nginx/current")).unwrap();
    fs::write(r.join("etc/nginx/current"), b"now a file").unwrap();
    fs::remove_dir_all(r.join("etc/nginx/sites")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", r.join("etc/nginx/sites")).unwrap();
    c.x_ok("n1");
    c.assert_converged();
}

#[test]
fn diff_and_conflict_followed_by_force() {
    let c = Cluster::new("diff_and_conflict_followed_by_force", "none");
    let seq = |n: usize| (1..=n).map(|i| format!("{i}\n")).collect::<String>();
    c.write("n1", "a/f", seq(1000).as_bytes());
    set_mtime(&c.root("n1").join("a/f"), SystemTime::now() - Duration::from_secs(7 * 86400));
    c.x_ok("n1");
    // Both change it; n2 never runs a check.
    c.write("n1", "a/f", seq(1000).as_bytes());
    c.write("n2", "a/f", seq(999).as_bytes());
    let (code, _, e) = c.run("n1", &["-x", "-P", "n2"]);
    assert_eq!(code, 1, "{e}");
    assert!(e.contains("peer n2") && e.contains("%p%/a/f") && e.contains("conflict"), "{e}");
    assert_eq!(
        fs::read(c.root("n2").join("a/f")).unwrap(),
        seq(999).as_bytes(),
        "nothing changed on n2"
    );
    // Force this node's version.
    let (code, o, e) = c.run("n1", &["-f", c.root("n1").join("a/f").to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    c.x_ok("n1");
    assert_eq!(fs::read(c.root("n2").join("a/f")).unwrap(), seq(1000).as_bytes());
    c.assert_converged();
    // The loser's bytes are kept on n2.
    let kept = find_conflict_copy(&c.net.path("db-n2"), "f.conflict-");
    assert_eq!(fs::read(kept.expect("a kept copy")).unwrap(), seq(999).as_bytes());
}

/// A conflict copy under `dir` whose name contains `needle`.
pub fn find_conflict_copy(dir: &Path, needle: &str) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().contains(needle) {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn missing_leading_directories_are_created() {
    let c = Cluster::new("missing_leading_directories_are_created", "none");
    for d in ["a", "b", "c"] {
        fs::create_dir_all(c.root("n1").join(d).join("d/e")).unwrap();
    }
    let (code, o, e) = c.run("n1", &["-cIr"]);
    assert_eq!(code, 0, "{o}{e}");
    for d in ["a", "b", "c"] {
        c.write("n1", &format!("{d}/d/e/f"), d.as_bytes());
    }
    c.x_ok("n1");
    c.assert_converged();
}

#[test]
fn mass_delete_of_an_emptied_root_needs_force() {
    let c = Cluster::new("mass_delete_of_an_emptied_root_needs_force", "none");
    populate(&c);
    c.x_ok("n1");
    for e in fs::read_dir(c.root("n1")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { fs::remove_dir_all(p).unwrap() } else { fs::remove_file(p).unwrap() }
    }
    let (code, _, e) = c.x("n1");
    assert_eq!(code, 1);
    assert!(e.contains("missing, empty or no longer a directory"), "{e}");
    assert!(c.root("n2").join("www/index.html").exists(), "nothing deleted on peers");
    let (code, o, e) = c.run("n1", &["-f", "-r", c.root("n1").to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    c.x_ok("n1");
    assert!(!c.root("n2").join("www").exists());
    c.assert_converged();
}

#[test]
fn dry_run_changes_nothing() {
    let c = Cluster::new("dry_run_changes_nothing", "none");
    populate(&c);
    let (code, o, e) = c.run("n1", &["-x", "-d"]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("would push %p%/www/index.html to n2"), "{o}");
    assert!(snapshot(&c.root("n2")).is_empty(), "nothing written on n2");
    let (code, m, _) = c.run("n1", &["-M"]);
    assert_eq!(code, 0);
    assert!(m.contains("%p%/www/index.html"), "marks kept: {m}");
}

#[test]
fn strange_and_long_names() {
    let c = Cluster::new("strange_and_long_names", "none");
    // 255 bytes: trailing spaces, umlauts, quotes, backslash, ^H and ^? spelled out, a smiley.
    let mut name = String::from("strange äöü ß \u{263a} : ^H ^? \\ ' \" ");
    while name.len() < 253 {
        name.push('x');
    }
    name.push_str("  ");
    assert_eq!(name.len(), 255);
    c.write("n1", &name, b"strange\n");
    // A ~4 KiB path of 255-byte components.
    let comp = "D".repeat(255);
    let deep: Vec<&str> = std::iter::repeat_n(comp.as_str(), 15).collect();
    let deep = deep.join("/");
    c.write("n1", &format!("{deep}/{}", &name[..200]), b"deep\n");
    // Case matters.
    for n in ["1.txt", "1.TXT", "hello.txt", "Hello.txt"] {
        c.write("n1", &format!("case/{n}"), n.as_bytes());
    }
    c.x_ok("n1");
    c.assert_converged();
}

#[test]
fn in_sync_test_lists_what_differs_then_nothing() {
    let c = Cluster::new("in_sync_test_lists_what_differs_then_nothing", "none");
    c.write("n1", "a/f", b"from n1\n");
    c.write("n2", "b/f", b"from n2\n");
    for n in ["n1", "n2"] {
        let (code, o, e) = c.run(n, &["-cIr"]);
        assert_eq!(code, 0, "{o}{e}");
    }
    let (code, o, e) = c.run("n2", &["-T", "-P", "n1"]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(
        o, "R\tn2\tn1\t%p%/a\nR\tn2\tn1\t%p%/a/f\nL\tn2\tn1\t%p%/b\nL\tn2\tn1\t%p%/b/f\n",
        "{e}"
    );
    // -TI marks what differs here; the next push sends it.
    let (code, o, e) = c.run("n2", &["-TI", "-P", "n1"]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = c.run("n2", &["-u", "-P", "n1"]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = c.run("n1", &["-m", "-r", c.root("n1").join("a").to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = c.run("n1", &["-u", "-P", "n2"]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = c.run("n2", &["-T", "-P", "n1"]);
    assert_eq!(code, 2, "everything in sync: {o}{e}");
    assert_eq!(o, "");
}

#[test]
fn in_sync_test_with_diffs() {
    let c = Cluster::new("in_sync_test_with_diffs", "none");
    let seq = |n: usize| (1..=n).map(|i| format!("{i}\n")).collect::<String>();
    c.write("n1", "a/f", seq(1000).as_bytes());
    c.x_ok("n1");
    c.write("n2", "a/f", seq(999).as_bytes());
    let (code, o, e) = c.run("n2", &["-c"]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = c.run("n2", &["-T", "-P", "n1"]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(o, "X\tn2\tn1\t%p%/a/f\n");
    let (code, o, e) =
        c.run("n2", &["-TT", "-P", "n1", c.root("n2").join("a/f").to_str().unwrap()]);
    assert_eq!(code, 0, "{e}");
    assert!(
        o.starts_with("X\tn2\tn1\t%p%/a/f\n--- n1:%p%/a/f\n+++ n2:%p%/a/f\n@@ -997,4 +997,3 @@\n"),
        "{o}"
    );
    assert!(o.contains("\n-1000\n"), "{o}");
}

#[test]
fn local_runs_and_the_daemon_share_the_index_without_lock_errors() {
    // n1 keeps pushing to n2 while n2 keeps checking and pushing its own
    // changes: both write n2's index at the same time.
    let c =
        Cluster::new("local_runs_and_the_daemon_share_the_index_without_lock_errors", "younger");
    c.write("n1", "a/seed", b"seed");
    c.write("n2", "b/seed", b"seed");
    let pusher = {
        let root = c.root("n1");
        let mut cmd = c.net.csync("n1");
        cmd.args(["-x", "--timeout", "5"]);
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            for i in 0..15 {
                fs::write(root.join(format!("a/f{i}")), format!("n1 {i}")).unwrap();
                let out = cmd.output().unwrap();
                if !out.status.success() {
                    failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
            failures
        })
    };
    let mut local_failures = Vec::new();
    for i in 0..15 {
        c.write("n2", &format!("b/g{i}"), format!("n2 {i}").as_bytes());
        let (code, o, e) = c.run("n2", &["-x"]);
        if code != 0 {
            local_failures.push(format!("{o}{e}"));
        }
    }
    let remote_failures = pusher.join().unwrap();
    let all = [local_failures, remote_failures].concat();
    assert!(!all.iter().any(|e| e.contains("locked") || e.contains("busy")), "{all:?}");
    assert!(all.is_empty(), "{all:?}");
    c.x_ok("n1");
    c.x_ok("n2");
    c.assert_converged();
}
