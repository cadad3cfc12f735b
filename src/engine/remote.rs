//! Talking to peers: where a peer is, which groups we share with it, and the
//! `--ping` round trip that proves a connection works end to end.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::net::client::{self, ClientSettings, Target};
use crate::proto::{ErrorCode, Msg};

/// Why talking to a peer failed. Its text is what csync printed before
/// these were typed (tests and people read it).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Connecting, TLS or the handshake failed.
    #[error(transparent)]
    Connect(#[from] crate::net::client::ClientError),
    /// Reading or writing the connection failed.
    #[error(transparent)]
    Conn(#[from] crate::net::conn::ConnError),
    /// The name is no peer of this node.
    #[error("'{peer}' is not a peer of this node ({me}) in any group")]
    NotAPeer {
        /// The name asked for.
        peer: String,
        /// This node.
        me: String,
    },
    /// The peer answered with an error (its words, escaped).
    #[error("refused by the peer: {code} ({message})")]
    Refused {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's message, escaped.
        message: String,
    },
    /// Another message than the request calls for.
    #[error("unexpected reply to {to}: {got}")]
    Unexpected {
        /// The request.
        to: &'static str,
        /// What came, as debug text.
        got: String,
    },
    /// The peer closed the connection early.
    #[error("connection closed")]
    Closed,
    /// The peer sent more than a session may hold.
    #[error("{0}")]
    TooMuch(String),
    /// The peer kept us past the deadline.
    #[error(
        "no end of the session within {0}s of the last change (longer than this \
         node's action timeouts allow)"
    )]
    Deadline(u64),
    /// The peer accepted none of our groups, with why per group.
    #[error("{0}")]
    NoGroup(String),
    /// The async runtime could not start.
    #[error("{0}")]
    Runtime(std::io::Error),
}

/// The `rule` of a `Yield` for an entry the yielding node lacks: the peer
/// marks it for us (not forced), so a node that lost its files and its
/// index gets them back from the peers' next runs. Both sides of a session
/// read it, so it lives here and not with either.
pub const MISSING: &str = "missing there";

/// `(group name, group key)` pairs a client proves in its `Hello`.
pub type GroupKeys = Vec<(String, Vec<u8>)>;

/// The groups this node shares with `peer`, as `(group, key)` pairs, and where
/// to reach it (the first `@addr` any shared group gives, else its name).
pub fn shared_groups(config: &Config, peer: &str, port: u16) -> Option<(Target, GroupKeys)> {
    let mut groups = Vec::new();
    let mut addr = None;
    for g in config.my_groups() {
        let Some(host) = g.peers(&config.myname).find(|h| h.name == peer) else { continue };
        let Some(key) = &g.key else { continue };
        if addr.is_none() {
            addr.clone_from(&host.addr);
        }
        groups.push((g.name.clone(), key.0.as_bytes().to_vec()));
    }
    if groups.is_empty() {
        return None;
    }
    let target =
        Target { name: peer.to_string(), addr: addr.unwrap_or_else(|| peer.to_string()), port };
    Some((target, groups))
}

/// Why a peer refused one of our groups, in words, naming the key file when
/// the keys differ (the usual cause: a key regenerated on one node only).
pub fn refusal(config: &Config, group: &str, code: ErrorCode) -> String {
    let why = match code {
        ErrorCode::BadKey => {
            let file = config
                .groups
                .iter()
                .find(|g| g.name == group)
                .map_or_else(|| "?".to_string(), |g| g.key_file.display().to_string());
            format!("the group key differs (key file {file})")
        }
        ErrorCode::NotAHost => {
            format!("its config does not list this node ({}) as a host", config.myname)
        }
        ErrorCode::UnknownGroup => "its config has no such group with it as a host".to_string(),
        ErrorCode::ReceiveOnly => "this node is receive-only there and may not push".to_string(),
        other => format!("refused: {other}"),
    };
    format!("group '{group}': {why}")
}

/// An action a peer ran for the changes it received, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAction {
    /// The group of the action.
    pub group: String,
    /// The command, as the peer's config has it.
    pub command: String,
    /// How many paths it was given.
    pub paths: u32,
    /// Exit status 0.
    pub ok: bool,
    /// How it ended.
    pub status: String,
    /// Where its output went on the peer; `None`: the peer's own log.
    pub logfile: Option<std::path::PathBuf>,
}

impl RemoteAction {
    /// As the index records it.
    pub fn to_run(&self) -> crate::index::ActionRun {
        crate::index::ActionRun {
            group: self.group.clone(),
            command: self.command.clone(),
            logfile: self.logfile.clone(),
            paths: u64::from(self.paths),
            ok: self.ok,
            status: self.status.clone(),
        }
    }
}

/// What a ping found out.
#[derive(Debug)]
pub struct PingReport {
    /// The peer's verified node name.
    pub peer: String,
    /// The address connected to.
    pub remote: std::net::SocketAddr,
    /// Negotiated protocol version.
    pub version: u16,
    /// Groups whose keys both sides proved.
    pub accepted: Vec<String>,
    /// Groups the peer refused, and why.
    pub refused: Vec<(String, ErrorCode)>,
    /// Connect + TLS + handshake.
    pub setup: Duration,
    /// One Ping/Pong round trip.
    pub rtt: Duration,
    /// Peer clock minus ours, estimated at the middle of the round trip (ns).
    pub offset_ns: i64,
}

/// Connects to `peer`, proves keys for every shared group, exchanges one
/// Ping/Pong, and closes in order.
///
/// # Errors
/// Why, in a sentence (the caller adds the peer's name).
pub async fn ping(
    config: &Config,
    settings: &ClientSettings,
    peer: &str,
    port: u16,
) -> Result<PingReport, PeerError> {
    let (target, groups) = shared_groups(config, peer, port)
        .ok_or_else(|| PeerError::NotAPeer { peer: peer.to_string(), me: config.myname.clone() })?;
    let mut s = client::connect(&target, settings, &config.myname, &groups).await?;
    if s.accepted.is_empty() {
        return Ok(PingReport {
            peer: s.peer,
            remote: s.remote,
            version: s.version,
            accepted: s.accepted,
            refused: s.refused,
            setup: s.setup,
            rtt: Duration::ZERO,
            offset_ns: 0,
        });
    }
    let sent = Instant::now();
    let t0 = now_ns();
    s.conn.send(&Msg::Ping { id: 1 }).await?;
    let reply = s.conn.recv().await?;
    let rtt = sent.elapsed();
    let offset_ns = match reply {
        Some(Msg::Pong { id: 1, time_ns }) => time_ns - (t0 + rtt.as_nanos() as i64 / 2),
        Some(Msg::Error { code, message }) => {
            return Err(PeerError::Refused { code, message: crate::paths::escape(&message) });
        }
        other => return Err(PeerError::Unexpected { to: "Ping", got: format!("{other:?}") }),
    };
    s.conn.send(&Msg::Bye).await?;
    end_of_session(&mut s.conn, action_wait(config)).await?;
    s.conn.shutdown().await;
    Ok(PingReport {
        peer: s.peer,
        remote: s.remote,
        version: s.version,
        accepted: s.accepted,
        refused: s.refused,
        setup: s.setup,
        rtt,
        offset_ns,
    })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The longest a peer may keep us after `Bye` while it runs actions (it
/// sends `Working` meanwhile; its own timeouts kill hung commands long before).
pub const MAX_ACTION_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Slack on top of the actions' own timeouts: the receiver's 10 s wait for
/// overlapping sessions, process start-up, the final index commit.
const ACTION_WAIT_MARGIN: u64 = 70;

/// Most action results one session may report (a receiver runs each `exec`
/// of its config at most once per session, in a few parts at worst).
pub const MAX_ACTION_RESULTS: usize = 4096;

/// Most bytes of action results (group, command, status) one session may report.
pub const MAX_ACTION_RESULT_BYTES: usize = 4 << 20;

/// How long to wait after `Bye` for a peer running actions: every command of
/// every group may run once and be waited for once more (runs never overlap,
/// so ours may queue behind another session's), plus a margin; at most
/// [`MAX_ACTION_WAIT`]. The peer's config is meant to be ours, so its
/// timeouts are ours: a peer that keeps us longer (keep-alives or not) is
/// cut off with a clear error.
pub fn action_wait(config: &Config) -> Duration {
    let all: u64 = config
        .my_groups()
        .flat_map(|g| &g.actions)
        .map(|a| u64::from(a.timeout_s()) * a.exec.len().max(1) as u64)
        .sum();
    Duration::from_secs(all.saturating_mul(2).saturating_add(ACTION_WAIT_MARGIN))
        .min(MAX_ACTION_WAIT)
}

/// After `Bye`: reads up to the `ByeAck`, skipping the peer's keep-alives and
/// collecting the results of the actions it ran for this session, for at most
/// `wait` in all (see [`action_wait`]) and at most [`MAX_ACTION_RESULTS`]
/// results of [`MAX_ACTION_RESULT_BYTES`]: a hostile or broken peer can
/// neither hold us nor make us buffer without end. The peer's strings are
/// escaped before they are kept (they are printed).
///
/// # Errors
/// Why the session did not end with a `ByeAck`.
pub async fn end_of_session<S>(
    rd: &mut crate::net::conn::Conn<S>,
    wait: Duration,
) -> Result<Vec<RemoteAction>, PeerError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let until = tokio::time::Instant::now() + wait;
    let mut actions = Vec::new();
    let mut bytes = 0usize;
    loop {
        match tokio::time::timeout_at(until, rd.recv()).await {
            Ok(Ok(Some(Msg::Working))) => {}
            Ok(Ok(Some(Msg::ActionResult { group, command, paths, ok, status, logfile }))) => {
                bytes += group.len() + command.len() + status.len();
                bytes += logfile.as_ref().map_or(0, Vec::len);
                if actions.len() >= MAX_ACTION_RESULTS || bytes > MAX_ACTION_RESULT_BYTES {
                    return Err(PeerError::TooMuch(format!(
                        "the peer reported more than {MAX_ACTION_RESULTS} action results or \
                         {MAX_ACTION_RESULT_BYTES} bytes of them; stopped listening"
                    )));
                }
                let e = crate::paths::escape;
                let logfile = logfile.map(|b| PathBuf::from(OsStr::from_bytes(&b)));
                actions.push(RemoteAction {
                    group: e(&group),
                    command: e(&command),
                    paths,
                    ok,
                    status: e(&status),
                    logfile,
                });
            }
            Ok(Ok(Some(Msg::ByeAck))) => return Ok(actions),
            Ok(Ok(Some(other))) => {
                return Err(PeerError::Unexpected { to: "Bye", got: format!("{other:?}") });
            }
            Ok(Ok(None)) => return Err(PeerError::Closed),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(PeerError::Deadline(wait.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::conn::Conn;

    #[tokio::test]
    async fn keep_alives_cannot_hold_the_client_past_the_deadline() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut peer = Conn::new(b, Duration::from_secs(30));
        let mut me = Conn::new(a, Duration::from_secs(30));
        let feeder = tokio::spawn(async move {
            // A hostile peer: keep-alives forever, never a ByeAck.
            loop {
                if peer.send(&Msg::Working).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let t = Instant::now();
        let err = end_of_session(&mut me, Duration::from_secs(1)).await.unwrap_err().to_string();
        assert!(err.contains("within 1s"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
        feeder.abort();
    }

    #[tokio::test]
    async fn action_results_are_capped_and_escaped() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut peer = Conn::new(b, Duration::from_secs(30));
        let mut me = Conn::new(a, Duration::from_secs(30));
        let result = |status: &str| Msg::ActionResult {
            group: "g".into(),
            command: "reload\n\x1b[2J".into(),
            paths: 1,
            ok: true,
            status: status.into(),
            logfile: None,
        };
        let feeder = tokio::spawn(async move {
            peer.send(&result("ok")).await.unwrap();
            peer.send(&Msg::ByeAck).await.unwrap();
            for _ in 0..=MAX_ACTION_RESULTS {
                if peer.send(&result("again")).await.is_err() {
                    return;
                }
            }
            let _ = peer.send(&Msg::ByeAck).await;
        });
        let got = end_of_session(&mut me, Duration::from_secs(60)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].command, "reload\\n\\x1b[2J");
        let err = end_of_session(&mut me, Duration::from_secs(60)).await.unwrap_err().to_string();
        assert!(err.contains("more than 4096 action results"), "{err}");
        drop(me);
        let _ = feeder.await;
    }

    #[test]
    fn the_wait_follows_the_configured_action_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let key = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr";
        std::fs::write(dir.path().join("k"), key).unwrap();
        let opts = crate::config::LoadOptions {
            myname: "a".into(),
            sysdir: dir.path().to_path_buf(),
            active_groups: None,
        };
        let load = |text: &str| crate::config::load_str("t.cfg", text, &opts).unwrap();
        let none = load("group g { host a b; key k; include /srv; }");
        assert_eq!(action_wait(&none), Duration::from_secs(ACTION_WAIT_MARGIN));
        let two = load(
            "group g { host a b; key k; include /srv; \
             action { exec \"x\"; exec \"y\"; timeout 30; } action { exec \"z\"; } }",
        );
        // (30 + 30 + 60) twice, plus the margin.
        assert_eq!(action_wait(&two), Duration::from_secs(240 + ACTION_WAIT_MARGIN));
        let huge = load(
            "group g { host a b; key k; include /srv; action { exec \"x\"; timeout 99999; } }",
        );
        assert_eq!(action_wait(&huge), MAX_ACTION_WAIT);
    }
}
