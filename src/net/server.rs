//! The accepting side of one connection: TLS, the `Hello`/`Welcome` handshake
//! (identity, version, group proofs), then requests until `Bye`.
//!
//! Everything about groups comes in through [`Authority`], so this module never
//! reads the config or the index. A misbehaving peer ends its own session and
//! nothing else; every refusal is logged with the peer and the reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::auth::{self, Role};
use super::conn::{Conn, ConnError};
use super::tls::cert_names_host;
use crate::proto::{self, ErrorCode, GroupProof, Msg};

/// What the server must know about groups; implemented over the config by the
/// engine.
pub trait Authority: Send + Sync {
    /// This node's name.
    fn node_name(&self) -> &str;
    /// The key of `group` when this node is a member and `peer` is one of its
    /// hosts; otherwise the reason to refuse.
    fn group_key(&self, group: &str, peer: &str) -> Result<Vec<u8>, ErrorCode>;

    /// The request handler for an authenticated session with `peer`, allowed
    /// to use `groups`. It runs on its own thread, so it may block (files,
    /// database). The default answers `Ping` only.
    fn open_session(&self, peer: &str, groups: &[String]) -> Result<Box<dyn Handler>, String> {
        let _ = (peer, groups);
        Ok(Box::new(PingOnly))
    }
}

/// Handles the requests of one session, in order, on a thread of its own.
pub trait Handler: Send {
    /// Handles one message (a request, or `Data`/`DataEnd` of a stream the
    /// peer opened), sending any replies through `reply`. Returning `false`
    /// ends the session (after an `Error` reply, normally).
    fn handle(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool;

    /// Called with each batch of requests before they are handled one by
    /// one: a handler that must write something durable before acting on a
    /// request (the receiver's action journal) does it for the whole batch
    /// in one step.
    fn prepare(&mut self, batch: &[Msg]) {
        let _ = batch;
    }

    /// Called when no request is waiting: a handler that batches work (index
    /// commits) finishes it and sends the replies it held back.
    fn idle(&mut self, reply: &mut dyn FnMut(Msg)) {
        let _ = reply;
    }

    /// Called once when the session's requests have ended: after the peer's
    /// `Bye` (`bye`; whatever is sent here goes out before the `ByeAck`), or
    /// because the connection broke. A handler finishes its run here (the
    /// receiver runs its actions, sending `Working` while the peer waits).
    fn end(&mut self, bye: bool, reply: &mut dyn FnMut(Msg)) {
        let _ = (bye, reply);
    }
}

/// Answers `Ping`; anything else ends the session.
struct PingOnly;

impl Handler for PingOnly {
    fn handle(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool {
        match msg {
            Msg::Ping { id } => {
                reply(Msg::Pong { id, time_ns: now_ns() });
                true
            }
            other => {
                reply(Msg::Error {
                    code: ErrorCode::Protocol,
                    message: format!("unexpected message type 0x{:02x}", other.type_byte()),
                });
                false
            }
        }
    }
}

/// Timeouts and TLS settings of the listening side.
#[derive(Clone)]
pub struct ServerSettings {
    /// TLS configuration (mutual, under the cluster CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// Bound on the TLS handshake plus the `Hello`.
    pub handshake_timeout: Duration,
    /// Bound on every later read and write.
    pub idle_timeout: Duration,
}

/// How a session ended, for the caller's bookkeeping and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Bye` exchanged, or the peer closed between requests.
    Done {
        /// The authenticated peer.
        peer: String,
    },
    /// Refused or failed; the string is what was logged.
    Failed(String),
}

/// Serves one connection (TCP, a socket on stdin, or a pipe) to its end.
pub async fn serve<IO>(
    io: IO,
    from: &str,
    settings: &ServerSettings,
    authority: &dyn Authority,
) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(settings.tls.clone());
    let tls = match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return fail(from, format!("TLS handshake failed: {}", describe_server_tls_error(&e)));
        }
        Err(_) => {
            return fail(
                from,
                format!("no TLS handshake within {:?} (idle timeout)", settings.handshake_timeout),
            );
        }
    };
    let (cert, exporter) = {
        let (_, session) = tls.get_ref();
        let cert = session.peer_certificates().and_then(|c| c.first()).cloned();
        let mut exporter = [0u8; 32];
        let ok = session.export_keying_material(&mut exporter, auth::EXPORTER_LABEL, None).is_ok();
        (cert.filter(|_| ok), exporter)
    };
    let Some(cert) = cert else {
        return fail(from, "no client certificate after the handshake".into());
    };
    let mut conn = Conn::new(tls, settings.handshake_timeout);

    let hello = match conn.recv().await {
        Ok(Some(m)) => m,
        Ok(None) => return fail(from, "closed before Hello".into()),
        Err(e) => return refuse_conn_error(&mut conn, from, e).await,
    };
    let Msg::Hello { min_version, max_version, node, groups, .. } = hello else {
        return refuse(
            &mut conn,
            from,
            ErrorCode::Protocol,
            "the first message must be Hello".into(),
        )
        .await;
    };
    // The claimed name is not checked yet (that is the certificate's job,
    // below): everything logged from here on shows it escaped.
    let who = format!("{from} ({})", crate::paths::escape(&node));
    if min_version > proto::VERSION_MAX || max_version < proto::VERSION_MIN {
        let msg = format!(
            "no common protocol version (peer speaks {min_version}..{max_version}, we speak {}..{})",
            proto::VERSION_MIN,
            proto::VERSION_MAX
        );
        return refuse(&mut conn, &who, ErrorCode::Version, msg).await;
    }
    let version = max_version.min(proto::VERSION_MAX);
    if !cert_names_host(&cert, &node) {
        let msg = format!(
            "certificate is not valid for the claimed host name '{}'",
            crate::paths::escape(&node)
        );
        return refuse(&mut conn, &who, ErrorCode::Identity, msg).await;
    }

    let me = authority.node_name().to_string();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for GroupProof { group, mac } in &groups {
        match authority.group_key(group, &node) {
            Ok(key) if auth::verify(&key, &exporter, Role::Client, &node, group, mac) => {
                accepted.push(GroupProof {
                    group: group.clone(),
                    mac: auth::proof(&key, &exporter, Role::Server, &me, group),
                });
            }
            Ok(_) => refused.push((group.clone(), ErrorCode::BadKey)),
            Err(code) => refused.push((group.clone(), code)),
        }
    }
    for (g, code) in &refused {
        // Unknown groups are whatever the peer sent.
        let g = crate::paths::escape(g);
        warn!(peer = %who, group = %g, "refused group '{g}': {code}");
    }
    let welcome = Msg::Welcome {
        version,
        node: me,
        capabilities: 0,
        groups: accepted.clone(),
        refused: refused.clone(),
    };
    if let Err(e) = conn.send(&welcome).await {
        return fail(&who, format!("sending Welcome: {e}"));
    }
    if accepted.is_empty() {
        // Nothing this peer may do here: end the session now.
        conn.shutdown().await;
        return Outcome::Failed(format!("{who}: no group accepted"));
    }
    let names: Vec<String> = accepted.iter().map(|p| p.group.clone()).collect();
    info!(peer = %who, groups = ?names, "session open");
    let handler = match authority.open_session(&node, &names) {
        Ok(h) => h,
        Err(e) => return refuse(&mut conn, &who, ErrorCode::Internal, e).await,
    };
    conn.set_idle(settings.idle_timeout);
    run_session(conn, handler, &who, node).await
}

/// Requests in, replies out, concurrently: requests go in order to the
/// handler's thread; its replies are written as they come, batched into as few
/// writes as possible. `Bye` is answered once every earlier reply is out.
async fn run_session<S>(
    conn: Conn<S>,
    handler: Box<dyn Handler>,
    who: &str,
    peer: String,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = conn.split();
    // Requests go to the worker in batches: every frame already buffered goes
    // in one hand-over (one wake-up, not three per small file). Bounded: at
    // most 16 batches of at most 4 MiB wait per session.
    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel::<Vec<Msg>>(16);
    let (rep_tx, mut rep_rx) = tokio::sync::mpsc::channel::<Msg>(1024);
    // Messages handed to the worker and not yet handled: while it is busy, the
    // peer may rightly be silent (waiting for replies), so idle is not a fault.
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worker_pending = pending.clone();
    // Set before the request channel closes: the worker then knows whether
    // the session ended with a `Bye` (someone waits for the end) or broke.
    let said_bye = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker_bye = said_bye.clone();
    let worker = std::thread::Builder::new().name("csync-session".into()).spawn(move || {
        let mut handler = handler;
        'session: loop {
            let batch = match req_rx.try_recv() {
                Ok(m) => m,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    // Nothing waiting: let the handler finish batched work first.
                    handler.idle(&mut |r| {
                        let _ = rep_tx.blocking_send(r);
                    });
                    match req_rx.blocking_recv() {
                        Some(m) => m,
                        None => break,
                    }
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    handler.idle(&mut |r| {
                        let _ = rep_tx.blocking_send(r);
                    });
                    break;
                }
            };
            handler.prepare(&batch);
            for msg in batch {
                let mut alive = true;
                let keep = handler.handle(msg, &mut |r| {
                    if rep_tx.blocking_send(r).is_err() {
                        alive = false;
                    }
                });
                worker_pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                if !keep || !alive {
                    break 'session;
                }
            }
        }
        let bye = worker_bye.load(std::sync::atomic::Ordering::SeqCst);
        handler.end(bye, &mut |r| {
            let _ = rep_tx.blocking_send(r);
        });
    });
    if let Err(e) = worker {
        return fail(who, format!("cannot start the session worker: {e}"));
    }
    let mut req_tx = Some(req_tx);
    let mut bye = false;
    let mut reading = true;
    loop {
        tokio::select! {
            m = rd.recv(), if reading => match m {
                Ok(Some(Msg::Bye)) => {
                    bye = true;
                    said_bye.store(true, std::sync::atomic::Ordering::SeqCst);
                    reading = false;
                    req_tx = None;
                }
                Ok(Some(msg)) => {
                    let mut batch = vec![msg];
                    let mut bytes = 0usize;
                    let mut failed = None;
                    while rd.has_frame() && batch.len() < 256 && bytes < (4 << 20) {
                        match rd.recv().await {
                            Ok(Some(Msg::Bye)) => {
                                bye = true;
                                said_bye.store(true, std::sync::atomic::Ordering::SeqCst);
                                reading = false;
                                break;
                            }
                            Ok(Some(m)) => {
                                if let Msg::Data { bytes: b, .. } = &m {
                                    bytes += b.len();
                                }
                                batch.push(m);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    pending.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
                    let sent = match &req_tx {
                        Some(tx) => tx.send(batch).await.is_ok(),
                        None => false,
                    };
                    if let Some(e) = failed {
                        drop(req_tx.take());
                        return refuse_conn_error(&mut wr, who, e).await;
                    }
                    if bye {
                        req_tx = None;
                    }
                    if !sent {
                        // The worker ended the session (it sent an Error).
                        reading = false;
                        req_tx = None;
                    }
                }
                Ok(None) => {
                    reading = false;
                    req_tx = None;
                }
                Err(ConnError::Timeout(_)) if pending.load(std::sync::atomic::Ordering::SeqCst) > 0 => {}
                Err(e) => {
                    drop(req_tx.take());
                    return refuse_conn_error(&mut wr, who, e).await;
                }
            },
            r = rep_rx.recv() => match r {
                Some(first) => {
                    let mut fatal = matches!(first, Msg::Error { .. });
                    let mut batch = vec![first];
                    while let Ok(more) = rep_rx.try_recv() {
                        fatal |= matches!(more, Msg::Error { .. });
                        batch.push(more);
                        if batch.len() >= 256 {
                            break;
                        }
                    }
                    for m in &batch {
                        if let Err(e) = wr.queue(m) {
                            return fail(who, format!("encoding reply: {e}"));
                        }
                    }
                    if let Err(e) = wr.flush().await {
                        return fail(who, format!("sending replies: {e}"));
                    }
                    if fatal {
                        wr.shutdown().await;
                        return Outcome::Failed(format!("{who}: ended after an error reply"));
                    }
                }
                None => {
                    // The worker is done: every reply has been written.
                    if bye {
                        let _ = wr.send(&Msg::ByeAck).await;
                    }
                    wr.shutdown().await;
                    return Outcome::Done { peer };
                }
            },
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn fail(who: &str, why: String) -> Outcome {
    warn!(peer = %who, "{why}");
    Outcome::Failed(format!("{who}: {why}"))
}

/// Tells the peer why (a typed code plus a hint), logs it, and ends the session.
async fn refuse<S>(conn: &mut Conn<S>, who: &str, code: ErrorCode, why: String) -> Outcome
where
    S: AsyncWrite + Unpin,
{
    let _ = conn.send(&Msg::Error { code, message: why.clone() }).await;
    conn.shutdown().await;
    fail(who, format!("refused: {why}"))
}

async fn refuse_conn_error<S>(conn: &mut Conn<S>, who: &str, e: ConnError) -> Outcome
where
    S: AsyncWrite + Unpin,
{
    match e {
        ConnError::Decode(proto::DecodeError::TooLarge(n)) => {
            let why = format!("frame of {n} bytes exceeds the limit of {}", proto::MAX_FRAME);
            refuse(conn, who, ErrorCode::FrameTooLarge, why).await
        }
        ConnError::Decode(d) => {
            refuse(conn, who, ErrorCode::Protocol, format!("garbage from peer: {d}")).await
        }
        ConnError::Timeout(t) => {
            refuse(
                conn,
                who,
                ErrorCode::Timeout,
                format!("nothing received for {t:?} (idle timeout)"),
            )
            .await
        }
        other => fail(who, other.to_string()),
    }
}

/// A server-side handshake failure in words an administrator can act on.
pub fn describe_server_tls_error(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error as E};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "connection closed during the handshake".into()
        } else {
            e.to_string()
        };
    };
    match tls {
        E::NoCertificatesPresented => "the client presented no certificate".into(),
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the client's certificate is not signed by our CA".into()
        }
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the client's certificate has expired".into(),
        E::InvalidCertificate(c) => format!("the client's certificate is invalid: {c:?}"),
        E::InvalidMessage(_) => {
            "not a TLS client (plaintext or garbage instead of a TLS handshake)".into()
        }
        E::PeerIncompatible(p) => format!("incompatible TLS client: {p:?}"),
        other => other.to_string(),
    }
}
