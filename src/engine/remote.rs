//! Talking to peers: where a peer is, which groups we share with it, and the
//! `--ping` round trip that proves a connection works end to end.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::net::client::{self, ClientSettings, Target};
use crate::proto::{ErrorCode, Msg};

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

/// Turns a peer report's refused groups into its error: one sentence per
/// group, before any other error of that peer.
pub fn explain_refusals(config: &Config, r: &mut super::update::PeerReport) {
    if r.refused.is_empty() {
        return;
    }
    let mut text: Vec<String> = r.refused.iter().map(|(g, c)| refusal(config, g, *c)).collect();
    text.extend(r.error.take());
    r.error = Some(text.join("; "));
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
/// A sentence naming the reason (the caller adds the peer's name).
pub async fn ping(
    config: &Config,
    settings: &ClientSettings,
    peer: &str,
    port: u16,
) -> Result<PingReport, String> {
    let (target, groups) = shared_groups(config, peer, port).ok_or_else(|| {
        format!("'{peer}' is not a peer of this node ({}) in any group", config.myname)
    })?;
    let mut s = client::connect(&target, settings, &config.myname, &groups)
        .await
        .map_err(|e| e.to_string())?;
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
    s.conn.send(&Msg::Ping { id: 1 }).await.map_err(|e| e.to_string())?;
    let reply = s.conn.recv().await.map_err(|e| e.to_string())?;
    let rtt = sent.elapsed();
    let offset_ns = match reply {
        Some(Msg::Pong { id: 1, time_ns }) => time_ns - (t0 + rtt.as_nanos() as i64 / 2),
        Some(Msg::Error { code, message }) => {
            return Err(format!("refused by the peer: {code} ({message})"));
        }
        other => return Err(format!("unexpected reply to Ping: {other:?}")),
    };
    s.conn.send(&Msg::Bye).await.map_err(|e| e.to_string())?;
    end_of_session(&mut s.conn).await?;
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

/// After `Bye`: reads up to the `ByeAck`, skipping the peer's keep-alives and
/// collecting the results of the actions it ran for this session.
///
/// # Errors
/// Why the session did not end with a `ByeAck`.
pub async fn end_of_session<S>(
    rd: &mut crate::net::conn::Conn<S>,
) -> Result<Vec<super::update::RemoteAction>, String>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let until = tokio::time::Instant::now() + MAX_ACTION_WAIT;
    let mut actions = Vec::new();
    loop {
        match tokio::time::timeout_at(until, rd.recv()).await {
            Ok(Ok(Some(Msg::Working))) => {}
            Ok(Ok(Some(Msg::ActionResult { group, command, paths, ok, status, logfile }))) => {
                let logfile = logfile.map(|b| PathBuf::from(OsStr::from_bytes(&b)));
                let a = super::update::RemoteAction { group, command, paths, ok, status, logfile };
                actions.push(a);
            }
            Ok(Ok(Some(Msg::ByeAck))) => return Ok(actions),
            Ok(Ok(Some(other))) => return Err(format!("unexpected reply to Bye: {other:?}")),
            Ok(Ok(None)) => return Err("connection closed".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("waited too long".into()),
        }
    }
}
