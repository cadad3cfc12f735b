//! Issue 14, items 5 and 7: the Debian package, the systemd units and the
//! cron example, checked the way an administrator would meet them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::repo;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin!("csync").to_path_buf()
}

/// What `contrib/deb/build.sh` ships, in `dpkg-deb -c` form (`./usr/bin/csync`).
fn package_listing(deb: &Path) -> Vec<String> {
    let out = Command::new("dpkg-deb").arg("-c").arg(deb).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5).map(|p| p.trim_start_matches('.').to_string()))
        .collect()
}

/// `[package.metadata.deb]`'s asset destinations, as installed paths.
fn cargo_deb_assets() -> Vec<String> {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = toml.split("[package.metadata.deb]").nth(1).expect("Cargo.toml has the section");
    let assets = section.split("assets = [").nth(1).unwrap().split("\n]").next().unwrap();
    assets
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split('"').skip(1).step_by(2).collect();
            let (src, dest) = (fields.first()?, fields.get(1)?);
            let name = Path::new(src).file_name().unwrap().to_str().unwrap();
            Some(if dest.ends_with('/') { format!("/{dest}{name}") } else { format!("/{dest}") })
        })
        .collect()
}

#[test]
fn the_debian_package_ships_binary_manuals_units_completions_and_examples() {
    if !have("dpkg-deb") {
        println!("skipped: dpkg-deb is not installed (the package is built with it)");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("contrib/deb/build.sh"))
        .arg("--binary")
        .arg(bin())
        .arg("--out")
        .arg(out_dir.path())
        .arg("--uncompressed")
        .output()
        .unwrap();
    assert!(out.status.success(), "build.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let deb = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(deb.starts_with(out_dir.path()), "{}", deb.display());
    let files = package_listing(&deb);
    for want in [
        "/usr/bin/csync",
        "/usr/share/man/man1/csync.1.gz",
        "/usr/share/man/man5/csync.cfg.5.gz",
        "/lib/systemd/system/csync-sync.timer",
        "/lib/systemd/system/csync-sync.service",
        "/lib/systemd/system/csync-daemon.service",
        "/lib/systemd/system/csync@.service",
        "/etc/cron.d/csync",
        "/usr/share/bash-completion/completions/csync",
        "/usr/share/zsh/vendor-completions/_csync",
        "/usr/share/fish/vendor_completions.d/csync.fish",
        "/usr/share/doc/csync/examples/csync2.cfg.example",
        "/usr/share/doc/csync/copyright",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} missing from the package: {files:?}");
    }
    // cargo-deb's metadata ships the same files (it writes copyright itself
    // and leaves man pages as they are).
    let mut ours: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("/copyright"))
        .map(|f| f.trim_end_matches(".gz").to_string())
        .collect();
    let mut theirs = cargo_deb_assets();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "contrib/deb/build.sh and [package.metadata.deb] disagree");

    let info = Command::new("dpkg-deb").arg("-I").arg(&deb).output().unwrap();
    let info = String::from_utf8(info.stdout).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    for want in [
        "Package: csync".to_string(),
        format!("Version: {version}"),
        "Depends: libc6 (>= 2.".to_string(),
        "Section: admin".to_string(),
    ] {
        assert!(info.contains(&want), "control lacks {want:?}:\n{info}");
    }
    let ctrl = tempfile::tempdir().unwrap();
    let st = Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctrl.path()).status().unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(ctrl.path().join("conffiles")).unwrap(),
        "/etc/cron.d/csync\n"
    );
}

#[test]
fn the_shipped_completions_are_what_the_binary_generates() {
    for (shell, file) in [("bash", "csync.bash"), ("zsh", "_csync"), ("fish", "csync.fish")] {
        let out = Command::new(bin()).args(["--completions", shell]).output().unwrap();
        assert!(out.status.success());
        let shipped = std::fs::read(repo().join("contrib/completions").join(file)).unwrap();
        assert!(
            out.stdout == shipped,
            "contrib/completions/{file} is stale: csync --completions {shell} > contrib/completions/{file}"
        );
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    // The units name `csync` without a directory (systemd searches
    // /usr/local/bin and /usr/bin); here it is the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let bin = bin();
    let mut units = Vec::new();
    for e in std::fs::read_dir(repo().join("contrib/systemd")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("ExecStart=") && l.contains("/bin/csync")),
            "{name}: a hard-coded binary path misses either /usr/bin or /usr/local/bin"
        );
        let text = text
            .replace("ExecStart=csync ", &format!("ExecStart={} ", bin.display()))
            .replace("ExecStart=-csync ", &format!("ExecStart=-{} ", bin.display()));
        std::fs::write(dir.path().join(&name), text).unwrap();
        units.push(name);
    }
    units.sort();
    for want in ["csync-sync.service", "csync-sync.timer", "csync-daemon.service", "csync.socket"] {
        assert!(units.iter().any(|u| u == want), "contrib/systemd lacks {want}");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .current_dir(dir.path())
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Warnings about this machine (no network-online.target in a container)
    // are not about the units; anything naming one of ours is.
    let ours: Vec<&str> =
        err.lines().filter(|l| units.iter().any(|u| l.contains(u.as_str()))).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {err}");
}

#[test]
fn the_cron_example_is_one_disabled_well_formed_line() {
    let text = std::fs::read_to_string(repo().join("contrib/cron.d/csync")).unwrap();
    let jobs: Vec<&str> = text.lines().filter(|l| l.starts_with("#*/")).collect();
    assert_eq!(jobs.len(), 1, "one commented job line");
    let fields: Vec<&str> = jobs[0].trim_start_matches('#').split_whitespace().collect();
    assert!(fields.len() >= 7, "m h dom mon dow user command: {fields:?}");
    assert_eq!(fields[5], "root");
    assert!(jobs[0].ends_with("csync -x"), "{}", jobs[0]);
    assert!(text.lines().any(|l| l.starts_with("PATH=") && l.contains("/usr/bin")));
    assert!(
        !text.lines().any(|l| !l.starts_with('#') && l.contains("csync -x")),
        "shipped disabled: the timer and cron must not both run"
    );
}
