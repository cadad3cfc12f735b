//! Receiver safety end to end (PRODUCT.md §4.3, §4.5, §9): hostile pushes from
//! a raw protocol client, symlinks planted on the receiver, receive-only hosts,
//! groups the receiver is not in, kill -9 of either side in the middle of a
//! large transfer, delta transfers, non-empty directory deletes, device nodes
//! and `ignore uid gid mod`.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use csync::net::client::{ClientSettings, Session, Target, connect};
use csync::proto::{Content, ErrorCode, Msg, Outcome};

use crate::net_util::{Net, bin, wait_until};
use crate::sync::{CFG, Cluster, snapshot};

// ---------------------------------------------------------------------------
// Helpers

/// Three nodes with running daemons and a config of the test's own.
fn cluster_with(test: &str, cfg: &str) -> Cluster {
    let net = Net::new(test, &["n1", "n2", "n3"], cfg);
    let daemons =
        ["n1", "n2", "n3"].iter().map(|n| Some(net.daemon(n, &["--timeout", "2"]))).collect();
    Cluster { net, daemons }
}

/// The standard three-node config with `auto none`.
fn std_cfg() -> String {
    CFG.replace("@AUTO@", "none")
}

/// A raw protocol client: `me`'s identity and key, talking to `to`'s daemon.
struct Raw {
    rt: tokio::runtime::Runtime,
    s: Session,
}

impl Raw {
    fn connect(net: &Net, me: &str, to: &str, groups: &[&str]) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let id = csync::net::identity::Identity::load(&net.sysdir(me)).unwrap();
        let settings = ClientSettings {
            tls: csync::net::tls::client_config(&id).unwrap(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
        };
        let key = fs::read_to_string(net.sysdir(me).join("csync2.key")).unwrap();
        let key = key.trim().as_bytes().to_vec();
        let groups: Vec<(String, Vec<u8>)> =
            groups.iter().map(|g| (g.to_string(), key.clone())).collect();
        let target = Target { name: to.into(), addr: net.addr(to), port: net.port };
        let s = rt.block_on(connect(&target, &settings, me, &groups)).unwrap();
        Raw { rt, s }
    }

    /// Pushes a whole regular file at `path` (DB form) and returns the `Ack`'s outcome.
    fn push_file(&mut self, id: u32, group: &str, path: &[u8], data: &[u8]) -> Outcome {
        match self.push_reply(id, group, path, data) {
            Ok(Some(Msg::Ack { id: got, outcome })) => {
                assert_eq!(got, id, "Ack for another request");
                outcome
            }
            other => panic!("expected an Ack for push {id}, got {other:?}"),
        }
    }

    /// Pushes a whole regular file and returns whatever comes back first
    /// (`Ok(None)`: the peer closed the connection).
    fn push_reply(
        &mut self,
        id: u32,
        group: &str,
        path: &[u8],
        data: &[u8],
    ) -> Result<Option<Msg>, String> {
        let hash = *blake3::hash(data).as_bytes();
        let entry = crate::net_util::wire_file(data);
        let s = &mut self.s;
        self.rt.block_on(async {
            let e = |e: csync::net::conn::ConnError| e.to_string();
            s.conn
                .queue(&Msg::Push {
                    id,
                    group: group.into(),
                    path: path.to_vec(),
                    entry,
                    base: None,
                    force: false,
                    content: Content::Whole,
                    parent_mtime: None,
                })
                .map_err(e)?;
            s.conn.queue(&Msg::Data { stream: id, bytes: data.to_vec() }).map_err(e)?;
            s.conn.queue(&Msg::DataEnd { stream: id, hash }).map_err(e)?;
            s.conn.flush().await.map_err(e)?;
            s.conn.recv().await.map_err(e)
        })
    }

    /// The session still answers (a refused request did not wedge it).
    fn ping(&mut self, id: u32) {
        let s = &mut self.s;
        self.rt.block_on(async {
            s.conn.send(&Msg::Ping { id }).await.unwrap();
            match s.conn.recv().await.unwrap() {
                Some(Msg::Pong { id: got, .. }) => assert_eq!(got, id),
                other => panic!("expected Pong, got {other:?}"),
            }
        });
    }
}

fn assert_failed(o: &Outcome, want: ErrorCode, what: &str) {
    match o {
        Outcome::Failed { code, .. } if *code == want => {}
        other => panic!("{what}: expected Failed {{ {want:?} }}, got {other:?}"),
    }
}

/// Every entry below `dir` (recursively), as paths relative to it.
fn all_entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `csync` temporaries (`.csync.*`) anywhere below `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    all_entries(dir)
        .into_iter()
        .filter(|p| p.rsplit('/').next().unwrap().starts_with(".csync."))
        .collect()
}

/// `snapshot` without `csync` temporaries.
fn snapshot_without_temps(
    root: &Path,
) -> std::collections::BTreeMap<String, crate::sync::EntryState> {
    let mut s = snapshot(root);
    s.retain(|k, _| !k.rsplit('/').next().unwrap().starts_with(".csync."));
    s
}

/// `len` bytes that do not repeat (BLAKE3 XOF of `seed`): every delta block is unique.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut v);
    v
}

/// Writes a `mib` MiB file of non-repeating content quickly (1 MiB of noise,
/// each copy stamped with its index).
fn write_big(path: &Path, mib: usize, seed: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let block = noise(seed, 1 << 20);
    let mut f = std::io::BufWriter::with_capacity(4 << 20, fs::File::create(path).unwrap());
    for i in 0..mib {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&b).unwrap();
    }
    f.flush().unwrap();
}

/// `csync -x` on `node` as a child process (so the test can kill it).
fn spawn_x(c: &Cluster, node: &str, log: &Path) -> Child {
    let net = &c.net;
    StdCommand::new(bin())
        .env("CSYNC2_SYSTEM_DIR", net.sysdir(node))
        .args(["-N", node, "-p", &net.port.to_string(), "-D"])
        .arg(net.path(&format!("db-{node}")))
        .args(["-x", "--timeout", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Polls (tightly) until a `.csync.<name>.*` temporary in `dir` holds at
/// least `min` bytes; returns its path.
fn wait_for_partial(dir: &Path, name: &str, min: u64, limit: Duration) -> Option<PathBuf> {
    let prefix = format!(".csync.{name}.");
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix)
                    && e.metadata().is_ok_and(|m| m.len() >= min)
                {
                    return Some(e.path());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// `-M` on `node` found nothing dirty (exit 2).
fn assert_nothing_dirty(c: &Cluster, node: &str) {
    let (code, o, e) = c.run(node, &["-M"]);
    assert_eq!(code, 2, "{node} has dirty rows:\n{o}{e}");
}

// ---------------------------------------------------------------------------
// 1. Hostile receiver-side cases: refused, nothing written.

#[test]
fn push_with_dotdot_is_refused_and_writes_nothing() {
    let c = cluster_with("push_with_dotdot_is_refused_and_writes_nothing", &std_cfg());
    let before = snapshot(&c.root("n2"));
    let mut raw = Raw::connect(&c.net, "n1", "n2", &["g"]);
    assert_eq!(raw.s.accepted, ["g"]);
    for (i, p) in ["%p%/../escape", "%p%/a/../../escape", "%p%/a/../b", "%p%/./c", "%p%//d"]
        .iter()
        .enumerate()
    {
        let o = raw.push_file(i as u32 + 1, "g", p.as_bytes(), b"owned\n");
        assert_failed(&o, ErrorCode::PathRefused, p);
    }
    raw.ping(99);
    // Nothing outside the tree, nothing inside it either.
    assert!(!c.net.path("escape").exists(), "a file escaped n2's tree");
    assert!(!c.root("n2").join("b").exists());
    assert!(!c.root("n2").join("c").exists());
    assert!(!c.root("n2").join("d").exists());
    assert_eq!(snapshot(&c.root("n2")), before, "n2's tree changed");
    assert!(temporaries(c.net.dir.path()).is_empty(), "a temporary was left behind");
}

#[test]
fn symlink_planted_on_the_receiver_is_not_followed() {
    let c = cluster_with("symlink_planted_on_the_receiver_is_not_followed", &std_cfg());
    let outside = c.net.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("f"), b"precious\n").unwrap();
    std::os::unix::fs::symlink(&outside, c.root("n2").join("d")).unwrap();
    fs::create_dir_all(c.root("n1").join("d")).unwrap();
    c.write("n1", "d/f", b"pushed by n1\n");
    c.write("n1", "d/g", b"another\n");
    let (code, _, e) = c.x("n1");
    assert_eq!(code, 1, "n1 must report the refusal:\n{e}");
    assert!(e.contains("peer n2: %p%/d/f: path refused"), "names peer and path:\n{e}");
    // The outside directory is exactly as it was.
    assert_eq!(all_entries(&outside), ["f"]);
    assert_eq!(fs::read(outside.join("f")).unwrap(), b"precious\n");
    // The planted link is still a link (nothing replaced it silently).
    let md = fs::symlink_metadata(c.root("n2").join("d")).unwrap();
    assert!(md.file_type().is_symlink());
    // n3 had no trap: it got everything.
    assert_eq!(fs::read(c.root("n3").join("d/f")).unwrap(), b"pushed by n1\n");
    assert!(temporaries(c.net.dir.path()).is_empty(), "a temporary was left behind");
    // Forcing n1's version replaces the link by a real directory; still
    // nothing lands outside.
    let (code, o, e) = c.run("n1", &["-f", "-r", c.root("n1").join("d").to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    c.x_ok("n1");
    assert_eq!(all_entries(&outside), ["f"]);
    assert_eq!(fs::read(outside.join("f")).unwrap(), b"precious\n");
    assert!(fs::symlink_metadata(c.root("n2").join("d")).unwrap().is_dir());
    assert_eq!(fs::read(c.root("n2").join("d/f")).unwrap(), b"pushed by n1\n");
    c.assert_converged();
}

#[test]
fn paths_outside_the_receivers_patterns_are_refused() {
    let c = cluster_with("paths_outside_the_receivers_patterns_are_refused", &std_cfg());
    let outside = c.net.path("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    let evil = outside.join("evil");
    let real_root_abs = c.root("n2").join("abs");
    let mut raw = Raw::connect(&c.net, "n1", "n2", &["g"]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"%p%/x~".to_vec(), "excluded by *~"),
        (b"%p%/sub/y~".to_vec(), "excluded by *~ below"),
        (evil.to_str().unwrap().as_bytes().to_vec(), "absolute, under no include root"),
        (
            real_root_abs.to_str().unwrap().as_bytes().to_vec(),
            "n2's real root spelled out instead of %p%",
        ),
        (b"/etc/csync-test-evil".to_vec(), "system path"),
        (b"%q%/z".to_vec(), "undefined prefix"),
        (b"relative/path".to_vec(), "relative"),
    ];
    for (i, (p, why)) in cases.iter().enumerate() {
        let o = raw.push_file(i as u32 + 1, "g", p, b"evil\n");
        assert_failed(&o, ErrorCode::PathRefused, why);
    }
    raw.ping(99);
    assert!(!c.root("n2").join("x~").exists());
    assert!(!c.root("n2").join("sub").exists());
    assert!(!evil.exists());
    assert!(!real_root_abs.exists());
    assert!(!Path::new("/etc/csync-test-evil").exists());
    assert!(snapshot(&c.root("n2")).is_empty(), "nothing written in n2's tree");
    assert!(all_entries(&c.root("n2")).is_empty(), "not even excluded names");
}

const RO_CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ (n3@@ADDR_n3@);
    key csync2.key;
    include %p%;
    exclude *~;
    auto none;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; on n3: @ROOT_n3@; }
";

#[test]
fn receive_only_host_cannot_push() {
    let c = cluster_with("receive_only_host_cannot_push", RO_CFG);
    // It still receives.
    c.write("n1", "from-n1", b"hello\n");
    c.x_ok("n1");
    assert_eq!(fs::read(c.root("n3").join("from-n1")).unwrap(), b"hello\n");
    // Its own changes go nowhere, and it queues nothing.
    c.write("n3", "local", b"n3 only\n");
    c.write("n3", "from-n1", b"changed on n3\n");
    let (code, o, e) = c.x("n3");
    assert_eq!(code, 0, "{o}{e}");
    assert_nothing_dirty(&c, "n3");
    for n in ["n1", "n2"] {
        assert!(!c.root(n).join("local").exists(), "{n} got a file from receive-only n3");
        assert_eq!(fs::read(c.root(n).join("from-n1")).unwrap(), b"hello\n");
    }
    // A raw client speaking as n3 is refused by the receiver itself.
    let mut raw = Raw::connect(&c.net, "n3", "n2", &["g"]);
    assert_eq!(raw.s.accepted, ["g"]);
    let o = raw.push_file(1, "g", b"%p%/raw-from-n3", b"nope\n");
    assert_failed(&o, ErrorCode::ReceiveOnly, "push from a receive-only host");
    let o = raw.push_file(2, "g", b"%p%/from-n1", b"overwrite\n");
    assert_failed(&o, ErrorCode::ReceiveOnly, "overwrite from a receive-only host");
    raw.ping(3);
    assert!(!c.root("n2").join("raw-from-n3").exists());
    assert_eq!(fs::read(c.root("n2").join("from-n1")).unwrap(), b"hello\n");
    assert!(temporaries(&c.root("n2")).is_empty());
}

const TWO_GROUPS_CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@;
    key csync2.key;
    include %p%;
    exclude %p%/h;
    exclude *~;
    auto none;
}
group h {
    host n1@@ADDR_n1@ n3@@ADDR_n3@;
    key csync2.key;
    include %p%/h;
    auto none;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; on n3: @ROOT_n3@; }
";

#[test]
fn group_the_receiver_is_not_in_is_refused() {
    let net = Net::new("group_the_receiver_is_not_in_is_refused", &["n1", "n2", "n3"], "");
    net.write_config_for("n1", TWO_GROUPS_CFG);
    net.write_config_for("n3", TWO_GROUPS_CFG);
    net.write_config_for("n2", &std_cfg());
    let daemons =
        ["n1", "n2", "n3"].iter().map(|n| Some(net.daemon(n, &["--timeout", "2"]))).collect();
    let c = Cluster { net, daemons };
    let mut raw = Raw::connect(&c.net, "n1", "n2", &["g", "h"]);
    assert_eq!(raw.s.accepted, ["g"]);
    assert_eq!(raw.s.refused, [("h".to_string(), ErrorCode::UnknownGroup)]);
    let o = raw.push_file(1, "h", b"%p%/h/x", b"for h\n");
    assert_failed(&o, ErrorCode::UnknownGroup, "push for a group n2 is not in");
    raw.ping(2);
    assert!(!c.root("n2").join("h").exists(), "nothing written for group h");
    // A session that asked only for h gets no group at all.
    let mut raw = Raw::connect(&c.net, "n1", "n2", &["h"]);
    assert!(raw.s.accepted.is_empty());
    assert_eq!(raw.s.refused, [("h".to_string(), ErrorCode::UnknownGroup)]);
    // n2 ends such a session: the push gets no Ack, at most a typed error.
    match raw.push_reply(1, "h", b"%p%/h/y", b"for h\n") {
        Ok(None) | Err(_) => {}
        Ok(Some(Msg::Error { code, .. })) => {
            assert!(matches!(code, ErrorCode::UnknownGroup | ErrorCode::NotAuthenticated))
        }
        Ok(Some(other)) => panic!("a session without groups answered {other:?}"),
    }
    assert!(!c.root("n2").join("h").exists());
    // The real CLI: group h's files go to n3 only.
    c.write("n1", "h/x", b"for h\n");
    c.x_ok("n1");
    assert_eq!(fs::read(c.root("n3").join("h/x")).unwrap(), b"for h\n");
    assert!(!c.root("n2").join("h").exists());
}

// ---------------------------------------------------------------------------
// 2. Crash safety: kill -9 in the middle of a large transfer.

const BIG_MIB: usize = 300;

#[test]
fn client_killed_mid_transfer_leaves_no_partial_file() {
    let c = Cluster::new("client_killed_mid_transfer_leaves_no_partial_file", "none");
    let big = c.root("n1").join("data/big");
    write_big(&big, BIG_MIB, "client-kill");
    fs::create_dir_all(c.root("n2").join("data")).unwrap();
    let log = c.net.path("client.log");
    let mut client = spawn_x(&c, "n1", &log);
    let target = c.root("n2").join("data");
    let partial = wait_for_partial(&target, "big", 8 << 20, Duration::from_secs(120));
    client.kill().unwrap();
    let status = client.wait().unwrap();
    let partial = partial.unwrap_or_else(|| {
        panic!("never saw a temporary on n2: {}", fs::read_to_string(&log).unwrap())
    });
    assert!(!status.success(), "the client finished before it was killed");
    // The final path never holds a partial file.
    let final_path = target.join("big");
    match fs::metadata(&final_path) {
        Err(_) => {}
        Ok(m) => panic!("partial file at the final path: {} bytes", m.len()),
    }
    // The receiver removes its temporary once the sender is gone.
    wait_until(Duration::from_secs(10), || (!partial.exists()).then_some(()))
        .unwrap_or_else(|| panic!("temporary {} left behind", partial.display()));
    assert!(!final_path.exists());
    assert!(temporaries(&c.root("n2")).is_empty(), "{:?}", temporaries(&c.root("n2")));
    // The next run converges.
    c.x_ok("n1");
    c.assert_converged();
    assert!(temporaries(&c.root("n2")).is_empty());
    assert!(temporaries(&c.root("n3")).is_empty());
}

#[test]
fn receiver_killed_mid_transfer_keeps_the_old_version() {
    let mut c = Cluster::new("receiver_killed_mid_transfer_keeps_the_old_version", "none");
    let old = b"old version\n".repeat(100);
    c.write("n1", "data/big", &old);
    c.x_ok("n1");
    assert_eq!(fs::read(c.root("n2").join("data/big")).unwrap(), old);
    write_big(&c.root("n1").join("data/big"), BIG_MIB, "receiver-kill");
    let log = c.net.path("client.log");
    let mut client = spawn_x(&c, "n1", &log);
    let target = c.root("n2").join("data");
    let partial = wait_for_partial(&target, "big", 8 << 20, Duration::from_secs(120));
    {
        let d = c.daemons[1].as_mut().unwrap();
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }
    let partial = partial.unwrap_or_else(|| {
        panic!("never saw a temporary on n2: {}", fs::read_to_string(&log).unwrap())
    });
    // While n2 is dead: its final path holds the complete old version.
    assert_eq!(fs::read(target.join("big")).unwrap(), old, "final path changed on n2");
    let status = client.wait().unwrap();
    let err = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "n1 must report the failed peer:\n{err}");
    assert!(err.contains("peer n2"), "{err}");
    assert_eq!(fs::read(target.join("big")).unwrap(), old, "final path changed on n2");
    // Whatever is left of the temporary is not at the final path.
    assert_ne!(partial, target.join("big"));
    c.start("n2");
    c.x_ok("n1");
    assert_eq!(
        snapshot_without_temps(&c.root("n1")),
        snapshot_without_temps(&c.root("n2")),
        "n1 and n2 differ"
    );
    assert_eq!(snapshot(&c.root("n1")), snapshot(&c.root("n3")), "n1 and n3 differ");
}

/// After a receiver crash, its orphaned temporary must not become a managed
/// file that the receiver's next run pushes to everyone.
#[test]
fn orphaned_temporary_is_not_synced() {
    let mut c = Cluster::new("orphaned_temporary_is_not_synced", "none");
    fs::create_dir_all(c.root("n2").join("data")).unwrap();
    write_big(&c.root("n1").join("data/big"), BIG_MIB, "orphan");
    let log = c.net.path("client.log");
    let mut client = spawn_x(&c, "n1", &log);
    let partial =
        wait_for_partial(&c.root("n2").join("data"), "big", 8 << 20, Duration::from_secs(120));
    {
        let d = c.daemons[1].as_mut().unwrap();
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }
    let _ = client.wait();
    partial.expect("never saw a temporary on n2");
    c.start("n2");
    c.x_ok("n1");
    c.x_ok("n2");
    for n in ["n1", "n2", "n3"] {
        assert!(temporaries(&c.root(n)).is_empty(), "{n}: {:?}", temporaries(&c.root(n)));
    }
    c.assert_converged();
}

// ---------------------------------------------------------------------------
// 3. Delta transfers.

/// `N` in every "peer P: … N bytes of content sent" line, per peer.
fn bytes_sent(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter(|l| l.ends_with("bytes of content sent"))
        .map(|l| {
            let peer = l.split("peer ").nth(1).unwrap().split(':').next().unwrap().to_string();
            let n = l.rsplit(", ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
            (peer, n)
        })
        .collect()
}

#[test]
fn changing_one_mib_of_a_large_file_sends_about_one_mib() {
    let c = Cluster::new("changing_one_mib_of_a_large_file_sends_about_one_mib", "none");
    let big = c.root("n1").join("big");
    fs::write(&big, noise("delta-base", 64 << 20)).unwrap();
    c.x_ok("n1");
    c.assert_converged();
    // 1 MiB in the middle, in place, same size.
    {
        let mut f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(&noise("delta-change", 1 << 20)).unwrap();
    }
    let expected = fs::read(&big).unwrap();
    assert_eq!(expected.len(), 64 << 20);
    let (code, o, e) = c.run("n1", &["-xv"]);
    assert_eq!(code, 0, "{o}{e}");
    let sent = bytes_sent(&e);
    assert_eq!(sent.len(), 2, "one line per peer:\n{e}");
    for (peer, n) in &sent {
        assert!(*n <= 3 << 20, "{peer}: {n} bytes sent for a 1 MiB change:\n{e}");
        assert!(*n >= 1 << 20, "{peer}: {n} bytes cannot carry a 1 MiB change:\n{e}");
    }
    c.assert_converged();
    for n in ["n2", "n3"] {
        assert!(fs::read(c.root(n).join("big")).unwrap() == expected, "{n}: wrong content");
    }
}

// ---------------------------------------------------------------------------
// 4. Deletes of directories that still hold unmanaged files.

#[test]
fn deleted_directory_with_unmanaged_file_stays_on_the_peer() {
    let c = Cluster::new("deleted_directory_with_unmanaged_file_stays_on_the_peer", "none");
    c.write("n1", "dd/a", b"managed\n");
    c.write("n1", "dd/sub/b", b"managed too\n");
    c.write("n1", "other", b"keeps the include root non-empty\n");
    c.x_ok("n1");
    c.assert_converged();
    c.write("n2", "dd/keep.txt~", b"unmanaged, n2 only\n");
    fs::remove_dir_all(c.root("n1").join("dd")).unwrap();
    let (code, _, e) = c.x("n1");
    assert_eq!(code, 1, "the left-over directory must be reported:\n{e}");
    assert!(e.contains("peer n2") && e.contains("%p%/dd"), "names peer and path:\n{e}");
    assert!(!e.contains("peer n3"), "n3 had nothing in the way:\n{e}");
    // n2: managed entries gone, the directory and its unmanaged file kept.
    assert!(!c.root("n2").join("dd/a").exists());
    assert!(!c.root("n2").join("dd/sub").exists());
    assert_eq!(fs::read(c.root("n2").join("dd/keep.txt~")).unwrap(), b"unmanaged, n2 only\n");
    assert_eq!(all_entries(&c.root("n2").join("dd")), ["keep.txt~"]);
    // n3: all gone.
    assert!(!c.root("n3").join("dd").exists());
}

// ---------------------------------------------------------------------------
// 5. Device nodes.

#[test]
fn char_device_is_recreated_with_its_rdev() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: creating device nodes needs root");
        return;
    }
    // Receivers refuse device nodes unless the group allows them.
    let c = Cluster::new("char_device_is_recreated_with_its_rdev", "none; allow-devices");
    let dev = rustix::fs::makedev(1, 3);
    fs::create_dir_all(c.root("n1").join("dev")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        c.root("n1").join("dev/null-like"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o640),
        dev,
    )
    .unwrap();
    c.x_ok("n1");
    for n in ["n2", "n3"] {
        let md = fs::symlink_metadata(c.root(n).join("dev/null-like")).unwrap();
        assert!(md.file_type().is_char_device(), "{n}: not a char device");
        assert_eq!(md.rdev(), dev, "{n}: wrong device number");
        assert_eq!(md.mode() & 0o7777, 0o640, "{n}: wrong mode");
    }
    c.assert_converged();
}

// ---------------------------------------------------------------------------
// 6. `ignore uid gid mod;`

#[test]
fn ignore_mod_leaves_modes_alone() {
    let cfg = format!("ignore uid gid mod;\n{}", std_cfg());
    let c = cluster_with("ignore_mod_leaves_modes_alone", &cfg);
    c.write("n1", "f", b"v1\n");
    fs::set_permissions(c.root("n1").join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    c.x_ok("n1");
    assert_eq!(fs::read(c.root("n2").join("f")).unwrap(), b"v1\n");
    let mode = |n: &str| fs::metadata(c.root(n).join("f")).unwrap().mode() & 0o7777;
    let n2_mode = mode("n2");
    // A mode change alone is no change.
    fs::set_permissions(c.root("n1").join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let (code, o, e) = c.run("n1", &["-c"]);
    assert_eq!(code, 0, "{o}{e}");
    assert_nothing_dirty(&c, "n1");
    let (code, o, e) = c.x("n1");
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(mode("n2"), n2_mode, "mode reached n2 though ignored");
    // The receiver's own mode, different from the sender's, is kept across a
    // content change.
    fs::set_permissions(c.root("n2").join("f"), fs::Permissions::from_mode(0o604)).unwrap();
    let (code, o, e) = c.run("n2", &["-c"]);
    assert_eq!(code, 0, "{o}{e}");
    assert_nothing_dirty(&c, "n2");
    c.write("n1", "f", b"v2, new content\n");
    c.x_ok("n1");
    for n in ["n2", "n3"] {
        assert_eq!(fs::read(c.root(n).join("f")).unwrap(), b"v2, new content\n", "{n}");
    }
    assert_eq!(mode("n1"), 0o600);
    assert_eq!(mode("n2"), 0o604, "n2 lost its own mode");
    assert_eq!(mode("n3"), n2_mode, "n3 lost its own mode");
}

/// The receiver dies after a batch became durable on its disk but before it
/// recorded and confirmed it: the next run finds the files in place,
/// records them, and nothing is lost, sent back, duplicated or left over.
#[test]
fn receiver_killed_between_durability_and_confirmation_converges() {
    let mut c = Cluster::new("receiver_killed_between_durability_and_confirmation", "none");
    for i in 0..300 {
        c.write("n1", &format!("batch/d{}/f{i}", i % 7), format!("file {i}\n").as_bytes());
    }
    c.stop("n2");
    let log = c.net.path("crashing-n2.log");
    let mut crashing = c.net.csync_std("n2");
    crashing
        .args(["-ii", "--timeout", "2"])
        .env("CSYNC_CRASH_AT", "batch-durable")
        .stderr(fs::File::create(&log).unwrap());
    let mut child = crashing.spawn().unwrap();
    crate::net_util::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect((c.net.addr("n2").as_str(), c.net.port)).ok().map(|_| ())
    })
    .expect("n2 listens");
    let (code, _, err) = c.x("n1");
    assert_eq!(code, 1, "n2 died before confirming: {err}");
    assert!(err.contains("peer n2"), "{err}");
    let st = child.wait().unwrap();
    assert!(!st.success(), "n2 was to die at the durability point");
    // What was durable is on n2's disk already, complete.
    let on_disk = (0..300)
        .filter(|i| {
            fs::read(c.root("n2").join(format!("batch/d{}/f{i}", i % 7)))
                .is_ok_and(|b| b == format!("file {i}\n").as_bytes())
        })
        .count();
    assert!(on_disk > 0, "the first batch was durable before the crash");
    c.start("n2");
    c.x_ok("n1");
    c.x_ok("n2");
    c.x_ok("n3");
    c.assert_converged();
    // Nothing left dirty anywhere, no conflict invented, no temporary left.
    for n in ["n1", "n2", "n3"] {
        let (code, out, _) = c.run(n, &["-M"]);
        assert_eq!(code, 2, "{n} still has dirty entries:\n{out}");
        let (_, out, _) = c.run(n, &["--status"]);
        assert!(!out.contains("conflict"), "{n}: {out}");
    }
    let temps = snapshot(&c.root("n2")).keys().filter(|k| k.contains(".csync.")).count();
    assert_eq!(temps, 0);
}
