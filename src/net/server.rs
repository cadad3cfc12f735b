//! The accepting side of one connection: TLS, the `Hello`/`Welcome` handshake
//! (identity, version, group proofs), then requests until `Bye`.
//!
//! Everything about groups comes in through [`Authority`], so this module never
//! reads the config or the index. A misbehaving peer ends its own session and
//! nothing else; every refusal is logged with the peer and the reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
) -> Result<Started<tokio_rustls::server::TlsStream<IO>>, Outcome>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(settings.tls.clone());
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

/// A byte budget shared by an async producer or consumer and the session's
/// worker thread (which may block on it). Closing it releases every waiter:
/// a session that ends never leaves its worker stuck.
struct Budget {
    limit: usize,
    state: std::sync::Mutex<(usize, bool)>,
    cv: std::sync::Condvar,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Budget { limit, state: std::sync::Mutex::new((0, false)), cv: std::sync::Condvar::new() }
    }

    /// Takes `n` bytes, waiting while that would exceed the limit (one
    /// oversized item is let through when nothing else is held, so nothing
    /// waits for ever). False once closed.
    fn take(&self, n: usize) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.1 {
                return false;
            }
            if st.0 == 0 || st.0 + n <= self.limit {
                st.0 += n;
                return true;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Gives back `n` bytes (never blocks: called from async code).
    fn give(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = st.0.saturating_sub(n);
        self.cv.notify_all();
    }

    fn used(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }
}

/// Closes a budget when the session's future ends, however it ends
/// (returned, or dropped at shutdown).
struct CloseOnDrop(Arc<Budget>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What a message costs against a session's byte budgets: its payload plus
/// a fixed overhead.
fn cost(msg: &Msg) -> usize {
    MSG_OVERHEAD
        + match msg {
            Msg::Data { bytes, .. } => bytes.len(),
            Msg::Push { path, entry, .. } => path.len() + entry.target.as_ref().map_or(0, Vec::len),
            Msg::Delete { path, .. }
            | Msg::Sig { path, .. }
            | Msg::Fetch { path, .. }
            | Msg::ListEntry { path, .. } => path.len(),
            Msg::SigReply { blocks, .. } => blocks.len() * 16,
            Msg::Error { message, .. } => message.len(),
            Msg::Ack { outcome: proto::Outcome::Failed { message, .. }, .. } => message.len(),
            Msg::ActionResult { command, status, .. } => command.len() + status.len(),
            _ => 0,
        }
}

/// Shared between the reader, the writer and the worker of a session.
struct Shared {
    /// Messages handed to the worker and not yet handled: while it is busy,
    /// the peer may rightly be silent (waiting for replies), so idle is not
    /// a fault.
    pending: std::sync::atomic::AtomicUsize,
    /// Set before the request channel closes: the worker then knows whether
    /// the session ended with a `Bye` (someone waits for the end) or broke.
    said_bye: std::sync::atomic::AtomicBool,
    /// Replies produced and not yet written.
    replies: Arc<Budget>,
}

/// How reading a session's requests ended.
enum ReadEnd {
    /// `Bye`, the peer's clean close, or the worker stopped taking requests.
    Done,
    /// The peer broke the protocol or a bound: tell it why, then end.
    Refuse(ErrorCode, String),
    /// The connection failed: nothing more can be said to the peer.
    Broken(String),
}

/// How writing a session's replies ended.
enum WriteEnd {
    /// Every reply written (and `ByeAck`, after a `Bye`).
    Finished,
    /// The handler ended the session with an `Error` reply.
    ErrorSent,
    /// The session was ended from outside (a refusal or its deadline); the
    /// `Error` was sent.
    Aborted,
    /// Writing failed (or the peer stopped reading for the idle timeout).
    Failed(ConnError),
}

/// Requests in, replies out, concurrently: requests go in order to the
/// handler's thread; its replies are written as they come, batched into as few
/// writes as possible. `Bye` is answered once every earlier reply is out.
///
/// Reading, handling and writing never wait on one another in a cycle: the
/// reader waits only for request budget (freed by the worker), the worker
/// only for reply budget (freed by the writer), and the writer only for the
/// peer, bounded by the idle timeout. So a peer that stops reading loses its
/// session after the idle timeout, and every session ends by `limit`.
async fn run_session<S>(
    conn: Conn<S>,
    handler: Box<dyn Handler>,
    who: &str,
    peer: String,
    limit: Duration,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, wr) = conn.split();
    let shared = Arc::new(Shared {
        pending: std::sync::atomic::AtomicUsize::new(0),
        said_bye: std::sync::atomic::AtomicBool::new(false),
        replies: Arc::new(Budget::new(MAX_REPLY_BYTES)),
    });
    let _close = CloseOnDrop(shared.replies.clone());
    let requests = Arc::new(Semaphore::new(MAX_REQUEST_BYTES));
    let (req_tx, req_rx) = tokio::sync::mpsc::unbounded_channel::<Batch>();
    let (rep_tx, rep_rx) = tokio::sync::mpsc::unbounded_channel::<(Msg, usize)>();
    let worker_shared = shared.clone();
    let worker = std::thread::Builder::new()
        .name("csync-session".into())
        .spawn(move || work(handler, req_rx, rep_tx, &worker_shared));
    if let Err(e) = worker {
        return fail(who, format!("cannot start the session worker: {e}"));
    }
    let (abort_tx, abort_rx) = tokio::sync::oneshot::channel::<(ErrorCode, String)>();
    let reader = read_requests(rd, req_tx, requests, shared.clone());
    let writer = write_replies(wr, rep_rx, abort_rx, shared.clone());
    tokio::pin!(reader, writer);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut abort = Some(abort_tx);
    let mut reading = true;
    let mut failure: Option<String> = None;
    loop {
        tokio::select! {
            r = &mut reader, if reading => {
                reading = false;
                match r {
                    ReadEnd::Done => {}
                    ReadEnd::Refuse(code, why) => {
                        failure = Some(logged(who, format!("refused: {why}")));
                        if let Some(tx) = abort.take() {
                            let _ = tx.send((code, why));
                        }
                    }
                    ReadEnd::Broken(why) => return fail(who, why),
                }
            }
            w = &mut writer => {
                return match w {
                    WriteEnd::Finished => match failure {
                        Some(f) => Outcome::Failed(f),
                        None => Outcome::Done { peer },
                    },
                    WriteEnd::ErrorSent => Outcome::Failed(format!("{who}: ended after an error reply")),
                    WriteEnd::Aborted => Outcome::Failed(failure.unwrap_or_else(|| format!("{who}: ended"))),
                    WriteEnd::Failed(ConnError::Timeout(t)) => fail(
                        who,
                        format!("the peer read none of our replies for {t:?} (idle timeout)"),
                    ),
                    WriteEnd::Failed(e) => fail(who, format!("sending replies: {e}")),
                };
            }
            _ = &mut deadline, if abort.is_some() => {
                let why = format!("session time limit of {limit:?} reached");
                failure = Some(logged(who, format!("ending the session: {why}")));
                if let Some(tx) = abort.take() {
                    let _ = tx.send((ErrorCode::Timeout, why));
                }
            }
        }
    }
}

/// Requests for the worker, with the request budget they hold until handled.
type Batch = (Vec<Msg>, OwnedSemaphorePermit);

/// The worker thread: handles the requests in order, replies under the
/// reply budget.
fn work(
    mut handler: Box<dyn Handler>,
    mut req_rx: tokio::sync::mpsc::UnboundedReceiver<Batch>,
    rep_tx: tokio::sync::mpsc::UnboundedSender<(Msg, usize)>,
    shared: &Shared,
) {
    use std::sync::atomic::Ordering::SeqCst;
    // False once the session's writer is gone: the handler stops.
    let send = |r: Msg| -> bool {
        let c = cost(&r);
        if !shared.replies.take(c) {
            return false;
        }
        if rep_tx.send((r, c)).is_err() {
            shared.replies.give(c);
            return false;
        }
        true
    };
    'session: loop {
        let (batch, permit) = match req_rx.try_recv() {
            Ok(b) => b,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                // Nothing waiting: let the handler finish batched work first.
                handler.idle(&mut |r| {
                    send(r);
                });
                match req_rx.blocking_recv() {
                    Some(b) => b,
                    None => break,
                }
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                handler.idle(&mut |r| {
                    send(r);
                });
                break;
            }
        };
        handler.prepare(&batch);
        for msg in batch {
            let mut alive = true;
            let keep = handler.handle(msg, &mut |r| alive &= send(r));
            shared.pending.fetch_sub(1, SeqCst);
            if !keep || !alive {
                break 'session;
            }
        }
        drop(permit);
    }
    let bye = shared.said_bye.load(SeqCst);
    handler.end(bye, &mut |r| {
        send(r);
    });
}

/// Reads requests and hands them to the worker in batches (every frame
/// already buffered goes in one hand-over: one wake-up, not three per small
/// file), under the request budget, and keeps the peer to its stream bound.
async fn read_requests<R: AsyncRead + Unpin>(
    mut rd: Conn<R>,
    req_tx: tokio::sync::mpsc::UnboundedSender<Batch>,
    budget: Arc<Semaphore>,
    shared: Arc<Shared>,
) -> ReadEnd {
    use std::sync::atomic::Ordering::SeqCst;
    let mut open: std::collections::HashSet<u32> = std::collections::HashSet::new();
    loop {
        let first = match rd.recv().await {
            Ok(Some(Msg::Bye)) => {
                shared.said_bye.store(true, SeqCst);
                return ReadEnd::Done;
            }
            Ok(Some(m)) => m,
            Ok(None) => return ReadEnd::Done,
            Err(ConnError::Timeout(_))
                if shared.pending.load(SeqCst) > 0 || shared.replies.used() > 0 =>
            {
                continue;
            }
            Err(e) => return conn_refusal(e),
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        let mut bye = false;
        let mut failed = None;
        while let Some(msg) = next.take() {
            if let Err(why) = track_stream(&mut open, &msg) {
                return ReadEnd::Refuse(ErrorCode::Protocol, why);
            }
            bytes += cost(&msg);
            batch.push(msg);
            if !rd.has_frame() || batch.len() >= BATCH_MSGS || bytes >= BATCH_BYTES {
                break;
            }
            match rd.recv().await {
                Ok(Some(Msg::Bye)) => bye = true,
                Ok(Some(m)) => next = Some(m),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        // Waits while the worker is behind: no read is pending meanwhile, so
        // the peer is held back by TCP flow control, never by our memory.
        let want = u32::try_from(bytes.min(MAX_REQUEST_BYTES)).unwrap_or(u32::MAX);
        let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
            return ReadEnd::Done;
        };
        shared.pending.fetch_add(batch.len(), SeqCst);
        if bye {
            shared.said_bye.store(true, SeqCst);
        }
        if req_tx.send((batch, permit)).is_err() {
            // The worker ended the session (its Error reply says why).
            return ReadEnd::Done;
        }
        if let Some(e) = failed {
            return conn_refusal(e);
        }
        if bye {
            return ReadEnd::Done;
        }
    }
}

/// Keeps count of the streams the peer has open: a `Push` with content
/// opens one, its `DataEnd` closes it.
fn track_stream(open: &mut std::collections::HashSet<u32>, msg: &Msg) -> Result<(), String> {
    match msg {
        Msg::Push { id, content, .. } if *content != proto::Content::None => {
            open.insert(*id);
            if open.len() > MAX_OPEN_STREAMS {
                return Err(format!(
                    "more than {MAX_OPEN_STREAMS} streams open at once (limit MAX_OPEN_STREAMS)"
                ));
            }
        }
        Msg::DataEnd { stream, .. } => {
            open.remove(stream);
        }
        _ => {}
    }
    Ok(())
}

/// Writes the worker's replies as they come, many per write, and gives
/// their budget back once they are out. Ends when the worker is done, when
/// it sent an `Error`, or when told to abort (then it sends that `Error`).
async fn write_replies<W: AsyncWrite + Unpin>(
    mut wr: Conn<W>,
    mut rep_rx: tokio::sync::mpsc::UnboundedReceiver<(Msg, usize)>,
    mut abort: tokio::sync::oneshot::Receiver<(ErrorCode, String)>,
    shared: Arc<Shared>,
) -> WriteEnd {
    let mut abortable = true;
    loop {
        let first = tokio::select! {
            biased;
            a = &mut abort, if abortable => match a {
                Ok((code, message)) => {
                    let _ = wr.send(&Msg::Error { code, message }).await;
                    wr.shutdown().await;
                    return WriteEnd::Aborted;
                }
                Err(_) => {
                    abortable = false;
                    continue;
                }
            },
            r = rep_rx.recv() => r,
        };
        let Some((first, c)) = first else {
            // The worker is done: every reply has been written.
            if shared.said_bye.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = wr.send(&Msg::ByeAck).await;
            }
            wr.shutdown().await;
            return WriteEnd::Finished;
        };
        let mut fatal = matches!(first, Msg::Error { .. });
        let mut held = c;
        if let Err(e) = wr.queue(&first) {
            shared.replies.give(held);
            return WriteEnd::Failed(e);
        }
        let mut n = 1;
        while n < BATCH_MSGS {
            let Ok((more, c)) = rep_rx.try_recv() else { break };
            fatal |= matches!(more, Msg::Error { .. });
            held += c;
            n += 1;
            if let Err(e) = wr.queue(&more) {
                shared.replies.give(held);
                return WriteEnd::Failed(e);
            }
        }
        let flushed = wr.flush().await;
        shared.replies.give(held);
        if let Err(e) = flushed {
            return WriteEnd::Failed(e);
        }
        if fatal {
            wr.shutdown().await;
            return WriteEnd::ErrorSent;
        }
    }
}

/// What to tell a peer whose connection failed while reading.
fn conn_refusal(e: ConnError) -> ReadEnd {
    match e {
        ConnError::Decode(proto::DecodeError::TooLarge(n)) => ReadEnd::Refuse(
            ErrorCode::FrameTooLarge,
            format!("frame of {n} bytes exceeds the limit of {}", proto::MAX_FRAME),
        ),
        ConnError::Decode(d) => {
            ReadEnd::Refuse(ErrorCode::Protocol, format!("garbage from peer: {d}"))
        }
        ConnError::Timeout(t) => ReadEnd::Refuse(
            ErrorCode::Timeout,
            format!("nothing received for {t:?} (idle timeout)"),
        ),
        other => ReadEnd::Broken(other.to_string()),
    }
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
mod tests {
    use super::*;

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
            run_session(conn, Box::new(Chatty), "test", "peer".into(), Duration::from_secs(60))
                .await
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
}
