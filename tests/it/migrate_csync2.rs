//! Issue 14: a real csync2 2.0 cluster (Debian's `csync2`) is synced, its
//! databases are imported, and csync then finds it in sync: nothing sent,
//! no conflicts; a change made afterwards syncs under csync.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::Duration;

use assert_cmd::Command;

use crate::net_util::{Net, bin, free_port, wait_until};
use crate::util::{stderr, stdout};

/// The csync2 binary, or why it cannot be run here.
fn csync2() -> Result<PathBuf, String> {
    let p = ["/usr/sbin/csync2", "/usr/bin/csync2"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("csync2 is not installed (apt-get install csync2)")?;
    // csync2 has no --version: without arguments it prints its usage, exit 1.
    let out = StdCommand::new(&p).output().map_err(|e| format!("{}: {e}", p.display()))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !text.contains("csync2") {
        return Err(format!("{} does not run as csync2: {text}", p.display()));
    }
    Ok(p)
}

/// True when something listens on TCP `port` at `addr` (read from
/// /proc/net/tcp: a probe connection would use up `csync2 -iii`'s only one).
pub fn listening(addr: &str, port: u16) -> bool {
    let ip: Vec<u8> = addr.split('.').map(|x| x.parse().unwrap()).collect();
    let want = format!("{:02X}{:02X}{:02X}{:02X}:{port:04X}", ip[3], ip[2], ip[1], ip[0]);
    let any = format!("00000000:{port:04X}");
    fs::read_to_string("/proc/net/tcp").unwrap_or_default().lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && (f[1] == want || f[1] == any) && f[3] == "0A"
    })
}

struct Cluster {
    net: Net,
    csync2: PathBuf,
    c2port: u16,
    names: Vec<String>,
}

impl Cluster {
    fn c2etc(&self) -> PathBuf {
        self.net.path("csync2-etc")
    }

    fn c2db(&self) -> PathBuf {
        self.net.path("csync2-db")
    }

    fn csync2(&self, node: usize) -> StdCommand {
        let mut c = StdCommand::new(&self.csync2);
        c.env("CSYNC2_SYSTEM_DIR", self.c2etc()).args(["-N", &self.names[node], "-p"]);
        c.arg(self.c2port.to_string()).arg("-D").arg(self.c2db());
        c
    }

    /// `csync2 -iii` on `node`, listening (not yet connected).
    fn csync2_listener(&self, node: usize) -> Child {
        let log = fs::File::create(self.net.path(&format!("csync2-{node}.log"))).unwrap();
        let child = self
            .csync2(node)
            .args(["-iii", "-v"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), || {
            listening(&self.names[node], self.c2port).then_some(())
        })
        .expect("csync2 -iii did not start listening");
        child
    }

    /// csync2 from `from` to `to`, as upstream's test harness does it: a
    /// check, then (when something is dirty for `to`) `-u` against a
    /// single-connection listener (csync2 does not connect when nothing is due).
    fn csync2_sync(&self, from: usize, to: usize) {
        let out = self.csync2(from).args(["-cr", "/"]).output().unwrap();
        assert!(out.status.success(), "csync2 -cr: {}", String::from_utf8_lossy(&out.stderr));
        let out = self.csync2(from).arg("-M").output().unwrap();
        let due = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split('\t').nth(2) == Some(self.names[to].as_str()));
        if !due {
            return;
        }
        let mut server = self.csync2_listener(to);
        let out = self.csync2(from).args(["-u", "-v", "-P", &self.names[to]]).output().unwrap();
        let status = server.wait().unwrap();
        assert!(
            out.status.success() && status.success(),
            "csync2 -u {from}->{to}: {}\nserver: {}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(self.net.path(&format!("csync2-{to}.log"))).unwrap_or_default()
        );
    }

    fn csync2_dirty(&self, node: usize) -> bool {
        // -M: exit 2 when nothing is dirty.
        let out = self.csync2(node).arg("-M").output().unwrap();
        out.status.code() == Some(0)
    }

    /// `csync` for node `n`, named like csync2 (its address).
    fn csync(&self, node: usize) -> Command {
        let n = format!("n{}", node + 1);
        let mut c = Command::new(bin());
        c.env("CSYNC2_SYSTEM_DIR", self.net.sysdir(&n));
        c.args(["-N", &self.names[node], "-p", &self.net.port.to_string(), "-D"]);
        c.arg(self.net.path(&format!("db-{n}")));
        c
    }

    fn root(&self, node: usize) -> PathBuf {
        self.net.root(&format!("n{}", node + 1))
    }
}

/// (path, inode, ctime, mtime) of everything below `root`: any write csync
/// makes (content, owner, mode, time) moves the ctime.
fn stamps(root: &Path) -> Vec<(PathBuf, u64, i64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), md.ino(), md.ctime(), md.ctime_nsec(), md.mtime()));
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn setup(test: &str) -> Option<Cluster> {
    let csync2 = match csync2() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
    };
    // Names are the nodes' addresses: csync2 identifies a peer by resolving
    // its name, and no /etc/hosts entry is needed for an address.
    let net = Net::new(test, &["n1", "n2", "n3"], "");
    let names: Vec<String> = ["n1", "n2", "n3"].iter().map(|n| net.addr(n)).collect();
    let c = Cluster { csync2, c2port: free_port(), names, net };
    fs::create_dir_all(c.c2etc()).unwrap();
    fs::create_dir_all(c.c2db()).unwrap();
    // The group key made by csync2 itself: csync reads csync2's key files.
    let key = c.c2etc().join("csync2.key_g");
    let out = StdCommand::new(&c.csync2).arg("-k").arg(&key).output().unwrap();
    assert!(out.status.success(), "csync2 -k: {}", String::from_utf8_lossy(&out.stderr));
    let config = format!(
        "nossl * *;\n\
         group g {{\n  host {} {} {};\n  key {};\n  include %data%;\n  exclude %data%/tmp;\n}}\n\
         prefix data {{\n  on {}: {};\n  on {}: {};\n  on {}: {};\n}}\n",
        c.names[0],
        c.names[1],
        c.names[2],
        key.display(),
        c.names[0],
        c.root(0).display(),
        c.names[1],
        c.root(1).display(),
        c.names[2],
        c.root(2).display()
    );
    fs::write(c.c2etc().join("csync2.cfg"), &config).unwrap();
    // csync: the same config file, and an identity named like the node.
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        c.net.identity(n, &c.names[i], "ca");
        fs::write(c.net.sysdir(n).join("csync2.cfg"), &config).unwrap();
    }
    Some(c)
}

#[test]
fn a_csync2_cluster_imported_is_in_sync_and_keeps_syncing() {
    let Some(c) = setup("migrate_csync2") else { return };
    // n1 has most of the content (a file big enough that sending it would
    // show), n2 one file of its own, n3 starts empty.
    let r0 = c.root(0);
    fs::write(r0.join("a.txt"), b"alpha\n").unwrap();
    fs::create_dir_all(r0.join("d/e")).unwrap();
    fs::write(
        r0.join("d/e/big.bin"),
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", r0.join("link")).unwrap();
    fs::write(c.root(1).join("from-n2.txt"), b"beta\n").unwrap();
    c.root(2);

    // csync2 as its users run it: every node pushes to every other.
    for (from, to) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)] {
        c.csync2_sync(from, to);
    }
    for n in 0..3 {
        assert!(!c.csync2_dirty(n), "csync2 left node {n} dirty");
        assert_eq!(fs::read(c.root(n).join("a.txt")).unwrap(), b"alpha\n");
        assert_eq!(fs::read(c.root(n).join("from-n2.txt")).unwrap(), b"beta\n");
        assert_eq!(fs::read(c.root(n).join("d/e/big.bin")).unwrap().len(), 300_000);
    }

    // Import each node's csync2 database; csync2's files are only read.
    for n in 0..3 {
        let db = c.c2db().join(format!("{}.db3", c.names[n]));
        let before = fs::read(&db).unwrap();
        let out = c.csync(n).arg("--import-csync2").arg(&db).output().unwrap();
        assert!(out.status.success(), "import {n}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("7 entries scanned; 14 agreed with peers"), "{text}");
        assert!(text.contains("0 dirty marks from csync2, 0 changed and 0 deleted"), "{text}");
        assert_eq!(fs::read(&db).unwrap(), before, "the csync2 database was written");
        // Nothing to push anywhere.
        c.csync(n).arg("-M").assert().code(2);
    }
    let before: Vec<_> = (0..3).map(|n| stamps(&c.root(n))).collect();
    let _daemons: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .enumerate()
        .map(|(i, n)| c.net.daemon(n, &["-N", &c.names[i]]))
        .collect();

    // In sync: -T lists nothing (exit 2), -x sends nothing and conflicts with nothing.
    for n in 0..3 {
        let out = c.csync(n).arg("-T").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "-T on {n}: {}{}", stdout(&out), stderr(&out));
        assert_eq!(stdout(&out), "");
        let out = c.csync(n).args(["-x", "-v"]).output().unwrap();
        assert!(out.status.success(), "-x on {n}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(!err.contains("conflict"), "{err}");
        for l in err.lines().filter(|l| l.contains("bytes of content sent")) {
            assert!(l.contains(" 0 bytes of content sent"), "{err}");
        }
        c.csync(n).arg("--status").assert().success();
    }
    let after: Vec<_> = (0..3).map(|n| stamps(&c.root(n))).collect();
    assert_eq!(before, after, "csync wrote to a tree that was already in sync");

    // Then a change on n2 syncs under csync, and one on n3.
    fs::write(c.root(1).join("a.txt"), b"alpha, changed under csync\n").unwrap();
    let out = c.csync(1).args(["-x", "-v"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    fs::remove_file(c.root(2).join("from-n2.txt")).unwrap();
    let out = c.csync(2).args(["-x", "-v"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for n in 0..3 {
        assert_eq!(fs::read(c.root(n).join("a.txt")).unwrap(), b"alpha, changed under csync\n");
        assert!(!c.root(n).join("from-n2.txt").exists(), "delete did not reach node {n}");
        let out = c.csync(n).arg("-T").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "-T on {n}: {}{}", stdout(&out), stderr(&out));
    }
}

#[test]
fn pending_csync2_changes_become_dirty_marks() {
    let Some(c) = setup("migrate_csync2_dirty") else { return };
    fs::write(c.root(0).join("a.txt"), b"one\n").unwrap();
    fs::write(c.root(0).join("keep.txt"), b"unchanged\n").unwrap();
    for (from, to) in [(0, 1), (0, 2)] {
        c.csync2_sync(from, to);
    }
    // Changes csync2 has seen (-c) but not pushed (a new file, a modified
    // one), and one it has not seen yet.
    fs::write(c.root(0).join("b.txt"), b"new, checked\n").unwrap();
    fs::write(c.root(0).join("a.txt"), b"one, changed\n").unwrap();
    let out = c.csync2(0).args(["-cr", "/"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fs::write(c.root(0).join("c.txt"), b"new, unchecked\n").unwrap();
    let db = c.c2db().join(format!("{}.db3", c.names[0]));
    let out = c.csync(0).arg("--import-csync2").arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("4 dirty marks from csync2, 2 changed"), "{}", stdout(&out));
    assert!(stderr(&out).contains("warning: 2 entries csync2 had not pushed"), "{}", stderr(&out));
    // The peers switch in the same window.
    for n in 1..3 {
        let db = c.c2db().join(format!("{}.db3", c.names[n]));
        c.csync(n).arg("--import-csync2").arg(&db).assert().success();
    }
    let out = c.csync(0).arg("-M").output().unwrap();
    let listed = stdout(&out);
    for peer in &c.names[1..] {
        for f in ["a.txt", "b.txt", "c.txt"] {
            assert!(
                listed
                    .lines()
                    .any(|l| l.contains(peer.as_str()) && l.ends_with(&format!("%data%/{f}"))),
                "{f} not dirty for {peer}: {listed}"
            );
        }
        assert!(!listed.contains("keep.txt"), "a clean file was marked: {listed}");
    }
    // A second import is refused once the index has met its peers.
    let out = c.csync(0).arg("--import-csync2").arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has synced with"), "{}", stderr(&out));
    // And the pending changes reach the peers under csync.
    let _d: Vec<_> = ["n2", "n3"]
        .iter()
        .enumerate()
        .map(|(i, n)| c.net.daemon(n, &["-N", &c.names[i + 1]]))
        .collect();
    // New files arrive. A modified one csync2 had not pushed meets the
    // peers' copies as a conflict: csync2 kept no content hash, so which
    // version a peer holds is unknown (hence: csync2 -x before importing).
    // The import said so; -f settles it as csync always does.
    let out = c.csync(0).args(["-x", "-v"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("%data%/a.txt: conflict"), "{}", stderr(&out));
    c.csync(0).arg("-f").arg(c.root(0).join("a.txt")).assert().success();
    c.csync(0).arg("-x").assert().success();
    for n in 1..3 {
        assert_eq!(fs::read(c.root(n).join("a.txt")).unwrap(), b"one, changed\n");
        assert_eq!(fs::read(c.root(n).join("b.txt")).unwrap(), b"new, checked\n");
        assert_eq!(fs::read(c.root(n).join("c.txt")).unwrap(), b"new, unchecked\n");
    }
}
