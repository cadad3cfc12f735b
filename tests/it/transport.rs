//! Issue 3 end to end: real daemons on loopback, real certificates, and every
//! way a connection must be refused before any file data moves.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::net_util::{Net, bin, drain, free_port, wait_until};
use crate::util::{stderr, stdout};

const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@;
    key csync2.key;
    include @ROOT_n1@;
}
";

fn net(test: &str) -> Net {
    Net::new(test, &["n1", "n2", "n3"], CFG)
}

#[test]
fn ping_over_the_standalone_daemon() {
    let net = net("ping_over_the_standalone_daemon");
    let d = net.daemon("n2", &[]);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("protocol 1"), "{text}");
    assert!(text.contains("certificate verified for 'n2'"), "{text}");
    assert!(text.contains("group g: key verified both ways"), "{text}");
    assert!(text.contains(&net.addr("n2")), "{text}");
    d.wait_log("session open");
}

#[test]
fn ping_over_inetd_style_stdin() {
    let net = net("ping_over_inetd_style_stdin");
    // Play inetd: accept on n2's address and hand the socket to `csync -i`.
    let listener = std::net::TcpListener::bind((net.addr("n2").as_str(), net.port)).unwrap();
    let mut c = StdCommand::new(bin());
    c.env("CSYNC2_SYSTEM_DIR", net.sysdir("n2"))
        .args(["-N", "n2", "-i", "-D"])
        .arg(net.path("db-n2"));
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let out = c
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(sock.try_clone().unwrap())))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(sock)))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("certificate verified for 'n2'"));
    let (code, log) = server.join().unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("session open"), "{log}");
}

#[test]
fn ping_over_systemd_socket_activation() {
    let Ok(sa) = which("systemd-socket-activate") else { return };
    let net = net("ping_over_systemd_socket_activation");
    let log = net.path("sa.log");
    let _child = Reaper(
        StdCommand::new(sa)
            .arg("-l")
            .arg(format!("{}:{}", net.addr("n2"), net.port))
            .args(["--inetd", "-a"])
            .arg(format!("-ECSYNC2_SYSTEM_DIR={}", net.sysdir("n2").display()))
            .arg(bin())
            .args(["-N", "n2", "-i", "-D"])
            .arg(net.path("db-n2"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect((net.addr("n2").as_str(), net.port)).ok().map(|_| ())
    });
    // The probe above was a connection too; the ping is served by a fresh child.
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}\n{}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn listen_fds_activation_and_ready_notification() {
    let Ok(sa) = which("systemd-socket-activate") else { return };
    let net = net("listen_fds_activation_and_ready_notification");
    let notify = net.path("notify.sock");
    let ready = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    ready.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _child = Reaper(
        StdCommand::new(sa)
            .arg("-l")
            .arg(format!("{}:{}", net.addr("n2"), net.port))
            .arg(format!("-ECSYNC2_SYSTEM_DIR={}", net.sysdir("n2").display()))
            .arg(format!("-ENOTIFY_SOCKET={}", notify.display()))
            .arg(bin())
            .args(["-N", "n2", "-ii", "-D"])
            .arg(net.path("db-n2"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // systemd-socket-activate starts the service at the first connection and
    // hands it the listening socket (LISTEN_FDS=1).
    let first = wait_until(Duration::from_secs(10), || {
        TcpStream::connect((net.addr("n2").as_str(), net.port)).ok()
    })
    .expect("socket not listening");
    let mut buf = [0u8; 256];
    let n = ready.recv(&mut buf).expect("no READY notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    drop(first);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}

/// Kills a helper process when the test ends, even by panic, so no orphan
/// keeps the test harness's pipes open.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|p| p.exists()))
        .ok_or(())
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let net = net("certificate_from_another_ca_is_refused");
    StdCommand::new(bin()).arg("--new-ca").arg(net.path("rogue")).output().unwrap();
    net.identity("n1", "n1", "rogue");
    let d = net.daemon("n2", &[]);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("peer n2") && err.contains("rejected our certificate"), "{err}");
    d.wait_log("not signed by the cluster CA");
}

#[test]
fn valid_certificate_for_another_host_is_refused() {
    let net = net("valid_certificate_for_another_host_is_refused");
    // n2 presents n3's (valid) certificate.
    net.identity("n2", "n3", "ca");
    let d = net.daemon("n1", &[]);
    let out = net.csync("n2").args(["--ping", "n1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("peer n1") && err.contains("certificate does not match the claimed host name"),
        "{err}"
    );
    d.wait_log("certificate is not valid for the claimed host name 'n2'");
}

#[test]
fn server_with_a_certificate_for_another_name_is_refused_by_the_client() {
    let net = net("server_with_a_certificate_for_another_name_is_refused_by_the_client");
    net.identity("n2", "n3", "ca");
    let _d = net.daemon("n2", &[]);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("peer n2: certificate of n2 is not valid for the name n2 (it is for: n3)"),
        "{err}"
    );
}

#[test]
fn host_not_in_the_group_is_refused() {
    // n4 believes it is in the group; n1's config says otherwise.
    let net = Net::new(
        "host_not_in_the_group_is_refused",
        &["n1", "n2", "n4"],
        &CFG.replace(" n3@@ADDR_n3@", ""),
    );
    net.write_config_for("n4", &CFG.replace("n3@@ADDR_n3@", "n4@@ADDR_n4@"));
    let d = net.daemon("n1", &[]);
    let out = net.csync("n4").args(["--ping", "n1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("peer n1: group 'g': its config does not list this node (n4) as a host"),
        "{err}"
    );
    d.wait_log("refused group 'g': not a host of the group");
}

#[test]
fn wrong_group_key_is_refused() {
    let net = net("wrong_group_key_is_refused");
    std::fs::remove_file(net.sysdir("n1").join("csync2.key")).unwrap();
    StdCommand::new(bin()).arg("-k").arg(net.sysdir("n1").join("csync2.key")).output().unwrap();
    let d = net.daemon("n2", &[]);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let key = net.sysdir("n1").join("csync2.key");
    let want =
        format!("csync: peer n2: group 'g': the group key differs (key file {})", key.display());
    assert!(err.contains(&want), "{err}");
    d.wait_log("refused group 'g': wrong group key");
}

/// A TLS client written here (not csync): optionally without a certificate.
fn raw_tls(
    net: &Net,
    node: Option<&str>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(net.path("ca/csync2_ssl_ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match node {
        Some(n) => {
            let chain = CertificateDer::pem_file_iter(net.sysdir(n).join("csync2_ssl_cert.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key =
                PrivateKeyDer::from_pem_file(net.sysdir(n).join("csync2_ssl_key.pem")).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("n2").unwrap()).unwrap();
    let sock = TcpStream::connect((net.addr("n2").as_str(), net.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn client_without_certificate_is_refused() {
    let net = net("client_without_certificate_is_refused");
    let d = net.daemon("n2", &[]);
    let mut s = raw_tls(&net, None);
    let _ = s.write_all(b"anything");
    let mut buf = Vec::new();
    let r = std::io::Read::read_to_end(&mut s, &mut buf);
    assert!(
        r.is_err() || buf.is_empty(),
        "the server must not answer a client without certificate"
    );
    d.wait_log("the client presented no certificate");
}

#[test]
fn plaintext_client_is_refused_and_the_daemon_serves_on() {
    let net = net("plaintext_client_is_refused_and_the_daemon_serves_on");
    let d = net.daemon("n2", &[]);
    let mut s = TcpStream::connect((net.addr("n2").as_str(), net.port)).unwrap();
    s.write_all(b"CONFIG \nHELLO n1\n").unwrap();
    let _ = drain(&mut s, Duration::from_secs(5));
    d.wait_log("not a TLS client");
    net.csync("n1").args(["--ping", "n2"]).assert().success();
}

#[test]
fn garbage_after_the_handshake_is_refused() {
    let net = net("garbage_after_the_handshake_is_refused");
    let d = net.daemon("n2", &[]);
    let mut s = raw_tls(&net, Some("n1"));
    s.write_all(&[0, 0, 0, 5, 0x01, b'j', b'u', b'n', b'k']).unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    let (msg, _) = csync::proto::decode(&buf).unwrap().expect("an Error frame");
    assert!(
        matches!(msg, csync::proto::Msg::Error { code: csync::proto::ErrorCode::Protocol, .. }),
        "{msg:?}"
    );
    d.wait_log("garbage from peer");
    net.csync("n1").args(["--ping", "n2"]).assert().success();
}

#[test]
fn frame_larger_than_the_limit_is_refused() {
    let net = net("frame_larger_than_the_limit_is_refused");
    let d = net.daemon("n2", &[]);
    let mut s = raw_tls(&net, Some("n1"));
    s.write_all(&[0x40, 0, 0, 0, 0x01]).unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    let (msg, _) = csync::proto::decode(&buf).unwrap().expect("an Error frame");
    assert!(
        matches!(
            msg,
            csync::proto::Msg::Error { code: csync::proto::ErrorCode::FrameTooLarge, .. }
        ),
        "{msg:?}"
    );
    d.wait_log("exceeds the limit");
}

#[test]
fn silent_client_times_out_while_others_are_served() {
    let net = net("silent_client_times_out_while_others_are_served");
    let d = net.daemon("n2", &["--timeout", "1"]);
    let silent = TcpStream::connect((net.addr("n2").as_str(), net.port)).unwrap();
    // Served while the silent connection is still open.
    net.csync("n1").args(["--ping", "n2"]).assert().success();
    d.wait_log("no TLS handshake within");
    drop(silent);
}

#[test]
fn refused_peer_fails_fast() {
    let net = net("refused_peer_fails_fast");
    let t = Instant::now();
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    let dt = t.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("peer n2") && stderr(&out).contains("cannot connect"),
        "{}",
        stderr(&out)
    );
    // Generous bound (CI is noisy): the point is "no waiting for a timeout".
    assert!(dt < Duration::from_secs(3), "took {dt:?}");
}

#[test]
fn peer_that_accepts_and_never_answers_costs_the_timeout() {
    let net = net("peer_that_accepts_and_never_answers_costs_the_timeout");
    let l = std::net::TcpListener::bind((net.addr("n2").as_str(), net.port)).unwrap();
    let holder = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::park_timeout(Duration::from_secs(20));
        drop(s);
    });
    let t = Instant::now();
    let out = net.csync("n1").args(["--ping", "n2", "--timeout", "1"]).output().unwrap();
    let dt = t.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no answer within"), "{}", stderr(&out));
    assert!(dt >= Duration::from_millis(900) && dt < Duration::from_secs(5), "took {dt:?}");
    holder.thread().unpark();
}

#[test]
fn peer_whose_syns_are_dropped_costs_the_timeout() {
    let net = net("peer_whose_syns_are_dropped_costs_the_timeout");
    // A listener that never accepts, with its queue full: Linux drops further SYNs.
    let sock = socket_with_backlog(&net.addr("n2"), net.port, 0);
    let mut fill = Vec::new();
    for _ in 0..8 {
        if let Ok(s) = TcpStream::connect_timeout(
            &format!("{}:{}", net.addr("n2"), net.port).parse().unwrap(),
            Duration::from_millis(200),
        ) {
            fill.push(s);
        }
    }
    let t = Instant::now();
    let out = net.csync("n1").args(["--ping", "n2", "--timeout", "1"]).output().unwrap();
    let dt = t.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no answer within"), "{}", stderr(&out));
    assert!(dt < Duration::from_secs(5), "took {dt:?}");
    drop(sock);
}

fn socket_with_backlog(addr: &str, port: u16, backlog: i32) -> std::os::fd::OwnedFd {
    use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    let a: std::net::SocketAddrV4 = format!("{addr}:{port}").parse().unwrap();
    bind(&fd, &a).unwrap();
    listen(&fd, backlog).unwrap();
    fd
}

#[test]
fn open_key_file_is_refused_at_start() {
    let net = net("open_key_file_is_refused_at_start");
    use std::os::unix::fs::PermissionsExt;
    let key = net.sysdir("n2").join("csync2_ssl_key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = net.csync("n2").arg("-ii").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let net = net("sigterm_stops_the_daemon_cleanly");
    let mut d = net.daemon("n2", &[]);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(d.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status =
        wait_until(Duration::from_secs(10), || d.child.try_wait().unwrap()).expect("still running");
    assert!(status.success(), "{status:?}");
    assert!(d.log_text().contains("stopped"), "{}", d.log_text());
}

#[test]
fn identity_tools_refuse_to_overwrite_and_accept_ip_names() {
    let d = tempfile::tempdir().unwrap();
    let ca = d.path().join("ca");
    StdCommand::new(bin()).arg("--new-ca").arg(&ca).assert_ok();
    let out = StdCommand::new(bin()).arg("--new-ca").arg(&ca).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    StdCommand::new(bin())
        .args(["--new-cert", "127.0.0.9", "--ca"])
        .arg(&ca)
        .arg("--out")
        .arg(d.path().join("ip"))
        .assert_ok();
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca/csync2_ssl_ca.key", "ip/csync2_ssl_key.pem"] {
        let mode = std::fs::metadata(d.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(d.path().join("ip/csync2_ssl_ca.pem").exists());
}

#[test]
fn hosts_named_by_ip_literal_verify() {
    let net = Net::new("hosts_named_by_ip_literal_verify", &["n1", "n2"], "");
    let (a1, a2) = (net.addr("n1"), net.addr("n2"));
    for (node, name) in [("n1", &a1), ("n2", &a2)] {
        net.identity(node, name, "ca");
    }
    let cfg = format!(
        "group g {{ host {a1} {a2}; key csync2.key; include {}; }}",
        net.root("n1").display()
    );
    net.write_config(&cfg);
    let log = net.path("ip.log");
    let mut c = StdCommand::new(bin());
    c.env("CSYNC2_SYSTEM_DIR", net.sysdir("n2"))
        .args(["-N", &a2, "-p", &net.port.to_string(), "-ii", "-D"])
        .arg(net.path("db-n2"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _child = Reaper(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect((a2.as_str(), net.port)).ok().map(|_| ())
    });
    let out = StdCommand::new(bin())
        .env("CSYNC2_SYSTEM_DIR", net.sysdir("n1"))
        .args(["-N", &a1, "-p", &net.port.to_string(), "--ping", &a2, "-D"])
        .arg(net.path("db-n1"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn nossl_is_accepted_with_a_warning() {
    let net = net("nossl_is_accepted_with_a_warning");
    net.write_config(&format!("nossl * *;\n{CFG}"));
    let out = net.csync("n1").arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("nossl"), "{}", stderr(&out));
    let _d = net.daemon("n2", &[]);
    net.csync("n1").args(["--ping", "n2"]).assert().success();
}

trait AssertOk {
    fn assert_ok(&mut self);
}

impl AssertOk for StdCommand {
    fn assert_ok(&mut self) {
        let out = self.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn free_port_helper_is_free() {
    let p = free_port();
    assert!(TcpStream::connect(("127.0.0.1", p)).is_err());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    use csync::net::client::{ClientSettings, Target, connect};
    use csync::proto::Msg;
    let net = net("pipelined_requests_are_answered_in_order");
    let _d = net.daemon("n2", &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let id = csync::net::identity::Identity::load(&net.sysdir("n1")).unwrap();
        let settings = ClientSettings {
            tls: csync::net::tls::client_config(&id).unwrap(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
        };
        let key = std::fs::read_to_string(net.sysdir("n1").join("csync2.key")).unwrap();
        let target = Target { name: "n2".into(), addr: net.addr("n2"), port: net.port };
        let mut s =
            connect(&target, &settings, "n1", &[("g".into(), key.trim().as_bytes().to_vec())])
                .await
                .unwrap();
        assert_eq!(s.accepted, ["g"]);
        // 1000 requests in flight at once, one write.
        for id in 0..1000 {
            s.conn.queue(&Msg::Ping { id }).unwrap();
        }
        s.conn.flush().await.unwrap();
        for id in 0..1000 {
            match s.conn.recv().await.unwrap() {
                Some(Msg::Pong { id: got, .. }) => assert_eq!(got, id),
                other => panic!("expected Pong {id}, got {other:?}"),
            }
        }
        s.conn.send(&Msg::Bye).await.unwrap();
        assert_eq!(s.conn.recv().await.unwrap(), Some(Msg::ByeAck));
    });
}
