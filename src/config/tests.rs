//! Tests of `config/mod.rs` (kept apart so the module itself stays readable).

use super::*;
use crate::diag::Severity;
use tempfile::TempDir;

const KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._";

/// A system dir with `good.key`, `short.key` and `bad.key`.
fn sysdir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("good.key"), format!("{KEY}\n")).unwrap();
    fs::write(dir.path().join("short.key"), "abc\n").unwrap();
    fs::write(dir.path().join("bad.key"), format!("{KEY}!\n")).unwrap();
    dir
}

fn opts(dir: &TempDir, me: &str) -> LoadOptions {
    LoadOptions { myname: me.into(), sysdir: dir.path().into(), active_groups: None }
}

fn ok(text: &str) -> Config {
    let dir = sysdir();
    match load_str("t.cfg", text, &opts(&dir, "n1")) {
        Ok(c) => c,
        Err(d) => panic!("unexpected errors:\n{}", crate::diag::render(&d)),
    }
}

/// Errors only, as (message, line, col).
fn errs(text: &str) -> Vec<(String, u32, u32)> {
    let dir = sysdir();
    let d = load_str("t.cfg", text, &opts(&dir, "n1")).expect_err("config should fail");
    d.iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.message.clone(), d.span.line, d.span.col))
        .collect()
}

/// The only error of `text`, with its help line.
fn one(text: &str) -> (String, u32, u32, Option<String>) {
    let dir = sysdir();
    let d = load_str("t.cfg", text, &opts(&dir, "n1")).expect_err("config should fail");
    let e: Vec<_> = d.into_iter().filter(|d| d.severity == Severity::Error).collect();
    assert_eq!(e.len(), 1, "expected one error, got:\n{}", crate::diag::render(&e));
    let e = &e[0];
    (e.message.clone(), e.span.line, e.span.col, e.help.clone())
}

fn e(msg: &str, line: u32, col: u32) -> (String, u32, u32) {
    (msg.to_owned(), line, col)
}

const G: &str = "group g { host n1 n2; key good.key; include /x; }\n";

#[test]
fn unknown_directive_top_level() {
    let (m, l, c, h) = one(&format!("{G}gruop x {{ host n1; }}\n"));
    assert_eq!((m.as_str(), l, c), ("unknown directive 'gruop' at top level", 2, 1));
    let h = h.unwrap();
    assert!(h.starts_with("did you mean 'group'? valid at top level: group, prefix"), "{h}");
}

#[test]
fn unknown_directive_in_group_and_action() {
    let (m, l, c, h) = one("group g {\n  hots n1;\n  host n1;\n  key good.key;\n}\n");
    assert_eq!((m.as_str(), l, c), ("unknown directive 'hots' in a group block", 2, 3));
    assert!(h.unwrap().starts_with("did you mean 'host'?"));
    let (m, l, c, h) =
        one("group g { host n1; key good.key;\n action { exe \"x\"; exec \"y\"; } }");
    assert_eq!((m.as_str(), l, c), ("unknown directive 'exe' in an action block", 2, 11));
    assert!(h.unwrap().contains("did you mean 'exec'? valid in an action block: pattern"));
}

#[test]
fn misplaced_keyword() {
    let (m, l, c, h) = one(&format!("{G}host n3;\n"));
    assert_eq!((m.as_str(), l, c), ("'host' is not allowed at top level", 2, 1));
    assert!(h.unwrap().starts_with("'host' belongs in a group block"));
}

#[test]
fn missing_semicolon() {
    let (m, l, c, _) = one("group g {\n  host n1\n  key good.key;\n}\n");
    assert_eq!((m.as_str(), l, c), ("missing ';' after 'host' statement", 2, 10));
    let (m, l, c, _) = one("group g { host n1; key good.key }");
    assert_eq!((m.as_str(), l, c), ("missing ';' after 'key' statement", 1, 32));
    let (m, l, c, h) = one("group g { host n1 on; key good.key; }");
    assert_eq!((m.as_str(), l, c), ("'on' is a keyword and cannot be a value of 'host'", 1, 19));
    assert_eq!(h.unwrap(), "to use it as a value, quote it: \"on\"");
    let (m, l, c, _) = one("group g { host n1; key good.key x; }");
    assert_eq!((m.as_str(), l, c), ("unexpected 'x': 'key' takes one value", 1, 33));
}

#[test]
fn unexpected_close_and_unclosed_blocks() {
    let (m, l, c, _) = one(&format!("{G}}}\n"));
    assert_eq!((m.as_str(), l, c), ("unexpected '}': no block is open", 2, 1));
    let (m, l, c, h) = one("group g {\n host n1; key good.key;\n");
    assert_eq!((m.as_str(), l, c), ("unclosed group 'g': missing '}'", 1, 9));
    assert_eq!(h.unwrap(), "the file ends before this block is closed");
    let (m, l, c, _) = one("group g { host n1; key good.key;\n action {\n exec x;\n");
    assert_eq!((m.as_str(), l, c), ("unclosed action block: missing '}'", 2, 9));
    // A new top-level block inside an unclosed one: blame the opening, parse on.
    let t = "group g {\n host n1; key good.key;\ngroup h { host n1; key good.key; }\n";
    let (m, l, c, h) = one(t);
    assert_eq!((m.as_str(), l, c), ("unclosed group 'g': missing '}'", 1, 9));
    assert_eq!(h.unwrap(), "'group' on line 3 belongs at top level: close this block before it");
}

#[test]
fn unterminated_string() {
    let (m, l, c, _) = one(&format!("{G}database \"sqlite3:///x;\n"));
    assert_eq!((m.as_str(), l, c), ("unterminated quoted string", 2, 10));
}

#[test]
fn group_without_key() {
    let (m, l, c, _) = one(&format!("{G}\n  group web {{ host n2; }}\n"));
    assert_eq!((m.as_str(), l, c), ("group 'web' has no key", 3, 3));
}

#[test]
fn key_file_missing_or_invalid() {
    let (m, l, c, _) = one("group g { host n1; key nope.key; }");
    assert_eq!(
        (m.as_str(), l, c),
        ("cannot read key file 'nope.key': No such file or directory", 1, 24)
    );
    let (m, ..) = one("group g { host n1; key short.key; }");
    assert_eq!(
        m,
        "invalid key file 'short.key': the key is 3 characters long; at least 32 are required"
    );
    let (m, ..) = one("group g { host n1; key bad.key; }");
    assert!(m.starts_with("invalid key file 'bad.key': the key contains '!' at position 65"));
    // Non-member groups' keys are not read.
    let c = ok(&format!("{G}group other {{ host n2 n3; key nope.key; }}"));
    assert!(c.groups[1].key.is_none());
    assert!(c.groups[1].key_file.ends_with("nope.key"));
    assert_eq!(c.groups[0].key, Some(GroupKey(KEY.into())));
}

#[test]
fn key_paths() {
    let dir = sysdir();
    let abs = dir.path().join("good.key");
    let text = format!("group g {{ host n1; key {}; }}", abs.display());
    let c = load_str("t.cfg", &text, &opts(&dir, "n1")).unwrap();
    assert_eq!(c.groups[0].key_file, abs);
    let c = ok(G);
    assert!(c.groups[0].key_file.is_absolute());
}

#[test]
fn duplicate_key_and_auto() {
    let got = errs("group g {\n host n1; key good.key; auto first;\n key good.key; auto left;\n}");
    assert_eq!(
        got,
        vec![e("duplicate 'key' in group 'g'", 3, 2), e("duplicate 'auto' in group 'g'", 3, 16)]
    );
}

#[test]
fn unknown_auto() {
    let (m, l, c, h) = one("group g { host n1; key good.key; auto youngest; }");
    assert_eq!((m.as_str(), l, c), ("unknown auto method 'youngest'", 1, 39));
    assert_eq!(
        h.unwrap(),
        "did you mean 'younger'? valid methods: none, first, younger, older, bigger, smaller, left, right"
    );
}

#[test]
fn prefix_errors() {
    let (m, l, c, _) = one("group g { host n1; key good.key;\n include %www%/x; }");
    assert_eq!((m.as_str(), l, c), ("prefix 'www' is not defined (used as '%www%')", 2, 10));
    let t = "prefix www { on n2: /srv; on n3*: /s; }\ngroup g { host n1; key good.key; include %www%; }";
    let (m, l, c, h) = one(t);
    assert_eq!((m.as_str(), l, c), ("prefix 'www' is not defined for host 'n1'", 2, 42));
    assert_eq!(h.unwrap(), "no 'on' entry of prefix 'www' matches 'n1': n2, n3*");
    // Action patterns too, but only in member groups.
    let t = "group g { host n1; key good.key; action { pattern %a%/x; exec y; } }";
    assert_eq!(one(t).0, "prefix 'a' is not defined (used as '%a%')");
    ok(&format!("{G}group o {{ host n2; key k; include %nope%; }}"));
    let (m, l, c, _) = one(&format!("{G}prefix www {{ on *: srv/www; }}"));
    assert_eq!((m.as_str(), l, c), ("prefix path must be absolute, found 'srv/www'", 2, 20));
}

#[test]
fn numbers() {
    let got = errs(&format!(
        "{G}lock-timeout soon;\ngroup h {{ host n2; key k; backup-generations 3x; }}"
    ));
    assert_eq!(
        got,
        vec![
            e("'lock-timeout' needs a whole number, found 'soon'", 2, 14),
            e("'backup-generations' needs a whole number, found '3x'", 3, 46),
        ]
    );
}

#[test]
fn ignore_words() {
    let (m, l, c, h) = one(&format!("{G}ignore uid gdi mod;"));
    assert_eq!((m.as_str(), l, c), ("unknown ignore flag 'gdi'", 2, 12));
    assert_eq!(h.unwrap(), "did you mean 'gid'? valid: uid, gid, mod");
}

#[test]
fn host_without_address() {
    let (m, l, c, _) = one("group g { host n1 n2@; key good.key; }");
    assert_eq!((m.as_str(), l, c), ("host 'n2' has '@' but no address after it", 1, 21));
    let got = errs("group g { host n1 (n2 n3; key good.key; }");
    assert_eq!(got, vec![e("unclosed '(' in host list", 1, 19)]);
}

#[test]
fn invalid_pattern() {
    // The reason is pattern::check's; only the framing and position are ours.
    let (m, l, c, _) = one("group g { host n1; key good.key; exclude *.[ch; }");
    assert!(m.starts_with("invalid pattern '*.[ch': "), "{m}");
    assert_eq!((l, c), (1, 42));
}

#[test]
fn includes() {
    let (m, l, c, _) = one(&format!("{G}config nowhere.cfg;"));
    assert_eq!(
        (m.as_str(), l, c),
        ("cannot read included config file 'nowhere.cfg': No such file or directory", 2, 8)
    );
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("good.key"), KEY).unwrap();
    fs::write(
        dir.path().join("main.cfg"),
        "group g {\n config sub/hosts.cfg;\n key good.key;\n}\n",
    )
    .unwrap();
    fs::write(dir.path().join("sub/hosts.cfg"), "host n1;\nconfig more.cfg").unwrap();
    fs::write(dir.path().join("sub/more.cfg"), "host n2; include /srv;").unwrap();
    let o = opts(&dir, "n1");
    let c = load(&dir.path().join("main.cfg"), &o).unwrap();
    let hosts: Vec<&str> = c.groups[0].hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(hosts, ["n1", "n2"]);
    assert_eq!(c.groups[0].rules[0].pattern, "/srv");
    assert!(c.groups[0].rules[0].span.file.ends_with("sub/more.cfg"));

    fs::write(dir.path().join("loop.cfg"), "config loop.cfg;\n").unwrap();
    let d = load(&dir.path().join("loop.cfg"), &o).unwrap_err();
    assert_eq!(d[0].message, "config includes nested more than 10 levels deep");
}

#[test]
fn not_a_member() {
    let dir = sysdir();
    let d = load_str("t.cfg", G, &opts(&dir, "n9")).unwrap_err();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "this node (n9) is not a member of any group");
    assert_eq!(d[0].span.line, 0);
    assert!(crate::diag::render(&d).starts_with("t.cfg: error: this node (n9)"));
    assert!(d[0].help.as_deref().unwrap().contains("-N NAME"));
    // -G filtering does not make it an error here: the CLI names the
    // groups -G got wrong.
    let o = LoadOptions { active_groups: Some(vec!["other".into()]), ..opts(&dir, "n1") };
    let c = load_str("t.cfg", G, &o).unwrap();
    assert_eq!(c.my_groups().count(), 0);
}

#[test]
fn warnings_do_not_fail() {
    let c = ok(&format!(
        "nossl * *;\nno-cygwin-lowercase;\n{G}group h {{ host n1; key good.key; action {{ pattern /x; }} }}"
    ));
    assert_eq!(c.warnings.len(), 3);
    assert!(
        c.warnings[0].starts_with("t.cfg:1:1: warning: nossl is ignored: csync always uses TLS")
    );
    assert!(c.warnings[1].starts_with("t.cfg:2:1: warning: no-cygwin-lowercase is ignored"));
    assert!(
        c.warnings[2].starts_with("t.cfg:4:34: warning: action has no 'exec'"),
        "{}",
        c.warnings[2]
    );
    assert_eq!(c.nossl, vec![("*".to_owned(), "*".to_owned())]);
}

#[test]
fn all_errors_in_source_order() {
    let t = "group g {\n host n1 n2;\n auto best;\n}\nprefix p { on n1: rel; }\nfoo;\n";
    let got = errs(t);
    assert_eq!(
        got,
        vec![
            e("group 'g' has no key", 1, 1),
            e("unknown auto method 'best'", 3, 7),
            e("prefix path must be absolute, found 'rel'", 5, 19),
            e("unknown directive 'foo' at top level", 6, 1),
        ]
    );
}

#[test]
fn resolution() {
    let c =
        ok("group web {\n host N1@n1-sync n2;\n host (n3 n4@10.0.0.4) n5;\n key good.key;\n}\n\
                group { host n2; key x; }\ngroup { host n1; key good.key; }\n");
    let g = &c.groups[0];
    assert!(g.is_member);
    assert_eq!(g.backup_generations, 3);
    assert_eq!(g.auto, AutoMethod::None);
    let hosts: Vec<(&str, Option<&str>, bool)> =
        g.hosts.iter().map(|h| (h.name.as_str(), h.addr.as_deref(), h.receive_only)).collect();
    assert_eq!(
        hosts,
        [
            ("n1", Some("n1-sync"), false),
            ("n2", None, false),
            ("n3", None, true),
            ("n4", Some("10.0.0.4"), true),
            ("n5", None, false)
        ]
    );
    assert_eq!(g.me("n1").unwrap().addr.as_deref(), Some("n1-sync"));
    assert_eq!(g.peers("n1").count(), 4);
    let names: Vec<&str> = c.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "group_1", "group_2"]);
    assert!(!c.groups[1].is_member);
    assert_eq!(c.my_groups().count(), 2);
    assert_eq!(c.myname, "n1");
}

#[test]
fn active_groups() {
    let dir = sysdir();
    let t = "group a { host n1; key good.key; }\ngroup b { host n1; key nope.key; }";
    let o = LoadOptions { active_groups: Some(vec!["a".into()]), ..opts(&dir, "N1") };
    let c = load_str("t.cfg", t, &o).unwrap();
    assert!(c.groups[0].is_member);
    assert!(!c.groups[1].is_member);
}

#[test]
fn rules_compare_fix_and_slashes() {
    let c = ok(
        "group g { host n1; key good.key;\n include /etc/ / %p%//;\n exclude *~ .*;\n compare a b/ c; }\nprefix p { on *: /srv/p/; }",
    );
    let rules: Vec<(RuleKind, &str)> =
        c.groups[0].rules.iter().map(|r| (r.kind, r.pattern.as_str())).collect();
    use RuleKind::*;
    assert_eq!(
        rules,
        [
            (Include, "/etc"),
            (Include, "/"),
            (Include, "%p%"),
            (Exclude, "*~"),
            (Exclude, ".*"),
            (Compare, "a"),
            (Compare, "b"),
            (Compare, "c")
        ]
    );
    assert_eq!((c.groups[0].rules[0].span.line, c.groups[0].rules[0].span.col), (2, 10));
}

#[test]
fn prefixes() {
    let c = ok(&format!(
        "prefix www {{ on N2: /a; on n[12]: /b/; on *: /c; }}\nprefix x {{ on alpha:/y; }}\n{G}"
    ));
    assert_eq!(c.prefixes[0].entries[0], ("n2".to_owned(), PathBuf::from("/a")));
    assert_eq!(c.prefix_root("www"), Some(&PathBuf::from("/b")));
    assert_eq!(c.prefixes[1].entries, [("alpha".to_owned(), PathBuf::from("/y"))]);
    assert_eq!(c.prefix_root("x"), None);
}

#[test]
fn actions_and_globals() {
    let c = ok(
        "ignore uid mod;\ndatabase \"sqlite3:///x.db\";\ntempdir /tmp/cs;\nlock-timeout 30;\n\
                group g { host n1; key good.key; backup-directory /var/b; backup-generations 5;\n auto younger;\n\
                action { pattern /etc/a/* /etc/b/; exec \"one %%\" two; logfile /var/log/a; do-local; }\n\
                action { exec x; do-local-only; } }",
    );
    assert_eq!(c.ignore, Ignore { uid: true, gid: false, mode: true });
    assert_eq!(c.database.as_deref(), Some("sqlite3:///x.db"));
    assert_eq!(c.tempdir, Some(PathBuf::from("/tmp/cs")));
    assert_eq!(c.lock_timeout, Some(30));
    let g = &c.groups[0];
    assert_eq!(g.auto, AutoMethod::Younger);
    assert_eq!(g.backup_generations, 5);
    assert_eq!(g.backup_directory, Some(PathBuf::from("/var/b")));
    let a = &g.actions[0];
    assert_eq!(a.patterns, ["/etc/a/*", "/etc/b/"]);
    assert_eq!(a.exec, ["one %%", "two"]);
    assert_eq!(a.logfile, Some(PathBuf::from("/var/log/a")));
    assert!(a.do_local && !a.do_local_only);
    assert!(g.actions[1].do_local && g.actions[1].do_local_only);
    assert!(c.warnings.is_empty());
}

#[test]
fn rendering() {
    let dir = sysdir();
    let d = load_str(
        "t.cfg",
        "group g {\n\thost n1;\n\tkey good.key;\n\tauto youngest;\n}\n",
        &opts(&dir, "n1"),
    )
    .unwrap_err();
    assert_eq!(
        crate::diag::render(&d),
        "t.cfg:4:7: error: unknown auto method 'youngest'\n \
         4 |  auto youngest;\n   |       ^^^^^^^^\n \
         help: did you mean 'younger'? valid methods: none, first, younger, older, bigger, smaller, left, right\n"
    );
}

#[test]
fn brace_stuck_to_group_name() {
    let (m, l, c, _) = one("group web{\n host n1;\n key good.key;\n}\n");
    assert_eq!((m.as_str(), l, c), ("'web{' is read as one word: put a space before '{'", 1, 7));
}

#[test]
fn one_error_per_bad_statement() {
    let got = errs(&format!("{G}prefix p {{ on: /x; on n1: /y; }}\ntempdir (x);"));
    assert_eq!(
        got,
        vec![
            e("'on' needs a host pattern, found ':'", 2, 14),
            e("'tempdir' needs a directory, found '('", 3, 9)
        ]
    );
}

#[test]
fn receive_policy() {
    let c = ok(G);
    let g = &c.groups[0];
    assert!(!g.allow_devices && !g.allow_setid && g.owner_range.is_none());
    let c = ok("group g { host n1; key good.key; allow-devices; allow-setid; owners 1000-1999; }");
    let g = &c.groups[0];
    assert!(g.allow_devices && g.allow_setid);
    assert_eq!(g.owner_range, Some((1000, 1999)));
    // Soft keywords: still plain words as values, so csync2 configs keep working.
    let c = ok("group g { host n1 owners; key good.key; exclude owners allow-setid; }");
    assert_eq!(c.groups[0].hosts[1].name, "owners");
    assert_eq!(c.groups[0].rules[1].pattern, "allow-setid");
    let (m, l, c, _) = one("group g { host n1; key good.key; owners 5-x; }");
    assert_eq!(
        (m.as_str(), l, c),
        ("'owners' needs a range MIN-MAX of numeric ids, found '5-x'", 1, 41)
    );
    let (m, ..) = one("group g { host n1; key good.key; owners 9-3; }");
    assert_eq!(m, "'owners' range '9-3' is empty: 9 is above 3");
    let (m, ..) = one("group g { host n1; key good.key; allow-devices 1; }");
    assert_eq!(m, "unexpected '1': 'allow-devices' takes no value");
    let (m, l, c, _) = one("group g { host n1; key good.key;\n allow-devices\n owners 1-2; }");
    assert_eq!((m.as_str(), l, c), ("missing ';' after 'allow-devices' statement", 2, 15));
}

#[test]
fn database_urls() {
    for ok_spec in ["/var/lib/csync", "sqlite3:///x.db", "sqlite:///x", "SQLite3:///x", "/a://b"] {
        assert!(check_database(ok_spec).is_ok(), "{ok_spec}");
    }
    for bad in ["mysql://u:p@h/db", "pgsql://h/", "postgres://h/db", "redis://h"] {
        assert!(check_database(bad).is_err(), "{bad}");
    }
    let (m, l, c, h) = one(&format!("{G}database \"postgres://u@h/db\";"));
    assert_eq!(
        (m.as_str(), l, c),
        (
            "database URL 'postgres://…' (PostgreSQL) is not supported: csync keeps its index in SQLite",
            2,
            10
        )
    );
    assert!(h.unwrap().contains("sqlite3:///path"));
}

#[test]
fn lint_warnings() {
    let c = ok(
        "group g { host n1; key good.key;\n include /srv etc/nginx;\n backup-generations 2;\n action { exec x; do-local; do-local-only; } }",
    );
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("t.cfg:2:15: warning: pattern 'etc/nginx' can never match"));
    assert!(c.warnings[0].contains("did you mean '/etc/nginx'?"));
    assert!(c.warnings[1].starts_with("t.cfg:3:21: warning: 'backup-generations' has no effect without 'backup-directory' in group 'g'"));
    assert!(
        c.warnings[2]
            .starts_with("t.cfg:4:19: warning: action has both 'do-local' and 'do-local-only'"),
        "{}",
        c.warnings[2]
    );
    // Basename patterns without '/' and path patterns are fine.
    assert!(
        ok("group g { host n1; key good.key; include /srv; exclude *.o .git; }")
            .warnings
            .is_empty()
    );
}

#[test]
fn nested_roots() {
    let w = |text: &str| ok(text).warnings;
    // Same group: an include the outer root already manages.
    let got = w("group g { host n1; key good.key; include /srv;\n include /srv/www; }");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("t.cfg:2:10: warning: include root '/srv/www' lies inside include root '/srv' (t.cfg:1:42) of the same group 'g'"), "{}", got[0]);
    // ... but re-including below an exclude is the usual idiom.
    assert!(
        w("group g { host n1; key good.key; include /srv; exclude /srv/a; include /srv/a/b; }")
            .is_empty()
    );
    // Across groups, also through prefixes whose local roots nest.
    let got = w("prefix a { on *: /srv; }\nprefix b { on n1: /srv/www; }\n\
                 group g { host n1; key good.key; include %a%; }\n\
                 group h { host n1; key good.key; include %b%; }");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("include root '%b%' of group 'h' lies inside include root '%a%' (t.cfg:3:42) of group 'g'"), "{}", got[0]);
    // A deliberate split (the outer group excludes it) is not reported.
    assert!(
        w("group g { host n1; key good.key; include /srv; exclude /srv/www; }\n\
               group h { host n1; key good.key; include /srv/www; }")
        .is_empty()
    );
    // Non-member groups do not count.
    assert!(w(&format!("{G}group o {{ host n2; key k; include /x/y; }}")).is_empty());
}

/// Random token soup must never panic or hang: recovery always makes progress.
#[test]
fn recovery_never_panics() {
    const WORDS: [&str; 24] = [
        "group", "g", "{", "}", "(", ")", ";", ":", "@", "host", "n1", "key", "good.key", "action",
        "exec", "\"x\"", "prefix", "on", "/p", "%p%", "auto", "\"", "config", "#",
    ];
    let dir = sysdir();
    let o = opts(&dir, "n1");
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..(seed % 40) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(WORDS[(seed % WORDS.len() as u64) as usize]);
            text.push(if seed.is_multiple_of(5) { '\n' } else { ' ' });
        }
        let _ = load_str("t.cfg", &text, &o);
    }
}
