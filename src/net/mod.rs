//! The network layer: node identities, mutual TLS, framed connections, and the
//! two sides of a session. It speaks [`crate::proto`] and learns about groups
//! only through [`server::Authority`]; it never reads the config or the index.

pub mod auth;
pub mod client;
pub mod conn;
pub mod identity;
pub mod server;
pub mod tls;

/// csync2's port.
pub const DEFAULT_PORT: u16 = 30865;

/// Why a node's client or server settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The identity (certificate, key, CA) could not be read.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// rustls refused it.
    #[error(transparent)]
    Tls(#[from] tls::Error),
}
