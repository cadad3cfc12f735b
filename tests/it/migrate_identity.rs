//! Issue 14, identities: an existing PKI's RSA certificates work; csync2's
//! own certificates (self-signed, shared, X.509 v1) are refused with why and
//! the two commands that replace them; `--days` sets the validity.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command as StdCommand;

use crate::net_util::{Net, bin};
use crate::util::stderr;

fn openssl(args: &[&str], dir: &Path) {
    let out = StdCommand::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn have_openssl() -> bool {
    let ok = StdCommand::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: the openssl command is not installed");
    }
    ok
}

const CFG: &str = "group g { host n1@@ADDR_n1@ n2@@ADDR_n2@; key csync2.key; include %d%; }\n\
                   prefix d { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }\n";

/// A CA and node certificates made with the openssl CLI, RSA 2048 (what an
/// existing PKI hands out), replace csync's own: a sync works.
#[test]
fn an_existing_rsa_pki_works() {
    if !have_openssl() {
        return;
    }
    let net = Net::new("migrate_identity_rsa", &["n1", "n2"], CFG);
    let pki = net.path("pki");
    fs::create_dir_all(&pki).unwrap();
    openssl(&["genrsa", "-out", "ca.key", "2048"], &pki);
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "365",
            "-subj",
            "/O=Example/CN=Example Corp CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        ],
        &pki,
    );
    for n in ["n1", "n2"] {
        fs::write(
            pki.join(format!("{n}.ext")),
            format!(
                "subjectAltName=DNS:{n}\nextendedKeyUsage=serverAuth,clientAuth\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n"
            ),
        )
        .unwrap();
        openssl(&["genrsa", "-out", &format!("{n}.key"), "2048"], &pki);
    }
    for n in ["n1", "n2"] {
        openssl(
            &[
                "req",
                "-new",
                "-key",
                &format!("{n}.key"),
                "-subj",
                &format!("/CN={n}"),
                "-out",
                &format!("{n}.csr"),
            ],
            &pki,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{n}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "365",
                "-sha256",
                "-extfile",
                &format!("{n}.ext"),
                "-out",
                &format!("{n}.pem"),
            ],
            &pki,
        );
        let sys = net.sysdir(n);
        fs::copy(pki.join("ca.pem"), sys.join("csync2_ssl_ca.pem")).unwrap();
        fs::copy(pki.join(format!("{n}.pem")), sys.join("csync2_ssl_cert.pem")).unwrap();
        fs::copy(pki.join(format!("{n}.key")), sys.join("csync2_ssl_key.pem")).unwrap();
        fs::set_permissions(sys.join("csync2_ssl_key.pem"), fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let text = fs::read_to_string(net.sysdir("n1").join("csync2_ssl_cert.pem")).unwrap();
    assert!(text.contains("BEGIN CERTIFICATE"));
    fs::write(net.root("n1").join("f"), b"over RSA\n").unwrap();
    let _d = net.daemon("n2", &[]);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert!(out.status.success(), "--ping: {}", stderr(&out));
    let out = net.csync("n1").arg("-x").output().unwrap();
    assert!(out.status.success(), "-x: {}", stderr(&out));
    assert_eq!(fs::read(net.root("n2").join("f")).unwrap(), b"over RSA\n");
}

/// csync2's `make cert` (an X.509 v1 certificate signed by its own key, the
/// same on every node) and a self-signed v3 one: refused, saying why and
/// with the two commands that replace them.
#[test]
fn csync2_certificates_are_refused_with_the_replacement_commands() {
    if !have_openssl() {
        return;
    }
    let net = Net::new("migrate_identity_v1", &["n1", "n2"], CFG);
    let sys = net.sysdir("n1");
    for f in ["csync2_ssl_ca.pem", "csync2_ssl_cert.pem", "csync2_ssl_key.pem"] {
        fs::remove_file(sys.join(f)).unwrap();
    }
    // What csync2's Makefile does.
    openssl(&["genrsa", "-out", "csync2_ssl_key.pem", "2048"], &sys);
    openssl(
        &["req", "-new", "-key", "csync2_ssl_key.pem", "-subj", "/CN=csync2", "-out", "c.csr"],
        &sys,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-days",
            "600",
            "-in",
            "c.csr",
            "-signkey",
            "csync2_ssl_key.pem",
            "-out",
            "csync2_ssl_cert.pem",
        ],
        &sys,
    );
    fs::set_permissions(sys.join("csync2_ssl_key.pem"), fs::Permissions::from_mode(0o600)).unwrap();
    let check = |why: &str| {
        for args in [&["-x"][..], &["--ping", "n2"], &["-ii"], &["--check-config"]] {
            let out = net.csync("n1").args(args).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let e = stderr(&out);
            assert!(e.contains(why), "{args:?}: {e}");
            assert!(e.contains("csync2's kind of certificate"), "{e}");
            assert!(e.contains("csync --new-ca DIR"), "{e}");
            assert!(
                e.contains(&format!("csync --new-cert NAME --ca DIR --out {}", sys.display())),
                "{e}"
            );
        }
    };
    check("X.509 version 1");
    // Self-signed v3, the same on every node: refused too.
    fs::remove_file(sys.join("csync2_ssl_cert.pem")).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "csync2_ssl_key.pem",
            "-days",
            "600",
            "-subj",
            "/CN=csync2",
            "-out",
            "csync2_ssl_cert.pem",
        ],
        &sys,
    );
    check("self-signed");
}

/// `--days N`: the validity of what --new-ca and --new-cert create.
#[test]
fn days_sets_the_validity() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = StdCommand::new(bin()).args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["--new-ca", "ca", "--days", "30"]);
    run(&["--new-cert", "n1", "--ca", "ca", "--out", "n1", "--days", "10"]);
    // Longer than its CA: ends with the CA, and says so.
    let out = StdCommand::new(bin())
        .args(["--new-cert", "n2", "--ca", "ca", "--out", "n2"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the certificate ends then too"));
    run(&["--new-ca", "ca10"]);
    run(&["--new-cert", "n3", "--ca", "ca10", "--out", "n3"]);
    let expires_within = |file: &str, days: u64| {
        let out = StdCommand::new("openssl")
            .args(["x509", "-noout", "-checkend", &(days * 86_400).to_string(), "-in", file])
            .current_dir(dir.path())
            .output()
            .unwrap();
        !out.status.success()
    };
    assert!(
        !expires_within("ca/csync2_ssl_ca.pem", 29) && expires_within("ca/csync2_ssl_ca.pem", 31)
    );
    assert!(
        !expires_within("n1/csync2_ssl_cert.pem", 9)
            && expires_within("n1/csync2_ssl_cert.pem", 11)
    );
    assert!(
        !expires_within("n2/csync2_ssl_cert.pem", 29)
            && expires_within("n2/csync2_ssl_cert.pem", 31)
    );
    // The default: ten years for a node.
    assert!(!expires_within("n3/csync2_ssl_cert.pem", 3640));
    assert!(expires_within("n3/csync2_ssl_cert.pem", 3660));
    for bad in ["0", "-1", "x"] {
        let out = StdCommand::new(bin())
            .args(["--new-ca", "ca2", "--days", bad])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "--days {bad}");
        assert!(!dir.path().join("ca2").exists(), "--days {bad} created something");
    }
}
