//! The command-line surface: modes, csync2's exit codes, `-k`, `-C`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use predicates::str::contains;

use crate::util::{Env, stderr};

const CFG: &str = "
group g { host n1 n2; key csync2.key; include @ROOT_n1@; }
";

#[test]
fn no_mode_is_an_error_with_a_hint() {
    let env = Env::new();
    env.config(CFG);
    env.csync("n1").assert().code(1).stderr(contains("no mode given"));
}

#[test]
fn two_modes_are_refused() {
    let env = Env::new();
    env.config(CFG);
    env.csync("n1").args(["-c", "-L"]).assert().code(1).stderr(contains("only one mode"));
}

#[test]
fn help_and_version_exit_zero() {
    let env = Env::new();
    env.csync("n1")
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("-x"))
        .stdout(contains("Exit status"));
    env.csync("n1").arg("--version").assert().success().stdout(contains("csync"));
}

#[test]
fn listing_an_empty_index_exits_2() {
    let env = Env::new();
    env.config(CFG);
    env.csync("n1").arg("-L").assert().code(2).stdout("");
    env.csync("n1").arg("-M").assert().code(2).stdout("");
}

#[test]
fn a_node_in_no_group_is_a_config_error() {
    let env = Env::new();
    env.config(CFG);
    env.csync("does.not.exist")
        .arg("-L")
        .assert()
        .code(1)
        .stderr(contains("not a member of any group"));
}

#[test]
fn pushing_without_an_identity_says_how_to_make_one() {
    let env = Env::new();
    env.config(CFG);
    env.write("n1", "f", b"x");
    env.csync("n1")
        .arg("-x")
        .assert()
        .code(1)
        .stderr(contains("identity"))
        .stderr(contains("--new-ca"));
    // The check part ran; the marks wait for a working identity.
    env.csync("n1").arg("-M").assert().code(0).stdout(contains("\tn2\t"));
}

#[test]
fn daemon_without_identity_says_how_to_make_one() {
    let env = Env::new();
    env.config(CFG);
    env.csync("n1")
        .arg("-ii")
        .assert()
        .code(1)
        .stderr(contains("identity"))
        .stderr(contains("csync2_ssl_key.pem"))
        .stderr(contains("--new-cert"));
}

#[test]
fn keygen_makes_a_private_key_once() {
    let env = Env::new();
    let k = env.dir.path().join("new.key");
    env.csync("n1").arg("-k").arg(&k).assert().success();
    let text = fs::read_to_string(&k).unwrap();
    assert_eq!(text.trim_end().len(), 64);
    assert!(text.trim_end().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'));
    assert_eq!(fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
    let out = env.csync("n1").arg("-k").arg(&k).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&k).unwrap(), text, "never overwritten");
}

#[test]
fn dash_c_selects_config_and_index_name() {
    let env = Env::new();
    let cfg = CFG.replace("@ROOT_n1@", env.root("n1").to_str().unwrap());
    fs::write(env.etc().join("csync2_web.cfg"), cfg).unwrap();
    env.write("n1", "f", b"x");
    env.csync("n1").args(["-C", "web", "-cr"]).assert().success();
    assert!(env.db_dir("n1").join("n1_web.db").exists());
    env.csync("n1").args(["-C", "Bad!", "-L"]).assert().code(1).stderr(contains("[a-z0-9]+"));
}

#[test]
fn lock_file_pauses_everything() {
    let env = Env::new();
    env.config(CFG);
    fs::write(env.etc().join("csync2.lock"), "").unwrap();
    env.csync("n1").arg("-cr").assert().code(1).stderr(contains("csync2.lock"));
}

#[test]
fn combined_letters_work() {
    let env = Env::new();
    env.config(CFG);
    env.write("n1", "d/f", b"x");
    env.csync("n1").arg("-cIrv").assert().success().stderr(contains("checked"));
    env.csync("n1").arg("-M").assert().code(2);
}

#[test]
fn man_page_documents_every_mode() {
    let env = Env::new();
    let out = env.csync("n1").arg("--man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(".ie") || text.contains(".TH csync 1"), "{text}");
    for flag in
        ["\\-x", "\\-T", "\\-\\-status", "\\-\\-new\\-cert", "\\-\\-ping", ".SH EXIT STATUS"]
    {
        assert!(text.contains(flag), "man page lacks {flag}");
    }
    // The shipped copy is the generated one.
    let shipped = std::fs::read_to_string(crate::util::repo().join("doc/csync.1")).unwrap();
    assert_eq!(shipped, text, "doc/csync.1 is stale: regenerate with `csync --man > doc/csync.1`");
}

#[test]
fn a_relative_database_path_is_next_to_the_config_whatever_the_working_directory() {
    let env = crate::util::Env::new();
    env.config(&format!(
        "group g {{ host n1 n2; key csync2.key; include {}; }}\ndatabase state/index.db;\n",
        env.root("n1").display()
    ));
    env.write("n1", "f", b"x");
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("csync"))
        .env("CSYNC2_SYSTEM_DIR", env.etc())
        .args(["-N", "n1", "-cr"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(env.etc().join("state/index.db").is_file(), "index not next to the config");
    assert!(!elsewhere.path().join("state").exists(), "index made in the working directory");
}
