//! The connecting side: TCP (with a bounded connect), TLS under the cluster
//! CA with the peer's configured name checked, and the `Hello`/`Welcome`
//! handshake that proves group keys both ways.
//!
//! Every failure says, in words, what went wrong with which peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::auth::{self, Role};
use super::conn::{Conn, ConnError};
use super::tls::server_name;
use crate::proto::{self, ErrorCode, GroupProof, Msg};

/// A socket under TLS with a read buffer: rustls asks for at most 4 KiB per
/// read, which without it is one `recvfrom` per 4 KiB of a stream (writes
/// pass straight through).
pub type Buffered<S> = tokio::io::BufReader<S>;

/// Read buffer below TLS, per connection: one syscall reads several records.
pub const SOCKET_READ_BUFFER: usize = 64 * 1024;

/// Where a peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The peer's host name as the config gives it: what its certificate must name.
    pub name: String,
    /// What to connect to (`name@addr`'s addr, else the name).
    pub addr: String,
    /// TCP port.
    pub port: u16,
}

/// Client-side settings.
#[derive(Clone)]
pub struct ClientSettings {
    /// TLS configuration (our certificate, the cluster CA).
    pub tls: Arc<rustls::ClientConfig>,
    /// Bound on resolving, connecting, the TLS handshake and the `Welcome`,
    /// all together: a dead peer costs at most this.
    pub connect_timeout: Duration,
    /// Bound on every later read and write.
    pub idle_timeout: Duration,
}

pub use super::SettingsError;

impl ClientSettings {
    /// The settings a node connects with: its identity from `sysdir`, the
    /// cluster CA as the only trust anchor, and the two timeouts.
    ///
    /// # Errors
    /// When the identity cannot be read or rustls refuses it.
    pub fn load(
        sysdir: &std::path::Path,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<ClientSettings, SettingsError> {
        let id = super::identity::Identity::load(sysdir)?;
        Ok(ClientSettings { tls: super::tls::client_config(&id)?, connect_timeout, idle_timeout })
    }

    /// Settings for a dry run on a node without an identity: planning needs
    /// no certificate, and a dry run connects nowhere.
    pub fn offline() -> ClientSettings {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        ClientSettings {
            tls: Arc::new(tls),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a peer could not be used. `Display` is a sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address did not resolve.
    #[error("cannot resolve '{addr}': {reason}")]
    Resolve {
        /// What was looked up.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// TCP connect failed (refused, unreachable).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Address tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Nothing within the connect timeout.
    #[error("no answer within {timeout:?} while {stage} (peer down or unreachable)")]
    Timeout {
        /// The bound that expired.
        timeout: Duration,
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The TLS handshake failed, or the peer rejected our certificate.
    #[error("{0}")]
    Tls(String),
    /// The peer refused the session, with its reason.
    #[error("refused by the peer: {code}{}", hint(message))]
    Refused {
        /// The peer's typed reason.
        code: ErrorCode,
        /// The peer's hint.
        message: String,
    },
    /// The peer speaks the protocol wrongly.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer could not prove it holds the key of a group.
    #[error("the peer could not prove it holds the key of group '{0}'")]
    ServerProof(String),
}

fn hint(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(" ({message})") }
}

/// An authenticated session with a peer.
pub struct Session {
    /// The framed TLS connection.
    pub conn: Conn<TlsStream<Buffered<TcpStream>>>,
    /// Negotiated protocol version.
    pub version: u16,
    /// The peer's node name (its certificate was verified for it).
    pub peer: String,
    /// The address connected to.
    pub remote: SocketAddr,
    /// Groups both sides proved keys for.
    pub accepted: Vec<String>,
    /// Groups the peer refused, and why.
    pub refused: Vec<(String, ErrorCode)>,
    /// How long connect + TLS + handshake took.
    pub setup: Duration,
}

/// Connects to `target`, speaking as `myname` for `groups` (name, key).
///
/// # Errors
/// Any failure before the session is authenticated, as a [`ClientError`].
pub async fn connect(
    target: &Target,
    settings: &ClientSettings,
    myname: &str,
    groups: &[(String, Vec<u8>)],
) -> Result<Session, ClientError> {
    let start = Instant::now();
    let deadline = start + settings.connect_timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let timeout = |stage| ClientError::Timeout { timeout: settings.connect_timeout, stage };

    let sni = server_name(&target.name).map_err(ClientError::Tls)?;
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(left(), tokio::net::lookup_host((target.addr.as_str(), target.port)))
            .await
            .map_err(|_| timeout("resolving the address"))?
            .map_err(|e| ClientError::Resolve { addr: target.addr.clone(), reason: e.to_string() })?
            .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match tokio::time::timeout(left(), TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                stream = Some((s, *a));
                break;
            }
            Ok(Err(e)) => {
                last = Some(ClientError::Connect { addr: a.to_string(), reason: e.to_string() })
            }
            Err(_) => return Err(timeout("connecting")),
        }
    }
    let Some((tcp, remote)) = stream else {
        return Err(last.unwrap_or(ClientError::Resolve {
            addr: target.addr.clone(),
            reason: "no addresses".into(),
        }));
    };
    // Without it, Nagle holds back the write after the handshake for a delayed
    // ACK: 40 ms per exchange (crates.md §5.2).
    let _ = tcp.set_nodelay(true);

    let tcp = Buffered::with_capacity(SOCKET_READ_BUFFER, tcp);
    let tls =
        tokio::time::timeout(left(), TlsConnector::from(settings.tls.clone()).connect(sni, tcp))
            .await
            .map_err(|_| timeout("in the TLS handshake"))?
            .map_err(|e| ClientError::Tls(describe_client_tls_error(&e, &target.name)))?;
    let mut exporter = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(&mut exporter, auth::EXPORTER_LABEL, None)
        .map_err(|e| ClientError::Tls(e.to_string()))?;

    let mut conn = Conn::new(tls, left().max(Duration::from_millis(1)));
    let proofs = groups
        .iter()
        .map(|(g, key)| GroupProof {
            group: g.clone(),
            mac: auth::proof(key, &exporter, Role::Client, myname, g),
        })
        .collect();
    let hello = Msg::Hello {
        min_version: proto::VERSION_MIN,
        max_version: proto::VERSION_MAX,
        node: myname.to_string(),
        capabilities: 0,
        groups: proofs,
    };
    conn.send(&hello).await.map_err(|e| conn_error(e, &target.name, "sending Hello", settings))?;
    // In TLS 1.3 the server judges our certificate after our side of the
    // handshake is done: a rejection shows up here, on the first read.
    let welcome = conn
        .recv()
        .await
        .map_err(|e| conn_error(e, &target.name, "waiting for Welcome", settings))?
        .ok_or_else(|| {
            ClientError::Protocol("the peer closed the connection before Welcome".into())
        })?;
    let (version, node, server_proofs, refused) = match welcome {
        Msg::Welcome { version, node, groups, refused, .. } => (version, node, groups, refused),
        Msg::Error { code, message } => {
            // The peer's words reach our terminal and log: escaped.
            let message = crate::paths::escape(&message);
            return Err(ClientError::Refused { code, message });
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "expected Welcome, got message type 0x{:02x}",
                other.type_byte()
            )));
        }
    };
    if !(proto::VERSION_MIN..=proto::VERSION_MAX).contains(&version) {
        return Err(ClientError::Protocol(format!("the peer chose unsupported version {version}")));
    }
    let mut accepted = Vec::new();
    for p in &server_proofs {
        let Some((_, key)) = groups.iter().find(|(g, _)| *g == p.group) else {
            return Err(ClientError::Protocol(format!(
                "the peer accepted group '{}' we did not ask for",
                crate::paths::escape(&p.group)
            )));
        };
        if !auth::verify(key, &exporter, Role::Server, &node, &p.group, &p.mac) {
            return Err(ClientError::ServerProof(p.group.clone()));
        }
        accepted.push(p.group.clone());
    }
    conn.set_idle(settings.idle_timeout);
    // Shown to the user (`--ping`): the peer's own words, escaped.
    let node = crate::paths::escape(&node);
    let refused = refused.into_iter().map(|(g, c)| (crate::paths::escape(&g), c)).collect();
    Ok(Session { conn, version, peer: node, remote, accepted, refused, setup: start.elapsed() })
}

fn conn_error(e: ConnError, peer: &str, stage: &'static str, s: &ClientSettings) -> ClientError {
    match e {
        ConnError::Timeout(_) => ClientError::Timeout { timeout: s.connect_timeout, stage },
        ConnError::Io(io) => ClientError::Tls(describe_client_tls_error(&io, peer)),
        ConnError::Decode(d) => ClientError::Protocol(d.to_string()),
        other => ClientError::Protocol(other.to_string()),
    }
}

/// A client-side TLS failure in words an administrator can act on.
pub fn describe_client_tls_error(e: &std::io::Error, peer: &str) -> String {
    use super::identity::NODE_CERT;
    use rustls::{AlertDescription as A, Error as E};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "the peer closed the connection during the TLS handshake (is it a csync daemon?)"
                    .into()
            }
            _ => e.to_string(),
        };
    };
    let ours = format!("{peer} rejected our certificate ({NODE_CERT})");
    match tls {
        E::InvalidCertificate(c) => {
            super::tls::describe_cert_error(c, &format!("certificate of {peer}"), peer)
        }
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError) => {
            format!("{ours}: it is not signed by the CA {peer} trusts")
        }
        E::AlertReceived(A::CertificateRequired) => {
            format!("{peer} requires a client certificate and got none")
        }
        E::AlertReceived(A::CertificateExpired) => format!("{ours}: it has expired"),
        E::AlertReceived(A::CertificateRevoked) => format!("{ours}: it has been revoked"),
        E::AlertReceived(A::CertificateUnknown | A::UnsupportedCertificate) => {
            format!("{ours}: it is not valid there")
        }
        E::AlertReceived(A::ProtocolVersion) => format!("{peer} does not speak TLS 1.3"),
        E::AlertReceived(A::HandshakeFailure) => {
            format!("the TLS handshake with {peer} failed: no common TLS 1.3 parameters")
        }
        E::AlertReceived(a) => format!("{peer} ended the TLS handshake (TLS alert {a:?})"),
        E::InvalidMessage(_) => "the peer does not speak TLS (is it a csync daemon?)".into(),
        E::NoCertificatesPresented => format!("{peer} presented no certificate"),
        other => other.to_string(),
    }
}
