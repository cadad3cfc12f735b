//! Actions (PRODUCT 6, issue 5): three real nodes on loopback; every action
//! appends what it saw to a per-node log file, and the tests read those.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net_util::wait_until;
use crate::sync::Cluster;

/// `@ACTION@` is the body of the action block; `@OUT@` the node's own log
/// file, `@DIR@` a scratch directory per node.
const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@;
    key csync2.key;
    include %p%;
    action {
@ACTION@
    }
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; on n3: @ROOT_n3@; }
";

const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// A cluster whose group has the action `body` (with `@OUT@`/`@DIR@` filled
/// in per node); daemons restarted to read it.
fn cluster(test: &str, body: &str) -> Cluster {
    let mut c = Cluster::new(test, "none");
    configure(&mut c, body);
    c
}

fn configure(c: &mut Cluster, body: &str) {
    for n in NODES {
        let dir = scratch(c, n);
        let text = CFG.replace("@ACTION@", body).replace("@OUT@", out(c, n).to_str().unwrap());
        c.net.write_config_for(n, &text.replace("@DIR@", dir.to_str().unwrap()));
        c.stop(n);
        c.start(n);
    }
}

fn scratch(c: &Cluster, n: &str) -> PathBuf {
    let d = c.net.path(&format!("scratch-{n}"));
    fs::create_dir_all(&d).unwrap();
    d
}

fn out(c: &Cluster, n: &str) -> PathBuf {
    c.net.path(&format!("actions-{n}.log"))
}

/// The action log of node `n`, one line per run.
fn runs(c: &Cluster, n: &str) -> Vec<String> {
    fs::read_to_string(out(c, n)).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Rows left in node `n`'s action journal.
fn journal(c: &Cluster, n: &str) -> usize {
    let db = c.net.path(&format!("db-{n}")).join(format!("{n}.db"));
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM action_queue", [], |r| r.get::<_, i64>(0)).unwrap()
        as usize
}

/// `printf` each argument as `<arg>`: one line per run, arguments visible.
const RECORD: &str = "exec \"printf 'run' >> @OUT@; printf ' <%s>' %% >> @OUT@; echo >> @OUT@\";";

fn expected(c: &Cluster, n: &str, rels: &[&str]) -> String {
    let mut line = String::from("run");
    for r in rels {
        line.push_str(&format!(" <{}>", c.root(n).join(r).display()));
    }
    line
}

#[test]
fn three_matching_changes_run_the_action_once_on_each_receiver() {
    let body = format!("pattern %p%/etc/nginx/*;\n{RECORD}");
    let c = cluster("three_matching_changes_run_the_action_once_on_each_receiver", &body);
    let files = ["etc/nginx/a.conf", "etc/nginx/b.conf", "etc/nginx/c.conf"];
    for f in files {
        c.write("n1", f, b"x\n");
    }
    c.write("n1", "www/index.html", b"not matching\n");
    c.x_ok("n1");
    // The receivers' actions ran before their sessions ended: no waiting needed.
    // (etc and etc/nginx are created too, but only etc/nginx/* matches.)
    for n in ["n2", "n3"] {
        assert_eq!(runs(&c, n), vec![expected(&c, n, &files)], "on {n}");
    }
    assert!(runs(&c, "n1").is_empty(), "no do-local: nothing runs where the change was made");
    for n in NODES {
        assert_eq!(journal(&c, n), 0, "the journal of {n} is settled");
    }

    // A no-op run runs nothing anywhere.
    c.x_ok("n1");
    c.x_ok("n2");
    for n in ["n2", "n3"] {
        assert_eq!(runs(&c, n).len(), 1, "a no-op run ran the action on {n}");
    }
    // A change to a file the pattern does not match runs nothing.
    c.write("n1", "www/index.html", b"changed, still not matching\n");
    c.x_ok("n1");
    assert_eq!(
        fs::read(c.root("n3").join("www/index.html")).unwrap(),
        b"changed, still not matching\n"
    );
    for n in ["n2", "n3"] {
        assert_eq!(runs(&c, n).len(), 1, "a non-matching change ran the action on {n}");
    }
    // A touch (mtime only) is no real change: synced, no action.
    let t = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(c.root("n1").join(files[0]))
        .unwrap()
        .set_modified(t)
        .unwrap();
    c.x_ok("n1");
    c.assert_converged();
    assert_eq!(runs(&c, "n2").len(), 1, "an mtime-only change ran the action");
    // A delete is a real change: the deleted path is passed.
    fs::remove_file(c.root("n1").join(files[1])).unwrap();
    c.x_ok("n1");
    assert_eq!(runs(&c, "n3"), vec![expected(&c, "n3", &files), expected(&c, "n3", &files[1..2])]);
}

#[test]
fn content_already_there_runs_nothing_and_leaves_no_journal() {
    let body = format!("pattern %p%/etc/*;\n{RECORD}");
    let c = cluster("content_already_there_runs_nothing_and_leaves_no_journal", &body);
    // The same file made on every node independently: the push finds it in
    // place (only the mtime differs), which is no change to act on.
    for n in NODES {
        c.write(n, "etc/same.conf", b"identical\n");
        c.write(n, "etc/other", b"identical too\n");
    }
    c.x_ok("n1");
    c.assert_converged();
    for n in NODES {
        assert!(runs(&c, n).is_empty(), "{n} ran an action for content it had: {:?}", runs(&c, n));
        assert_eq!(journal(&c, n), 0, "rows journalled ahead on {n} were not dropped");
    }
}

#[test]
fn do_local_also_runs_where_the_change_was_made_and_do_local_only_only_there() {
    let body = format!("pattern %p%/etc/*;\n{RECORD}\ndo-local;");
    let mut c = cluster("do_local_also_runs_where_the_change_was_made", &body);
    let files = ["etc/a", "etc/b", "etc/c"];
    for f in files {
        c.write("n1", f, b"1\n");
    }
    c.x_ok("n1");
    for n in NODES {
        assert_eq!(runs(&c, n), vec![expected(&c, n, &files)], "do-local, on {n}");
    }
    // A no-op run runs nothing, locally either.
    c.x_ok("n1");
    assert_eq!(runs(&c, "n1").len(), 1);

    let body = format!("pattern %p%/etc/*;\n{RECORD}\ndo-local-only;");
    configure(&mut c, &body);
    for f in files {
        c.write("n1", f, b"2\n");
    }
    c.x_ok("n1");
    assert_eq!(runs(&c, "n1"), vec![expected(&c, "n1", &files); 2], "do-local-only runs here");
    for n in ["n2", "n3"] {
        assert_eq!(fs::read(c.root(n).join("etc/b")).unwrap(), b"2\n");
        assert_eq!(runs(&c, n).len(), 1, "do-local-only ran on the receiver {n}");
    }
}

#[test]
fn overlapping_runs_from_two_nodes_share_runs_that_never_overlap() {
    // Each run writes `start`, its paths, then `end`, slowly: two runs at once
    // would interleave their lines.
    let body = "pattern %p%/etc/*;
        exec \"echo start >> @OUT@; sleep 0.3; printf '%s\\n' %% >> @OUT@; echo end >> @OUT@\";";
    let c = cluster("overlapping_runs_from_two_nodes_share_runs", body);
    let mut want = BTreeSet::new();
    for i in 0..20 {
        c.write("n1", &format!("etc/from-n1-{i}"), b"1\n");
        c.write("n2", &format!("etc/from-n2-{i}"), b"2\n");
        for n in ["n1", "n2"] {
            want.insert(c.root("n3").join(format!("etc/from-{n}-{i}")).display().to_string());
        }
    }
    let x = |n: &str| c.net.csync_std(n).args(["-x", "--timeout", "2"]).output().unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| x("n1"));
        let b = s.spawn(|| x("n2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (n, o) in [("n1", &a), ("n2", &b)] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "csync -x on {n} failed:\n{err}");
    }
    for p in &want {
        assert!(Path::new(p).exists(), "{p} did not reach n3");
    }

    let lines = runs(&c, "n3");
    let mut seen = BTreeSet::new();
    let mut executions = 0;
    let mut inside = false;
    for l in &lines {
        match l.as_str() {
            "start" => {
                assert!(!inside, "two runs overlapped on n3:\n{}", lines.join("\n"));
                inside = true;
                executions += 1;
            }
            "end" => {
                assert!(inside, "unbalanced log:\n{}", lines.join("\n"));
                inside = false;
            }
            p => {
                assert!(inside, "path outside a run:\n{}", lines.join("\n"));
                assert!(seen.insert(p.to_string()), "{p} given twice:\n{}", lines.join("\n"));
            }
        }
    }
    assert!(!inside);
    assert_eq!(seen, want, "n3's action must see every path it received");
    assert!((1..=2).contains(&executions), "{executions} runs for two pushing runs");
}

#[test]
fn hostile_file_names_reach_the_command_as_single_arguments() {
    let body = format!("pattern %p%/in/*;\n{RECORD}");
    let c = cluster("hostile_file_names_reach_the_command_as_single_arguments", &body);
    // The command runs with the scratch dir as a possible target of `touch`.
    let names = [
        "x; touch CANARY",
        "$(touch CANARY2)",
        "`touch CANARY3`",
        "a b && touch CANARY4",
        "q'\"|touch CANARY5",
        "*",
    ];
    for n in names {
        c.write("n1", &format!("in/{n}"), b"data\n");
    }
    c.x_ok("n1");
    for n in ["n2", "n3"] {
        let got = runs(&c, n);
        assert_eq!(got.len(), 1, "{got:?}");
        for name in names {
            let arg = format!("<{}>", c.root(n).join("in").join(name).display());
            assert!(got[0].contains(&arg), "{name:?} is not one argument on {n}: {}", got[0]);
        }
        for canary in ["CANARY", "CANARY2", "CANARY3", "CANARY4", "CANARY5"] {
            // Actions run in `/`; a spliced name would also have run there.
            assert!(!Path::new("/").join(canary).exists(), "{canary} exists: injection");
            assert!(!c.root(n).join("in").join(canary).exists(), "{canary}: injection");
        }
        assert_eq!(fs::read(c.root(n).join("in/x; touch CANARY")).unwrap(), b"data\n");
    }
}

#[test]
fn an_action_past_its_timeout_is_killed_and_the_run_fails() {
    let body = "pattern %p%/etc/*;
        exec \"echo started >> @OUT@; sleep 30; echo finished >> @OUT@\";
        timeout 1;
        do-local;";
    let c = cluster("an_action_past_its_timeout_is_killed_and_the_run_fails", body);
    c.write("n1", "etc/slow.conf", b"x\n");
    let started = std::time::Instant::now();
    let (code, _, err) = c.x("n1");
    assert_eq!(code, 1, "a killed action fails the run:\n{err}");
    assert!(started.elapsed() < Duration::from_secs(25), "the timeout did not hold");
    // Reported for the local run and for each peer, naming the command.
    assert!(err.contains("csync: action 'echo started"), "{err}");
    for n in ["n2", "n3"] {
        assert!(err.contains(&format!("csync: peer {n}: action 'echo started")), "{err}");
        assert!(err.contains("1 s timeout: killed"), "{err}");
    }
    for n in NODES {
        assert_eq!(runs(&c, n), vec!["started"], "on {n}: killed before it finished");
    }
    // The file itself synced, and the failed action is not run again.
    assert_eq!(fs::read(c.root("n2").join("etc/slow.conf")).unwrap(), b"x\n");
    c.x_ok("n1");
    assert_eq!(runs(&c, "n2"), vec!["started"]);
}

#[test]
fn an_action_interrupted_by_a_daemon_kill_runs_on_the_next_run() {
    // While `block` exists the action waits, recording its shell's pid (the
    // leader of its process group): the daemon is killed then.
    let body = "pattern %p%/etc/*;
        exec \"echo $$ > @DIR@/pgid; while [ -e @DIR@/block ]; do sleep 0.05; done; printf 'ran' >> @OUT@; printf ' <%s>' %% >> @OUT@; echo >> @OUT@\";";
    let mut c = cluster("an_action_interrupted_by_a_daemon_kill_runs_on_the_next_run", body);
    let dir = scratch(&c, "n2");
    let pgid = |old: i32| {
        wait_until(Duration::from_secs(20), || {
            let p: i32 = fs::read_to_string(dir.join("pgid")).ok()?.trim().parse().ok()?;
            (p != old).then_some(p)
        })
        .expect("the action did not start on n2")
    };
    fs::write(dir.join("block"), "").unwrap();
    c.write("n1", "etc/app.conf", b"v1\n");
    let mut push = c.net.csync_std("n1").args(["-x", "--timeout", "2"]).spawn().unwrap();
    let first = pgid(0);
    // The shell writes its pid before the daemon has journalled it as
    // running (a loaded machine widens that gap): killing the daemon in
    // between would leave nothing saying which command to kill.
    let db = c.net.path("db-n2").join("n2.db");
    wait_until(Duration::from_secs(20), || {
        let conn = rusqlite::Connection::open(&db).ok()?;
        let q = "SELECT count(*) FROM action_queue WHERE running IS NOT NULL";
        (conn.query_row(q, [], |r| r.get::<_, i64>(0)).ok()? > 0).then_some(())
    })
    .expect("the running action was not journalled on n2");
    // The file is applied; its action is running: kill the daemon (its
    // command goes on, orphaned, as it would without systemd's cleanup).
    assert_eq!(fs::read(c.root("n2").join("etc/app.conf")).unwrap(), b"v1\n");
    c.stop("n2");
    // The pusher learns that the end of the session was lost.
    assert_eq!(push.wait().unwrap().code(), Some(1));
    assert!(runs(&c, "n2").is_empty());

    // The next run of n2 (here: its daemon starting again) kills the leftover
    // command and runs the action again.
    c.start("n2");
    let second = pgid(first);
    // Gone, or a zombie nobody reaped yet (this container's init may not).
    let state = fs::read_to_string(format!("/proc/{first}/stat")).unwrap_or_default();
    let running = state.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z'));
    assert!(!running, "the leftover command still runs: {state}");
    fs::remove_file(dir.join("block")).unwrap();
    let want = format!("ran <{}>", c.root("n2").join("etc/app.conf").display());
    wait_until(Duration::from_secs(20), || (runs(&c, "n2") == vec![want.clone()]).then_some(()))
        .unwrap_or_else(|| panic!("the journalled action did not run: {:?}", runs(&c, "n2")));
    // Settled: later runs run nothing, and the leftover never finished.
    c.x_ok("n1");
    c.x_ok("n2");
    assert_eq!(runs(&c, "n2"), vec![want], "run exactly once (pgid {second})");
    assert_eq!(journal(&c, "n2"), 0);
}

#[test]
fn without_logfile_the_output_and_status_go_to_the_node_log() {
    let body = "pattern %p%/etc/*;
        exec \"echo hello from the action; exit 3\";";
    let c = cluster("without_logfile_the_output_and_status_go_to_the_node_log", body);
    c.write("n1", "etc/f", b"x\n");
    let (code, _, err) = c.x("n1");
    assert_eq!(code, 1, "a failed action on a peer fails the run: {err}");
    assert!(err.contains("csync: peer n2: action 'echo hello from the action; exit 3' (group g) for 1 paths: exit status 3"), "{err}");
    let d = c.daemons[1].as_ref().unwrap();
    d.wait_log("action 'echo hello from the action; exit 3': hello from the action");
    let log = d.wait_log("exit status 3");
    assert!(log.contains(&c.root("n2").join("etc/f").display().to_string()), "{log}");
}

#[test]
fn inetd_style_listener_runs_the_action_before_the_session_ends() {
    let body = format!("pattern %p%/etc/*;\n{RECORD}");
    let mut c = cluster("inetd_style_listener_runs_the_action_before_the_session_ends", &body);
    c.stop("n2");
    // Play inetd: each connection's socket is a new `csync -i`'s stdin and
    // stdout. n1 meets n2 for the first time: one connection lists n2's
    // index (first contact), the next one pushes.
    let listener = std::net::TcpListener::bind((c.net.addr("n2").as_str(), c.net.port)).unwrap();
    let net_server = |_| {
        let mut server = c.net.csync_std("n2");
        server.arg("-i");
        server
    };
    let servers: Vec<_> = (0..2).map(net_server).collect();
    let inetd = std::thread::spawn(move || {
        let mut last = (None, String::new());
        for mut server in servers {
            let (sock, _) = listener.accept().unwrap();
            let out = server
                .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                    sock.try_clone().unwrap(),
                )))
                .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(sock)))
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap();
            last = (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        last
    });
    c.write("n1", "etc/a", b"1\n");
    c.write("n1", "etc/b", b"2\n");
    let (code, _, err) = c.run("n1", &["-x", "-P", "n2"]);
    assert_eq!(code, 0, "{err}");
    // The one-connection process ran the action before it answered the Bye.
    assert_eq!(runs(&c, "n2"), vec![expected(&c, "n2", &["etc/a", "etc/b"])]);
    let (code, log) = inetd.join().unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(journal(&c, "n2"), 0);
}

#[test]
fn an_action_may_run_csync_itself() {
    // The nested run must not wait for the lock its parent action holds
    // (it would until the timeout killed it, failing the run).
    let c = Cluster::new("an_action_may_run_csync_itself", "none");
    let nested = format!(
        "CSYNC2_SYSTEM_DIR={} {} -N n1 -p {} -D {} -c",
        c.net.sysdir("n1").display(),
        crate::net_util::bin().display(),
        c.net.port,
        c.net.path("db-n1").display()
    );
    let body = format!(
        "pattern %p%/etc/*;\nexec \"{nested} && echo nested ok >> @OUT@\";\ntimeout 30;\ndo-local-only;"
    );
    let mut c = c;
    configure(&mut c, &body);
    c.write("n1", "etc/a", b"1\n");
    let (code, _, err) = c.x("n1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(runs(&c, "n1"), vec!["nested ok"]);
}

#[test]
fn marking_by_hand_runs_the_do_local_actions_of_the_changes_it_finds() {
    let body = format!("pattern %p%/etc/*;\n{RECORD}\ndo-local;");
    let c = cluster("marking_by_hand_runs_the_do_local_actions", &body);
    c.write("n1", "etc/a", b"1\n");
    let path = c.root("n1").join("etc/a");
    let (code, _, err) = c.run("n1", &["-m", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(runs(&c, "n1"), vec![expected(&c, "n1", &["etc/a"])]);
    assert_eq!(journal(&c, "n1"), 0);
    // The daemons still answer pings (nothing pending is run on their time).
    let (code, out, err) = c.run("n2", &["--ping", "n1"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `csync --status` on node `n`: (exit code, stdout).
fn status(c: &Cluster, n: &str) -> (i32, String) {
    let (code, out, err) = c.run(n, &["--status"]);
    assert!(err.is_empty(), "--status on {n} wrote to stderr: {err}");
    (code, out)
}

/// Node `n`'s action log file, as `--status` names it.
fn out_log(c: &Cluster, n: &str) -> String {
    out(c, n).display().to_string()
}

/// The `--status` line for a failed action of `cmd` on `host`, up to the
/// date (which the test cannot know to the second).
fn failed_prefix(host: &str, cmd: &str, why: &str) -> String {
    format!("failed action on {host}: '{cmd}' (group g), {why}, since ")
}

#[test]
fn a_failed_action_stays_in_status_on_both_sides_until_it_runs_successfully() {
    // Fails (exit 3) until the test creates the flag file in the node's scratch dir.
    let body = "pattern %p%/etc/*;
        exec \"test -e @DIR@/fixed || exit 3\";
        logfile \"@OUT@\";";
    let c = cluster("a_failed_action_stays_in_status_on_both_sides", body);
    let cmd = |n: &str| format!("test -e {}/fixed || exit 3", scratch(&c, n).display());
    c.write("n1", "etc/a.conf", b"1\n");
    let (code, _, err) = c.x("n1");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("csync: peer n2: action '{}'", cmd("n2"))), "{err}");

    // The pusher keeps both peers' failures; each names the peer's logfile.
    let (code, out) = status(&c, "n1");
    assert_eq!(code, 1, "failed actions keep --status failing on the pusher:\n{out}");
    for n in ["n2", "n3"] {
        let line = out.lines().find(|l| l.starts_with(&format!("failed action on {n}:")));
        let line = line.unwrap_or_else(|| panic!("no failure of {n}:\n{out}"));
        assert!(line.starts_with(&failed_prefix(n, &cmd(n), "exit status 3")), "{line}");
        assert!(line.ends_with(&format!(", once; see {} on {n}", out_log(&c, n))), "{line}");
    }
    assert!(!out.contains("failed action on n1"), "nothing ran on n1:\n{out}");
    // ... and each peer keeps its own.
    for n in ["n2", "n3"] {
        let (code, out) = status(&c, n);
        assert_eq!(code, 1, "a failed action keeps --status failing on {n}:\n{out}");
        assert!(out.contains(&failed_prefix(n, &cmd(n), "exit status 3")), "{out}");
        assert_eq!(out.matches("failed action on").count(), 1, "{out}");
    }

    // Failing again is counted, not listed twice; JSON has stable types.
    c.write("n1", "etc/a.conf", b"2\n");
    assert_eq!(c.x("n1").0, 1);
    let (code, out, _) = c.run("n1", &["--status", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let failed = v["failed_actions"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{out}");
    let f = &failed[0];
    assert_eq!(f["host"], "n2");
    assert_eq!(f["group"], "g");
    assert_eq!(f["command"], cmd("n2"));
    assert_eq!(f["logfile"], out_log(&c, "n2"));
    assert_eq!(f["status"], "exit status 3");
    assert_eq!((f["paths"].as_u64(), f["failures"].as_u64()), (Some(1), Some(2)));
    assert!(f["first_failed_at"].as_i64().unwrap() <= f["last_failed_at"].as_i64().unwrap());
    let (_, out) = status(&c, "n3");
    assert!(out.contains(", 2 times; see "), "{out}");

    // Fixed on n2 only: n2's failure clears on both sides, n3's stays.
    fs::write(scratch(&c, "n2").join("fixed"), "").unwrap();
    c.write("n1", "etc/a.conf", b"3\n");
    assert_eq!(c.x("n1").0, 1, "n3 still fails");
    let (code, out) = status(&c, "n1");
    assert_eq!(code, 1);
    assert!(!out.contains("failed action on n2"), "{out}");
    assert!(out.contains(&failed_prefix("n3", &cmd("n3"), "exit status 3")), "{out}");
    assert_eq!(status(&c, "n2"), (0, "node n2\nnothing pending\n".to_string()));

    // Fixed everywhere: the next push that runs it clears the rest.
    fs::write(scratch(&c, "n3").join("fixed"), "").unwrap();
    c.write("n1", "etc/a.conf", b"4\n");
    c.x_ok("n1");
    for n in NODES {
        assert_eq!(status(&c, n), (0, format!("node {n}\nnothing pending\n")), "on {n}");
    }
}

#[test]
fn failed_actions_can_be_acknowledged_by_hand() {
    // No logfile: the output went to csync's log on that host. With
    // do-local it fails on the pushing node too.
    let body = "pattern %p%/etc/*;
        exec \"exit 3\";
        do-local;";
    let c = cluster("failed_actions_can_be_acknowledged_by_hand", body);
    c.write("n1", "etc/a.conf", b"1\n");
    assert_eq!(c.x("n1").0, 1);
    let (code, out) = status(&c, "n1");
    assert_eq!(code, 1, "{out}");
    for n in NODES {
        let line = out.lines().find(|l| l.starts_with(&format!("failed action on {n}:")));
        let line = line.unwrap_or_else(|| panic!("no failure of {n}:\n{out}"));
        assert!(line.starts_with(&failed_prefix(n, "exit 3", "exit status 3")), "{line}");
        assert!(line.ends_with(&format!(", once; see csync's log on {n}")), "{line}");
    }
    assert!(out.contains("csync --ack-failed"), "--status says how to acknowledge:\n{out}");

    // A typo is an error, not a silent success.
    let (code, _, err) = c.run("n1", &["--ack-failed", "n9"]);
    assert_eq!(code, 1);
    assert!(err.contains("n9"), "{err}");

    // One host at a time: this node's own failure, then a peer's.
    let (code, out, err) = c.run("n1", &["--ack-failed", "n1"]);
    assert_eq!((code, out.as_str()), (0, "acknowledged 1 failed action on n1\n"), "{err}");
    let (code, out) = status(&c, "n1");
    assert_eq!(code, 1);
    assert!(!out.contains("failed action on n1") && out.contains("failed action on n2"), "{out}");
    let (code, out, _) = c.run("n1", &["--ack-failed", "n2"]);
    assert_eq!((code, out.as_str()), (0, "acknowledged 1 failed action on n2\n"));
    // Without a host: all of them.
    let (code, out, _) = c.run("n1", &["--ack-failed"]);
    assert_eq!((code, out.as_str()), (0, "acknowledged 1 failed action\n"));
    assert_eq!(status(&c, "n1"), (0, "node n1\nnothing pending\n".to_string()));

    // The peers keep theirs until acknowledged there.
    assert_eq!(status(&c, "n2").0, 1);
    let (code, out, _) = c.run("n2", &["--ack-failed"]);
    assert_eq!((code, out.as_str()), (0, "acknowledged 1 failed action\n"));
    assert_eq!(status(&c, "n2").0, 0);
    assert_eq!(status(&c, "n3").0, 1);
}
