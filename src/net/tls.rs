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
    #[error("TLS setup: {}", describe_setup_error(.0))]
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

/// A rustls setup failure (this node's own files) in words.
fn describe_setup_error(e: &rustls::Error) -> String {
    use super::identity::{NODE_CERT, NODE_KEY};
    use rustls::{Error as E, InconsistentKeys as K};
    match e {
        E::InconsistentKeys(K::KeyMismatch) => format!("{NODE_KEY} does not match {NODE_CERT}"),
        E::InconsistentKeys(_) => format!("cannot tell whether {NODE_KEY} matches {NODE_CERT}"),
        E::NoCertificatesPresented => format!("{NODE_CERT} holds no certificate"),
        E::General(m) => m.clone(),
        other => other.to_string(),
    }
}

/// A certificate problem in words: `subject` names the certificate (`certificate
/// of beta`, or a file), `name` the host it was checked for. rustls' variant
/// names mean nothing to an administrator, so none is shown.
pub fn describe_cert_error(c: &rustls::CertificateError, subject: &str, name: &str) -> String {
    use super::identity::CA_CERT;
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer | C::BadSignature => {
            format!("{subject} is not signed by the cluster CA ({CA_CERT})")
        }
        C::NotValidForName => format!("{subject} is not valid for the name {name}"),
        C::NotValidForNameContext { presented, .. } => {
            let names: Vec<&str> = presented.iter().filter_map(|p| bare_name(p)).collect();
            let names =
                if names.is_empty() { "no host name".to_string() } else { names.join(", ") };
            format!("{subject} is not valid for the name {name} (it is for: {names})")
        }
        C::Expired => format!("{subject} has expired"),
        C::ExpiredContext { not_after, .. } => {
            format!("{subject} expired on {}", date(not_after.as_secs() as i64))
        }
        C::NotValidYet => format!("{subject} is not valid yet (check the clocks)"),
        C::NotValidYetContext { not_before, .. } => format!(
            "{subject} is not valid before {} (check the clocks)",
            date(not_before.as_secs() as i64)
        ),
        C::Revoked => format!("{subject} has been revoked"),
        C::BadEncoding => format!("{subject} is not a well-formed certificate"),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            format!("{subject} is not meant for TLS clients and servers (its extended key usage)")
        }
        C::UnhandledCriticalExtension => {
            format!("{subject} has a critical extension csync does not understand")
        }
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            format!("{subject} is signed with an algorithm csync does not support")
        }
        C::Other(o) => format!("{subject} is invalid: {o}"),
        _ => format!("{subject} is invalid"),
    }
}

/// A presented name without webpki's debug wrapping: `DnsName("n1")` → `n1`,
/// `IpAddress(10.0.0.1)` → `10.0.0.1`; `None` for names that are not hosts.
fn bare_name(p: &str) -> Option<&str> {
    let (kind, rest) = p.split_once('(')?;
    let inner = rest.strip_suffix(')')?.trim_matches('"');
    matches!(kind, "DnsName" | "IpAddress").then_some(inner)
}

/// `YYYY-MM-DD` (UTC) of a Unix time, without a date library.
pub fn date(secs: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_735_689_600), "2025-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
    }

    #[test]
    fn cert_errors_in_words() {
        use rustls::CertificateError as C;
        let m = describe_cert_error(&C::UnknownIssuer, "certificate of beta", "beta");
        assert_eq!(m, "certificate of beta is not signed by the cluster CA (csync2_ssl_ca.pem)");
        let m = describe_cert_error(&C::NotValidForName, "certificate of beta", "beta");
        assert_eq!(m, "certificate of beta is not valid for the name beta");
        let e = C::NotValidForNameContext {
            expected: server_name("beta").unwrap(),
            presented: vec!["DnsName(\"gamma\")".into(), "IpAddress(10.0.0.3)".into()],
        };
        let m = describe_cert_error(&e, "certificate of beta", "beta");
        assert_eq!(
            m,
            "certificate of beta is not valid for the name beta (it is for: gamma, 10.0.0.3)"
        );
        let t = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            1_735_689_600,
        ));
        let m = describe_cert_error(
            &C::ExpiredContext { time: t, not_after: t },
            "csync2_ssl_cert.pem",
            "n1",
        );
        assert_eq!(m, "csync2_ssl_cert.pem expired on 2025-01-01");
    }
}
