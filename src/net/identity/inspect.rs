//! Looking at identity files rather than using them: whether a certificate
//! is csync2's own (`make cert`), whether a key belongs to a certificate, and
//! `--check-config`'s full inspection, certificate expiry included.

use std::fs;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{CA_CERT, Error, Identity, NODE_CERT, NODE_KEY};

/// A DER element: `(tag, whole element, contents)`.
type Tlv<'a> = (u8, &'a [u8], &'a [u8]);

/// One DER element, and the rest.
fn der(b: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |a, &x| a << 8 | usize::from(x)), &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let head = b.len() - rest.len();
    Some(((tag, &b[..head + len], &rest[..len]), &rest[len..]))
}

/// Why a node certificate looks like csync2's own (`make cert`: X.509 v1,
/// self-signed, shared by every node), or `None`. Read straight from the
/// DER (the version field and whether issuer equals subject).
pub(super) fn csync2_style(cert: &CertificateDer<'_>) -> Option<&'static str> {
    let ((_, _, cert), _) = der(cert.as_ref())?;
    let ((_, _, tbs), _) = der(cert)?;
    let (first, mut rest) = der(tbs)?;
    // TBSCertificate: [0] version (absent in v1), serial, signature, issuer, validity, subject.
    let v1 = first.0 != 0xa0;
    if !v1 {
        let (_serial, r) = der(rest)?;
        rest = r;
    }
    let (_sig, rest) = der(rest)?;
    let ((_, issuer, _), rest) = der(rest)?;
    let (_validity, rest) = der(rest)?;
    let ((_, subject, _), _) = der(rest)?;
    match (v1, issuer == subject) {
        (true, _) => Some("an X.509 version 1 certificate"),
        (false, true) => Some("a self-signed certificate"),
        _ => None,
    }
}

/// Whether `key` is the private half of the leaf certificate's public key
/// (`None`: the key type is unknown, so it cannot be told).
pub(super) fn keys_match(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'_>,
) -> Option<bool> {
    let signer = rustls::crypto::ring::sign::any_supported_type(key).ok()?;
    let ck = rustls::sign::CertifiedKey::new(chain.to_vec(), signer);
    match ck.keys_match() {
        Ok(()) => Some(true),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Some(false),
        Err(_) => None,
    }
}

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Connections will fail.
    Error,
    /// Works now, but should be fixed (e.g. a certificate expiring soon).
    Warning,
}

/// One result of [`check`]: a sentence naming the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, and where.
    pub message: String,
}

/// Certificates expiring within this many days are warned about.
pub const EXPIRY_WARNING_DAYS: u64 = 30;

/// `--check-config`: everything a connection will need from this node's
/// identity in `dir`, checked now rather than at the first push: the three
/// files present and readable, the key private (0600), key and certificate a
/// pair, the certificate signed by the CA, in its validity period and valid
/// for `myname`. Every problem found is returned; none means all is well.
pub fn check(dir: &Path, myname: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let err = |m: String| Finding { severity: Severity::Error, message: m };
    let ca_path = dir.join(CA_CERT);
    let cert_path = dir.join(NODE_CERT);
    let key_path = dir.join(NODE_KEY);
    let mut missing = false;
    for p in [&ca_path, &cert_path, &key_path] {
        if let Err(e) = fs::File::open(p) {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "is missing".to_string()
            } else {
                let e = e.to_string();
                // Without Rust's " (os error N)" suffix.
                format!("cannot be read: {}", e.split(" (os error").next().unwrap_or(&e))
            };
            out.push(err(format!("{} {why}", p.display())));
            missing = true;
        }
    }
    if missing {
        // csync2's certificate without a CA beside it: say what it is, and the fix.
        let leaf = fs::read(&cert_path).ok().and_then(|d| {
            CertificateDer::pem_slice_iter(&d).next().and_then(Result::ok).map(|c| c.into_owned())
        });
        if let Some(why) = leaf.as_ref().and_then(csync2_style) {
            let e = Error::Csync2Cert {
                path: cert_path.clone(),
                why: why.into(),
                sysdir: dir.display().to_string(),
            };
            out.push(err(e.to_string()));
        }
        return out;
    }
    let id = match Identity::load(dir) {
        Ok(id) => id,
        Err(e @ Error::KeyMode { .. }) => {
            out.push(err(e.to_string()));
            // Keep checking the rest: one run should show every problem.
            match Identity::read(dir, false) {
                Ok(id) => id,
                Err(e) => {
                    out.push(err(e.to_string()));
                    return out;
                }
            }
        }
        Err(e) => {
            out.push(err(e.to_string()));
            return out;
        }
    };
    let cert_name = cert_path.display().to_string();
    let mut roots = rustls::RootCertStore::empty();
    for c in &id.ca {
        if let Err(e) = roots.add(c.clone()) {
            out.push(err(format!("{} is not a usable CA certificate: {e}", ca_path.display())));
            return out;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => {
            out.push(err(format!("{} is not a usable CA certificate: {e}", ca_path.display())));
            return out;
        }
    };
    let name = match crate::net::tls::server_name(myname) {
        Ok(n) => n,
        Err(e) => {
            out.push(err(format!("this node's name cannot be in a certificate: {e}")));
            return out;
        }
    };
    let verify = |at: rustls::pki_types::UnixTime| {
        use rustls::client::danger::ServerCertVerifier;
        verifier.verify_server_cert(&id.chain[0], &id.chain[1..], &name, &[], at)
    };
    let now = rustls::pki_types::UnixTime::now();
    match verify(now) {
        Ok(_) => {
            let soon = rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(now.as_secs() + EXPIRY_WARNING_DAYS * 86_400),
            );
            if let Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ExpiredContext { not_after, .. },
            )) = verify(soon)
            {
                out.push(Finding {
                    severity: Severity::Warning,
                    message: format!(
                        "{cert_name} expires on {}; make a new one before then",
                        crate::net::tls::date(not_after.as_secs() as i64)
                    ),
                });
            }
        }
        Err(rustls::Error::InvalidCertificate(c)) => {
            out.push(err(crate::net::tls::describe_cert_error(&c, &cert_name, myname)));
        }
        Err(e) => out.push(err(format!("{cert_name}: {e}"))),
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};

    use super::super::{CA_KEY, new_ca, new_cert, write_new};
    use super::*;

    /// A certificate for `name` from the CA in `ca`, valid only in 2020–2024.
    fn expired_cert(name: &str, ca: &Path, out: &Path) {
        let ca_pem = fs::read_to_string(ca.join(CA_CERT)).unwrap();
        let ca_key = KeyPair::from_pem(&fs::read_to_string(ca.join(CA_KEY)).unwrap()).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2025, 1, 1);
        let cert = params.signed_by(&key, &issuer).unwrap();
        fs::write(out.join(NODE_CERT), cert.pem()).unwrap();
        fs::remove_file(out.join(NODE_KEY)).unwrap();
        write_new(&out.join(NODE_KEY), key.serialize_pem().as_bytes(), 0o600).unwrap();
    }

    fn messages(dir: &Path, name: &str) -> Vec<String> {
        check(dir, name).into_iter().map(|f| f.message).collect()
    }

    #[test]
    fn check_names_each_problem_in_words() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        new_ca(&ca).unwrap();
        let n1 = d.path().join("n1");
        new_cert("n1", &ca, &n1).unwrap();
        assert!(check(&n1, "n1").is_empty(), "{:?}", check(&n1, "n1"));
        let p = |f: &str| n1.join(f).display().to_string();

        let m = messages(&n1, "n2");
        assert_eq!(m, [format!("{} is not valid for the name n2 (it is for: n1)", p(NODE_CERT))]);

        fs::set_permissions(n1.join(NODE_KEY), fs::Permissions::from_mode(0o644)).unwrap();
        let m = messages(&n1, "n1");
        assert_eq!(
            m,
            [format!("{} is readable by group/others (mode 0644); chmod 600 it", p(NODE_KEY))]
        );

        // Another node's key next to this node's certificate.
        let n2 = d.path().join("n2");
        new_cert("n2", &ca, &n2).unwrap();
        fs::remove_file(n1.join(NODE_KEY)).unwrap();
        fs::copy(n2.join(NODE_KEY), n1.join(NODE_KEY)).unwrap();
        let m = messages(&n1, "n1");
        assert_eq!(m, [format!("{} does not match {}", p(NODE_KEY), p(NODE_CERT))]);
        let e = Identity::load(&n1).unwrap_err().to_string();
        assert_eq!(e, format!("{} does not match {}", p(NODE_KEY), p(NODE_CERT)));

        expired_cert("n1", &ca, &n1);
        assert_eq!(messages(&n1, "n1"), [format!("{} expired on 2025-01-01", p(NODE_CERT))]);

        // A certificate from another cluster's CA.
        let other = d.path().join("other");
        new_ca(&other).unwrap();
        let n3 = d.path().join("n3");
        new_cert("n1", &other, &n3).unwrap();
        for f in [NODE_CERT, NODE_KEY] {
            fs::remove_file(n1.join(f)).unwrap();
            fs::copy(n3.join(f), n1.join(f)).unwrap();
        }
        assert_eq!(
            messages(&n1, "n1"),
            [format!("{} is not signed by the cluster CA (csync2_ssl_ca.pem)", p(NODE_CERT))]
        );

        fs::remove_file(n1.join(CA_CERT)).unwrap();
        assert_eq!(messages(&n1, "n1"), [format!("{} is missing", p(CA_CERT))]);
    }
}
