//! Issues 13 and 14 tried as an administrator would: what broke, kept fixed.

use predicates::str::contains;

use crate::net_util::{Net, TWO_NODES};
use crate::util::{Env, stdout};

const CFG: &str = "
group g {
    host n1 n2@127.0.0.2;
    key csync2.key;
    include %p%;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; }
";

/// `--import-csync2` without a DB reads csync2's default database, as the
/// README and the man page say (clap refused the empty value: "a value is
/// required").
#[test]
fn import_csync2_without_a_db_reads_the_default_one() {
    let env = Env::new();
    env.config(CFG);
    env.write("n1", "a/f", b"hello\n");
    env.csync("n1")
        .arg("--import-csync2")
        .assert()
        .code(1)
        .stderr(contains("/var/lib/csync2/n1.db3: no such csync2 database"));
    env.csync("n1")
        .args(["-C", "web", "--config"])
        .arg(env.etc().join("csync2.cfg"))
        .arg("--import-csync2")
        .assert()
        .code(1)
        .stderr(contains("/var/lib/csync2/n1_web.db3: no such csync2 database"));
}

/// `--status` says, per peer with something pending, when it last took a
/// push (issue 13: "the last successful push and what is pending"): a
/// peer that has been down for a day and one down for a second look alike
/// otherwise.
#[test]
fn status_names_the_last_successful_push_of_a_peer_behind() {
    let net = Net::new("status_names_the_last_successful_push", &["n1", "n2"], TWO_NODES);
    let status = || stdout(&net.csync("n1").arg("--status").output().unwrap());
    let x = |code: i32| {
        net.csync("n1").args(["-x", "--timeout", "1"]).assert().code(code);
    };
    std::fs::write(net.root("n1").join("f"), b"one\n").unwrap();
    x(1);
    let o = status();
    assert!(o.contains("peer n2: 2 entries pending, oldest "), "{o}");
    assert!(o.contains("; never pushed to successfully\n"), "{o}");
    {
        let _d = net.daemon("n2", &["--timeout", "2"]);
        x(0);
    }
    std::fs::write(net.root("n1").join("f"), b"two\n").unwrap();
    x(1);
    let o = status();
    let line = o.lines().find(|l| l.contains("entries pending")).unwrap_or_else(|| panic!("{o}"));
    assert!(line.starts_with("peer n2: 1 entries pending, oldest "), "{o}");
    assert!(line.contains("; last successful push at 20") && line.ends_with(" UTC"), "{o}");
}

/// Under a unit, csync's `csync: ...` lines (a peer that cannot be reached,
/// a bad config) have no priority prefix of their own; without the unit's
/// `SyslogLevel=err` the journal filed them as info, so `journalctl -p
/// warning` showed nothing of a failing `csync -x`. And the watcher's unit
/// must not start beside another listener on the same port.
#[test]
fn units_log_csync_messages_as_errors_and_keep_one_listener() {
    let unit = |name: &str| {
        std::fs::read_to_string(crate::util::repo().join("contrib/systemd").join(name)).unwrap()
    };
    for name in ["csync-sync.service", "csync-daemon.service", "csync-watch.service"] {
        let text = unit(name);
        assert!(text.lines().any(|l| l == "SyslogLevel=err"), "{name}:\n{text}");
    }
    let watch = unit("csync-watch.service");
    let conflicts = watch.lines().find(|l| l.starts_with("Conflicts=")).unwrap_or_default();
    for other in ["csync-daemon.service", "csync-daemon.socket", "csync.socket"] {
        assert!(conflicts.split(['=', ' ']).any(|u| u == other), "{other}: {conflicts}");
    }
}
