//! The configurations administrators write, on servers that already hold
//! files: csync2's how-to config (`include /etc/hosts; include /etc/nginx;
//! include /root/.ssh/authorized_keys;`, reached through prefixes here),
//! receivers with their own different copies, csync2's cron line
//! (`csync -cr /`), a node added later, a node whose index was deleted, and
//! roots nested inside another group's tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::net_util::{Daemon, Net};
use crate::util::{stderr, stdout};

/// The how-to's config: single files next to a directory, through prefixes.
const HOWTO: &str = r#"
group web {
    host @HOSTS@;
    key csync2.key;
    include %etc%/hosts;
    include %etc%/nginx;
    include %ssh%/authorized_keys;
    exclude *~;
    auto younger;
    action {
        pattern %etc%/hosts;
        exec "printf '%s\n' %% >> @ACTLOG@";
    }
}
prefix etc { @ETC@ }
prefix ssh { @SSH@ }
"#;

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

/// A cluster of real nodes with daemons; `members` are in the config.
struct Setup {
    net: Net,
    daemons: Vec<(String, Daemon)>,
}

impl Setup {
    fn new(test: &str, members: &[&str]) -> Setup {
        let net = Net::new(test, &NODES, "");
        net.write_config(
            &config(HOWTO, members).replace("@ACTLOG@", net.path("actions.log").to_str().unwrap()),
        );
        let daemons =
            members.iter().map(|n| (n.to_string(), net.daemon(n, &["--timeout", "2"]))).collect();
        Setup { net, daemons }
    }

    /// Node `n`'s real path for `rel` (`etc/hosts`, `root/.ssh/authorized_keys`).
    fn path(&self, n: &str, rel: &str) -> PathBuf {
        self.net.root(n).join(rel)
    }

    fn write(&self, n: &str, rel: &str, data: &[u8]) {
        let p = self.path(n, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// Writes with a given mtime (seconds after a fixed past instant).
    fn write_at(&self, n: &str, rel: &str, data: &[u8], secs: u64) {
        self.write(n, rel, data);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
        fs::File::options().write(true).open(self.path(n, rel)).unwrap().set_modified(t).unwrap();
    }

    fn read(&self, n: &str, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.path(n, rel)).ok()
    }

    fn run(&self, n: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.net.csync(n).args(args).args(["--timeout", "2"]).output().unwrap();
        (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
    }

    /// `csync -x` on `n`: must succeed, silently.
    fn x_ok(&self, n: &str) {
        let (code, o, e) = self.run(n, &["-x"]);
        assert_eq!(code, 0, "csync -x on {n} failed:\n{o}{e}");
        assert_eq!(e, "", "csync -x on {n} must be silent when all is well");
    }

    /// The conflict lines of `--status` on `n`.
    fn conflicts(&self, n: &str) -> Vec<String> {
        let (_, o, _) = self.run(n, &["--status"]);
        o.lines().filter(|l| l.starts_with("conflict ")).map(str::to_string).collect()
    }
}

/// The config for `members`: hosts with their addresses, prefix lines.
fn config(template: &str, members: &[&str]) -> String {
    let hosts: Vec<String> = members.iter().map(|n| format!("{n}@@ADDR_{n}@")).collect();
    let etc: Vec<String> = members.iter().map(|n| format!("on {n}: @ROOT_{n}@/etc;")).collect();
    let ssh: Vec<String> =
        members.iter().map(|n| format!("on {n}: @ROOT_{n}@/root/.ssh;")).collect();
    template
        .replace("@HOSTS@", &hosts.join(" "))
        .replace("@ETC@", &etc.join(" "))
        .replace("@SSH@", &ssh.join(" "))
}

const FILES: [&str; 4] =
    ["etc/hosts", "etc/nginx/nginx.conf", "etc/nginx/sites/shop.conf", "root/.ssh/authorized_keys"];

fn fill(s: &Setup, n: &str) {
    s.write(n, "etc/hosts", b"127.0.0.1 localhost\n10.0.0.1 alpha\n");
    s.write(n, "etc/nginx/nginx.conf", b"events {}\n");
    s.write(n, "etc/nginx/sites/shop.conf", b"server { listen 80; }\n");
    s.write(n, "root/.ssh/authorized_keys", b"ssh-ed25519 AAAA admin\n");
    fs::set_permissions(s.path(n, "root/.ssh/authorized_keys"), fs::Permissions::from_mode(0o600))
        .unwrap();
}

fn assert_same(s: &Setup, a: &str, b: &str) {
    for f in FILES {
        assert_eq!(s.read(a, f), s.read(b, f), "{f} differs between {a} and {b}");
    }
}

#[test]
fn single_file_roots_sync_next_to_a_directory() {
    let s = Setup::new("single_file_roots_sync_next_to_a_directory", &["n1", "n2", "n3"]);
    fill(&s, "n1");
    s.x_ok("n1");
    for n in ["n2", "n3"] {
        assert_same(&s, "n1", n);
        let mode = fs::metadata(s.path(n, "root/.ssh/authorized_keys")).unwrap().permissions();
        assert_eq!(mode.mode() & 0o7777, 0o600, "authorized_keys keeps its mode on {n}");
    }
    // The action on the single-file root ran on each receiver, with its real path.
    let ran = fs::read_to_string(s.net.path("actions.log")).unwrap_or_default();
    for n in ["n2", "n3"] {
        assert!(ran.contains(s.path(n, "etc/hosts").to_str().unwrap()), "{n}: {ran}");
    }
    // A change on another node spreads back, to the single file too.
    s.write("n2", "etc/hosts", b"127.0.0.1 localhost\n10.0.0.2 beta\n");
    s.x_ok("n2");
    assert_eq!(s.read("n1", "etc/hosts").unwrap(), b"127.0.0.1 localhost\n10.0.0.2 beta\n");
    assert_eq!(s.read("n3", "etc/hosts").unwrap(), b"127.0.0.1 localhost\n10.0.0.2 beta\n");
    // A single-file root can be deleted like any file.
    fs::remove_file(s.path("n3", "root/.ssh/authorized_keys")).unwrap();
    s.x_ok("n3");
    for n in ["n1", "n2"] {
        assert!(s.read(n, "root/.ssh/authorized_keys").is_none(), "not deleted on {n}");
    }
    // In sync everywhere, and every later run is a no-op.
    for n in ["n1", "n2", "n3"] {
        s.x_ok(n);
        let (code, o, e) = s.run(n, &["-T"]);
        assert_eq!(code, 2, "-T on {n} must find everything in sync:\n{o}{e}");
        assert!(s.conflicts(n).is_empty(), "no conflict on {n}: {:?}", s.conflicts(n));
    }
    // A root that is a file on one node becomes a directory: a type change
    // like any other.
    fs::remove_file(s.path("n1", "etc/hosts")).unwrap();
    s.write("n1", "etc/hosts/readme", b"now a directory\n");
    s.x_ok("n1");
    for n in ["n2", "n3"] {
        assert_eq!(s.read(n, "etc/hosts/readme").unwrap(), b"now a directory\n", "{n}");
    }
    let (code, o, _) = s.run("n1", &["--explain", s.path("n1", "etc/hosts").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(o.contains("managed"), "{o}");
}

#[test]
fn receivers_with_their_own_copies_are_compared_by_the_rule() {
    let s = Setup::new("receivers_with_their_own_copies_are_compared", &["n1", "n2", "n3"]);
    // Three servers with their own /etc/hosts: n2's is the youngest, n3's
    // the oldest. Their nginx.conf is the same everywhere.
    s.write_at("n1", "etc/hosts", b"hosts of n1\n", 100);
    s.write_at("n2", "etc/hosts", b"hosts of n2\n", 200);
    s.write_at("n3", "etc/hosts", b"hosts of n3\n", 50);
    for n in ["n1", "n2", "n3"] {
        s.write_at(n, "etc/nginx/nginx.conf", b"events {}\n", 10);
        // The README's quick start: record what is there, mark nothing.
        let (code, o, e) = s.run(n, &["-cIr"]);
        assert_eq!(code, 0, "{o}{e}");
    }
    // n1 first: it wins over n3 (younger) and yields to n2.
    s.x_ok("n1");
    assert_eq!(s.read("n3", "etc/hosts").unwrap(), b"hosts of n1\n");
    assert_eq!(s.read("n2", "etc/hosts").unwrap(), b"hosts of n2\n", "n2's younger copy stays");
    s.x_ok("n3");
    s.x_ok("n2");
    for n in ["n1", "n2", "n3"] {
        assert_eq!(s.read(n, "etc/hosts").unwrap(), b"hosts of n2\n", "the youngest wins on {n}");
    }
    // The losers' own versions were kept, with the rule as the reason; n3
    // lost its own copy to n1, then only held n1's (a bystander): one record.
    for (n, mine) in [("n1", &b"hosts of n1\n"[..]), ("n3", &b"hosts of n3\n"[..])] {
        let c: Vec<String> = s.conflicts(n).into_iter().filter(|l| l.contains("lost")).collect();
        assert_eq!(c.len(), 1, "one lost version on {n}: {c:?}");
        assert!(c[0].contains("lost: younger"), "{c:?}");
        let kept = c[0].split("loser kept at ").nth(1).expect("a kept copy");
        assert_eq!(fs::read(kept.trim()).unwrap(), mine, "{n} kept its own version");
    }
    assert!(s.conflicts("n2").iter().all(|l| !l.contains("lost")), "{:?}", s.conflicts("n2"));
    for n in ["n1", "n2", "n3"] {
        let (code, o, e) = s.run(n, &["-T"]);
        assert_eq!(code, 2, "-T on {n}:\n{o}{e}");
        let (code, o, _) = s.run(n, &["--status"]);
        assert_eq!(code, 0, "--status on {n}: {o}");
    }
    // Identical files were compared, not sent: nothing to do for nginx.conf.
    let (code, _, _) = s.run("n1", &["-M"]);
    assert_eq!(code, 2, "nothing left dirty");
}

#[test]
fn csync2_cron_line_checks_every_root_below_the_argument() {
    let s = Setup::new("csync2_cron_line_checks_every_root", &["n1", "n2"]);
    fill(&s, "n1");
    // csync2's cron line: check everything below /, prefixed roots included.
    let (code, o, e) = s.run("n1", &["-cr", "/"]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, dirty, _) = s.run("n1", &["-M"]);
    assert_eq!(code, 0);
    for f in ["%etc%/hosts", "%etc%/nginx/nginx.conf", "%ssh%/authorized_keys"] {
        assert!(dirty.contains(f), "{f} not marked by -cr /:\n{dirty}");
    }
    let (code, o, e) = s.run("n1", &["-u"]);
    assert_eq!(code, 0, "{o}{e}");
    assert_same(&s, "n1", "n2");
    // An ancestor of some roots means those roots only.
    s.write("n1", "etc/hosts", b"changed\n");
    s.write("n1", "root/.ssh/authorized_keys", b"changed too\n");
    let etc = s.path("n1", "etc");
    let (code, o, e) = s.run("n1", &["-xr", etc.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(s.read("n2", "etc/hosts").unwrap(), b"changed\n");
    assert_eq!(s.read("n2", "root/.ssh/authorized_keys").unwrap(), b"ssh-ed25519 AAAA admin\n");
    let (_, dirty, _) = s.run("n1", &["-M"]);
    assert!(!dirty.contains("%ssh%"), "-cr /etc must not check %ssh%: {dirty}");
}

#[test]
fn a_node_added_later_gets_everything_on_the_next_run() {
    let mut s = Setup::new("a_node_added_later_gets_everything", &["n1", "n2", "n3"]);
    fill(&s, "n1");
    s.x_ok("n1");
    // n4 joins: a new config everywhere, listeners restarted, n4 empty.
    let log = s.net.path("actions.log");
    s.net.write_config(
        &config(HOWTO, &["n1", "n2", "n3", "n4"]).replace("@ACTLOG@", log.to_str().unwrap()),
    );
    s.daemons.clear();
    for n in ["n1", "n2", "n3", "n4"] {
        s.daemons.push((n.to_string(), s.net.daemon(n, &["--timeout", "2"])));
    }
    // Nothing changed on n2: its next run alone brings n4 up to date.
    s.x_ok("n2");
    assert_same(&s, "n1", "n4");
    for n in ["n1", "n3", "n4"] {
        s.x_ok(n);
    }
    let (code, o, e) = s.run("n4", &["-T"]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(s.conflicts("n4").is_empty(), "{:?}", s.conflicts("n4"));
}

#[test]
fn a_node_whose_index_was_deleted_reconciles_without_conflicts() {
    let s = Setup::new("a_node_whose_index_was_deleted", &["n1", "n2", "n3"]);
    fill(&s, "n1");
    s.x_ok("n1");
    fs::remove_dir_all(s.net.path("db-n2")).unwrap();
    s.x_ok("n2");
    for n in ["n1", "n2", "n3"] {
        assert!(s.conflicts(n).is_empty(), "no conflict on {n}: {:?}", s.conflicts(n));
        assert_same(&s, "n1", n);
    }
    // And it syncs as before.
    s.write("n2", "etc/nginx/nginx.conf", b"events { worker_connections 64; }\n");
    s.x_ok("n2");
    assert_eq!(
        s.read("n3", "etc/nginx/nginx.conf").unwrap(),
        b"events { worker_connections 64; }\n"
    );
}

/// One group's root inside another group's tree.
const NESTED: &str = "
group web {
    host n1@@ADDR_n1@ n2@@ADDR_n2@;
    key csync2.key;
    include %p%/nginx;
}
group certs {
    host n1@@ADDR_n1@ n2@@ADDR_n2@;
    key csync2.key;
    include %p%/nginx/ssl;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }
";

fn nested(test: &str) -> (Net, Vec<Daemon>) {
    let net = Net::new(test, &["n1", "n2"], NESTED);
    let d = ["n1", "n2"].iter().map(|n| net.daemon(n, &["--timeout", "2"])).collect();
    (net, d)
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

#[test]
fn a_symlink_in_place_of_an_inner_root_never_redirects_a_write() {
    let (net, _d) = nested("a_symlink_in_place_of_an_inner_root");
    let outside = net.path("outside");
    fs::create_dir_all(&outside).unwrap();
    // On the receiver, something put a symlink where the inner root is.
    fs::create_dir_all(net.root("n1").join("nginx")).unwrap();
    std::os::unix::fs::symlink(&outside, net.root("n1").join("nginx/ssl")).unwrap();
    write(&net.root("n2").join("nginx/ssl/cert.pem"), b"certificate\n");
    write(&net.root("n2").join("nginx/nginx.conf"), b"events {}\n");
    let out = net.csync("n2").args(["-x", "--timeout", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the refused path is reported");
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside");
    assert_eq!(fs::read(net.root("n1").join("nginx/nginx.conf")).unwrap(), b"events {}\n");
}

#[test]
fn an_inner_root_that_is_a_directory_is_never_replaced_by_a_symlink() {
    let (net, _d) = nested("an_inner_root_is_never_replaced_by_a_symlink");
    write(&net.root("n1").join("nginx/ssl/cert.pem"), b"certificate\n");
    let out = net.csync("n1").args(["-x", "--timeout", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // n2 turns its copy of the inner root into a symlink to elsewhere.
    let elsewhere = net.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::remove_dir_all(net.root("n2").join("nginx/ssl")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, net.root("n2").join("nginx/ssl")).unwrap();
    let out = net.csync("n2").args(["-x", "--timeout", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("include root"), "{}", stderr(&out));
    let md = fs::symlink_metadata(net.root("n1").join("nginx/ssl")).unwrap();
    assert!(md.is_dir(), "n1's inner root is still a directory");
    // What the peer may do below a root it shares still happens (its delete).
    assert!(!net.root("n1").join("nginx/ssl/cert.pem").exists());
    assert!(fs::read_dir(&elsewhere).unwrap().next().is_none());
}

use crate::net_util::TWO_NODES as NONE;

fn status(net: &Net, n: &str) -> (i32, String) {
    let out = net.csync(n).arg("--status").output().unwrap();
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn an_open_conflict_closes_when_the_path_is_in_sync_or_acknowledged() {
    let net = Net::new("an_open_conflict_closes", &["n1", "n2"], NONE);
    let _d: Vec<Daemon> = ["n1", "n2"].iter().map(|n| net.daemon(n, &["--timeout", "2"])).collect();
    let x = |n: &str| net.csync(n).args(["-x", "--timeout", "2"]).output().unwrap();
    write(&net.root("n1").join("f"), b"one\n");
    assert_eq!(x("n1").status.code(), Some(0));
    write(&net.root("n1").join("f"), b"n1 edit\n");
    write(&net.root("n2").join("f"), b"n2 edit\n");
    write(&net.root("n1").join("g"), b"one\n");
    write(&net.root("n2").join("g"), b"other\n");
    let out = x("n1");
    assert_eq!(out.status.code(), Some(1), "auto none: a person decides");
    assert!(stderr(&out).contains("%p%/f"), "{}", stderr(&out));
    let (code, o) = status(&net, "n1");
    assert_eq!(code, 1);
    assert!(o.contains("conflict %p%/f with n2: unresolved [unresolved]"), "{o}");
    // Someone decides for f on n2: n1 takes it, keeps its own, and the
    // conflict is no longer open.
    let out =
        net.csync("n2").args(["-f", net.root("n2").join("f").to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = x("n2");
    assert_eq!(fs::read(net.root("n1").join("f")).unwrap(), b"n2 edit\n", "{}", stderr(&out));
    let (_, o) = status(&net, "n1");
    assert!(o.contains("lost: forced by n2 (csync -f)"), "{o}");
    assert!(o.contains("conflict %p%/f with n2: resolved: in sync again"), "{o}");
    assert!(!o.contains("%p%/f with n2: unresolved [unresolved]"), "{o}");
    // g stays open until acknowledged; the kept copies stay either way.
    assert!(o.contains("conflict %p%/g with n2: unresolved [unresolved]"), "{o}");
    let out = net.csync("n1").args(["--ack-conflicts"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (_, o) = status(&net, "n1");
    assert!(!o.contains("[unresolved]"), "{o}");
}

#[test]
fn an_index_row_without_its_hash_is_repaired_by_the_next_run() {
    let s = Setup::new("an_index_row_without_its_hash_is_repaired", &["n1", "n2"]);
    fill(&s, "n1");
    s.x_ok("n1");
    // What the previous release could leave behind: a regular file's row
    // without its content hash.
    let db = rusqlite::Connection::open(s.net.path("db-n2/n2.db")).unwrap();
    let n = db.execute("UPDATE file SET hash = NULL WHERE path = CAST('%etc%/hosts' AS BLOB)", []);
    assert_eq!(n.unwrap(), 1);
    drop(db);
    s.x_ok("n2");
    s.write("n1", "etc/hosts", b"new hosts\n");
    s.x_ok("n1");
    assert_eq!(s.read("n2", "etc/hosts").unwrap(), b"new hosts\n");
    let db = rusqlite::Connection::open(s.net.path("db-n2/n2.db")).unwrap();
    let hashless: i64 = db
        .query_row("SELECT count(*) FROM file WHERE kind = 1 AND hash IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(hashless, 0);
    assert!(s.conflicts("n2").is_empty(), "{:?}", s.conflicts("n2"));
}

/// A setuid file owned by root, as a hostile peer announces it.
fn file_entry(data: &[u8]) -> csync::proto::WireEntry {
    csync::proto::WireEntry { mode: 0o4755, uid: 0, gid: 0, ..crate::net_util::wire_file(data) }
}

#[test]
fn a_hostile_peer_cannot_write_through_a_symlink_it_put_at_an_inner_root() {
    use csync::proto::{Content, Msg, Outcome, WireEntry};
    let net = Net::new("a_hostile_peer_cannot_write_through_an_inner_root", &["n1", "n2"], NESTED);
    let d2 = net.daemon("n2", &["--timeout", "2"]);
    fs::create_dir_all(net.root("n2").join("nginx")).unwrap();
    let outside = net.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut s = crate::net_util::raw(&net, &rt, "n1", &["web", "certs"]);
    let link = WireEntry {
        kind: 3,
        mode: 0o777,
        uid: 0,
        gid: 0,
        size: 0,
        mtime_ns: 1_700_000_000_000_000_000,
        rdev: 0,
        target: Some(outside.to_str().unwrap().as_bytes().to_vec()),
        hash: None,
        origin: None,
    };
    let data = b"#!/bin/sh\nid > /tmp/pwned\n";
    let replies = rt.block_on(async {
        // Through the outer group: a symlink where the inner root belongs.
        s.conn
            .send(&Msg::Push {
                id: 1,
                group: "web".into(),
                path: b"%p%/nginx/ssl".to_vec(),
                entry: link,
                base: None,
                force: true,
                content: Content::None,
                parent_mtime: None,
            })
            .await
            .unwrap();
        let first = s.conn.recv().await.unwrap();
        // Through the inner group: a setuid file below that symlink.
        s.conn
            .queue(&Msg::Push {
                id: 2,
                group: "certs".into(),
                path: b"%p%/nginx/ssl/evil".to_vec(),
                entry: file_entry(data),
                base: None,
                force: true,
                content: Content::Whole,
                parent_mtime: None,
            })
            .unwrap();
        s.conn.queue(&Msg::Data { stream: 2, bytes: data.to_vec() }).unwrap();
        s.conn.queue(&Msg::DataEnd { stream: 2, hash: *blake3::hash(data).as_bytes() }).unwrap();
        s.conn.flush().await.unwrap();
        let second = s.conn.recv().await.unwrap();
        (first, second)
    });
    match replies.1 {
        Some(Msg::Ack { id: 2, outcome: Outcome::Failed { message, .. } }) => {
            assert!(message.contains("symlink"), "{message}");
        }
        other => panic!("the write through the symlink must be refused: {other:?}"),
    }
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "written outside every root");
    drop(d2);
}

#[test]
fn a_hostile_peer_cannot_replace_an_inner_root_directory() {
    use csync::proto::{Content, ErrorCode, Msg, Outcome, WireEntry};
    let net = Net::new("a_hostile_peer_cannot_replace_an_inner_root", &["n1", "n2"], NESTED);
    let _d2 = net.daemon("n2", &["--timeout", "2"]);
    write(&net.root("n2").join("nginx/ssl/cert.pem"), b"certificate\n");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut s = crate::net_util::raw(&net, &rt, "n1", &["web"]);
    let file = file_entry(b"x");
    let reply = rt.block_on(async {
        s.conn
            .send(&Msg::Delete {
                id: 1,
                group: "web".into(),
                path: b"%p%/nginx/ssl/cert.pem".to_vec(),
                base: None,
                force: true,
                parent_mtime: None,
            })
            .await
            .unwrap();
        let _ = s.conn.recv().await.unwrap();
        s.conn
            .queue(&Msg::Push {
                id: 2,
                group: "web".into(),
                path: b"%p%/nginx/ssl".to_vec(),
                entry: WireEntry { ..file },
                base: None,
                force: true,
                content: Content::Whole,
                parent_mtime: None,
            })
            .unwrap();
        s.conn.queue(&Msg::Data { stream: 2, bytes: b"x".to_vec() }).unwrap();
        s.conn.queue(&Msg::DataEnd { stream: 2, hash: *blake3::hash(b"x").as_bytes() }).unwrap();
        s.conn.flush().await.unwrap();
        s.conn.recv().await.unwrap()
    });
    match reply {
        Some(Msg::Ack { id: 2, outcome: Outcome::Failed { code, message } }) => {
            assert_eq!(code, ErrorCode::PathRefused);
            assert!(message.contains("include root"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(fs::symlink_metadata(net.root("n2").join("nginx/ssl")).unwrap().is_dir());
}

#[test]
fn a_directory_root_turned_into_a_symlink_holds_its_deletes_back() {
    let s = Setup::new("a_directory_root_turned_into_a_symlink", &["n1", "n2", "n3"]);
    fill(&s, "n1");
    s.x_ok("n1");
    // The admin moves nginx's tree to another disk and leaves a symlink.
    let moved = s.net.path("moved-nginx");
    fs::rename(s.path("n2", "etc/nginx"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, s.path("n2", "etc/nginx")).unwrap();
    let (code, _, err) = s.run("n2", &["-x"]);
    assert_eq!(code, 1);
    assert!(err.contains("no longer a directory"), "{err}");
    for n in ["n1", "n3"] {
        assert_same(&s, "n1", n);
        assert!(s.path(n, "etc/nginx/sites/shop.conf").is_file(), "deleted on {n}");
    }
}

#[test]
fn a_local_user_above_a_root_cannot_make_the_sender_read_elsewhere() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory to another user");
        return;
    }
    const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@;
    key csync2.key;
    include %home%/www/site;
}
prefix home { on n1: @ROOT_n1@/home/nobody; on n2: @ROOT_n2@/home/nobody; }
";
    let net = Net::new("a_local_user_above_a_root", &["n1", "n2"], CFG);
    let _d = net.daemon("n1", &["--timeout", "2"]);
    let home = net.root("n2").join("home/nobody");
    write(&home.join("www/site/index.html"), b"hello\n");
    // A root-only directory elsewhere, laid out like the site.
    let secret = net.path("secret");
    write(&secret.join("site/db.conf"), b"password=TOPSECRET\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    // The user who owns the home directory swaps www for a symlink to it.
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    fs::rename(home.join("www"), home.join("www.old")).unwrap();
    std::os::unix::fs::symlink(&secret, home.join("www")).unwrap();
    std::os::unix::fs::lchown(home.join("www"), Some(65534), Some(65534)).unwrap();
    let out = net.csync("n2").args(["-x", "--timeout", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the untrusted way is reported");
    assert!(stderr(&out).contains("root does not control"), "{}", stderr(&out));
    let leaked = net.root("n1").join("home/nobody/www/site/db.conf");
    assert!(!leaked.exists(), "the root-only file reached n1");
}

#[test]
fn a_reinstalled_node_gets_its_files_back_from_its_peers() {
    let s = Setup::new("a_reinstalled_node_gets_its_files_back", &["n1", "n2", "n3"]);
    fill(&s, "n1");
    s.x_ok("n1");
    // n2 is reinstalled: its index and its copy of nginx's tree are gone.
    fs::remove_dir_all(s.net.path("db-n2")).unwrap();
    fs::remove_dir_all(s.path("n2", "etc/nginx")).unwrap();
    s.x_ok("n2");
    // Its peers bring back what it lacks on their next run.
    s.x_ok("n1");
    assert_same(&s, "n1", "n2");
    for n in ["n1", "n2", "n3"] {
        s.x_ok(n);
        let (code, o, e) = s.run(n, &["-T"]);
        assert_eq!(code, 2, "-T on {n}:\n{o}{e}");
        assert!(s.conflicts(n).is_empty(), "{n}: {:?}", s.conflicts(n));
    }
}

#[test]
fn a_peer_never_reached_keeps_status_failing() {
    let net = Net::new("a_peer_never_reached_keeps_status_failing", &["n1", "n2"], NONE);
    write(&net.root("n1").join("f"), b"one\n");
    let x = |n: &str| net.csync(n).args(["-x", "--timeout", "1"]).output().unwrap();
    assert_eq!(x("n1").status.code(), Some(1), "n2 is down");
    let (code, o) = status(&net, "n1");
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("peer n2: last push failed at"), "{o}");
    let _d = net.daemon("n2", &["--timeout", "2"]);
    assert_eq!(x("n1").status.code(), Some(0));
    let (code, o) = status(&net, "n1");
    assert_eq!(code, 0, "{o}");
    assert_eq!(fs::read(net.root("n2").join("f")).unwrap(), b"one\n");
}

#[test]
fn a_node_that_yielded_and_then_edited_again_is_not_overwritten() {
    let cfg = crate::net_util::TWO_NODES.replace("auto none", "auto younger");
    let net = Net::new("a_node_that_yielded_and_then_edited_again", &["n1", "n2"], &cfg);
    let _d: Vec<Daemon> = ["n1", "n2"].iter().map(|n| net.daemon(n, &["--timeout", "2"])).collect();
    let at = |n: &str, data: &[u8], secs: u64| {
        let p = net.root(n).join("f");
        write(&p, data);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
        fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
    };
    at("n1", b"n1 first\n", 100);
    at("n2", b"n2 younger\n", 200);
    let x = |n: &str| {
        let out = net.csync(n).args(["-x", "--timeout", "2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{n}: {}", stderr(&out));
    };
    // n1's version loses to n2's younger one; n2 will bring it...
    x("n1");
    // ...but n1 edits again first, now the youngest.
    at("n1", b"n1 edited again\n", 300);
    x("n2");
    x("n1");
    for n in ["n1", "n2"] {
        assert_eq!(fs::read(net.root(n).join("f")).unwrap(), b"n1 edited again\n", "{n}");
    }
    let (_, o) = status(&net, "n2");
    assert!(o.contains("lost: younger"), "n2 kept its own version: {o}");
}

#[test]
fn a_version_that_loses_to_a_delete_is_kept() {
    let cfg = crate::net_util::TWO_NODES.replace("auto none", "auto older");
    let net = Net::new("a_version_that_loses_to_a_delete_is_kept", &["n1", "n2"], &cfg);
    let _d: Vec<Daemon> = ["n1", "n2"].iter().map(|n| net.daemon(n, &["--timeout", "2"])).collect();
    let x = |n: &str| {
        let out = net.csync(n).args(["-x", "--timeout", "2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{n}: {}", stderr(&out));
    };
    write(&net.root("n1").join("f"), b"first\n");
    write(&net.root("n1").join("other"), b"keeps the root from looking unmounted\n");
    x("n1");
    // n2 deletes it while n1 edits it; under `auto older` the delete wins.
    fs::remove_file(net.root("n2").join("f")).unwrap();
    write(&net.root("n1").join("f"), b"n1 edit\n");
    x("n1");
    x("n2");
    assert!(!net.root("n1").join("f").exists(), "the delete won");
    let (_, o) = status(&net, "n1");
    let line = o.lines().find(|l| l.contains("lost: older")).unwrap_or_else(|| panic!("{o}"));
    let kept = line.split("loser kept at ").nth(1).expect("a kept copy");
    assert_eq!(fs::read(kept.trim()).unwrap(), b"n1 edit\n");
}
