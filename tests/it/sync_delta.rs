//! Security item 6 end to end: what a receiver says about a delta cannot hang
//! or blow up the sender. A fake n2 (n2's real identity and key, so the
//! pusher trusts it) answers the signature request as a test chooses and
//! checks what it then gets.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use csync::net::auth::{self, Role};
use csync::net::conn::Conn;
use csync::proto::{Content, GroupProof, Msg, Outcome};

use crate::sync::Cluster;

/// What the fake receiver saw: each content push, with whether its data
/// rebuilt exactly the content the `DataEnd` announced.
type Seen = Arc<Mutex<Vec<(Content, bool)>>>;

/// A push being received: its kind, the decoder of a delta, the bytes of a
/// whole file.
type Incoming = (Content, Option<csync::blockdelta::Decoder<fs::File, Vec<u8>>>, Vec<u8>);

/// Stops a run that regresses into sending for ever.
const MAX_DATA_FRAMES: usize = 10_000;

/// Replaces n2's daemon with a fake that proves the group key, answers each
/// `Sig` with `sig(id)`, rebuilds pushed content (whole, or a delta against
/// n2's current `big` in blocks of `bs`, the size it signed with), acks
/// everything, and serves one session.
fn fake_n2(
    c: &mut Cluster,
    bs: u32,
    sig: impl Fn(u32) -> Msg + Send + 'static,
) -> (Seen, JoinHandle<()>) {
    c.stop("n2");
    let sysdir = c.net.sysdir("n2");
    let base = c.root("n2").join("big");
    let listen = format!("{}:{}", c.net.addr("n2"), c.net.port);
    let seen = Seen::default();
    let out = seen.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The stopped daemon's socket may linger for a moment.
            match tokio::net::TcpListener::bind(&listen).await {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("binding {listen}: {e}"),
            }
        }
    });
    let handle = std::thread::spawn(move || {
        rt.block_on(async move {
            let id = csync::net::identity::Identity::load(&sysdir).unwrap();
            let acceptor =
                tokio_rustls::TlsAcceptor::from(csync::net::tls::server_config(&id).unwrap());
            let accept = tokio::time::timeout(Duration::from_secs(60), listener.accept());
            let (tcp, _) = accept.await.expect("n1 connects").unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut exporter = [0u8; 32];
            tls.get_ref()
                .1
                .export_keying_material(&mut exporter, auth::EXPORTER_LABEL, None)
                .unwrap();
            let mut conn = Conn::new(tls, Duration::from_secs(20));
            let Ok(Some(Msg::Hello { groups, .. })) = conn.recv().await else {
                panic!("expected Hello")
            };
            let key = fs::read_to_string(sysdir.join("csync2.key")).unwrap();
            let proofs = groups
                .iter()
                .map(|p| GroupProof {
                    group: p.group.clone(),
                    mac: auth::proof(
                        key.trim().as_bytes(),
                        &exporter,
                        Role::Server,
                        "n2",
                        &p.group,
                    ),
                })
                .collect();
            let welcome = Msg::Welcome {
                version: 1,
                node: "n2".into(),
                capabilities: 0,
                groups: proofs,
                refused: vec![],
            };
            conn.send(&welcome).await.unwrap();
            let mut stream: Option<Incoming> = None;
            let mut frames = 0;
            while let Ok(Some(msg)) = conn.recv().await {
                let reply = match msg {
                    Msg::Sig { id, .. } => Some(sig(id)),
                    Msg::Push { id, content: Content::None, .. } | Msg::Delete { id, .. } => {
                        Some(Msg::Ack { id, outcome: Outcome::Applied })
                    }
                    Msg::Push { content, entry, .. } => {
                        let dec = (content == Content::Delta).then(|| {
                            let f = fs::File::open(&base).unwrap();
                            csync::blockdelta::Decoder::new(f, bs, entry.size, Vec::new()).unwrap()
                        });
                        stream = Some((content, dec, Vec::new()));
                        None
                    }
                    Msg::Data { bytes, .. } => {
                        frames += 1;
                        if frames > MAX_DATA_FRAMES {
                            break;
                        }
                        match stream.as_mut() {
                            Some((_, Some(dec), _)) => dec.apply(&bytes).unwrap(),
                            Some((_, None, whole)) => whole.extend_from_slice(&bytes),
                            None => panic!("data without a push"),
                        }
                        None
                    }
                    Msg::DataEnd { stream: id, hash } => {
                        let (content, dec, whole) = stream.take().expect("a push");
                        let data = dec.map_or(whole, |d| d.into_inner());
                        out.lock()
                            .unwrap()
                            .push((content, *blake3::hash(&data).as_bytes() == hash));
                        Some(Msg::Ack { id, outcome: Outcome::Applied })
                    }
                    Msg::Ping { id } => Some(Msg::Pong { id, time_ns: 0 }),
                    Msg::List { id, .. } => Some(Msg::ListEnd { id }),
                    Msg::Bye => {
                        let _ = conn.send(&Msg::ByeAck).await;
                        break;
                    }
                    other => panic!("the fake does not expect {other:?}"),
                };
                if let Some(r) = reply {
                    conn.send(&r).await.unwrap();
                }
            }
        });
    });
    (seen, handle)
}

/// A 6 MiB file synced to every node, then changed in one byte on n1.
fn cluster_with_a_changed_big_file(test: &str) -> (Cluster, Vec<u8>) {
    let c = Cluster::new(test, "none");
    let big = c.root("n1").join("big");
    let data: Vec<u8> =
        (0..6u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(&big, &data).unwrap();
    c.x_ok("n1");
    let mut f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.seek(SeekFrom::Start(3 << 20)).unwrap();
    f.write_all(&[!data[3 << 20]]).unwrap();
    drop(f);
    let new = fs::read(&big).unwrap();
    (c, new)
}

#[test]
fn invalid_signature_from_the_peer_gets_the_whole_file() {
    let (mut c, new) =
        cluster_with_a_changed_big_file("invalid_signature_from_the_peer_gets_the_whole_file");
    let size = new.len() as u64;
    // What used to make the sender allocate 4 GiB and loop for ever.
    let (seen, fake) = fake_n2(&mut c, 1 << 16, move |id| Msg::SigReply {
        id,
        block_size: u32::MAX,
        size,
        blocks: vec![[0; 16]],
    });
    let start = Instant::now();
    let (code, o, e) = c.run("n1", &["-x"]);
    fake.join().unwrap();
    assert_eq!(code, 0, "{o}{e}");
    assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
    assert_eq!(*seen.lock().unwrap(), [(Content::Whole, true)]);
}

#[test]
fn block_sizes_larger_than_a_frame_make_a_correct_delta() {
    let (mut c, new) =
        cluster_with_a_changed_big_file("block_sizes_larger_than_a_frame_make_a_correct_delta");
    let base = fs::read(c.root("n2").join("big")).unwrap();
    assert_ne!(base, new);
    // 2 MiB blocks: valid, larger than a Data frame (the sender used to send
    // empty chunks for ever).
    let bs = 2 << 20;
    let (size, blocks) = csync::blockdelta::signature(&mut base.as_slice(), bs).unwrap();
    let (seen, fake) = fake_n2(&mut c, bs, move |id| Msg::SigReply {
        id,
        block_size: bs,
        size,
        blocks: blocks.clone(),
    });
    let (code, o, e) = c.run("n1", &["-x"]);
    fake.join().unwrap();
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(*seen.lock().unwrap(), [(Content::Delta, true)]);
}

/// Delta ops a hostile pusher may send: each is refused with an error for
/// that push alone; the receiver's file stays as it was, no temporary is left
/// behind, and the session goes on.
#[test]
fn hostile_delta_ops_are_refused_and_change_nothing() {
    let (c, _) =
        cluster_with_a_changed_big_file("hostile_delta_ops_are_refused_and_change_nothing");
    let target = c.root("n2").join("big");
    let before = fs::read(&target).unwrap();
    let base_blocks = (before.len() as u64).div_ceil(64 << 10) as u32;
    let copy = |first: u32, count: u32| {
        let mut v = vec![1u8];
        v.extend_from_slice(&first.to_be_bytes());
        v.extend_from_slice(&count.to_be_bytes());
        v
    };
    let literal = |bytes: &[u8]| {
        let mut v = vec![2u8];
        v.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        v.extend_from_slice(bytes);
        v
    };
    // (ops, declared size)
    let hostile: [(Vec<u8>, u64); 5] = [
        (copy(base_blocks, 1), 1 << 30),              // a block past the base
        (copy(0, u32::MAX), 1 << 30),                 // a run past the base
        (copy(u32::MAX, u32::MAX), 1 << 30),          // offsets that overflow 64 bits
        (literal(&[7; 100]), 10),                     // more than the declared size
        ([copy(0, 1), copy(0, 1)].concat(), 100_000), // copies beyond it
    ];

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = csync::net::identity::Identity::load(&c.net.sysdir("n1")).unwrap();
    let settings = csync::net::client::ClientSettings {
        tls: csync::net::tls::client_config(&id).unwrap(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
    };
    let key = fs::read_to_string(c.net.sysdir("n1").join("csync2.key")).unwrap();
    let groups = vec![("g".to_string(), key.trim().as_bytes().to_vec())];
    let to =
        csync::net::client::Target { name: "n2".into(), addr: c.net.addr("n2"), port: c.net.port };
    rt.block_on(async {
        let mut s = csync::net::client::connect(&to, &settings, "n1", &groups).await.unwrap();
        for (i, (ops, size)) in hostile.iter().enumerate() {
            let id = 100 + i as u32;
            let hash = [9u8; 32];
            let entry = csync::proto::WireEntry {
                kind: 1,
                mode: 0o644,
                uid: rustix::process::getuid().as_raw(),
                gid: rustix::process::getgid().as_raw(),
                size: *size,
                mtime_ns: 1_700_000_000_000_000_000,
                rdev: 0,
                target: None,
                hash: Some(hash),
                origin: None,
            };
            let push = Msg::Push {
                id,
                group: "g".into(),
                path: b"%p%/big".to_vec(),
                entry,
                base: None,
                force: true,
                content: Content::Delta,
                parent_mtime: None,
            };
            s.conn.queue(&push).unwrap();
            s.conn.queue(&Msg::Data { stream: id, bytes: ops.clone() }).unwrap();
            s.conn.queue(&Msg::DataEnd { stream: id, hash }).unwrap();
            s.conn.flush().await.unwrap();
            match s.conn.recv().await.unwrap() {
                Some(Msg::Ack { id: got, outcome: Outcome::Failed { message, .. } }) => {
                    assert_eq!(got, id);
                    assert!(message.contains("bad delta"), "case {i}: {message}");
                }
                other => panic!("case {i}: expected a failed Ack, got {other:?}"),
            }
        }
        s.conn.send(&Msg::Ping { id: 1 }).await.unwrap();
        assert!(matches!(s.conn.recv().await.unwrap(), Some(Msg::Pong { id: 1, .. })));
    });
    assert!(fs::read(&target).unwrap() == before, "the receiver's file changed");
    let temps: Vec<_> = fs::read_dir(c.root("n2"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".csync."))
        .collect();
    assert!(temps.is_empty(), "temporaries left: {temps:?}");
}
