//! The listener: `-ii` (standalone, or systemd socket activation via
//! `LISTEN_FDS`) and `-i` (one connection on stdin/stdout, for inetd and
//! systemd `Accept=yes`).
//!
//! One process, one tokio runtime, one task per connection. A misbehaving peer
//! ends its own session only; SIGTERM/SIGINT stop accepting, let sessions in
//! flight finish (bounded), and exit; SIGHUP re-reads the config and the
//! node's identity for the sessions that start after it.
//!
//! Connections that have not authenticated yet (TCP accepted, TLS and
//! `Hello`/`Welcome` not done) and authenticated sessions have separate
//! limits, so strangers holding sockets open cannot lock the cluster's own
//! nodes out. The main loop never waits for a slot: signals are always seen.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::net::server::{self, Authority, ServerSettings};

/// How long in-flight sessions may run on after SIGTERM before they are cut.
const DRAIN: Duration = Duration::from_secs(10);

/// Most authenticated sessions served at once. A peer that authenticates
/// while all are taken is told so (`Error`) and closed.
pub const MAX_SESSIONS: usize = 128;

/// Most authenticated sessions one peer node may have at once: a node runs
/// one `-x` per target at a time, plus the odd `--ping` or `-T`; more is a
/// peer hoarding slots, and must not lock the others out.
pub const MAX_SESSIONS_PER_PEER: usize = 8;

/// Most connections not authenticated yet (TCP accepted, `Welcome` not
/// sent): silent ones and those in their TLS and `Hello` handshake. Past it,
/// the oldest of them is closed to make room. Each costs little (a socket
/// and a TLS state) and lasts at most the handshake timeout, after at most
/// [`server::FIRST_BYTE_TIMEOUT`] of silence.
pub const MAX_HANDSHAKES: usize = 512;

/// Most connections not authenticated yet from one source address. Past it,
/// the oldest of that address is closed: a client that opens connections
/// and never finishes a handshake (silent, or one byte and no more) cannot
/// keep a real peer out, even one behind the same address, since the newest
/// connection is never the one evicted.
pub const MAX_SILENT_PER_ADDR: usize = 64;

/// The connections not authenticated yet (silent, or in their TLS and
/// `Hello` handshake), oldest first, each with the means to close it.
#[derive(Default)]
struct Pending {
    next: u64,
    queue: std::collections::VecDeque<(u64, std::net::IpAddr, tokio::sync::oneshot::Sender<()>)>,
}

impl Pending {
    /// Registers a new connection from `ip`, closing the oldest pending one
    /// (of `ip` if it has too many, else of anyone) when over the limits.
    /// Returns its id and what tells it to go.
    fn admit(&mut self, ip: std::net::IpAddr) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        self.queue.retain(|(_, _, tx)| !tx.is_closed());
        let from_ip = self.queue.iter().filter(|(_, a, _)| *a == ip).count();
        let victim = if from_ip >= MAX_SILENT_PER_ADDR {
            self.queue.iter().position(|(_, a, _)| *a == ip)
        } else if self.queue.len() >= MAX_HANDSHAKES {
            Some(0)
        } else {
            None
        };
        if let Some(i) = victim
            && let Some((_, _, tx)) = self.queue.remove(i)
        {
            let _ = tx.send(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.next += 1;
        self.queue.push_back((self.next, ip, tx));
        (self.next, rx)
    }

    /// The connection's handshake is over (or it ended).
    fn done(&mut self, id: u64) {
        self.queue.retain(|(i, _, _)| *i != id);
    }
}

/// Removes a connection from [`Pending`] when dropped: at the end of its
/// handshake, whichever way it ended.
struct PendingGuard {
    id: u64,
    pending: Arc<std::sync::Mutex<Pending>>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.done(self.id);
        }
    }
}

/// What sessions are served with: the config's view of groups, TLS and
/// timeouts. Rebuilt on SIGHUP; each session keeps the one it started with.
#[derive(Clone)]
pub struct Serving {
    /// Groups and keys, and the handler of each session.
    pub authority: Arc<dyn Authority>,
    /// TLS (this node's identity), timeouts, limits.
    pub settings: ServerSettings,
}

/// Builds a new [`Serving`] from the config and identity on disk (SIGHUP).
/// `Err` is the reason, for the log; the old one stays in use.
pub type Reload = Box<dyn FnMut() -> Result<Serving, String> + Send>;

/// Listener settings from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// TCP port (`-p`).
    pub port: u16,
    /// `-N` was given: csync2 also bound to that name's address.
    pub bind_name: Option<String>,
    /// `--watch`: told whenever a connection ends (a session may have left
    /// dirty marks for the watcher to push).
    pub after_session: Option<Arc<crate::watch::Wake>>,
}

/// Sockets systemd passed in (`LISTEN_FDS`). Must be taken before any thread
/// starts, since it reads the environment.
pub fn take_activation_sockets() -> Vec<std::net::TcpListener> {
    let fds: Vec<i32> = match sd_notify::listen_fds() {
        Ok(fds) => fds.collect(),
        Err(e) => {
            warn!("ignoring LISTEN_FDS: {e}");
            Vec::new()
        }
    };
    fds.into_iter().map(adopt_listener).collect()
}

/// Takes ownership of a descriptor systemd handed us.
#[allow(unsafe_code)]
fn adopt_listener(fd: i32) -> std::net::TcpListener {
    use std::os::fd::FromRawFd;
    // SAFETY: sd_listen_fds(3): descriptors 3..3+LISTEN_FDS belong to this
    // process (sd_notify checked LISTEN_PID) and nothing else in it uses them;
    // each is adopted exactly once, here.
    unsafe { std::net::TcpListener::from_raw_fd(fd) }
}

/// This node's `@addr`, when some group gives one.
fn config_address(config: &Config) -> Option<String> {
    config.my_groups().find_map(|g| g.me(&config.myname).and_then(|h| h.addr.clone()))
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv6() { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
    sock.set_reuseaddr(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // One socket for IPv4 and IPv6, whatever net.ipv6.bindv6only says.
        rustix::net::sockopt::set_ipv6_v6only(sock.as_fd(), false)?;
    }
    sock.bind(addr)?;
    sock.listen(1024)
}

/// The addresses to listen on: the config's `@addr` for this node, else the
/// `-N` name if it resolves to a local address, else every address.
async fn listeners(config: &Config, opts: &Options) -> io::Result<Vec<TcpListener>> {
    if let Some(addr) = config_address(config) {
        let mut out = Vec::new();
        for a in tokio::net::lookup_host((addr.as_str(), opts.port)).await? {
            out.push(bind(a).await.map_err(|e| io::Error::new(e.kind(), format!("{a}: {e}")))?);
        }
        return Ok(out);
    }
    if let Some(name) = &opts.bind_name
        && let Ok(addrs) = tokio::net::lookup_host((name.as_str(), opts.port)).await
    {
        let mut out = Vec::new();
        for a in addrs {
            if let Ok(l) = bind(a).await {
                out.push(l);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    let any6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, opts.port).into();
    match bind(any6).await {
        Ok(l) => Ok(vec![l]),
        // No IPv6 on this host: IPv4 only.
        Err(_) => Ok(vec![bind((std::net::Ipv4Addr::UNSPECIFIED, opts.port).into()).await?]),
    }
}

/// Runs the standalone listener until SIGTERM/SIGINT.
///
/// # Errors
/// When no socket can be bound.
pub fn run_standalone(
    config: &Config,
    serving: Serving,
    reload: Reload,
    opts: &Options,
    activated: Vec<std::net::TcpListener>,
) -> Result<(), String> {
    raise_fd_limit();
    let rt = runtime()?;
    rt.block_on(async move {
        // Handlers before anything can be sent to us (once we listen, or
        // from READY on, systemd may send SIGHUP, whose default would kill).
        let signals = Signals {
            term: signal(tokio::signal::unix::SignalKind::terminate()),
            int: signal(tokio::signal::unix::SignalKind::interrupt()),
            hup: signal(tokio::signal::unix::SignalKind::hangup()),
        };
        let listeners = if activated.is_empty() {
            listeners(config, opts)
                .await
                .map_err(|e| format!("cannot listen on port {}: {e}", opts.port))?
        } else {
            let mut v = Vec::new();
            for l in activated {
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                v.push(TcpListener::from_std(l).map_err(|e| e.to_string())?);
            }
            v
        };
        for l in &listeners {
            if let Ok(a) = l.local_addr() {
                info!("listening on {a}");
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        serve_until_signal(listeners, serving, reload, signals, opts.after_session.clone()).await;
        Ok(())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).min(4))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Raises the soft limit on open descriptors to the hard one: every session
/// and handshake holds a socket, and a session a few files; the common soft
/// default of 1024 is far below what the limits above allow.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current == lim.maximum {
        return;
    }
    let want = rustix::process::Rlimit { current: lim.maximum, maximum: lim.maximum };
    match setrlimit(Resource::Nofile, want) {
        Ok(()) => info!(
            "open file limit raised from {} to {}",
            lim.current.map_or("unlimited".into(), |n| n.to_string()),
            lim.maximum.map_or("unlimited".into(), |n| n.to_string())
        ),
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
}

/// The signals the listener acts on.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

async fn serve_until_signal(
    listeners: Vec<TcpListener>,
    serving: Serving,
    mut reload: Reload,
    signals: Signals,
    after_session: Option<Arc<crate::watch::Wake>>,
) {
    let (conn_tx, mut conn_rx) =
        tokio::sync::mpsc::channel::<(tokio::net::TcpStream, SocketAddr)>(64);
    let mut acceptors = JoinSet::new();
    for l in listeners {
        let tx = conn_tx.clone();
        acceptors.spawn(async move {
            let mut backoff = Duration::from_millis(10);
            loop {
                match l.accept().await {
                    Ok(c) => {
                        backoff = Duration::from_millis(10);
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    // Out of descriptors and the like: wait a little, never spin.
                    Err(e) => {
                        error!("accept failed: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
    }
    drop(conn_tx);
    let slots = Arc::new(server::Slots::new(MAX_SESSIONS, MAX_SESSIONS_PER_PEER));
    let with_slots = |mut s: Serving| {
        s.settings.sessions = Some(slots.clone());
        s
    };
    let mut current = with_slots(serving);
    // Connections closed because every handshake slot was taken, since the
    // last log line about it: one line per burst, not one per connection.
    let mut sessions = JoinSet::new();
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
    let Signals { mut term, mut int, mut hup } = signals;
    loop {
        tokio::select! {
            Some((stream, from)) = conn_rx.recv() => {
                let _ = stream.set_nodelay(true);
                let Serving { authority, settings } = current.clone();
                let (id, mut evicted) = match pending.lock() {
                    Ok(mut p) => p.admit(from.ip()),
                    Err(_) => continue,
                };
                let guard = PendingGuard { id, pending: pending.clone() };
                sessions.spawn(async move {
                    let from = from.to_string();
                    // A socket that stays silent is dropped before it costs a
                    // TLS state, and sooner when newer ones need the room.
                    let first = server::FIRST_BYTE_TIMEOUT.min(settings.handshake_timeout);
                    let mut b = [0u8; 1];
                    let spoke = tokio::select! {
                        r = tokio::time::timeout(first, stream.peek(&mut b)) => r,
                        Ok(()) = &mut evicted => {
                            server::log_handshake_failure(&format!("{from}: closed while silent to make room for newer connections"));
                            Ok(Ok(0))
                        }
                    };
                    match spoke {
                        Ok(Ok(n)) if n > 0 => {}
                        Ok(Ok(_)) | Ok(Err(_)) => return,
                        Err(_) => {
                            server::log_handshake_failure(&format!("{from}: no TLS handshake within {first:?} (nothing received since connecting)"));
                            return;
                        }
                    }
                    let guard: server::HandshakeGuard = Box::new(guard);
                    server::serve_admitted(stream, &from, &settings, authority.as_ref(), Some(guard), Some(evicted)).await;
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {
                if let Some(w) = &after_session {
                    w.wake();
                }
            }
            _ = recv_signal(&mut term) => { info!("SIGTERM: stopping"); break; }
            _ = recv_signal(&mut int) => { info!("SIGINT: stopping"); break; }
            _ = recv_signal(&mut hup) => {
                match tokio::task::block_in_place(&mut reload) {
                    Ok(new) => {
                        current = with_slots(new);
                        info!("SIGHUP: reloaded the config and the node identity; new sessions use them");
                    }
                    Err(e) => warn!("SIGHUP: keeping the old config and identity: {e}"),
                }
            }
        }
    }
    acceptors.abort_all();
    if !sessions.is_empty() {
        info!("waiting up to {DRAIN:?} for {} connection(s) to finish", sessions.len());
        let drained =
            tokio::time::timeout(DRAIN, async { while sessions.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            warn!("abandoning {} connection(s) still running", sessions.len());
            sessions.abort_all();
        }
    }
    info!("stopped");
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).ok()
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Serves the one connection on stdin/stdout (`-i`): a TCP socket from inetd
/// or systemd `Accept=yes`, a Unix socket, or a pair of pipes.
///
/// # Errors
/// When the session failed (it is logged too).
pub fn run_inetd(authority: Arc<dyn Authority>, settings: ServerSettings) -> Result<(), String> {
    let authority = authority.as_ref();
    let stdin: OwnedFd =
        io::stdin().as_fd().try_clone_to_owned().map_err(|e| format!("stdin: {e}"))?;
    let is_socket = rustix::fs::fstat(&stdin)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket)
        .unwrap_or(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let outcome = rt.block_on(async {
        if is_socket {
            let family = rustix::net::getsockname(&stdin).map(|a| a.address_family());
            if family.is_ok_and(|f| f == rustix::net::AddressFamily::UNIX) {
                let s = std::os::unix::net::UnixStream::from(stdin);
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                let s = tokio::net::UnixStream::from_std(s).map_err(|e| e.to_string())?;
                Ok(server::serve(s, "stdin (unix socket)", &settings, authority).await)
            } else {
                let s = std::net::TcpStream::from(stdin);
                let from = s.peer_addr().map_or_else(|_| "stdin".to_string(), |a| a.to_string());
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                let _ = s.set_nodelay(true);
                let s = tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())?;
                Ok(server::serve(s, &from, &settings, authority).await)
            }
        } else {
            drop(stdin);
            let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            Ok::<_, String>(server::serve(io, "stdin (pipe)", &settings, authority).await)
        }
    })?;
    match outcome {
        server::Outcome::Done { .. } => Ok(()),
        server::Outcome::Failed(why) => Err(why),
    }
}
