//! The accepting side of one connection: TLS, the `Hello`/`Welcome` handshake
//! (identity, version, group proofs), then requests until `Bye`.
//!
//! Everything about groups comes in through [`Authority`], so this module never
//! reads the config or the index. A misbehaving peer ends its own session and
//! nothing else; every refusal is logged with the peer and the reason.

mod session;

use session::run_session;

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
    /// request (recording the receiver's owed actions) does it for the whole batch
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

/// Longest an authenticated session may last, `Bye` and actions included,
/// unless the listener is told otherwise (`--session-timeout`). Generous: a
/// push of many gigabytes over a slow link must fit; the point is that no
/// session, however it stalls, holds its slot for ever.
pub const DEFAULT_SESSION_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// A connection must send its first byte (the TLS ClientHello) within this
/// (or within the handshake timeout, when that is shorter): idle sockets
/// that never start TLS are dropped quickly.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most streams (`Push` with content, until its `DataEnd`) a peer may have
/// open at once. Each can hold a temporary file and a directory open on the
/// receiver. csync's own client has one open at a time; more than this is a
/// peer pinning descriptors, and it loses its session.
pub const MAX_OPEN_STREAMS: usize = 16;

/// Bytes of requests read from a peer and not yet handled (counted as their
/// size plus [`MSG_OVERHEAD`] each). When full, the session stops reading:
/// TCP flow control holds the peer back, nothing is refused.
pub const MAX_REQUEST_BYTES: usize = 2 << 20;

/// Bytes of replies produced and not yet written to the peer (counted as
/// their size plus [`MSG_OVERHEAD`] each). When full, the handler waits; a
/// peer that does not read its replies meets the idle timeout on our write.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// What a queued message costs beyond its payload (its in-memory form), so
/// that many tiny messages are bounded as well as a few big ones.
pub const MSG_OVERHEAD: usize = 256;

/// Requests handed to the handler in one batch: at most this many bytes…
const BATCH_BYTES: usize = 1 << 20;
/// …and at most this many messages.
const BATCH_MSGS: usize = 256;

/// Timeouts, limits and TLS settings of the listening side.
#[derive(Clone)]
pub struct ServerSettings {
    /// TLS configuration (mutual, under the cluster CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// Deadline for the whole handshake, from the connection's first moment:
    /// TLS, `Hello`, `Welcome`.
    pub handshake_timeout: Duration,
    /// Bound on every later read and write.
    pub idle_timeout: Duration,
    /// Bound on an authenticated session's whole life.
    pub session_limit: Duration,
    /// Slots for authenticated sessions (the daemon's; `None`: no limit, as
    /// for `-i`, which serves one connection per process). A peer that
    /// finishes its handshake while all are taken is told so and closed.
    pub sessions: Option<Arc<Slots>>,
}

/// The daemon's authenticated-session slots: so many in all, and so many per
/// peer node, so that one peer (even a receive-only one) holding sessions
/// open cannot lock the others out.
pub struct Slots {
    total: usize,
    per_peer: usize,
    /// Sessions in progress, in all and by peer.
    taken: std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

impl Slots {
    /// `total` slots, at most `per_peer` of them for any one peer.
    pub fn new(total: usize, per_peer: usize) -> Self {
        Slots { total, per_peer, taken: std::sync::Mutex::default() }
    }

    /// A slot for `peer`, or why there is none.
    fn take(self: &Arc<Self>, peer: &str) -> Result<Slot, String> {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if t.0 >= self.total {
            return Err(format!(
                "all {} session slots are taken (limit MAX_SESSIONS); try again later",
                self.total
            ));
        }
        let mine = t.1.entry(peer.to_string()).or_insert(0);
        if *mine >= self.per_peer {
            return Err(format!(
                "this peer already has {} sessions in progress (limit MAX_SESSIONS_PER_PEER)",
                self.per_peer
            ));
        }
        *mine += 1;
        t.0 += 1;
        Ok(Slot { slots: self.clone(), peer: peer.to_string() })
    }

    /// Sessions in progress.
    pub fn in_use(&self) -> usize {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// One taken session slot, given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    peer: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.taken.lock().unwrap_or_else(|e| e.into_inner());
        t.0 = t.0.saturating_sub(1);
        if let Some(n) = t.1.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                t.1.remove(&self.peer);
            }
        }
    }
}

impl ServerSettings {
    /// The settings a listener serves with: its identity from `sysdir`
    /// (certificate, key, the cluster CA that peers' certificates must chain
    /// to), the default session limit and no session slots.
    ///
    /// # Errors
    /// When the identity cannot be read or rustls refuses it.
    pub fn load(
        sysdir: &std::path::Path,
        handshake_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, super::SettingsError> {
        let id = super::identity::Identity::load(sysdir)?;
        let tls = super::tls::server_config(&id)?;
        Ok(ServerSettings::new(tls, handshake_timeout, idle_timeout))
    }

    /// Settings with the default session limit and no session slots.
    pub fn new(
        tls: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        ServerSettings {
            tls,
            handshake_timeout,
            idle_timeout,
            session_limit: DEFAULT_SESSION_LIMIT,
            sessions: None,
        }
    }
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
    serve_admitted(io, from, settings, authority, None, None).await
}

/// What the daemon holds for a connection until its handshake is over (its
/// place among the connections not yet authenticated); dropped then.
pub type HandshakeGuard = Box<dyn Send>;

/// As [`serve`], for a connection admitted under one of the daemon's
/// handshake slots: `handshake` is held until the handshake is over, so
/// connections that never authenticate compete only with each other.
pub async fn serve_admitted<IO>(
    io: IO,
    from: &str,
    settings: &ServerSettings,
    authority: &dyn Authority,
    handshake: Option<HandshakeGuard>,
    evict: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + settings.handshake_timeout;
    let phase = tokio::time::timeout_at(deadline, handshake_phase(io, from, settings, authority));
    // The daemon may close a connection still in its handshake to make room
    // for a newer one (`evict`); once authenticated, never.
    let phase = async move {
        match evict {
            Some(mut rx) => tokio::select! {
                r = phase => Some(r),
                Ok(()) = &mut rx => None,
            },
            None => Some(phase.await),
        }
    };
    let Some(timed) = phase.await else {
        let line =
            format!("{from}: closed during its handshake to make room for newer connections");
        log_handshake_failure(&line);
        return Outcome::Failed(line);
    };
    let started = match timed {
        Ok(Ok(s)) => s,
        Ok(Err(outcome)) => {
            if let Outcome::Failed(line) = &outcome {
                log_handshake_failure(line);
            }
            return outcome;
        }
        Err(_) => {
            let t = settings.handshake_timeout;
            let line = format!("{from}: handshake not finished within {t:?} (TLS, Hello, Welcome)");
            log_handshake_failure(&line);
            return Outcome::Failed(line);
        }
    };
    drop(handshake);
    let Started { mut conn, who, node, names, slot } = started;
    info!(peer = %who, groups = ?names, "session open");
    let handler = match authority.open_session(&node, &names) {
        Ok(h) => h,
        Err(e) => {
            let out = refuse(&mut conn, &who, ErrorCode::Internal, e).await;
            if let Outcome::Failed(line) = &out {
                warn!("{line}");
            }
            return out;
        }
    };
    conn.set_idle(settings.idle_timeout);
    let out = run_session(conn, handler, &who, node, settings.session_limit).await;
    drop(slot);
    out
}

/// An authenticated connection, ready for requests.
struct Started<S> {
    conn: Conn<S>,
    who: String,
    node: String,
    names: Vec<String>,
    slot: Option<Slot>,
}

/// TLS, `Hello`, group proofs, `Welcome`: everything before the first
/// request. `Err` is the session's end (already logged).
async fn handshake_phase<IO>(
    io: IO,
    from: &str,
    settings: &ServerSettings,
    authority: &dyn Authority,
) -> Result<Started<tokio_rustls::server::TlsStream<crate::net::client::Buffered<IO>>>, Outcome>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(settings.tls.clone());
    // Requests arrive in TLS records read 4 KiB at a time by rustls: a
    // buffer below it makes that one syscall per 64 KiB, not per record.
    let io =
        crate::net::client::Buffered::with_capacity(crate::net::client::SOCKET_READ_BUFFER, io);
    let tls = match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return Err(failed(
                from,
                format!("TLS handshake failed: {}", describe_server_tls_error(&e)),
            ));
        }
        Err(_) => {
            return Err(failed(
                from,
                format!("no TLS handshake within {:?} (idle timeout)", settings.handshake_timeout),
            ));
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
        return Err(failed(from, "no client certificate after the handshake".into()));
    };
    let mut conn = Conn::new(tls, settings.handshake_timeout);

    let hello = match conn.recv().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(failed(from, "closed before Hello".into())),
        Err(e) => return Err(refuse_conn_error(&mut conn, from, e).await),
    };
    let Msg::Hello { min_version, max_version, node, groups, .. } = hello else {
        return Err(refuse(
            &mut conn,
            from,
            ErrorCode::Protocol,
            "the first message must be Hello".into(),
        )
        .await);
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
        return Err(refuse(&mut conn, &who, ErrorCode::Version, msg).await);
    }
    let version = max_version.min(proto::VERSION_MAX);
    if !cert_names_host(&cert, &node) {
        let msg = format!(
            "certificate is not valid for the claimed host name '{}'",
            crate::paths::escape(&node)
        );
        return Err(refuse(&mut conn, &who, ErrorCode::Identity, msg).await);
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
    // A session slot is taken only now, by a peer that proved a group key:
    // strangers cannot use up the slots of the cluster's own nodes.
    let slot = match (&settings.sessions, accepted.is_empty()) {
        (Some(slots), false) => match slots.take(&node) {
            Ok(p) => Some(p),
            Err(why) => return Err(refuse(&mut conn, &who, ErrorCode::Internal, why).await),
        },
        _ => None,
    };
    let welcome = Msg::Welcome {
        version,
        node: me,
        capabilities: 0,
        groups: accepted.clone(),
        refused: refused.clone(),
    };
    if let Err(e) = conn.send(&welcome).await {
        return Err(failed(&who, format!("sending Welcome: {e}")));
    }
    if accepted.is_empty() {
        // Nothing this peer may do here: end the session now.
        conn.shutdown().await;
        return Err(Outcome::Failed(format!("{who}: no group accepted")));
    }
    let names: Vec<String> = accepted.iter().map(|p| p.group.clone()).collect();
    Ok(Started { conn, who, node, names, slot })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn fail(who: &str, why: String) -> Outcome {
    Outcome::Failed(logged(who, why))
}

/// As [`fail`], without logging (the caller logs, maybe rate-limited).
fn failed(who: &str, why: String) -> Outcome {
    Outcome::Failed(format!("{who}: {why}"))
}

/// Failed handshakes logged one by one per [`HANDSHAKE_LOG_WINDOW`]; the
/// rest are counted, so that anyone able to open connections cannot flood
/// the log.
pub const HANDSHAKE_LOGS_PER_WINDOW: u32 = 20;

/// See [`HANDSHAKE_LOGS_PER_WINDOW`].
pub const HANDSHAKE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// `(window start, lines logged in it, lines left out)`, daemon-wide.
static HANDSHAKE_LOG: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>> =
    std::sync::Mutex::new(None);

/// Logs why a connection ended before its session began, at most
/// [`HANDSHAKE_LOGS_PER_WINDOW`] lines per window, then a count of the rest.
pub fn log_handshake_failure(line: &str) {
    let now = std::time::Instant::now();
    let (log, left_out) = {
        let mut g = HANDSHAKE_LOG.lock().unwrap_or_else(|e| e.into_inner());
        let st = g.get_or_insert((now, 0, 0));
        let mut left_out = 0;
        if now.duration_since(st.0) >= HANDSHAKE_LOG_WINDOW {
            left_out = st.2;
            *st = (now, 0, 0);
        }
        let log = st.1 < HANDSHAKE_LOGS_PER_WINDOW;
        if log {
            st.1 += 1;
        } else {
            st.2 += 1;
        }
        (log, left_out)
    };
    if left_out > 0 {
        warn!(
            "{left_out} more failed handshakes were not logged (at most {HANDSHAKE_LOGS_PER_WINDOW} per {HANDSHAKE_LOG_WINDOW:?})"
        );
    }
    if log {
        warn!("{line}");
    }
}

/// Logs why a session ends, naming the peer; returns the same line.
fn logged(who: &str, why: String) -> String {
    warn!(peer = %who, "{why}");
    format!("{who}: {why}")
}

/// Tells the peer why (a typed code plus a hint) and ends the session; the
/// caller logs the returned line.
async fn refuse<S>(conn: &mut Conn<S>, who: &str, code: ErrorCode, why: String) -> Outcome
where
    S: AsyncWrite + Unpin,
{
    let _ = conn.send(&Msg::Error { code, message: why.clone() }).await;
    conn.shutdown().await;
    failed(who, format!("refused: {why}"))
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
        other => failed(who, other.to_string()),
    }
}

/// A server-side handshake failure in words an administrator can act on.
pub fn describe_server_tls_error(e: &std::io::Error) -> String {
    use rustls::Error as E;
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "connection closed during the handshake".into()
        } else {
            e.to_string()
        };
    };
    match tls {
        E::NoCertificatesPresented => "the client presented no certificate".into(),
        E::InvalidCertificate(c) => {
            super::tls::describe_cert_error(c, "the client's certificate", "its host name")
        }
        E::InvalidMessage(_) => {
            "not a TLS client (plaintext or garbage instead of a TLS handshake)".into()
        }
        E::PeerIncompatible(p) => format!("incompatible TLS client: {p:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
