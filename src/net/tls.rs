//! rustls configuration: mutual TLS 1.3 under the cluster CA, ring only, and
//! the application-level check that a peer's certificate names the host it
//! claims to be.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::identity::Identity;

/// Errors building TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rustls refused the certificates or key.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificate is unusable as a trust anchor.
    #[error("CA certificate: {0}")]
    Ca(String),
}

/// Always ring, passed explicitly: with two providers compiled in, rustls'
/// automatic choice panics (see crates.md §3).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(id: &Identity) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for c in &id.ca {
        roots.add(c.clone()).map_err(|e| Error::Ca(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// Server side: TLS 1.3 only, a client certificate under our CA required.
///
/// # Errors
/// When the identity is unusable.
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(id)?, provider())
        .build()
        .map_err(|e| Error::Ca(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    // No resumption: unread tickets in a socket buffer turn a close into a RST
    // that can destroy data still in flight (crates.md §6.1).
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Client side: TLS 1.3 only, our certificate presented, the server's checked
/// against our CA and the host name we dial.
///
/// # Errors
/// When the identity is unusable.
pub fn client_config(id: &Identity) -> Result<Arc<ClientConfig>, Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(id)?, provider())
        .build()
        .map_err(|e| Error::Ca(e.to_string()))?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The TLS server name for a configured host name (a DNS name or an IP literal).
///
/// # Errors
/// When the name is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|_| format!("'{host}' is not a valid host name"))
}

/// True when `cert` (already verified to chain to our CA) is valid for `host`:
/// the connecting node's claimed name must be one its certificate carries.
pub fn cert_names_host(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(name) = server_name(host) else { return false };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else { return false };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}
