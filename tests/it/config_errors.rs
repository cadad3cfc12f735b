//! Broken configs give `file:line:col` diagnostics (golden files) and exit 1.
//! Set `CSYNC_BLESS=1` to rewrite the `.stderr` files from the current output.

use std::fs;

use assert_cmd::Command;

use crate::util::repo;

#[test]
fn broken_configs_match_their_golden_diagnostics() {
    let dir = repo().join("tests/fixtures/config/err");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "expected at least 12 broken configs, found {}", cases.len());
    let bless = std::env::var_os("CSYNC_BLESS").is_some();
    let mut failures = Vec::new();
    for cfg in &cases {
        let name = cfg.file_name().unwrap().to_str().unwrap();
        let out = Command::new(assert_cmd::cargo::cargo_bin!("csync"))
            .current_dir(&dir)
            .env("CSYNC2_SYSTEM_DIR", &dir)
            .args(["--config", name, "-N", "n1", "--check-config"])
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stderr).into_owned();
        let golden = cfg.with_extension("stderr");
        if bless {
            fs::write(&golden, &got).unwrap();
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if out.status.code() != Some(1) {
            failures.push(format!("{name}: exit {:?}, want 1", out.status.code()));
        }
        if got != want {
            failures.push(format!("{name}:\n--- want\n{want}--- got\n{got}"));
        }
        if !got.lines().next().unwrap_or_default().starts_with(&format!("{name}:")) {
            failures.push(format!("{name}: first line does not start with '{name}:': {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn three_errors_are_all_reported() {
    let dir = repo().join("tests/fixtures/config/err");
    let out = Command::new(assert_cmd::cargo::cargo_bin!("csync"))
        .current_dir(&dir)
        .env("CSYNC2_SYSTEM_DIR", &dir)
        .args(["--config", "three_errors.cfg", "-N", "n1", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let errors = text
        .lines()
        .filter(|l| l.starts_with("three_errors.cfg:") && l.contains(": error: "))
        .count();
    assert_eq!(errors, 3, "{text}");
}
