//! An authenticated session: requests read under a memory budget, handed
//! to the [`super::Handler`] on a worker thread in batches, and replies
//! written back, each direction bounded so a peer can neither flood this
//! node nor stall it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    BATCH_BYTES, BATCH_MSGS, Handler, MAX_OPEN_STREAMS, MAX_REPLY_BYTES, MAX_REQUEST_BYTES,
    MSG_OVERHEAD, Outcome, fail, logged,
};
use crate::net::conn::{Conn, ConnError};
use crate::proto::{self, ErrorCode, Msg};

/// A byte budget shared by an async producer or consumer and the session's
/// worker thread (which may block on it). Closing it releases every waiter:
/// a session that ends never leaves its worker stuck.
pub(super) struct Budget {
    limit: usize,
    state: std::sync::Mutex<(usize, bool)>,
    cv: std::sync::Condvar,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Self {
        Budget { limit, state: std::sync::Mutex::new((0, false)), cv: std::sync::Condvar::new() }
    }

    /// Takes `n` bytes, waiting while that would exceed the limit (one
    /// oversized item is let through when nothing else is held, so nothing
    /// waits for ever). False once closed.
    pub(super) fn take(&self, n: usize) -> bool {
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
    pub(super) fn give(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = st.0.saturating_sub(n);
        self.cv.notify_all();
    }

    pub(super) fn used(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub(super) fn close(&self) {
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
            Msg::Ack { outcome: proto::Outcome::ContentNeeded, .. } => proto::CONTENT_NEEDED.len(),
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
pub(super) async fn run_session<S>(
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
pub(super) fn track_stream(
    open: &mut std::collections::HashSet<u32>,
    msg: &Msg,
) -> Result<(), String> {
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
