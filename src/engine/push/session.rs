//! One peer's push session: connect, send every planned item (pipelined:
//! the writer never waits for replies; large files as block deltas), hand
//! each reply to [`super::replies`], retry what the replies ask for, tell the
//! peer which conflicts it won (`Yield`), and end with `Bye`, collecting the
//! actions the peer ran.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::feed::Feed;
use super::plan::Item;
use super::replies::{PathResult, PeerReport, on_outcome};
use crate::blockdelta;
use crate::engine::wire::to_wire;
use crate::net::client::{self, ClientSettings, Target};
use crate::net::conn::{Conn, ConnError};
use crate::proto::{Content, ErrorCode, Msg};
use crate::types::{Changes, FileKind, IgnoreFields, Meta};

/// Why a session with a peer broke off (per-path failures are in the report).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing the connection failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The peer answered a request this node never sent.
    #[error("reply for an unknown request {0}")]
    UnknownReply(u32),
    /// The peer ended the session with an error (its words, escaped).
    #[error("{code} ({message})")]
    Refused {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's message, escaped.
        message: String,
    },
    /// A message that is no reply here.
    #[error("unexpected reply 0x{0:02x}")]
    Unexpected(u8),
    /// Another reply than the one the request calls for.
    #[error("expected {expected}, got {got}")]
    Expected {
        /// What was expected.
        expected: &'static str,
        /// What came, as debug text.
        got: String,
    },
    /// The connection closed before every reply came.
    #[error("the peer closed the connection")]
    Closed,
    /// The block delta could not start (the peer's signature does not fit).
    #[error("{0}")]
    Delta(std::io::Error),
    /// The local file could not be read for a delta.
    #[error("reading {path}: {source}")]
    Read {
        /// The path, for humans.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Pushes what `feed` brings to one peer and reports how each item ended.
pub(super) async fn push_peer(
    target: &Target,
    settings: &ClientSettings,
    myname: &str,
    groups: &[(String, Vec<u8>)],
    feed: Feed,
    ignore: IgnoreFields,
    wait: std::time::Duration,
) -> PeerReport {
    let mut report = PeerReport {
        peer: target.name.clone(),
        recorder: Some(feed.recorder()),
        ..PeerReport::default()
    };
    let session = match client::connect(target, settings, myname, groups).await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let mut intake = Intake {
        feed,
        accepted: session.accepted.clone(),
        refused: HashSet::new(),
        big: Vec::new(),
    };
    let refused = |report: &mut PeerReport, intake: &Intake| {
        for r in session.refused.iter().filter(|(g, _)| intake.refused.contains(g)) {
            report.refused.push(r.clone());
        }
    };
    if session.accepted.is_empty() {
        // Only which groups had entries matters: the peer refused them all.
        while intake.next().await.is_some() {}
        refused(&mut report, &intake);
        // The peer ends a session in which it accepted no group: no Bye.
        return report;
    }
    let (mut rd, mut wr) = session.conn.split();
    let mut next_id = 1u32;
    // The first pass streams the plan (small entries pipelined, large ones
    // with an older version there kept aside for deltas); the retries the
    // replies ask for follow in up to three more passes.
    let mut retry = Vec::new();
    let first = pipeline(
        &mut rd,
        &mut wr,
        Source::Intake(&mut intake),
        &mut next_id,
        ignore,
        &mut report,
        &mut retry,
    )
    .await;
    refused(&mut report, &intake);
    let mut big = std::mem::take(&mut intake.big);
    if let Err(e) = first {
        report.error = Some(e.to_string());
    }
    let mut pass = 1;
    while report.error.is_none() {
        for it in std::mem::take(&mut big) {
            if let Err(e) =
                push_delta(&mut rd, &mut wr, it, &mut next_id, ignore, &mut report, &mut retry)
                    .await
            {
                report.error = Some(e.to_string());
                break;
            }
        }
        if report.error.is_some() || pass == 4 || retry.is_empty() {
            break;
        }
        pass += 1;
        let small;
        (small, big) = std::mem::take(&mut retry).into_iter().partition(|it| !wants_delta(it));
        let items = Source::List(small.into_iter());
        if let Err(e) =
            pipeline(&mut rd, &mut wr, items, &mut next_id, ignore, &mut report, &mut retry).await
        {
            report.error = Some(e.to_string());
        }
    }
    if report.error.is_none() {
        for (group, path, rule) in std::mem::take(&mut report.yields) {
            if let Err(e) = wr.queue(&Msg::Yield { group, path, rule }) {
                report.error = Some(e.to_string());
            }
        }
        if let Err(e) = wr.send(&Msg::Bye).await {
            // What the session's end then reads says why, in the report.
            tracing::debug!("peer {}: sending Bye: {e}", report.peer);
        }
        // The peer runs its actions before the ByeAck, telling us how they went.
        match crate::engine::remote::end_of_session(&mut rd, wait).await {
            Ok(actions) => {
                report.actions = actions;
                // The peer has handled our `Yield`s: its marks towards us
                // now carry those paths, ours can go.
                let yielded = std::mem::take(&mut report.yielded);
                report.pushed.extend(yielded);
            }
            Err(why) => {
                // Every change was confirmed; what is unknown is whether the
                // peer's actions ran (its journal re-runs them later).
                report.error = Some(format!(
                    "the session did not end cleanly after the last change ({why}); \
                     the peer runs any actions it owes on its next run"
                ));
            }
        }
    }
    wr.shutdown().await;
    report
}

/// The planner's items for this session: those of groups the peer refused
/// are only noted, large ones with an older version there are kept aside.
struct Intake {
    feed: Feed,
    accepted: Vec<String>,
    refused: HashSet<String>,
    big: Vec<Item>,
}

impl Intake {
    async fn next(&mut self) -> Option<Item> {
        loop {
            let it = self.feed.next().await?;
            if !self.accepted.contains(&it.group) {
                self.refused.insert(it.group.clone());
            } else if wants_delta(&it) {
                self.big.push(it);
            } else {
                return Some(it);
            }
        }
    }
}

/// What a pipeline sends: a list (retries), or the planner's stream.
enum Source<'a> {
    List(std::vec::IntoIter<Item>),
    Intake(&'a mut Intake),
}

impl Source<'_> {
    async fn next(&mut self) -> Option<Item> {
        match self {
            Source::List(it) => it.next(),
            Source::Intake(i) => i.next().await,
        }
    }
}

fn wants_delta(it: &Item) -> bool {
    it.peer_has_old
        && !it.forced
        && it
            .local
            .as_ref()
            .is_some_and(|m| m.kind == FileKind::File && m.size >= blockdelta::DELTA_MIN)
        && it.changes.contains(Changes::CONTENT)
}

/// An entry as it travels, saying which host made this version.
fn with_origin(m: &Meta, it: &Item) -> crate::proto::WireEntry {
    let mut w = to_wire(m);
    w.origin = Some(it.origin.clone());
    w
}

/// The mtime of the local directory holding the item (the receiver gives its
/// copy of that directory the same time after applying the item).
///
/// Items come parents first in path order, so consecutive ones share a
/// directory: its time is read once and reused for a moment (the session's
/// thread keeps the last one). A change to the directory within that
/// moment is what the next check picks up anyway, as for any change made
/// during a push.
fn parent_mtime(it: &Item) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    thread_local! {
        static LAST: std::cell::RefCell<Option<(PathBuf, Option<i64>, Instant)>> =
            const { std::cell::RefCell::new(None) };
    }
    let parent = it.real.as_ref()?.parent()?;
    let known = LAST.with(|l| {
        let l = l.borrow();
        let (p, t, at) = l.as_ref()?;
        (p == parent && at.elapsed() < PARENT_TIME_REUSE).then_some(*t)
    });
    if let Some(t) = known {
        return t;
    }
    let t = std::fs::symlink_metadata(parent)
        .ok()
        .and_then(|md| md.is_dir().then(|| md.mtime() * 1_000_000_000 + md.mtime_nsec()));
    LAST.with(|l| *l.borrow_mut() = Some((parent.to_path_buf(), t, Instant::now())));
    t
}

/// How long [`parent_mtime`] reuses a directory's time.
const PARENT_TIME_REUSE: Duration = Duration::from_millis(500);

/// The request for an item (the content, if any, follows separately).
fn request(it: &Item, id: u32) -> (Msg, Content) {
    match &it.local {
        None => (
            Msg::Delete {
                id,
                group: it.group.clone(),
                path: it.path.clone(),
                base: it.base,
                force: it.forced,
                parent_mtime: parent_mtime(it),
            },
            Content::None,
        ),
        Some(m) => {
            let content = if m.kind != FileKind::File {
                Content::None
            } else {
                let meta_only =
                    Changes::NEW.0 | Changes::CONTENT.0 | Changes::TYPE.0 | Changes::MARKED.0;
                if it.changes.0 & meta_only == 0
                    && !it.need_content
                    && !it.forced
                    && it.peer_has_old
                {
                    Content::None
                } else {
                    Content::Whole
                }
            };
            (
                Msg::Push {
                    id,
                    group: it.group.clone(),
                    path: it.path.clone(),
                    entry: with_origin(m, it),
                    base: it.base,
                    force: it.forced,
                    content,
                    parent_mtime: parent_mtime(it),
                },
                content,
            )
        }
    }
}

/// Opens an item's content: without following symlinks below its include
/// root, and only if it is still the inode the check hashed. Whatever a local
/// user put at the path since (a symlink to a file only root may read, another
/// file) is never sent; the path fails this run and the next check sees it.
fn open_content(it: &Item) -> Result<std::fs::File, String> {
    let (Some((root, rel)), Some(m)) = (&it.source, &it.local) else {
        return Err("not below an include root here; not sent".into());
    };
    let expect = crate::scan::Expected { dev: None, ino: m.ino };
    crate::scan::open_checked(root, rel, expect).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "vanished since it was checked; not sent, checked again on the next run".into()
        } else {
            e.to_string()
        }
    })
}

/// What goes out after a request.
enum Body {
    /// No content (metadata, a delete, a delta asked for later).
    Nothing,
    /// Read from the file as it is sent.
    File(std::fs::File),
    /// A small file's content, read once for every peer (see [`super::shared`]).
    Shared(std::sync::Arc<super::shared::Held>),
}

/// A small file's whole content, read through [`open_content`]. A file
/// shorter than the check saw changed since: it is not sent (every receiver
/// would refuse it by hash), and the next check sees it.
fn read_small(it: &Item) -> Result<Vec<u8>, String> {
    let size = it.local.as_ref().map_or(0, |m| m.size);
    let mut out = Vec::with_capacity(size as usize);
    open_content(it)?.take(size).read_to_end(&mut out).map_err(|e| format!("cannot read: {e}"))?;
    if out.len() as u64 != size {
        return Err(
            "changed since it was checked (size); not sent, checked again on the next run".into()
        );
    }
    Ok(out)
}

/// Files up to this size are read straight into the connection's write
/// queue ([`Conn::queue_data_from`]): no buffer of their own, and the
/// `Push`, `Data` and `DataEnd` of many go out in one write.
const SMALL_FILE: u64 = 64 * 1024;

/// The pipeline writes what it queued once this much is waiting (a few TLS
/// records in one syscall), or as soon as no next item is ready.
const FLUSH_AT: usize = 64 * 1024;

/// Requests sent and not yet answered, at most (the receiver makes up to
/// 256 entries durable at a time: this keeps a few such batches coming).
const MAX_IN_FLIGHT: usize = 1024;

/// Read size for the content of larger files.
const READ_CHUNK: usize = 256 * 1024;

/// The hash a `DataEnd` carries: the one the request declared.
///
/// The receiver checks what it wrote against the entry hash of the `Push`
/// (the hash the check computed), never against `DataEnd`'s, so hashing the
/// content again while sending it would only repeat the check's work. A file
/// changed since the check (before or during the send) then fails that check
/// on the receiver, which drops the temporary file: nothing half-sent or
/// changed is ever applied, and the mark stays for the next run.
fn declared_hash(it: &Item) -> [u8; 32] {
    it.local.as_ref().and_then(|m| m.hash).unwrap_or([0; 32])
}

/// Streams a file's content on stream `id`: `Data` frames, then `DataEnd`
/// with the declared hash (see [`declared_hash`]). Returns the bytes sent.
/// Small files are only queued (the caller flushes); `buf` is the session's
/// read buffer for larger ones, allocated on first use.
///
/// At most `size` bytes (the size the request declared) are read: a file that
/// grew since the check would only be refused by the receiver, and what was
/// checked is what is sent (the next check sees the growth).
async fn send_file<W: AsyncWrite + Unpin>(
    wr: &mut Conn<W>,
    id: u32,
    f: std::fs::File,
    size: u64,
    hash: [u8; 32],
    buf: &mut Vec<u8>,
) -> Result<u64, SessionError> {
    let mut sent = 0u64;
    let mut f = f.take(size);
    // A read error still ends the stream: the peer then rejects it by hash
    // and the mark stays for the next run.
    if size <= SMALL_FILE {
        let (n, err) = wr.queue_data_from(id, &mut f, size as usize);
        if let Some(e) = err {
            tracing::warn!("stream {id}: reading the content failed after {n} bytes: {e}");
        }
        sent = n as u64;
        crate::progress::sent(n);
    } else {
        if buf.is_empty() {
            buf.resize(READ_CHUNK, 0);
        }
        loop {
            let n = match f.read(buf) {
                Ok(0) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(
                        "stream {id}: reading the content failed after {sent} bytes: {e}"
                    );
                    break;
                }
                Ok(n) => n,
            };
            wr.send_data(id, &buf[..n]).await?;
            sent += n as u64;
            crate::progress::sent(n);
        }
    }
    wr.queue(&Msg::DataEnd { stream: id, hash })?;
    Ok(sent)
}

/// The future's output if it is ready at once, without waiting.
async fn ready_now<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    use std::task::Poll;
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Sends every item without waiting for replies, while a second future reads
/// the replies as they come.
#[allow(clippy::too_many_arguments)]
async fn pipeline<R, W>(
    rd: &mut Conn<R>,
    wr: &mut Conn<W>,
    mut items: Source<'_>,
    next_id: &mut u32,
    ignore: IgnoreFields,
    report: &mut PeerReport,
    retry: &mut Vec<Item>,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if matches!(&items, Source::List(l) if l.len() == 0) {
        return Ok(());
    }
    // With each item, why it was not sent (its content could not be opened
    // safely): no request went out, so no reply will come.
    // A sent item holds a permit until its reply came: the writer, which
    // rarely has to wait for the socket now that small files are coalesced,
    // would otherwise run thousands of items ahead of the replies, each
    // held in memory.
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    type Permit = Option<tokio::sync::OwnedSemaphorePermit>;
    let (reg_tx, mut reg_rx) =
        tokio::sync::mpsc::unbounded_channel::<(u32, Item, Option<String>, Permit)>();
    let mut id = *next_id;
    let writer = async move {
        let mut bytes = 0u64;
        let mut buf = Vec::new();
        loop {
            // The next item if it is ready; if not, what is queued goes out
            // first (a lone change, as in watch mode, leaves at once), then
            // the writer waits.
            let next = {
                let mut next = std::pin::pin!(items.next());
                match ready_now(&mut next).await {
                    Some(it) => it,
                    None => {
                        if wr.queued() > 0 {
                            wr.flush().await?;
                        }
                        next.await
                    }
                }
            };
            let Some(mut it) = next else { break };
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // The replies that free permits come only for what
                    // went out.
                    wr.flush().await?;
                    permits.clone().acquire_owned().await.expect("never closed")
                }
            };
            id += 1;
            let id = id - 1;
            let (msg, content) = request(&it, id);
            // Let go of the shared content once it is queued: an item in
            // flight holds no bytes.
            let slot = it.shared.take();
            let body = if content != Content::Whole {
                // Nothing to send: others need not keep the bytes for us.
                drop(slot);
                Body::Nothing
            } else if let Some(slot) = slot {
                match slot.content(|| read_small(&it)) {
                    Ok(held) => Body::Shared(held),
                    Err(why) => {
                        // Fails only once the reader gave up (it reports why).
                        let _ = reg_tx.send((id, it, Some(why), None));
                        continue;
                    }
                }
            } else {
                match open_content(&it) {
                    Ok(f) => Body::File(f),
                    Err(why) => {
                        // Fails only once the reader gave up (it reports why).
                        let _ = reg_tx.send((id, it, Some(why), None));
                        continue;
                    }
                }
            };
            wr.queue(&msg)?;
            match body {
                Body::File(f) => {
                    let size = it.local.as_ref().map_or(0, |m| m.size);
                    bytes += send_file(wr, id, f, size, declared_hash(&it), &mut buf).await?;
                }
                Body::Shared(held) => {
                    let (n, _) = wr.queue_data_from(id, &mut held.bytes(), held.bytes().len());
                    wr.queue(&Msg::DataEnd { stream: id, hash: declared_hash(&it) })?;
                    crate::progress::sent(n);
                    bytes += n as u64;
                }
                Body::Nothing => {}
            }
            // Fails only once the reader gave up (it reports why).
            let _ = reg_tx.send((id, it, None, Some(permit)));
            if wr.queued() >= FLUSH_AT {
                wr.flush().await?;
            }
        }
        drop(reg_tx);
        wr.flush().await?;
        Ok::<(u64, u32), SessionError>((bytes, id))
    };
    let reader = async {
        let mut inflight: HashMap<u32, (Item, Permit)> = HashMap::new();
        let mut open = true;
        loop {
            if inflight.is_empty() && !open {
                return Ok::<(), SessionError>(());
            }
            tokio::select! {
                biased;
                reg = reg_rx.recv(), if open => match reg {
                    Some((id, it, None, permit)) => { inflight.insert(id, (it, permit)); }
                    Some((_, it, Some(why), _)) => report.paths.push((it.path, PathResult::Failed(why))),
                    None => open = false,
                },
                m = rd.recv(), if !inflight.is_empty() => match m {
                    Ok(Some(Msg::Ack { id, outcome })) => {
                        let Some((it, _permit)) = inflight.remove(&id) else {
                            return Err(SessionError::UnknownReply(id));
                        };
                        on_outcome(it, outcome, ignore, report, retry);
                    }
                    Ok(Some(Msg::Error { code, message })) => {
                        return Err(SessionError::Refused { code, message: crate::paths::escape(&message) });
                    }
                    Ok(Some(other)) => return Err(SessionError::Unexpected(other.type_byte())),
                    Ok(None) => return Err(SessionError::Closed),
                    Err(e) => return Err(e.into()),
                },
            }
        }
    };
    let (w, r) = tokio::join!(writer, reader);
    let (bytes, next) = w?;
    report.bytes += bytes;
    *next_id = next;
    r
}

/// A large file the peer has an older version of: ask for its block
/// signature, then send only the blocks that differ.
#[allow(clippy::too_many_arguments)]
async fn push_delta<R, W>(
    rd: &mut Conn<R>,
    wr: &mut Conn<W>,
    mut it: Item,
    next_id: &mut u32,
    ignore: IgnoreFields,
    report: &mut PeerReport,
    retry: &mut Vec<Item>,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let id = *next_id;
    *next_id += 1;
    wr.send(&Msg::Sig { id, group: it.group.clone(), path: it.path.clone() }).await?;
    let (block_size, size, blocks) = match rd.recv().await? {
        Some(Msg::SigReply { id: rid, block_size, size, blocks }) if rid == id => {
            // A signature the delta rules do not allow (a buggy or hostile
            // peer: a block size that would make the encoder allocate or loop
            // without bound, a block count that does not match the size) is
            // treated as no signature: the whole file goes instead.
            match blockdelta::check_signature(block_size, size, blocks.len()) {
                Ok(()) => (block_size, size, blocks),
                Err(why) => {
                    tracing::warn!(
                        "peer {}: invalid delta signature for {} ({why}); pushing the whole file",
                        report.peer,
                        crate::paths::display(&it.path)
                    );
                    (block_size, size, Vec::new())
                }
            }
        }
        other => {
            return Err(SessionError::Expected {
                expected: "a signature",
                got: format!("{other:?}"),
            });
        }
    };
    let file = open_content(&it).ok();
    let (Some(file), false) = (file, blocks.is_empty()) else {
        // Nothing to diff against: whole file after all.
        it.need_content = true;
        it.peer_has_old = false;
        let items = Source::List(vec![it].into_iter());
        return pipeline(rd, wr, items, next_id, ignore, report, retry).await;
    };
    let id = *next_id;
    *next_id += 1;
    let Some(m) = &it.local else { return Ok(()) };
    wr.queue(&Msg::Push {
        id,
        group: it.group.clone(),
        path: it.path.clone(),
        entry: with_origin(m, &it),
        base: it.base,
        force: it.forced,
        content: Content::Delta,
        parent_mtime: parent_mtime(&it),
    })?;
    // The encoder reads whole blocks (64 KiB and up): straight from the
    // file, without a buffer's extra copy, and only those that differ.
    let mut enc = match our_blocks(&file, block_size) {
        Some(ours) => blockdelta::Encoder::with_ours(file, block_size, size, blocks, ours),
        None => blockdelta::Encoder::new(file, block_size, size, blocks),
    }
    .map_err(SessionError::Delta)?;
    loop {
        match enc.next_chunk() {
            Ok(Some(chunk)) => {
                crate::progress::sent(chunk.len());
                wr.send_data(id, &chunk).await?
            }
            Ok(None) => break,
            Err(source) => {
                return Err(SessionError::Read { path: crate::paths::display(&it.path), source });
            }
        }
    }
    report.bytes += enc.literal_bytes;
    wr.send(&Msg::DataEnd { stream: id, hash: declared_hash(&it) }).await?;
    match rd.recv().await? {
        Some(Msg::Ack { id: rid, outcome }) if rid == id => {
            on_outcome(it, outcome, ignore, report, retry);
            Ok(())
        }
        other => Err(SessionError::Expected { expected: "an ack", got: format!("{other:?}") }),
    }
}

/// The hashes of the blocks of a file pushed as a delta, shared by the
/// sessions of one process: the same file going to several peers is read
/// and hashed once, and each peer's encoder then reads only the blocks that
/// differ from that peer's. Keyed by what identifies the content (device,
/// inode, size, mtime, ctime; the block size): a file changed in between is
/// hashed again. The few last files are kept (at most 800 KB each).
fn our_blocks(f: &std::fs::File, block_size: u32) -> Option<Arc<Vec<[u8; 16]>>> {
    use std::os::unix::fs::MetadataExt;
    type Key = (u64, u64, u64, i64, i64, i64, i64, u32);
    type Cell = Arc<OnceLock<Option<Arc<Vec<[u8; 16]>>>>>;
    static KEPT: Mutex<Vec<(Key, Cell)>> = Mutex::new(Vec::new());
    let md = f.metadata().ok()?;
    let key = (
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
        block_size,
    );
    let cell = {
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        match kept.iter().find(|(k, _)| *k == key) {
            Some((_, c)) => c.clone(),
            None => {
                if kept.len() >= 4 {
                    kept.remove(0);
                }
                let c = Cell::default();
                kept.push((key, c.clone()));
                c
            }
        }
    };
    // Another session hashing the same file meanwhile: this one waits for
    // its result instead of reading the file again.
    cell.get_or_init(|| {
        blockdelta::block_hashes(f, block_size, blockdelta::MAX_BLOCKS).ok().map(Arc::new)
    })
    .clone()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
