//! What a peer may create is the receiver's choice (`allow-devices`,
//! `allow-setid`, `owners`): device nodes refused, setuid/setgid bits
//! stripped and foreign owners refused unless the receiver's group allows.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::net_util::{Daemon, Net};
use crate::util::stderr;

fn cfg(policy: &str) -> String {
    format!(
        "
group g {{
    host n1@@ADDR_n1@ n2@@ADDR_n2@;
    key csync2.key;
    include %p%;
    {policy}
}}
prefix p {{ on n1: @ROOT_n1@; on n2: @ROOT_n2@; }}
"
    )
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// n1 and n2; n2 (the receiver) has `n2_policy`.
fn pair(test: &str, n2_policy: &str) -> (Net, Vec<Daemon>) {
    let net = Net::new(test, &["n1", "n2"], &cfg(""));
    net.write_config_for("n2", &cfg(n2_policy));
    let d = ["n1", "n2"].iter().map(|n| net.daemon(n, &["--timeout", "2"])).collect();
    (net, d)
}

/// A character device like /dev/null at `p`.
fn mknod_null(p: &std::path::Path) {
    let st = std::process::Command::new("mknod").arg(p).args(["c", "1", "3"]).status().unwrap();
    assert!(st.success());
}

fn push(net: &Net) -> (Option<i32>, String) {
    let out = net.csync("n1").args(["-x", "--timeout", "2"]).output().unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn setuid_bits_are_stripped_unless_the_receiver_allows_them() {
    let (net, _d) = pair("setuid_bits_are_stripped", "");
    let f = net.root("n1").join("tool");
    fs::write(&f, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(push(&net).0, Some(0));
    let mode = fs::metadata(net.root("n2").join("tool")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid stripped on the receiver");

    let (net, _d) = pair("setuid_bits_are_kept_when_allowed", "allow-setid;");
    let f = net.root("n1").join("tool");
    fs::write(&f, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(push(&net).0, Some(0));
    let mode = fs::metadata(net.root("n2").join("tool")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o4755);
}

#[test]
fn device_nodes_are_refused_unless_the_receiver_allows_them() {
    if !is_root() {
        eprintln!("skipped: making device nodes needs root");
        return;
    }
    let (net, _d) = pair("device_nodes_are_refused", "");
    mknod_null(&net.root("n1").join("null2"));
    let (code, err) = push(&net);
    assert_eq!(code, Some(1));
    assert!(err.contains("allow-devices"), "{err}");
    assert!(fs::symlink_metadata(net.root("n2").join("null2")).is_err(), "nothing created");

    let (net, _d) = pair("device_nodes_are_made_when_allowed", "allow-devices;");
    mknod_null(&net.root("n1").join("null2"));
    assert_eq!(push(&net).0, Some(0));
    assert_eq!(fs::symlink_metadata(net.root("n2").join("null2")).unwrap().rdev(), 0x103);
}

#[test]
fn owners_outside_the_receivers_range_are_refused() {
    if !is_root() {
        eprintln!("skipped: giving files away needs root");
        return;
    }
    let (net, _d) = pair("owners_outside_the_range_are_refused", "owners 0-1000;");
    let ok = net.root("n1").join("ok");
    let foreign = net.root("n1").join("foreign");
    fs::write(&ok, b"mine\n").unwrap();
    fs::write(&foreign, b"theirs\n").unwrap();
    std::os::unix::fs::chown(&foreign, Some(54321), Some(54321)).unwrap();
    let (code, err) = push(&net);
    assert_eq!(code, Some(1));
    assert!(err.contains("outside the range 0-1000"), "{err}");
    assert!(!net.root("n2").join("foreign").exists());
    assert_eq!(fs::read(net.root("n2").join("ok")).unwrap(), b"mine\n");
}

#[test]
fn a_hostile_peer_cannot_plant_setuid_files_or_devices() {
    use csync::proto::{Content, Msg, Outcome, WireEntry};
    let (net, _d) = pair("a_hostile_peer_cannot_plant_setuid_files_or_devices", "");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut s = crate::net_util::raw(&net, &rt, "n1", &["g"]);
    let data = b"#!/bin/sh\nid\n";
    let entry = |kind: u8, mode: u32, rdev: u64, hash: Option<[u8; 32]>, size: u64| WireEntry {
        kind,
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime_ns: 1_700_000_000_000_000_000,
        rdev,
        target: None,
        hash,
        origin: None,
    };
    let hash = *blake3::hash(data).as_bytes();
    let (file, dev) = rt.block_on(async {
        let push = |id: u32, path: &str, e: WireEntry, content: Content| Msg::Push {
            id,
            group: "g".into(),
            path: path.as_bytes().to_vec(),
            entry: e,
            base: None,
            force: true,
            content,
            parent_mtime: None,
        };
        s.conn
            .queue(&push(1, "%p%/suid", entry(1, 0o4755, 0, Some(hash), 13), Content::Whole))
            .unwrap();
        s.conn.queue(&Msg::Data { stream: 1, bytes: data.to_vec() }).unwrap();
        s.conn.queue(&Msg::DataEnd { stream: 1, hash }).unwrap();
        s.conn.flush().await.unwrap();
        let file = s.conn.recv().await.unwrap();
        // /dev/sda's numbers: raw access to a disk, if it were allowed.
        s.conn
            .send(&push(2, "%p%/disk", entry(6, 0o666, 0x800, None, 0), Content::None))
            .await
            .unwrap();
        let dev = s.conn.recv().await.unwrap();
        (file, dev)
    });
    assert!(matches!(file, Some(Msg::Ack { id: 1, outcome: Outcome::Applied })), "{file:?}");
    let mode = fs::metadata(net.root("n2").join("suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid stripped");
    match dev {
        Some(Msg::Ack { id: 2, outcome: Outcome::Failed { message, .. } }) => {
            assert!(message.contains("allow-devices"), "{message}");
        }
        other => panic!("a device node must be refused: {other:?}"),
    }
    assert!(fs::symlink_metadata(net.root("n2").join("disk")).is_err(), "nothing created");
}
