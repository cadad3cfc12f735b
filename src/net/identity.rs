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

mod inspect;

pub use inspect::{EXPIRY_WARNING_DAYS, Finding, Severity, check};
use inspect::{csync2_style, keys_match};

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
    // A certificate outliving its CA stops working with the CA anyway:
    // end it with the CA, and say so, rather than promise what it cannot.
    if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        && let Ok(ca) = pem.parse_x509()
        && ca.validity().not_after.to_datetime() < params.not_after
    {
        let end = ca.validity().not_after.to_datetime();
        tracing::warn!(
            "the CA in {} expires on {}, before the {days} days asked: the certificate ends then too (renew the CA, see README)",
            ca_dir.display(),
            end.date()
        );
        params.not_after = end;
    }
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
