//! Transport benchmark (issue 3): mutual-TLS handshake time, and streaming
//! 1 GiB through the csync protocol (`Data` frames over TLS) against a raw
//! rustls stream of the same bytes, in the same run, on loopback.
//!
//!     cargo bench --bench transport [-- --mib 1024 --runs 5 --handshakes 200]

use std::sync::Arc;
use std::time::{Duration, Instant};

use csync::net::conn::Conn;
use csync::net::identity::{self, Identity};
use csync::net::server::{self, Authority, ServerSettings};
use csync::net::{client, tls};
use csync::proto::{ErrorCode, Msg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct Auth;
impl Authority for Auth {
    fn node_name(&self) -> &str {
        "n2"
    }
    fn group_key(&self, _g: &str, _p: &str) -> Result<Vec<u8>, ErrorCode> {
        Ok(b"0123456789abcdef0123456789abcdef".to_vec())
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

const CHUNK: usize = 256 * 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib = arg("--mib", 1024);
    let runs = arg("--runs", 5);
    let handshakes = arg("--handshakes", 200);
    let dir = tempfile::tempdir().unwrap();
    identity::new_ca(&dir.path().join("ca")).unwrap();
    identity::new_cert("n1", &dir.path().join("ca"), &dir.path().join("n1")).unwrap();
    identity::new_cert("n2", &dir.path().join("ca"), &dir.path().join("n2")).unwrap();
    let id1 = Identity::load(&dir.path().join("n1")).unwrap();
    let id2 = Identity::load(&dir.path().join("n2")).unwrap();
    let server_tls = tls::server_config(&id2).unwrap();
    let client_tls = tls::client_config(&id1).unwrap();

    // --- Handshakes: TCP + mTLS 1.3 + Hello/Welcome (+ Bye), sequential.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let settings =
        ServerSettings::new(server_tls.clone(), Duration::from_secs(5), Duration::from_secs(5));
    tokio::spawn(async move {
        loop {
            let (s, a) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            let settings = settings.clone();
            tokio::spawn(async move { server::serve(s, &a.to_string(), &settings, &Auth).await });
        }
    });
    let cs = client::ClientSettings {
        tls: client_tls.clone(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
    };
    let target = client::Target { name: "n2".into(), addr: "127.0.0.1".into(), port };
    let key = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut hs = Vec::new();
    for _ in 0..handshakes {
        let t = Instant::now();
        let mut s =
            client::connect(&target, &cs, "n1", &[("g".into(), key.clone())]).await.unwrap();
        s.conn.send(&Msg::Bye).await.unwrap();
        let _ = s.conn.recv().await.unwrap();
        hs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "handshake (TCP + mutual TLS 1.3 + Hello/Welcome + Bye), {handshakes} sequential: median {:.2} ms, p90 {:.2} ms",
        median(hs.clone()),
        {
            let mut v = hs.clone();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() * 9 / 10]
        }
    );

    // --- Throughput: raw rustls vs csync Data frames, alternating runs.
    let total = mib * 1024 * 1024;
    let payload: Arc<Vec<u8>> = Arc::new((0..CHUNK).map(|i| (i * 7 + 3) as u8).collect());
    let mut raw = Vec::new();
    let mut framed = Vec::new();
    for _ in 0..runs {
        raw.push(stream_once(&server_tls, &client_tls, total, payload.clone(), false).await);
        framed.push(stream_once(&server_tls, &client_tls, total, payload.clone(), true).await);
    }
    let (r, f) = (median(raw.clone()), median(framed.clone()));
    println!(
        "raw rustls stream, {mib} MiB: median {:.0} MB/s  (runs: {:?})",
        r,
        raw.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "csync Data frames, {mib} MiB: median {:.0} MB/s  (runs: {:?})",
        f,
        framed.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!("ratio csync/raw: {:.2}", f / r);
}

/// One transfer of `total` bytes over a fresh loopback TLS connection; MB/s.
async fn stream_once(
    server_tls: &Arc<rustls::ServerConfig>,
    client_tls: &Arc<rustls::ClientConfig>,
    total: usize,
    payload: Arc<Vec<u8>>,
    framed: bool,
) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_tls.clone());
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut tls = acceptor.accept(s).await.unwrap();
        let mut got = 0usize;
        if framed {
            let mut conn = Conn::new(tls, Duration::from_secs(30));
            loop {
                match conn.recv().await.unwrap() {
                    Some(Msg::Data { bytes, .. }) => got += bytes.len(),
                    Some(Msg::DataEnd { .. }) => break,
                    other => panic!("{other:?}"),
                }
            }
            conn.send(&Msg::ByeAck).await.unwrap();
        } else {
            let mut buf = vec![0u8; CHUNK];
            while got < total {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
            tls.write_all(b"k").await.unwrap();
            tls.flush().await.unwrap();
        }
        got
    });
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let connector = TlsConnector::from(client_tls.clone());
    let mut tls = connector.connect(tls::server_name("n2").unwrap(), s).await.unwrap();
    let t = Instant::now();
    if framed {
        let mut conn = Conn::new(tls, Duration::from_secs(30));
        let mut sent = 0;
        while sent < total {
            conn.send_data(1, &payload).await.unwrap();
            sent += payload.len();
        }
        conn.send(&Msg::DataEnd { stream: 1, hash: [0; 32] }).await.unwrap();
        let _ = conn.recv().await.unwrap();
    } else {
        let mut sent = 0;
        while sent < total {
            tls.write_all(&payload).await.unwrap();
            sent += payload.len();
        }
        tls.flush().await.unwrap();
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack).await.unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(server.await.unwrap(), total);
    total as f64 / dt / 1e6
}
