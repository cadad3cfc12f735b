//! Issue 14: every csync2 command-line letter is accepted; each either does
//! what csync2 did or is accepted as documented in `--help` (so no csync2
//! script, cron line or unit breaks).

use std::fs;
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use predicates::str::contains;

use crate::migrate_csync2::listening;
use crate::net_util::{Net, bin, wait_until};
use crate::util::{Env, stderr, stdout};

const CFG: &str = "
group g {
    host n1 n2@127.0.0.2;
    key csync2.key;
    include %p%;
    exclude %p%/skip;
}
group other {
    host n1 n3@127.0.0.3;
    key csync2.key;
    include @ROOT_n3@;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }
";

fn env() -> Env {
    let env = Env::new();
    env.config(CFG);
    env.write("n1", "a/f", b"hello\n");
    env.write("n1", "skip/x", b"excluded\n");
    env
}

/// `--help` documents every letter csync2 had.
#[test]
fn help_documents_every_csync2_letter() {
    let env = env();
    let out = env.csync("n1").arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    for l in [
        "-x", "-c", "-u", "-h", "-m", "-f", "-o", "-H", "-L", "-M", "-S", "-T", "-R", "-i", "-k",
        "-r", "-d", "-v", "-l", "-t", "-s", "-C", "-D", "-N", "-p", "-G", "-P", "-B", "-A", "-I",
        "-X", "-U", "-F", "-W", "-iii",
    ] {
        assert!(help.contains(&format!("{l} ")) || help.contains(&format!("{l},")), "{l}: {help}");
    }
}

/// `-h` alone prints the help (csync2 had no --help); with paths it is
/// csync2's hint, which csync does not need: accepted, nothing written.
#[test]
fn dash_h_alone_is_help_with_paths_a_hint() {
    let env = env();
    env.csync("n1").arg("-h").assert().success().stdout(contains("Usage"));
    let f = env.root("n1").join("a/f");
    env.csync("n1").arg("-h").arg(&f).assert().success().stdout("");
    env.csync("n1").args(["-hr"]).arg(env.root("n1")).assert().success();
    assert!(!env.db_file("n1").exists(), "a hint wrote an index");
    // Beside a mode, -h changes nothing: `-ch` is a check.
    env.csync("n1").arg("-ch").assert().success();
    assert!(!env.file_rows("n1").is_empty());
}

/// `-H` lists hints: there are none (csync2's exit 2 for an empty listing).
#[test]
fn dash_capital_h_lists_no_hints() {
    let env = env();
    env.csync("n1").arg("-H").assert().code(2).stdout("");
}

/// `-S NAME PEER`: what NAME shares with PEER, as -L prints it.
#[test]
fn dash_s_lists_what_a_pair_shares() {
    let env = env();
    fs::write(env.root("n3").join("z"), b"z").unwrap();
    env.csync("n1").arg("-cr").assert().success();
    let out = env.csync("n1").args(["-S", "n1", "n2"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.lines().any(|l| l.ends_with("\t%p%/a/f")), "{s}");
    assert!(!s.contains("n3/z"), "{s}");
    let out = env.csync("n1").args(["-S", "n1", "n3"]).output().unwrap();
    assert!(stdout(&out).contains("n3/z") && !stdout(&out).contains("%p%"), "{}", stdout(&out));
    // A name that is not this node, or a stranger: refused, clearly.
    env.csync("n1").args(["-S", "n2", "n3"]).assert().code(1).stderr(contains("not this node"));
    env.csync("n1").args(["-S", "n1", "nobody"]).assert().code(1).stderr(contains("nobody"));
    env.csync("n1").arg("-S").assert().code(1).stderr(contains("NAME PEER"));
}

/// `-o [-r] PATH`: the managed paths, real names, for `xargs md5sum`.
#[test]
fn dash_o_prints_managed_paths() {
    let env = env();
    let root = env.root("n1");
    let out = env.csync("n1").arg("-or").arg(&root).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    let f = root.join("a/f");
    assert!(s.lines().any(|l| l == f.to_str().unwrap()), "{s}");
    assert!(!s.contains("skip"), "an excluded path was listed: {s}");
    // Without -r, only the path itself; -P n3 selects no group with %p%.
    let out = env.csync("n1").arg("-o").arg(&root).output().unwrap();
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let out = env.csync("n1").args(["-or", "-P", "n3"]).arg(&root).output().unwrap();
    assert_eq!(stdout(&out), "");
    assert!(!env.db_file("n1").exists(), "-o touched the index");
}

/// `-W FD`: as csync2, a check writes the managed directories it recursed
/// into to FD, NUL-terminated (csync read paths from FD instead, and hung
/// on a pipe or a terminal: `csync -W 1 -x | cat`).
#[test]
fn dash_w_writes_the_checked_directories_to_a_descriptor() {
    let env = env();
    env.write("n1", "b/g", b"g\n");
    let list = env.dir.path().join("list");
    let root = env.root("n1");
    let run = |args: &[&str]| {
        StdCommand::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3>\"$LIST\"")
            .arg(bin())
            .args(["-N", "n1", "-D"])
            .arg(env.db_dir("n1"))
            .args(args)
            .env("CSYNC2_SYSTEM_DIR", env.etc())
            .env("LIST", &list)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let listed = || {
        let data = fs::read(&list).unwrap();
        assert_eq!(data.last(), Some(&0), "NUL-terminated: {data:?}");
        let mut v: Vec<String> = data
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    };
    let out = run(&["-c", "-W", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = |rel: &str| root.join(rel).display().to_string().trim_end_matches('/').to_string();
    // Managed directories only (skip/ is excluded), of every group: n1 also
    // holds group other's root.
    let n3 = env.root("n3").display().to_string().trim_end_matches('/').to_string();
    assert_eq!(listed(), [d(""), d("a"), d("b"), n3]);
    let out = run(&["-cr", "-W", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = root.join("a");
    let out = run(&["-cr", "-W", "3", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(), [d("a")]);
    // A pipe or a terminal as FD does not block: nothing is read from it.
    let out = env.csync("n1").args(["-c", "-W", "1"]).timeout(Duration::from_secs(20)).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.ends_with(b"\0"), "{:?}", out.stdout);
    env.csync("n1").args(["-c", "-W", "99"]).assert().code(1).stderr(contains("-W 99"));
}

/// `-F`: the marks `-m` makes are forced, as csync2's were.
#[test]
fn dash_capital_f_forces_new_marks() {
    let env = env();
    env.csync("n1").arg("-cIr").assert().success();
    env.csync("n1").args(["-m", "-F"]).arg(env.root("n1").join("a/f")).assert().success();
    let rows = env.dirty_rows("n1");
    assert!(
        rows.iter().any(|(p, peer, forced, _)| p == "%p%/a/f" && peer == "n2" && *forced),
        "{rows:?}"
    );
}

/// `-B -A -t -s FILE`: accepted; the check does just what it did without them.
#[test]
fn tuning_letters_are_accepted() {
    let env = env();
    let stamps = env.dir.path().join("stamps");
    env.csync("n1").args(["-c", "-B", "-A", "-t", "-l", "-s"]).arg(&stamps).assert().success();
    assert!(env.file_rows("n1").contains(&"%p%/a/f".to_string()));
    assert!(env.dirty_rows("n1").iter().any(|r| r.0 == "%p%/a/f"));
}

/// Over the network: `-T NAME PEER` (Debian's cron line), `-TIU`/`-TIX`,
/// and `-iii` (one connection, then exit).
#[test]
fn dash_t_with_names_and_dash_iii() {
    let cfg = "group g { host n1@@ADDR_n1@ n2@@ADDR_n2@; key csync2.key; include %d%; }\n\
               prefix d { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }\n";
    let net = Net::new("migrate_letters_t", &["n1", "n2"], cfg);
    fs::write(net.root("n1").join("f"), b"one\n").unwrap();

    {
        let _d = net.daemon("n2", &[]);
        net.csync("n1").arg("-x").assert().success();
        // -T NAME PEER: this node's name, then the peer (exit 2: in sync).
        let out = net.csync("n1").args(["-T", "n1", "n2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
        net.csync("n1").args(["-T", "n2", "n1"]).assert().code(1).stderr(contains("not this node"));
    }

    // -iii: serves the first connection (here: a push), then exits 0 by itself.
    fs::write(net.root("n1").join("f"), b"two\n").unwrap();
    let log = fs::File::create(net.path("iii.log")).unwrap();
    let mut cmd = net.csync_std("n2");
    let mut once = cmd.arg("-iii").stdin(Stdio::null()).stderr(log).spawn().unwrap();
    wait_until(Duration::from_secs(10), || listening(&net.addr("n2"), net.port).then_some(()))
        .expect("-iii did not listen");
    let out = net.csync("n1").arg("-x").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status =
        wait_until(Duration::from_secs(10), || once.try_wait().unwrap()).unwrap_or_else(|| {
            let _ = once.kill();
            panic!("-iii still running after its connection")
        });
    assert!(status.success(), "{}", fs::read_to_string(net.path("iii.log")).unwrap());
    assert_eq!(fs::read(net.root("n2").join("f")).unwrap(), b"two\n");

    let _d = net.daemon("n2", &[]);
    // -TIU / -TIX: the differences are marked (for every peer; here one).
    fs::write(net.root("n2").join("f"), b"changed there\n").unwrap();
    net.csync("n2").arg("-c").assert().success();
    for letters in ["-TIU", "-TIX"] {
        let out = net.csync("n1").args([letters, "n1", "n2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("X\tn1\tn2\t%d%/f"), "{}", stdout(&out));
    }
    let out = net.csync("n1").arg("-M").output().unwrap();
    assert!(stdout(&out).contains("%d%/f"), "-TI marked nothing: {}", stdout(&out));
}
