//! Node identities: the cluster CA, each node's certificate and key, and the
//! commands that create them (`--new-ca`, `--new-cert`).
//!
//! Files live in the system dir under csync2's names. An existing PKI works as
//! well: any CA certificate and node certificate/key in PEM at those paths.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The cluster CA certificate, in the system dir.
pub const CA_CERT: &str = "csync2_ssl_ca.pem";
/// The CA's private key (written by `--new-ca`; keep it off the nodes if you can).
pub const CA_KEY: &str = "csync2_ssl_ca.key";
/// This node's certificate.
pub const NODE_CERT: &str = "csync2_ssl_cert.pem";
/// This node's private key.
pub const NODE_KEY: &str = "csync2_ssl_key.pem";

/// Problems with identity files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file exists where a new one would be written.
    #[error("{0}: already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A private key is readable by others.
    #[error("{path} is readable by group/others (mode {mode:04o}); chmod 600 it")]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file holds no usable PEM object.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The private key is not the one the certificate was made for.
    #[error("{key} does not match {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// csync2's own kind of certificate: self-signed, one shared by every
    /// node, X.509 v1. It names no node, so peers cannot be told apart.
    #[error(
        "{path}: {why}: this is csync2's kind of certificate (self-signed, the same on every \
         node), which only proves membership; csync needs one certificate per node, signed by \
         a cluster CA, so each peer is known by name. Replace it: csync --new-ca DIR (once, \
         for the cluster); csync --new-cert NAME --ca DIR --out {sysdir} (on each node, NAME \
         its host name)"
    )]
    Csync2Cert {
        /// The certificate file.
        path: PathBuf,
        /// What makes it csync2's.
        why: String,
        /// Where the new identity goes.
        sysdir: String,
    },
    /// Certificate generation failed.
    #[error("cannot create certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Writes `data` to a new file with `mode`, refusing to replace an existing one.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists(path.to_path_buf())
            } else {
                Error::Io { path: path.to_path_buf(), source: e }
            }
        })?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io_err(path))
}

/// The year `years` from now (validity bounds without a date library).
fn year_from_now(years: i32) -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32 + years
}

/// Default validity of a new CA (`--new-ca` without `--days`).
pub const CA_DAYS: u32 = 7300;
/// Default validity of a new node certificate (`--new-cert` without `--days`).
pub const CERT_DAYS: u32 = 3650;

/// The UTC date `days` from now (civil-from-days, no time crate needed).
fn date_in(days: u32) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let z = now / 86_400 + i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// `csync --new-ca DIR`: a new cluster CA (ECDSA P-256), written to
/// `DIR/csync2_ssl_ca.pem` and `DIR/csync2_ssl_ca.key` (0600). Refuses to
/// overwrite either file.
///
/// # Errors
/// When a file exists or cannot be written.
pub fn new_ca(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    new_ca_for(dir, CA_DAYS)
}

/// [`new_ca`], valid for `days` from now (`--days`).
///
/// # Errors
/// As [`new_ca`].
pub fn new_ca_for(dir: &Path, days: u32) -> Result<(PathBuf, PathBuf), Error> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(Error::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A name unique to this CA: two clusters' CAs never share a subject, so a
    // certificate from the wrong one is reported as "unknown issuer".
    let id = blake3::hash(key.public_key_raw()).to_hex();
    dn.push(DnType::CommonName, format!("csync cluster CA {}", &id[..12]));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(year_from_now(-1), 1, 1);
    let (y, m, d) = date_in(days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(&key)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// `csync --new-cert NAME --ca DIR --out DIR2`: a key pair and certificate for
/// host NAME (a DNS name or an IP literal), signed by the CA in DIR, written to
/// `DIR2/csync2_ssl_cert.pem` and `DIR2/csync2_ssl_key.pem` (0600), with the
/// CA certificate copied to `DIR2/csync2_ssl_ca.pem`. Existing files are never
/// replaced (an identical CA copy is fine).
///
/// # Errors
/// When the CA cannot be read, or a target file exists.
pub fn new_cert(name: &str, ca_dir: &Path, out: &Path) -> Result<Vec<PathBuf>, Error> {
    new_cert_for(name, ca_dir, out, CERT_DAYS)
}

/// [`new_cert`], valid for `days` from now (`--days`).
///
/// # Errors
/// As [`new_cert`].
pub fn new_cert_for(
    name: &str,
    ca_dir: &Path,
    out: &Path,
    days: u32,
) -> Result<Vec<PathBuf>, Error> {
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| Error::Pem { path: ca_key_path.clone(), what: e.to_string() })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| Error::Pem { path: ca_cert_path.clone(), what: e.to_string() })?;

    fs::create_dir_all(out).map_err(io_err(out))?;
    let cert_path = out.join(NODE_CERT);
    let key_path = out.join(NODE_KEY);
    let ca_copy = out.join(CA_CERT);
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(Error::Exists(p.clone()));
        }
    }
    let copy_ca = match fs::read_to_string(&ca_copy) {
        Ok(existing) if existing == ca_pem => false,
        Ok(_) => return Err(Error::Exists(ca_copy)),
        Err(_) => true,
    };

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(year_from_now(-1), 1, 1);
    let (y, m, d) = date_in(days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let mut written = vec![cert_path, key_path];
    if copy_ca {
        write_new(&ca_copy, ca_pem.as_bytes(), 0o644)?;
        written.push(ca_copy);
    }
    Ok(written)
}

/// This node's TLS identity, loaded and checked.
pub struct Identity {
    /// CA certificates peers must chain to.
    pub ca: Vec<CertificateDer<'static>>,
    /// This node's certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ca", &self.ca.len())
            .field("chain", &self.chain.len())
            .finish()
    }
}

impl Identity {
    /// Loads the three identity files from `dir` (the system dir). The private
    /// key must not be accessible by group or others.
    ///
    /// # Errors
    /// When a file is missing, unreadable, holds no PEM object, or the key's
    /// mode is too open.
    pub fn load(dir: &Path) -> Result<Identity, Error> {
        Identity::read(dir, true)
    }

    /// [`Identity::load`]; without `enforce_mode` the key's mode may be open, for [`check`],
    /// which has reported it already and goes on looking for other problems.
    fn read(dir: &Path, enforce_mode: bool) -> Result<Identity, Error> {
        let ca_path = dir.join(CA_CERT);
        let cert_path = dir.join(NODE_CERT);
        let key_path = dir.join(NODE_KEY);
        let md = fs::metadata(&key_path).map_err(io_err(&key_path))?;
        let mode = md.permissions().mode() & 0o777;
        if enforce_mode && mode & 0o077 != 0 {
            return Err(Error::KeyMode { path: key_path, mode });
        }
        let certs = |p: &Path| -> Result<Vec<CertificateDer<'static>>, Error> {
            let data = fs::read(p).map_err(io_err(p))?;
            let v: Vec<_> = CertificateDer::pem_slice_iter(&data)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Pem { path: p.to_path_buf(), what: e.to_string() })?;
            if v.is_empty() {
                return Err(Error::Pem {
                    path: p.to_path_buf(),
                    what: "no certificate in file".into(),
                });
            }
            Ok(v)
        };
        let chain = certs(&cert_path)?;
        if let Some(why) = csync2_style(&chain[0]) {
            return Err(Error::Csync2Cert {
                path: cert_path,
                why: why.into(),
                sysdir: dir.display().to_string(),
            });
        }
        let ca = certs(&ca_path)?;
        let data = fs::read(&key_path).map_err(io_err(&key_path))?;
        let key = PrivateKeyDer::from_pem_slice(&data).map_err(|e| Error::Pem {
            path: key_path.clone(),
            what: format!("no private key: {e}"),
        })?;
        // rustls would find this too, but only as "inconsistent keys" while
        // building the TLS setup; say which files do not belong together.
        if keys_match(&chain, &key) == Some(false) {
            return Err(Error::KeyMismatch { key: key_path, cert: cert_path });
        }
        Ok(Identity { ca, chain, key })
    }
}

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
fn csync2_style(cert: &CertificateDer<'_>) -> Option<&'static str> {
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
fn keys_match(chain: &[CertificateDer<'static>], key: &PrivateKeyDer<'_>) -> Option<bool> {
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
    let name = match super::tls::server_name(myname) {
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
                        super::tls::date(not_after.as_secs() as i64)
                    ),
                });
            }
        }
        Err(rustls::Error::InvalidCertificate(c)) => {
            out.push(err(super::tls::describe_cert_error(&c, &cert_name, myname)));
        }
        Err(e) => out.push(err(format!("{cert_name}: {e}"))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_then_certs_for_names_and_ips() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        let t = std::time::Instant::now();
        new_ca(&ca).unwrap();
        assert!(matches!(new_ca(&ca), Err(Error::Exists(_))));
        let key_mode = fs::metadata(ca.join(CA_KEY)).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        for (name, dir) in [("node1.example", "n1"), ("127.0.0.5", "n2")] {
            let out = d.path().join(dir);
            let written = new_cert(name, &ca, &out).unwrap();
            assert_eq!(written.len(), 3);
            let id = Identity::load(&out).unwrap();
            assert_eq!(id.chain.len(), 1);
            assert!(matches!(new_cert(name, &ca, &out), Err(Error::Exists(_))));
        }
        assert!(t.elapsed().as_millis() < 2000, "key generation should take milliseconds");
    }

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

    #[test]
    fn open_key_mode_is_refused() {
        let d = tempfile::tempdir().unwrap();
        new_ca(&d.path().join("ca")).unwrap();
        let out = d.path().join("n1");
        new_cert("n1", &d.path().join("ca"), &out).unwrap();
        fs::set_permissions(out.join(NODE_KEY), fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&out).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
