//! Security issue items 2 and 8 end to end: a local user's symlink swap never
//! sends a root-only file to a peer, the index is private, a hostile pusher
//! cannot grow a file past its declared size, and names a peer sends reach
//! the log escaped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csync::proto::{Content, ErrorCode, Msg, Outcome, WireEntry};

use csync::net::client::{ClientSettings, Target, connect};

use crate::net_util::{Net, raw};
use crate::util::{Env, stderr, stdout};

use crate::net_util::TWO_NODES as CFG2;

/// What the root-only file holds: must never be found on the peer.
const SECRET: &[u8] = b"root-only secret 7f3a9c1e";

/// `csync ARGS --timeout 2` on `node`: (exit code, stdout + stderr).
fn run(net: &Net, node: &str, args: &[&str]) -> (i32, String) {
    let out = net.csync(node).args(args).args(["--timeout", "2"]).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", stdout(&out), stderr(&out)))
}

/// Every regular file below `dir` (symlinks not followed) whose content
/// holds `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else { continue };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file()
                && fs::read(&p).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
            {
                out.push(p);
            }
        }
    }
    out
}

/// A 0600 file outside every tree, in a 0700 directory.
fn plant_secret(net: &Net) -> PathBuf {
    let dir = net.path("private");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let secret = dir.join("shadow");
    fs::write(&secret, SECRET).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

#[test]
fn a_file_swapped_for_a_symlink_after_the_check_is_never_sent() {
    let net = Net::new("symlink_swap_after_check", &["n1", "n2"], CFG2);
    let _d2 = net.daemon("n2", &["--timeout", "2"]);
    let secret = plant_secret(&net);
    let r1 = net.root("n1");
    fs::create_dir_all(r1.join("home")).unwrap();
    fs::write(r1.join("home/notes"), b"v1").unwrap();
    let (code, out) = run(&net, "n1", &["-x"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read(net.root("n2").join("home/notes")).unwrap(), b"v1");

    // The user edits the file, the check hashes it; then, before the push,
    // the user swaps it for a symlink to the root-only file.
    fs::write(r1.join("home/notes"), b"v2, edited").unwrap();
    let (code, out) = run(&net, "n1", &["-cr"]);
    assert_eq!(code, 0, "{out}");
    fs::remove_file(r1.join("home/notes")).unwrap();
    std::os::unix::fs::symlink(&secret, r1.join("home/notes")).unwrap();
    let (code, out) = run(&net, "n1", &["-u"]);
    assert_ne!(code, 0, "the swapped path must fail this run:\n{out}");
    assert!(out.contains("notes") && out.contains("symlink"), "{out}");
    assert_eq!(fs::read(net.root("n2").join("home/notes")).unwrap(), b"v1");
    let leaked = files_containing(&net.root("n2"), SECRET);
    assert!(leaked.is_empty(), "the secret reached n2: {leaked:?}");

    // The next run records what is there now and pushes it as a symlink.
    let (code, out) = run(&net, "n1", &["-x"]);
    assert_eq!(code, 0, "{out}");
    let p2 = net.root("n2").join("home/notes");
    assert!(fs::symlink_metadata(&p2).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(&p2).unwrap(), secret);
    // Nowhere on n2 (tree, index, backups), nor anywhere else but the secret itself.
    let mut leaked = files_containing(net.dir.path(), SECRET);
    leaked.retain(|p| *p != secret);
    assert!(leaked.is_empty(), "the secret was copied: {leaked:?}");
}

#[test]
fn a_file_swapped_for_a_symlink_before_the_run_is_synced_as_a_symlink() {
    let net = Net::new("symlink_swap_before_run", &["n1", "n2"], CFG2);
    let _d2 = net.daemon("n2", &["--timeout", "2"]);
    let secret = plant_secret(&net);
    let r1 = net.root("n1");
    fs::write(r1.join("f"), b"mine").unwrap();
    let (code, out) = run(&net, "n1", &["-x"]);
    assert_eq!(code, 0, "{out}");
    fs::remove_file(r1.join("f")).unwrap();
    std::os::unix::fs::symlink(&secret, r1.join("f")).unwrap();
    let (code, out) = run(&net, "n1", &["-x"]);
    assert_eq!(code, 0, "{out}");
    let p2 = net.root("n2").join("f");
    assert!(fs::symlink_metadata(&p2).unwrap().file_type().is_symlink());
    let mut leaked = files_containing(net.dir.path(), SECRET);
    leaked.retain(|p| *p != secret);
    assert!(leaked.is_empty(), "the secret was copied: {leaked:?}");
}

#[test]
fn the_index_is_private_whatever_the_umask() {
    let env = Env::new();
    env.config("group g { host n1 n2; key csync2.key; include @ROOT_n1@; }");
    env.write("n1", "f", b"x");
    env.csync("n1").arg("-cr").assert().success();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&env.db_file("n1")), 0o600);
    assert_eq!(mode(&env.db_dir("n1")), 0o700);
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", env.db_file("n1").display()));
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    // An index an older csync left world-readable is tightened on the next open.
    fs::set_permissions(env.db_file("n1"), fs::Permissions::from_mode(0o644)).unwrap();
    env.csync("n1").arg("-cr").assert().success();
    assert_eq!(mode(&env.db_file("n1")), 0o600);
}

#[test]
fn content_longer_than_declared_is_refused() {
    let net = Net::new("content_longer_than_declared", &["n1", "n2"], CFG2);
    let d2 = net.daemon("n2", &["--timeout", "2"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut s = raw(&net, &rt, "n1", &["g"]);
    let data = [b'A'; 20];
    let hash = *blake3::hash(&data).as_bytes();
    // Announced as 10 bytes, 20 follow.
    let entry = WireEntry { size: 10, ..crate::net_util::wire_file(&data) };
    let reply = rt.block_on(async {
        let push = Msg::Push {
            id: 1,
            group: "g".into(),
            path: b"%p%/long".to_vec(),
            entry,
            base: None,
            force: false,
            content: Content::Whole,
            parent_mtime: None,
        };
        s.conn.queue(&push).unwrap();
        s.conn.queue(&Msg::Data { stream: 1, bytes: data.to_vec() }).unwrap();
        s.conn.queue(&Msg::DataEnd { stream: 1, hash }).unwrap();
        s.conn.flush().await.unwrap();
        let reply = s.conn.recv().await.unwrap();
        // The session still answers: only that entry was refused.
        s.conn.send(&Msg::Ping { id: 2 }).await.unwrap();
        let pong = s.conn.recv().await.unwrap();
        assert!(matches!(pong, Some(Msg::Pong { id: 2, .. })), "{pong:?}");
        reply
    });
    match reply {
        Some(Msg::Ack { id: 1, outcome: Outcome::Failed { code, message } }) => {
            assert_eq!(code, ErrorCode::Protocol);
            assert!(message.contains("longer than its declared size"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let entries: Vec<_> = fs::read_dir(net.root("n2")).unwrap().flatten().collect();
    assert!(entries.is_empty(), "written on n2: {entries:?}");
    d2.wait_log("longer than its declared size");
}

#[test]
fn names_from_a_peer_reach_the_log_escaped() {
    let net = Net::new("names_from_a_peer_escaped", &["n1", "n2"], CFG2);
    let d2 = net.daemon("n2", &["--timeout", "2"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A group name with a newline and a terminal escape: refused, logged escaped.
    let s = raw(&net, &rt, "n1", &["g", "x\nFORGED line \x1b[31mred"]);
    assert_eq!(s.accepted, ["g"]);
    drop(s);
    let log = d2.wait_log("FORGED");
    assert!(log.contains("x\\nFORGED line \\x1b[31mred"), "{log}");
    // A claimed node name the certificate does not cover, with the same tricks.
    let id = csync::net::identity::Identity::load(&net.sysdir("n1")).unwrap();
    let settings = ClientSettings {
        tls: csync::net::tls::client_config(&id).unwrap(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
    };
    let target = Target { name: "n2".into(), addr: net.addr("n2"), port: net.port };
    let r = rt.block_on(connect(&target, &settings, "n1\nSPOOFED \x1b[2J", &[]));
    assert!(r.is_err());
    let log = d2.wait_log("SPOOFED");
    assert!(log.contains("n1\\nSPOOFED \\x1b[2J"), "{log}");
    assert!(!log.contains('\x1b'), "a raw escape reached the log:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED") || l.starts_with("SPOOFED")),
        "a forged log line:\n{log}"
    );
}

#[test]
fn a_diff_never_shows_a_file_swapped_in_after_the_check() {
    let net = Net::new("diff_after_swap", &["n1", "n2"], CFG2);
    let _d1 = net.daemon("n1", &["--timeout", "2"]);
    let _d2 = net.daemon("n2", &["--timeout", "2"]);
    let secret = plant_secret(&net);
    fs::write(net.root("n1").join("f"), b"one\n").unwrap();
    let (code, out) = run(&net, "n1", &["-x"]);
    assert_eq!(code, 0, "{out}");
    // n2 changes it, checks, and then a user swaps it for a symlink.
    let f2 = net.root("n2").join("f");
    fs::write(&f2, b"two\n").unwrap();
    let (code, out) = run(&net, "n2", &["-cr"]);
    assert_eq!(code, 0, "{out}");
    fs::remove_file(&f2).unwrap();
    std::os::unix::fs::symlink(&secret, &f2).unwrap();
    let (_, out) = run(&net, "n2", &["-TT", "-P", "n1"]);
    assert!(out.contains("X\tn2\tn1\t%p%/f"), "{out}");
    assert!(out.contains("not diffed"), "{out}");
    let secret_text = String::from_utf8_lossy(SECRET);
    assert!(!out.contains(secret_text.as_ref()), "the diff showed the secret:\n{out}");
}
