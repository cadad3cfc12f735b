//! Tests of the server (kept apart so the module itself stays readable).

use super::*;
use session::{Budget, track_stream};

#[test]
fn budget_waits_for_room_and_close_releases_waiters() {
    let b = Arc::new(Budget::new(100));
    assert!(b.take(60));
    // Oversized, but nothing else is held once the 60 are back: let through.
    let b2 = b.clone();
    let t = std::thread::spawn(move || b2.take(150));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "must wait while 60 are held");
    b.give(60);
    assert!(t.join().unwrap());
    assert_eq!(b.used(), 150);
    let b3 = b.clone();
    let t = std::thread::spawn(move || b3.take(1));
    b.close();
    assert!(!t.join().unwrap(), "closing releases a waiter with false");
}

#[test]
fn slots_bound_the_total_and_each_peer() {
    let s = Arc::new(Slots::new(3, 2));
    let a1 = s.take("a").unwrap();
    let _a2 = s.take("a").unwrap();
    assert!(s.take("a").err().unwrap().contains("MAX_SESSIONS_PER_PEER"));
    let _b1 = s.take("b").unwrap();
    assert!(s.take("c").err().unwrap().contains("MAX_SESSIONS"));
    drop(a1);
    assert_eq!(s.in_use(), 2);
    let _c1 = s.take("c").unwrap();
}

#[test]
fn streams_are_counted_from_push_to_data_end() {
    let push = |id| Msg::Push {
        id,
        group: "g".into(),
        path: b"/p".to_vec(),
        entry: proto::WireEntry {
            kind: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            rdev: 0,
            target: None,
            hash: Some([0; 32]),
            origin: None,
        },
        base: None,
        force: false,
        content: proto::Content::Whole,
        parent_mtime: None,
    };
    let mut open = std::collections::HashSet::new();
    for id in 0..MAX_OPEN_STREAMS as u32 {
        track_stream(&mut open, &push(id)).unwrap();
    }
    track_stream(&mut open, &Msg::DataEnd { stream: 0, hash: [0; 32] }).unwrap();
    track_stream(&mut open, &push(100)).unwrap();
    let err = track_stream(&mut open, &push(101)).unwrap_err();
    assert!(err.contains("MAX_OPEN_STREAMS"), "{err}");
}

/// Answers every request with 64 KiB of data.
struct Chatty;

impl Handler for Chatty {
    fn handle(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool {
        if let Msg::Ping { id } = msg {
            reply(Msg::Data { stream: id, bytes: vec![0; 64 * 1024] });
        }
        true
    }
}

#[tokio::test]
async fn a_peer_that_never_reads_loses_its_session_at_the_idle_timeout() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let idle = Duration::from_millis(200);
    let session = tokio::spawn(async move {
        let conn = Conn::new(server, idle);
        run_session(conn, Box::new(Chatty), "test", "peer".into(), Duration::from_secs(60)).await
    });
    // Requests until the session stops reading them; never a reply read.
    let mut c = Conn::new(client, Duration::from_millis(500));
    let mut id = 0;
    loop {
        for _ in 0..64 {
            id += 1;
            c.queue(&Msg::Ping { id }).unwrap();
        }
        if c.flush().await.is_err() {
            break;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session wedged")
        .unwrap();
    match out {
        Outcome::Failed(why) => assert!(why.contains("read none of our replies"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_session_ends_at_its_deadline_with_an_error() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(async move {
        let conn = Conn::new(server, Duration::from_secs(30));
        run_session(conn, Box::new(PingOnly), "test", "peer".into(), Duration::from_millis(200))
            .await
    });
    let mut c = Conn::new(client, Duration::from_secs(5));
    match c.recv().await.unwrap() {
        Some(Msg::Error { code: ErrorCode::Timeout, message }) => {
            assert!(message.contains("session time limit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(session.await.unwrap(), Outcome::Failed(_)));
}
