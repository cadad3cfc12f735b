//! The check phase end to end: a node with `prefix p` and `include %p%` indexes
//! its tree, marks changes dirty per peer, and keeps the index exact.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::util::{Env, stderr, stdout};

const CFG: &str = "
group g {
    host n1 n2@127.0.0.2 (n3);
    key csync2.key;
    include %p%;
    exclude %p%/skip;
    exclude *~;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; on n3: @ROOT_n3@; }
";

fn tree(env: &Env) {
    env.config(CFG);
    env.write("n1", "a/f", b"hello\n");
    env.write("n1", "a/g", b"world\n");
    env.write("n1", "b/deep/h", b"deep\n");
    env.write("n1", "skip/x", b"excluded by path\n");
    env.write("n1", "a/f~", b"excluded by basename\n");
    std::os::unix::fs::symlink("a/f", env.root("n1").join("link")).unwrap();
}

/// `-M --json` as (path, peer, changes) triples.
fn dirty(env: &Env, node: &str) -> Vec<(String, String, String)> {
    let out = env.csync(node).args(["-M", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let changes: Vec<&str> =
                r["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
            (
                r["path"].as_str().unwrap().to_string(),
                r["peer"].as_str().unwrap().to_string(),
                changes.join(","),
            )
        })
        .collect()
}

fn set_mtime(p: &std::path::Path, t: SystemTime) {
    fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

#[test]
fn cr_indexes_the_prefixed_tree_and_l_lists_it() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cr").assert().success().stdout("").stderr("");
    let out = env.csync("n1").arg("-L").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Vec<String> =
        stdout(&out).lines().map(|l| l.split('\t').nth(1).unwrap().to_string()).collect();
    assert_eq!(
        listed,
        ["%p%", "%p%/a", "%p%/a/f", "%p%/a/g", "%p%/b", "%p%/b/deep", "%p%/b/deep/h", "%p%/link"]
    );
    let l = stdout(&out);
    let f_line = l.lines().find(|l| l.ends_with("\t%p%/a/f")).unwrap();
    assert!(f_line.contains("type=reg") && f_line.contains("size=6"), "{f_line}");
    assert!(f_line.contains(&format!("hash={}", blake3::hash(b"hello\n").to_hex())), "{f_line}");
    let link_line = l.lines().find(|l| l.ends_with("\t%p%/link")).unwrap();
    assert!(link_line.contains("type=lnk") && link_line.contains(":target=a/f"), "{link_line}");
    // Stored in the index file in DB form.
    assert_eq!(env.file_rows("n1").len(), 8);
}

#[test]
fn m_shows_one_dirty_row_per_peer() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cr").assert().success();
    let out = env.csync("n1").arg("-M").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("chary\tn1\tn2\t%p%/a/f\n"), "{text}");
    assert!(text.contains("chary\tn1\tn3\t%p%/a/f\n"), "{text}");
    // 8 entries, 2 peers each, nothing for the excluded ones.
    assert_eq!(text.lines().count(), 16, "{text}");
    assert!(!text.contains("skip") && !text.contains("f~"), "{text}");
    let rows = env.dirty_rows("n1");
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|(_, peer, forced, _)| (peer == "n2" || peer == "n3") && !forced));
}

#[test]
fn init_run_on_fresh_index_marks_nothing() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    env.csync("n1").arg("-M").assert().code(2).stdout("");
    assert_eq!(env.file_rows("n1").len(), 8);
    // And a check right after finds nothing new either.
    env.csync("n1").arg("-cr").assert().success();
    env.csync("n1").arg("-M").assert().code(2);
}

#[test]
fn content_change_marks_exactly_that_file() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    let f = env.root("n1").join("a/g");
    let before = fs::metadata(&f).unwrap().modified().unwrap();
    // Same size, same mtime: only the hash can tell (the inode/ctime hints trigger it).
    fs::write(&f, b"WORLD\n").unwrap();
    set_mtime(&f, before);
    env.csync("n1").arg("-c").assert().success();
    let d = dirty(&env, "n1");
    assert_eq!(
        d,
        [
            ("%p%/a/g".to_string(), "n2".to_string(), "content".to_string()),
            ("%p%/a/g".to_string(), "n3".to_string(), "content".to_string())
        ]
    );
}

#[test]
fn touch_is_recorded_as_a_metadata_change() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    set_mtime(&env.root("n1").join("a/f"), SystemTime::now() + Duration::from_secs(3600));
    env.csync("n1").arg("-c").assert().success();
    let d = dirty(&env, "n1");
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().all(|(p, _, c)| p == "%p%/a/f" && c == "mtime"), "{d:?}");
}

#[test]
fn mode_change_and_link_retarget_are_detected() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    fs::set_permissions(env.root("n1").join("a/f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(env.root("n1").join("link")).unwrap();
    std::os::unix::fs::symlink("a/g", env.root("n1").join("link")).unwrap();
    env.csync("n1").arg("-c").assert().success();
    let d = dirty(&env, "n1");
    assert!(d.contains(&("%p%/a/f".into(), "n2".into(), "mode".into())), "{d:?}");
    // A recreated link also has a new mtime; what matters is the target.
    assert!(
        d.iter().any(|(p, peer, c)| p == "%p%/link" && peer == "n2" && c.contains("target")),
        "{d:?}"
    );
    assert_eq!(d.len(), 4, "{d:?}");
}

#[test]
fn type_change_file_to_dir() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    fs::remove_file(env.root("n1").join("a/g")).unwrap();
    env.write("n1", "a/g/inner", b"x");
    env.csync("n1").arg("-cr").assert().success();
    let d = dirty(&env, "n1");
    assert!(d.contains(&("%p%/a/g".into(), "n2".into(), "type".into())), "{d:?}");
    assert!(d.contains(&("%p%/a/g/inner".into(), "n2".into(), "new".into())), "{d:?}");
}

#[test]
fn deleted_file_is_marked_as_a_deletion() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    fs::remove_dir_all(env.root("n1").join("b")).unwrap();
    env.csync("n1").arg("-cr").assert().success();
    let d = dirty(&env, "n1");
    let deleted: Vec<&str> = d
        .iter()
        .filter(|(_, p, _)| p == "n2")
        .map(|(path, _, c)| {
            assert_eq!(c, "delete");
            path.as_str()
        })
        .collect();
    assert_eq!(deleted, ["%p%/b", "%p%/b/deep", "%p%/b/deep/h"], "{d:?}");
    assert!(!env.file_rows("n1").iter().any(|p| p.starts_with("%p%/b")));
}

#[test]
fn r_drops_rows_the_config_no_longer_matches() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cr").assert().success();
    assert!(env.file_rows("n1").contains(&"%p%/b/deep/h".to_string()));
    // Exclude b and drop peer n3 from the group.
    env.config(&CFG.replace("exclude *~;", "exclude *~;\n    exclude %p%/b;").replace(" (n3)", ""));
    env.csync("n1").arg("-R").assert().success();
    let files = env.file_rows("n1");
    assert!(!files.iter().any(|p| p.starts_with("%p%/b")), "{files:?}");
    assert!(files.contains(&"%p%/a/f".to_string()));
    let rows = env.dirty_rows("n1");
    assert!(rows.iter().all(|(p, peer, _, _)| peer == "n2" && !p.starts_with("%p%/b")), "{rows:?}");
    assert_eq!(rows.len(), 5, "{rows:?}");
}

#[test]
fn receive_only_node_queues_nothing() {
    let env = Env::new();
    env.config(CFG);
    env.write("n3", "a/f", b"local change on a receive-only host\n");
    env.csync("n3").arg("-cr").assert().success();
    env.csync("n3").arg("-M").assert().code(2);
    assert_eq!(env.file_rows("n3"), ["%p%", "%p%/a", "%p%/a/f"]);
}

#[test]
fn path_arguments_are_mapped_to_prefix_form() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    fs::write(env.root("n1").join("a/f"), b"changed, longer\n").unwrap();
    fs::write(env.root("n1").join("a/g"), b"also changed\n").unwrap();
    // Only the named file is checked, given as a real path.
    env.csync("n1").arg("-c").arg(env.root("n1").join("a/f")).assert().success();
    let d = dirty(&env, "n1");
    assert!(d.iter().all(|(p, _, _)| p == "%p%/a/f"), "{d:?}");
    assert_eq!(d.len(), 2);
    // A path no group manages is reported and ignored, exit 1.
    let out = env.csync("n1").arg("-c").arg(env.dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the parent of a root is walked through");
    let out = env.csync("n1").arg("-c").arg("/proc/self").output().unwrap();
    assert!(stderr(&out).contains("not managed by any group"), "{}", stderr(&out));
}

#[test]
fn force_works_on_clean_paths_and_m_marks() {
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    env.csync("n1").arg("-f").arg(env.root("n1").join("a/f")).assert().success();
    let rows = env.dirty_rows("n1");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|(p, _, forced, _)| p == "%p%/a/f" && *forced));
    let m = stdout(&env.csync("n1").arg("-M").output().unwrap());
    assert!(m.contains("force\tn1\tn2\t%p%/a/f"), "{m}");
    env.csync("n1").arg("-mr").arg(env.root("n1").join("b")).assert().success();
    let rows = env.dirty_rows("n1");
    assert_eq!(rows.iter().filter(|r| r.0.starts_with("%p%/b")).count(), 6, "{rows:?}");
    assert!(rows.iter().filter(|r| r.0.starts_with("%p%/b")).all(|r| !r.2));
}

#[test]
fn unreadable_directory_is_reported_and_not_deleted() {
    if rustix::process::geteuid().is_root() {
        // root reads everything; the permission error cannot be produced.
        return;
    }
    let env = Env::new();
    tree(&env);
    env.csync("n1").arg("-cIr").assert().success();
    let b = env.root("n1").join("b");
    fs::set_permissions(&b, fs::Permissions::from_mode(0o000)).unwrap();
    let out = env.csync("n1").arg("-cr").output().unwrap();
    fs::set_permissions(&b, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(env.file_rows("n1").contains(&"%p%/b/deep/h".to_string()));
}
