//! The shipped `csync2.cfg.example` parses, and `--check-config` / `--explain`
//! say what it resolved to.

use std::fs;

use assert_cmd::Command;

use crate::util::{Env, KEY, repo, stdout};

/// The example's key files, and an identity for `host` (--check-config checks it).
fn example_env(host: &str) -> Env {
    let env = Env::new();
    let ca = env.dir.path().join("ca");
    for args in [
        vec!["--new-ca".into(), ca.display().to_string()],
        vec![
            "--new-cert".into(),
            host.to_string(),
            "--ca".into(),
            ca.display().to_string(),
            "--out".into(),
            env.etc().display().to_string(),
        ],
    ] {
        Command::new(assert_cmd::cargo::cargo_bin!("csync")).args(args).assert().success();
    }
    // The example's key files are relative to the system dir.
    let text = fs::read_to_string(repo().join("csync2.cfg.example")).unwrap();
    for word in text.split(|c: char| c.is_whitespace() || c == ';') {
        if word.starts_with("csync2.key") {
            fs::write(env.etc().join(word), format!("{KEY}\n")).unwrap();
        }
    }
    env
}

fn csync(env: &Env) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("csync"));
    c.current_dir(repo()).env("CSYNC2_SYSTEM_DIR", env.etc());
    c
}

#[test]
fn check_config_prints_groups_hosts_roots_actions() {
    let env = example_env("alpha");
    let out = csync(&env)
        .args(["--config", "csync2.cfg.example", "--check-config", "-N", "alpha"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("node alpha"), "{text}");
    assert!(text.contains("group "), "{text}");
    assert!(text.contains("(member)"), "{text}");
    assert!(text.contains("  hosts   "), "{text}");
    assert!(text.contains("  root    "), "{text}");
    assert!(text.contains("  action  "), "{text}");
    assert!(text.contains("exec \""), "{text}");
}

#[test]
fn every_host_of_the_example_resolves() {
    for host in ["alpha", "beta", "gamma"] {
        let env = example_env(host);
        csync(&env)
            .args(["--config", "csync2.cfg.example", "--check-config", "-N", host])
            .assert()
            .success();
    }
}

#[test]
fn explain_names_the_deciding_pattern() {
    let env = Env::new();
    env.config(
        "group g { host n1 n2; key csync2.key; include @ROOT_n1@; exclude @ROOT_n1@/cache; exclude *.swp; }",
    );
    let root = env.root("n1");
    let out = env.csync("n1").arg("--explain").arg(root.join("cache/x")).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("is not managed"), "{text}");
    assert!(text.contains("exclude") && text.contains("/cache"), "{text}");
    assert!(text.contains("csync2.cfg:1:"), "names the rule's position: {text}");
    let out = env.csync("n1").arg("--explain").arg(root.join("www/index.html")).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("is managed"), "{}", stdout(&out));
    let out = env.csync("n1").arg("--explain").arg(root.join("a.swp")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("exclude *.swp"), "{}", stdout(&out));
}
