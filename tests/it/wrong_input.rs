//! Wrong input gets a clear error and changes nothing: unknown `-P`/`-G`
//! names, a database csync cannot use, every `--check-config` check, TLS
//! failures in words, a wrong group key reported once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command as StdCommand;

use crate::net_util::{Net, bin};
use crate::util::{Env, stderr, stdout};

const CFG: &str = "
group g { host n1 n2; key csync2.key; include @ROOT_n1@; }
group h { host n2 n3; key csync2.key; include @ROOT_n2@; }
";

#[test]
fn unknown_peer_or_group_fails_before_anything_runs() {
    let env = Env::new();
    env.config(CFG);
    env.write("n1", "a", b"x");
    let out = env.csync("n1").args(["-x", "-P", "n2,zeta"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "csync: -P: 'zeta' is not a peer of this node (peers: n2)\n");
    // A host of a group this node is not in is not its peer either.
    let out = env.csync("n1").args(["-x", "-P", "N3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-P: 'N3' is not a peer of this node"), "{}", stderr(&out));
    for g in ["zeta", "h"] {
        let out = env.csync("n1").args(["-c", "-G", g]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!("csync: -G: '{g}' is not a group of this node (groups: g)\n")
        );
    }
    // Nothing ran: no index was even created.
    assert!(!env.db_file("n1").exists());
    // The right names still work.
    env.csync("n1").args(["-c", "-G", "g", "-P", "n2"]).assert().success();
}

#[test]
fn mysql_or_pgsql_database_is_an_error_not_a_directory() {
    let env = Env::new();
    let cwd = tempfile::tempdir().unwrap();
    env.config(&format!("database \"mysql://csync2:pw@db/csync2\";\n{CFG}"));
    let out = env.csync("n1").current_dir(cwd.path()).arg("-cr").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "csync2.cfg:1:10: error: database URL 'mysql://…' (MySQL) is not supported: csync keeps its index in SQLite"
        ),
        "{err}"
    );
    // `csync` without -D reads the config's database: nothing named after the URL.
    let mut c = assert_cmd::Command::new(bin());
    let out = c
        .current_dir(cwd.path())
        .env("CSYNC2_SYSTEM_DIR", env.etc())
        .args(["-N", "n1", "-cr"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read_dir(cwd.path()).unwrap().count(), 0, "something was created");

    env.config(CFG);
    let out = env.csync("n1").args(["-cr", "-D", "pgsql://db/csync2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("csync: -D: database URL 'pgsql://…' (PostgreSQL)"));
}

/// Two nodes with identities; `extra` goes into group g of n1's config.
fn checked(test: &str, extra: &str) -> Net {
    let cfg = format!(
        "group g {{ host n1@@ADDR_n1@ n2@@ADDR_n2@; key csync2.key; include %p%;\n{extra}\n}}\n\
         prefix p {{ on n1: @ROOT_n1@; on n2: @ROOT_n2@; }}\n"
    );
    Net::new(test, &["n1", "n2"], &cfg)
}

fn check_config(net: &Net) -> (i32, String, String) {
    let out = net.csync("n1").arg("--check-config").output().unwrap();
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
fn check_config_passes_a_sound_node_silently() {
    let net = checked("check_config_passes_a_sound_node_silently", "");
    let (code, out, err) = check_config(&net);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("node n1") && out.contains("group g (member)"), "{out}");
    assert!(out.contains("  policy  devices refused, setuid/setgid stripped, any owner"), "{out}");
}

#[test]
fn check_config_fails_on_a_missing_identity_file() {
    let net = checked("check_config_fails_on_a_missing_identity_file", "");
    let cert = net.sysdir("n1").join("csync2_ssl_cert.pem");
    fs::remove_file(&cert).unwrap();
    let (code, out, err) = check_config(&net);
    assert_eq!(code, 1);
    assert_eq!(err, format!("csync: error: {} is missing\n", cert.display()));
    // The summary is still printed.
    assert!(out.contains("group g (member)"), "{out}");
}

#[test]
fn check_config_fails_on_a_key_that_is_not_the_certificates() {
    let net = checked("check_config_fails_on_a_key_that_is_not_the_certificates", "");
    let (key, cert) =
        (net.sysdir("n1").join("csync2_ssl_key.pem"), net.sysdir("n1").join("csync2_ssl_cert.pem"));
    fs::remove_file(&key).unwrap();
    fs::copy(net.sysdir("n2").join("csync2_ssl_key.pem"), &key).unwrap();
    let (code, _, err) = check_config(&net);
    assert_eq!(code, 1);
    let want = format!("{} does not match {}", key.display(), cert.display());
    assert_eq!(err, format!("csync: error: {want}\n"));
    // A run says the same, not rustls' "inconsistent keys".
    net.csync("n1").arg("-cIr").assert().success();
    fs::write(net.root("n1").join("f"), "x").unwrap();
    let out = net.csync("n1").arg("-x").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}

#[test]
fn check_config_fails_on_an_expired_certificate() {
    let net = checked("check_config_fails_on_an_expired_certificate", "");
    let ca = net.path("ca");
    let ca_pem = fs::read_to_string(ca.join("csync2_ssl_ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&fs::read_to_string(ca.join("csync2_ssl_ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["n1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let sys = net.sysdir("n1");
    fs::write(sys.join("csync2_ssl_cert.pem"), cert.pem()).unwrap();
    fs::write(sys.join("csync2_ssl_key.pem"), key.serialize_pem()).unwrap();
    let (code, _, err) = check_config(&net);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "csync: error: {} expired on 2025-01-01\n",
            sys.join("csync2_ssl_cert.pem").display()
        )
    );
}

#[test]
fn check_config_fails_on_a_private_key_others_can_read() {
    let net = checked("check_config_fails_on_a_private_key_others_can_read", "");
    let key = net.sysdir("n1").join("csync2_ssl_key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = check_config(&net);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "csync: error: {} is readable by group/others (mode 0644); chmod 600 it\n",
            key.display()
        )
    );
}

#[test]
fn check_config_warns_about_a_group_key_others_can_read() {
    let net = checked("check_config_warns_about_a_group_key_others_can_read", "");
    let key = net.sysdir("n1").join("csync2.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = check_config(&net);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!(
            "csync: warning: group 'g': key file {} is readable by group/others (mode 0640); chmod 600 it\n",
            key.display()
        )
    );
}

/// `--check-config` exits 0 and warns, at the statement, for each of these.
#[test]
fn check_config_warns_about_config_mistakes_with_positions() {
    let cases = [
        (
            "include etc/nginx;",
            "csync2.cfg:2:9: warning: pattern 'etc/nginx' can never match: without a leading '/' it is matched against file names, which never contain '/'",
        ),
        (
            "backup-generations 5;",
            "csync2.cfg:2:20: warning: 'backup-generations' has no effect without 'backup-directory' in group 'g'",
        ),
        (
            "action { exec \"true\"; do-local; do-local-only; }",
            "csync2.cfg:2:23: warning: action has both 'do-local' and 'do-local-only'",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let net = checked(&format!("check_config_warns_{i}"), extra);
        let (code, _, err) = check_config(&net);
        assert_eq!(code, 0, "{extra}: {err}");
        assert!(err.contains(want), "{extra}:\n{err}");
    }
}

#[test]
fn check_config_warns_about_nested_include_roots() {
    // Through two prefixes whose local paths nest on n1 only.
    let net = Net::new("check_config_warns_about_nested_include_roots", &["n1", "n2"], "");
    let root = net.root("n1");
    let cfg = format!(
        "prefix a {{ on n1: {r}; on n2: /srv/a; }}\nprefix b {{ on n1: {r}/www; on n2: /srv/b; }}\n\
         group g {{ host n1 n2; key csync2.key; include %a%; }}\n\
         group h {{ host n1 n2; key csync2.key; include %b%;\n include {r}/www/x; }}\n",
        r = root.display()
    );
    net.write_config_for("n1", &cfg);
    let (code, _, err) = check_config(&net);
    assert_eq!(code, 0, "{err}");
    let sys = format!("{}/", net.sysdir("n1").display());
    let warnings: Vec<String> =
        err.lines().filter(|l| l.contains(": warning: ")).map(|l| l.replace(&sys, "")).collect();
    assert_eq!(
        warnings,
        [
            "csync2.cfg:4:47: warning: include root '%b%' of group 'h' lies inside include root '%a%' (csync2.cfg:3:47) of group 'g'".to_string(),
            format!(
                "csync2.cfg:5:10: warning: include root '{}/www/x' lies inside include root '%b%' (csync2.cfg:4:47) of the same group 'h', which already manages it",
                root.display()
            ),
        ],
        "{err}"
    );
}

#[test]
fn check_config_shows_the_receive_policy() {
    let net = checked(
        "check_config_shows_the_receive_policy",
        "allow-devices; allow-setid; owners 1000-1999;",
    );
    let (code, out, err) = check_config(&net);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(
        out.contains("  policy  devices allowed, setuid/setgid kept, owners 1000-1999\n"),
        "{out}"
    );
}

#[test]
fn server_certificate_from_another_ca_is_named_in_words() {
    let net = checked("server_certificate_from_another_ca_is_named_in_words", "");
    StdCommand::new(bin()).arg("--new-ca").arg(net.path("rogue")).output().unwrap();
    net.identity("n2", "n2", "rogue");
    let _d = net.daemon("n2", &[]);
    let out = net.csync("n1").args(["--ping", "n2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "csync: peer n2: certificate of n2 is not signed by the cluster CA (csync2_ssl_ca.pem)\n"
    );
    fs::write(net.root("n1").join("f"), "x").unwrap();
    let out = net.csync("n1").arg("-x").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "csync: peer n2: certificate of n2 is not signed by the cluster CA (csync2_ssl_ca.pem)\n"
    );
}

#[test]
fn wrong_group_key_is_reported_once_as_the_key_problem() {
    let net = checked("wrong_group_key_is_reported_once_as_the_key_problem", "");
    let key = net.sysdir("n1").join("csync2.key");
    fs::remove_file(&key).unwrap();
    StdCommand::new(bin()).arg("-k").arg(&key).output().unwrap();
    let _d = net.daemon("n2", &[]);
    for f in ["a", "b", "c"] {
        fs::write(net.root("n1").join(f), f).unwrap();
    }
    let out = net.csync("n1").arg("-x").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("csync: peer n2: group 'g': the group key differs (key file {})\n", key.display())
    );
    // -T says the same instead of finding everything in sync.
    let out = net.csync("n1").arg("-T").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("csync: peer n2: group 'g': the group key differs (key file {})\n", key.display())
    );
    // Nothing was sent, and the marks wait for the key to be fixed.
    assert!(!net.root("n2").join("a").exists());
    let out = net.csync("n1").arg("-M").output().unwrap();
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));
}
