//! Issues 13 and 14 tried as an administrator would: what broke, kept fixed.

use predicates::str::contains;

use crate::util::Env;

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
