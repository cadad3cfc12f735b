//! Hostile peers against a real daemon (PRODUCT.md §5.3, §5.4, §9.6): clients
//! built on the library's own client and codec that wedge sessions, pin
//! streams, flood refusals or hold idle sockets, and the listener's SIGHUP
//! reload. Each test checks the bound and that the daemon stays healthy
//! (others are served, memory and descriptors stay bounded, signals work).

use std::fs;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use csync::net::client::{ClientSettings, Session, Target, connect};
use csync::proto::{Content, ErrorCode, Msg, Outcome};

use crate::net_util::{Daemon, Net, wait_until};
use crate::util::{stderr, stdout};

/// n3 only receives; the daemon under test is n2. `@ROOT_n1@` is the tree
/// every node's config names (n2 serves it).
const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ (n3@@ADDR_n3@);
    key csync2.key;
    include @ROOT_n1@;
}
";

fn net(test: &str) -> Net {
    Net::new(test, &["n1", "n2", "n3"], CFG)
}

fn pid(d: &Daemon) -> i32 {
    d.child.id() as i32
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open descriptors of a process.
fn fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn signal(d: &Daemon, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid(d)).unwrap(), sig).unwrap();
}

/// `csync --ping` from n1 to n2 succeeds.
fn ping_ok(net: &Net) {
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An authenticated session from `me` to n2 for `groups`; `idle` bounds our
/// own reads and writes.
async fn session(net: &Net, me: &str, groups: &[&str], idle: Duration) -> Session {
    try_session(net, me, groups, idle).await.unwrap()
}

async fn try_session(
    net: &Net,
    me: &str,
    groups: &[&str],
    idle: Duration,
) -> Result<Session, csync::net::client::ClientError> {
    let id = csync::net::identity::Identity::load(&net.sysdir(me)).unwrap();
    let settings = ClientSettings {
        tls: csync::net::tls::client_config(&id).unwrap(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: idle,
    };
    let key = fs::read_to_string(net.sysdir(me).join("csync2.key")).unwrap();
    let key = key.trim().as_bytes().to_vec();
    let groups: Vec<(String, Vec<u8>)> =
        groups.iter().map(|g| (g.to_string(), key.clone())).collect();
    let target = Target { name: "n2".into(), addr: net.addr("n2"), port: net.port };
    connect(&target, &settings, me, &groups).await
}

/// The next message, or `None` if the daemon closed the connection (or
/// reset it, as happens when it closes with our data unread).
async fn next(s: &mut Session) -> Option<Msg> {
    s.conn.recv().await.unwrap_or_default()
}

/// Opens sessions from `me` until the daemon refuses one or `tries` are
/// open, each pipelining `request`s without ever reading a reply, until the
/// daemon stops reading (its budgets and the socket buffers are full).
async fn wedge(
    net: &Net,
    me: &str,
    tries: usize,
    request: impl Fn(u32) -> Msg,
) -> (Vec<Session>, Vec<String>) {
    let mut wedged = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..tries {
        match try_session(net, me, &["g"], Duration::from_millis(500)).await {
            Ok(mut s) => {
                let mut id = 0;
                let start = Instant::now();
                loop {
                    for _ in 0..256 {
                        id += 1;
                        s.conn.queue(&request(id)).unwrap();
                    }
                    if s.conn.flush().await.is_err() {
                        break;
                    }
                    assert!(start.elapsed() < Duration::from_secs(20), "never pushed back");
                }
                wedged.push(s);
            }
            Err(e) => refused.push(e.to_string()),
        }
    }
    (wedged, refused)
}

#[test]
fn wedging_peers_are_bounded_others_are_served_and_sigterm_still_stops() {
    // n3 is a member that may fetch, n4 only receives.
    let cfg = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@ (n4@@ADDR_n4@);
    key csync2.key;
    include @ROOT_n1@;
}
";
    let net = Net::new(
        "wedging_peers_are_bounded_others_are_served_and_sigterm_still_stops",
        &["n1", "n2", "n3", "n4"],
        cfg,
    );
    // Replies worth 4 MiB per request: without byte bounds, pipelined
    // Fetches nobody reads pinned hundreds of MB per session.
    let big = net.root("n1").join("big");
    fs::write(&big, vec![7u8; 4 << 20]).unwrap();
    // A long idle timeout: the wedged sessions stay wedged for the whole test.
    let d = net.daemon("n2", &["--idle-timeout", "120"]);
    let base = rss_kib(pid(&d));
    let rt = runtime();
    let path = big.to_str().unwrap().as_bytes().to_vec();
    let (w3, r3) = rt.block_on(wedge(&net, "n3", 10, |id| Msg::Fetch {
        id,
        group: "g".into(),
        path: path.clone(),
    }));
    let (w4, r4) = rt.block_on(wedge(&net, "n4", 10, |id| Msg::Ping { id }));
    // One peer holds at most 8 sessions; the rest are refused, with the reason.
    assert_eq!((w3.len(), w4.len()), (8, 8), "{r3:?} {r4:?}");
    for e in r3.iter().chain(&r4) {
        assert!(e.contains("sessions in progress"), "{e}");
    }
    d.wait_log("limit MAX_SESSIONS_PER_PEER");
    // Another peer is served, and the wedged sessions cost bounded memory
    // (each holds a few MiB of requests and replies at most).
    ping_ok(&net);
    let grown = rss_kib(pid(&d)).saturating_sub(base);
    assert!(grown < 120 * 1024, "daemon grew by {grown} KiB for 16 wedged sessions");
    // SIGTERM with sessions wedged: stops after the drain (10 s), not never.
    let t = Instant::now();
    signal(&d, rustix::process::Signal::TERM);
    let mut d = d;
    let status = wait_until(Duration::from_secs(20), || d.child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("SIGTERM ignored:\n{}", d.log_text()));
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    assert!(d.log_text().contains("stopped"), "{}", d.log_text());
    drop((w3, w4));
}

#[test]
fn peer_that_stops_reading_loses_its_session_at_the_idle_timeout() {
    let net = net("peer_that_stops_reading_loses_its_session_at_the_idle_timeout");
    let d = net.daemon("n2", &["--idle-timeout", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let mut s = session(&net, "n1", &["g"], Duration::from_millis(500)).await;
        // Pings until the daemon stops reading (replies fill its budget and
        // the socket), then nothing: neither reading nor writing.
        let mut id = 0;
        loop {
            for _ in 0..1024 {
                id += 1;
                s.conn.queue(&Msg::Ping { id }).unwrap();
            }
            if s.conn.flush().await.is_err() {
                break;
            }
        }
        d.wait_log("the peer read none of our replies");
        drop(s);
    });
    ping_ok(&net);
}

#[test]
fn idle_tcp_connections_do_not_lock_out_a_peer() {
    let net = net("idle_tcp_connections_do_not_lock_out_a_peer");
    let d = net.daemon("n2", &[]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", pid(&d))).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let v: Vec<&str> = nofile.split_whitespace().collect();
    assert_eq!(v[3], v[4], "soft descriptor limit raised to the hard one: {nofile}");
    // The count right after start may include the start-up probe's socket
    // and the index the start-up action check opens: some slack below.
    let base = fds(pid(&d));
    let addr = (net.addr("n2"), net.port);
    // Silent connections from one address: the daemon holds the newest 64.
    let mut idle: Vec<TcpStream> =
        (0..300).map(|_| TcpStream::connect((addr.0.as_str(), addr.1)).unwrap()).collect();
    wait_until(Duration::from_secs(4), || (fds(pid(&d)) >= base + 60).then_some(()))
        .unwrap_or_else(|| {
            panic!("idle connections not accepted: {} fds (base {base})", fds(pid(&d)))
        });
    ping_ok(&net);
    assert!(fds(pid(&d)) < base + 300, "more silent connections held than allowed");
    // Closed sockets free their handshake slots at once.
    idle.clear();
    wait_until(Duration::from_secs(10), || (fds(pid(&d)) < base + 10).then_some(()))
        .unwrap_or_else(|| panic!("descriptors stay pinned: {} (base {base})", fds(pid(&d))));
    // Past the limit of silent connections (64 from one address, 512 in
    // all), the oldest silent ones are closed to make room.
    let burst: Vec<TcpStream> =
        (0..560).map(|_| TcpStream::connect((addr.0.as_str(), addr.1)).unwrap()).collect();
    d.wait_log("to make room for newer connections");
    // Closed by the daemon: EOF or reset; still open: nothing to read yet.
    let closed = || {
        burst
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                match std::io::Read::read(&mut &**s, &mut [0u8; 1]) {
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    Ok(_) => true,
                }
            })
            .count()
    };
    // All from one address: all but the newest 64 go, well within the 5 s
    // after which silent ones go anyway.
    let n = wait_until(Duration::from_secs(3), || Some(closed()).filter(|&n| n >= 560 - 64))
        .unwrap_or_else(|| panic!("only {} of the oldest 496 connections closed", closed()));
    assert!(n <= 560 - 64, "{n} closed: the newest were closed too");
    // A real peer behind the same address still gets in while they are held.
    ping_ok(&net);
    drop(burst);
    // Closed sockets free their slots at once: a real peer gets in again.
    wait_until(Duration::from_secs(10), || {
        let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
        out.status.success().then_some(())
    })
    .expect("ping never succeeded after the idle connections closed");
    wait_until(Duration::from_secs(10), || (fds(pid(&d)) < base + 10).then_some(()))
        .unwrap_or_else(|| panic!("descriptors stay pinned: {} (base {base})", fds(pid(&d))));
}

#[test]
fn too_many_open_streams_end_that_session_only() {
    let net = net("too_many_open_streams_end_that_session_only");
    let d = net.daemon("n2", &[]);
    let base = fds(pid(&d));
    let root = net.root("n1");
    let rt = runtime();
    rt.block_on(async {
        let mut s = session(&net, "n1", &["g"], Duration::from_secs(10)).await;
        // Each opens a stream (a temporary file on the receiver) that is
        // never finished.
        for id in 1..=17u32 {
            let path = root.join(format!("f{id}"));
            s.conn
                .queue(&Msg::Push {
                    id,
                    group: "g".into(),
                    path: path.to_str().unwrap().as_bytes().to_vec(),
                    entry: crate::net_util::wire_file(b"never sent"),
                    base: None,
                    force: false,
                    content: Content::Whole,
                    parent_mtime: None,
                })
                .unwrap();
        }
        s.conn.flush().await.unwrap();
        match next(&mut s).await {
            Some(Msg::Error { code: ErrorCode::Protocol, message }) => {
                assert!(message.contains("more than 16 streams"), "{message}")
            }
            other => panic!("expected an Error, got {other:?}"),
        }
        assert_eq!(next(&mut s).await, None, "the session must end after the Error");
    });
    let log = d.wait_log("more than 16 streams open at once");
    assert!(log.lines().any(|l| l.contains("streams open") && l.contains("(n1)")), "{log}");
    // Its descriptors are given back, and the daemon serves on.
    wait_until(Duration::from_secs(10), || (fds(pid(&d)) <= base + 2).then_some(()))
        .unwrap_or_else(|| panic!("descriptors stay pinned: {} (base {base})", fds(pid(&d))));
    ping_ok(&net);
}

#[test]
fn refused_pushes_are_logged_in_aggregate() {
    let net = net("refused_pushes_are_logged_in_aggregate");
    let d = net.daemon("n2", &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut s = session(&net, "n1", &["g"], Duration::from_secs(10)).await;
        for id in 1..=40u32 {
            s.conn
                .queue(&Msg::Push {
                    id,
                    group: "g".into(),
                    path: format!("/not/managed/{id}").into_bytes(),
                    entry: crate::net_util::wire_file(b"x"),
                    base: None,
                    force: false,
                    content: Content::None,
                    parent_mtime: None,
                })
                .unwrap();
        }
        s.conn.queue(&Msg::Bye).unwrap();
        s.conn.flush().await.unwrap();
        for id in 1..=40u32 {
            match next(&mut s).await {
                Some(Msg::Ack { id: got, outcome: Outcome::Failed { .. } }) => assert_eq!(got, id),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert_eq!(next(&mut s).await, Some(Msg::ByeAck));
    });
    let log = d.wait_log("refused 40 pushes in this session (30 not logged above)");
    let lines = log.lines().filter(|l| l.contains("refused push of")).count();
    assert_eq!(lines, 10, "{log}");
}

#[test]
fn session_deadline_ends_a_session_that_never_ends() {
    let net = net("session_deadline_ends_a_session_that_never_ends");
    let d = net.daemon("n2", &["--session-timeout", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let mut s = session(&net, "n1", &["g"], Duration::from_secs(10)).await;
        let t = Instant::now();
        // A peer that keeps the session busy, never saying Bye.
        let mut id = 0;
        let end = loop {
            id += 1;
            if s.conn.send(&Msg::Ping { id }).await.is_err() {
                break next(&mut s).await;
            }
            match next(&mut s).await {
                Some(Msg::Pong { .. }) => {}
                other => break other,
            }
            assert!(t.elapsed() < Duration::from_secs(10), "the session never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match end {
            Some(Msg::Error { code: ErrorCode::Timeout, message }) => {
                assert!(message.contains("session time limit"), "{message}")
            }
            other => panic!("expected a timeout Error, got {other:?}"),
        }
    });
    d.wait_log("session time limit of 1s reached");
    ping_ok(&net);
}

#[test]
fn sighup_reloads_the_config_for_new_sessions_and_keeps_it_when_broken() {
    let net = net("sighup_reloads_the_config_for_new_sessions_and_keeps_it_when_broken");
    let h = net.root("n1").join("h");
    fs::create_dir_all(&h).unwrap();
    let with_h = format!(
        "{CFG}\ngroup h {{ host n1@@ADDR_n1@ n2@@ADDR_n2@; key csync2.key; include {}; }}\n",
        h.display()
    );
    net.write_config_for("n1", &with_h);
    let d = net.daemon("n2", &[]);
    let rt = runtime();
    let accepted = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut s = session(&net, "n1", &["g", "h"], Duration::from_secs(5)).await;
            let _ = s.conn.send(&Msg::Bye).await;
            s.accepted
        })
    };
    assert_eq!(accepted(&rt), ["g"]);

    // A new group: picked up by the next session after SIGHUP.
    net.write_config_for("n2", &with_h);
    signal(&d, rustix::process::Signal::HUP);
    d.wait_log("SIGHUP: reloaded");
    assert_eq!(accepted(&rt), ["g", "h"]);

    // A broken config: logged, the old one kept, the daemon serves on.
    net.write_config_for("n2", "group h { host n1 n2; include ");
    signal(&d, rustix::process::Signal::HUP);
    d.wait_log("SIGHUP: keeping the old config");
    assert_eq!(accepted(&rt), ["g", "h"]);
    ping_ok(&net);
    let mut d = d;
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died:\n{}", d.log_text());
}

#[test]
fn sighup_reloads_the_identity() {
    let net = net("sighup_reloads_the_identity");
    let d = net.daemon("n2", &[]);
    ping_ok(&net);
    // n2 gets a certificate from a CA n1 does not trust: after SIGHUP, new
    // sessions present it (and n1 refuses them).
    let out = std::process::Command::new(crate::net_util::bin())
        .arg("--new-ca")
        .arg(net.path("rogue"))
        .output()
        .unwrap();
    assert!(out.status.success());
    net.identity("n2", "n2", "rogue");
    signal(&d, rustix::process::Signal::HUP);
    d.wait_log("SIGHUP: reloaded");
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("not signed by the cluster CA"), "{}", stderr(&out));
    // A missing key: the identity in use stays.
    net.identity("n2", "n2", "ca");
    fs::remove_file(net.sysdir("n2").join("csync2_ssl_key.pem")).unwrap();
    signal(&d, rustix::process::Signal::HUP);
    d.wait_log("SIGHUP: keeping the old config and identity");
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "still the rogue identity: {}", stdout(&out));
    // The right identity back: served again.
    net.identity("n2", "n2", "ca");
    signal(&d, rustix::process::Signal::HUP);
    wait_until(Duration::from_secs(10), || {
        (d.log_text().matches("SIGHUP: reloaded").count() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("second reload not logged:\n{}", d.log_text()));
    ping_ok(&net);
}

#[test]
fn sigterm_is_seen_with_every_handshake_slot_taken() {
    let net = net("sigterm_is_seen_with_every_handshake_slot_taken");
    let mut d = net.daemon("n2", &[]);
    let addr = (net.addr("n2"), net.port);
    let held: Vec<TcpStream> =
        (0..560).map(|_| TcpStream::connect((addr.0.as_str(), addr.1)).unwrap()).collect();
    d.wait_log("to make room for newer connections");
    let t = Instant::now();
    signal(&d, rustix::process::Signal::TERM);
    // The drain waits for the handshakes, which end at the first-byte timeout.
    let status = wait_until(Duration::from_secs(15), || d.child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("SIGTERM ignored:\n{}", d.log_text()));
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(12), "took {:?}", t.elapsed());
    assert!(d.log_text().contains("SIGTERM: stopping"), "{}", d.log_text());
    drop(held);
}

#[test]
fn half_started_handshakes_do_not_lock_out_a_peer() {
    let net = net("half_started_handshakes_do_not_lock_out_a_peer");
    let d = net.daemon("n2", &[]);
    let addr = (net.addr("n2"), net.port);
    // Each sends the first byte of a TLS record and nothing more: past the
    // silent stage, stuck in the handshake.
    let held: Vec<TcpStream> = (0..560)
        .map(|_| {
            let mut s = TcpStream::connect((addr.0.as_str(), addr.1)).unwrap();
            std::io::Write::write_all(&mut s, &[0x16]).unwrap();
            s
        })
        .collect();
    d.wait_log("to make room for newer connections");
    // A real peer behind the same address still gets in while they are held.
    ping_ok(&net);
    drop(held);
}
