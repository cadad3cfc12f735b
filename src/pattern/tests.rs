//! Tests of the pattern rules (kept apart so the modules stay readable).

use super::*;
use crate::diag::Span;

/// Rules written compactly: space-separated, `+` include, `-` exclude, `=` compare.
fn rules(spec: &str) -> Vec<Rule> {
    spec.split_whitespace()
        .map(|r| {
            let (kind, pattern) = match r.split_at(1) {
                ("+", p) => (RuleKind::Include, p),
                ("-", p) => (RuleKind::Exclude, p),
                ("=", p) => (RuleKind::Compare, p),
                _ => panic!("bad rule {r}"),
            };
            Rule { kind, pattern: pattern.to_string(), span: Span::default() }
        })
        .collect()
}

fn matcher(spec: &str) -> GroupMatcher {
    GroupMatcher::new(&rules(spec)).unwrap()
}

// The expected values of every table below (MANAGED, LEVELS, ACTIONS, FNMATCH) were
// verified against glibc 2.36's real fnmatch(3) in the C locale (python3 ctypes,
// FNM_PATHNAME = 1, FNM_LEADING_DIR = 8) running csync2's match_pattern_list /
// csync_step_into logic over the same rows.

/// (rules, path, managed, deciding path rule, deciding basename rule)
type ManagedRow = (&'static str, &'static str, bool, Option<usize>, Option<usize>);

const MANAGED: &[ManagedRow] = &[
    // csync2's own example: include /etc/apache; exclude *~ .*;
    ("+/etc/apache -*~ -.*", "/etc/apache", true, Some(0), None),
    ("+/etc/apache -*~ -.*", "/etc/apache/httpd.conf", true, Some(0), None),
    ("+/etc/apache -*~ -.*", "/etc/apache/httpd.conf~", false, Some(0), Some(1)),
    ("+/etc/apache -*~ -.*", "/etc/apache/.htaccess", false, Some(0), Some(2)),
    ("+/etc/apache -*~ -.*", "/etc/apache/.d/file", true, Some(0), None),
    ("+/etc/apache -*~ -.*", "/etc/apache2", false, None, None),
    ("+/etc/apache -*~ -.*", "/etc", false, None, None),
    // exclude /**/.svn
    ("+/srv -/**/.svn", "/srv/a/.svn", false, Some(1), None),
    ("+/srv -/**/.svn", "/srv/a/b/.svn/entries", false, Some(1), None),
    ("+/srv -/**/.svn", "/srv/.svn", false, Some(1), None),
    ("+/srv -/**/.svn", "/srv/a.svn", true, Some(0), None),
    // include %www%; exclude %www%/cache;
    ("+%www% -%www%/cache", "%www%", true, Some(0), None),
    ("+%www% -%www%/cache", "%www%/index.html", true, Some(0), None),
    ("+%www% -%www%/cache", "%www%/cache", false, Some(1), None),
    ("+%www% -%www%/cache", "%www%/cache/x/y", false, Some(1), None),
    ("+%www% -%www%/cache", "%www%/cachefile", true, Some(0), None),
    ("+%www% -%www%/cache", "/var/www/index.html", false, None, None),
    ("+/srv", "%srv%/x", false, None, None),
    ("+%www%/*/htdocs", "%www%/site1/htdocs/index.html", true, Some(0), None),
    // `*` vs `**`
    ("+/a/*/c", "/a/b/c", true, Some(0), None),
    ("+/a/*/c", "/a/b/x/c", false, None, None),
    ("+/a/**/c", "/a/b/x/c", true, Some(0), None),
    ("+/a/**/c", "/a/c", false, None, None),
    ("+/a/*/b/**", "/a/x/y/b/z", true, Some(0), None),
    ("+/a?b/**", "/a/b/x", true, Some(0), None),
    ("+/a?b", "/a/b", false, None, None),
    ("+/a[!x]b", "/a/b", false, None, None),
    ("+/a[!x]b/**", "/a/b/c", true, Some(0), None),
    ("+/a/*.conf", "/a/x.conf", true, Some(0), None),
    ("+/a/*.conf", "/a/sub/x.conf", false, None, None),
    // path patterns match everything below
    ("+/a/*", "/a/sub/x.conf", true, Some(0), None),
    ("+/*", "/etc/passwd", true, Some(0), None),
    ("+/h/?", "/h/a/b", true, Some(0), None),
    ("+/h/?", "/h/ab", false, None, None),
    ("+/a/b", "/a/b/", true, Some(0), None),
    // last match wins, per kind
    ("+/a -/a/b +/a/b/c", "/a/b/c/d", true, Some(2), None),
    ("+/a -/a/b +/a/b/c", "/a/b/x", false, Some(1), None),
    ("+/a -/a", "/a/x", false, Some(1), None),
    ("-/a +/a", "/a/x", true, Some(1), None),
    ("+/a -*.log +keep.log", "/a/keep.log", true, Some(0), Some(2)),
    ("+/a -*.log +keep.log", "/a/other.log", false, Some(0), Some(1)),
    ("+/a -*.log +keep.log", "/a/keep.log.1", true, Some(0), None),
    // basename rules alone never manage anything
    ("+*.conf", "/etc/x.conf", false, None, Some(0)),
    ("-*.conf", "/x", false, None, None),
    // hidden files
    ("+/h -.*", "/h/.bashrc", false, Some(0), Some(1)),
    ("+/h -.*", "/h/a.b", true, Some(0), None),
    ("+/h -*", "/h/.x", false, Some(0), Some(1)),
    ("+/h -?x", "/h/.x", false, Some(0), Some(1)),
    // classes and escapes
    ("+/h -[abc]*", "/h/apple", false, Some(0), Some(1)),
    ("+/h -[abc]*", "/h/dog", true, Some(0), None),
    ("+/h -[!abc]*", "/h/dog", false, Some(0), Some(1)),
    ("+/h/[0-9]*", "/h/9lives", true, Some(0), None),
    ("+/h/[0-9]*", "/h/x9", false, None, None),
    ("+/h/[[:digit:]]x", "/h/7x", true, Some(0), None),
    ("+/h/a\\*b", "/h/a*b", true, Some(0), None),
    ("+/h/a\\*b", "/h/axb", false, None, None),
    ("+/h/{a,b}", "/h/a", false, None, None),
    ("+/h/{a,b}", "/h/{a,b}", true, Some(0), None),
    // trailing components and basename patterns containing `/`
    ("+/etc/nginx/*.conf", "/etc/nginx/nginx.conf", true, Some(0), None),
    ("+/etc/nginx/*.conf", "/etc/nginx", false, None, None),
    ("+/etc/nginx/*.conf", "/etc/nginx/sites/x.conf", false, None, None),
    ("+/a -b/c", "/a/b/c", true, Some(0), None),
    // compare rules are skipped
    ("+/a =/a/b -/a/c", "/a/b", true, Some(0), None),
    ("+/a =*.x", "/a/f.x", true, Some(0), None),
    ("=/a", "/a", false, None, None),
];

#[test]
fn managed_table() {
    for &(spec, path, managed, path_rule, base_rule) in MANAGED {
        let m = matcher(spec);
        let want = Verdict { managed, path_rule, base_rule };
        assert_eq!(m.explain(path.as_bytes()), want, "{spec:?} on {path:?}");
        assert_eq!(m.is_managed(path.as_bytes()), managed, "{spec:?} on {path:?}");
        if managed {
            assert_eq!(m.level(path.as_bytes()), Level::Managed, "{spec:?} on {path:?}");
        }
    }
}

/// (rules, path, level)
const LEVELS: &[(&str, &str, Level)] = &[
    ("+/etc/nginx/*.conf", "/etc/nginx", Level::StepInto),
    ("+/etc/nginx/*.conf", "/etc", Level::StepInto),
    ("+/etc/nginx/*.conf", "/", Level::StepInto),
    ("+/etc/nginx/*.conf", "/etc/nginx/x.conf", Level::Managed),
    ("+/etc/nginx/*.conf", "/etc/nginx/sub", Level::Ignore),
    ("+/etc/nginx/*.conf", "/etc/apache", Level::Ignore),
    ("+/etc/nginx/*.conf", "/usr", Level::Ignore),
    ("+%www%/*/htdocs", "%www%/site1", Level::StepInto),
    ("+%www%/*/htdocs", "%www%", Level::StepInto),
    ("+%www%/*/htdocs", "%www%/site1/htdocs", Level::Managed),
    ("+%www%/*/htdocs", "%www%/site1/logs", Level::Ignore),
    ("+%www%/*/htdocs", "%www%/a/b", Level::Ignore),
    ("+/a -/a/b", "/a/b", Level::Ignore),
    ("+/a/b/c -/a", "/a/b", Level::StepInto),
    ("-/x +/x/y", "/x", Level::StepInto),
    ("+/srv/**/www", "/srv/a/b", Level::StepInto),
    ("+/srv/**/www", "/srv", Level::StepInto),
    ("+/srv/**/www", "/srv/a/www/x", Level::Managed),
    ("+/a -/b/c", "/b", Level::Ignore),
    ("+/a/b -b", "/a/b", Level::Ignore),
    ("+/a/b -b", "/a", Level::StepInto),
    ("=/c/d", "/c", Level::Ignore),
    ("+*.conf", "/x.conf", Level::Ignore),
];

#[test]
fn level_table() {
    for &(spec, path, level) in LEVELS {
        assert_eq!(matcher(spec).level(path.as_bytes()), level, "{spec:?} on {path:?}");
    }
}

/// (rules, walk roots)
const ROOTS: &[(&str, &[&str])] = &[
    ("+/etc/nginx/*.conf", &["/etc/nginx"]),
    ("+/etc/hosts", &["/etc/hosts"]),
    ("+%www%", &["%www%"]),
    ("+%www%/a*/b", &["%www%"]),
    ("+/etc/nginx +/etc +/etc/nginx", &["/etc"]),
    ("+/etc/apache +/etc/apache2 +/etc/apache", &["/etc/apache", "/etc/apache2"]),
    ("+/a -/b +*.c =/d", &["/a"]),
    ("+/*.conf +/etc", &["/"]),
    ("+/srv/**/x +/srv/a", &["/srv"]),
    ("+/a/\\*b", &["/a"]),
    ("+/a/[bc]/d", &["/a"]),
    ("+%w*%/x", &[]),
    ("+/x/y +%p%/z +/x", &["%p%/z", "/x"]),
    ("+%www%/x +%www2%", &["%www%/x", "%www2%"]),
];

#[test]
fn walk_roots_table() {
    for &(spec, want) in ROOTS {
        assert_eq!(matcher(spec).walk_roots(), want, "{spec:?}");
    }
    assert_eq!(walk_root("*.conf"), None);
    assert_eq!(walk_root("/etc//x/*"), Some("/etc/x".to_string()));
}

/// (action patterns, path, matches)
const ACTIONS: &[(&[&str], &str, bool)] = &[
    (&[], "/anything", true),
    (&["/etc/apache2/*"], "/etc/apache2/httpd.conf", true),
    (&["/etc/apache2/*"], "/etc/apache2/sites/x", true),
    (&["/etc/apache2/*"], "/etc/apache2", false),
    (&["/etc/apache2/"], "/etc/apache2", false),
    (&["/etc/apache2/"], "/etc/apache2/x", false),
    (&["/etc/apache2"], "/etc/apache2/x", true),
    (&["%d%/act/*"], "%d%/act/y", true),
    (&["%d%/act/*"], "/srv/act/y", false),
    (&["*.conf"], "/etc/x.conf", false),
    (&["**.conf"], "/etc/x.conf", true),
    (&["/a/*.c", "/b"], "/b/x", true),
    (&["/a/*.c", "/b"], "/a/x/y.c", false),
];

#[test]
fn action_table() {
    for &(pats, path, want) in ACTIONS {
        let pats: Vec<String> = pats.iter().map(|p| p.to_string()).collect();
        let m = ActionMatcher::new(&pats).unwrap();
        assert_eq!(m.matches(path.as_bytes()), want, "{pats:?} on {path:?}");
    }
}

/// Raw fnmatch quirks: (pattern, string, FNM_PATHNAME, FNM_LEADING_DIR, glibc's answer)
const FNMATCH: &[(&str, &str, bool, bool, bool)] = &[
    ("*\\/x", "a/x", true, false, false),
    ("*\\/x", "a/x", false, false, true),
    ("a[/]b", "a/b", true, false, false),
    ("a[/]b", "a/b", false, false, true),
    ("a[!x]b", "a/b", false, false, true),
    ("[ab", "[ab", false, false, true),
    ("[\\[", "[[", false, false, true),
    ("[!]a]", "b", false, false, true),
    ("[]a]", "]", false, false, true),
    ("[a-]", "-", false, false, true),
    ("[z-a]", "m", false, false, false),
    ("[[:alpha:]-z]", "-", false, false, true),
    ("[[.a.]-c]", "b", false, false, true),
    ("[[=a=]]", "a", false, false, true),
    ("*.", "..", true, false, true),
    ("a\\", "a", false, false, false),
    ("a*", "ab/c", true, false, false),
    ("a*", "ab/c", true, true, true),
    ("a/", "a/", true, true, true),
    ("?", "\u{e9}", false, false, false),
];

#[test]
fn fnmatch_quirks() {
    for &(pat, s, pathname, leading_dir, want) in FNMATCH {
        let flags = Flags { pathname, leading_dir };
        assert_eq!(fnmatch(pat.as_bytes(), s.as_bytes(), flags), want, "{pat:?} {s:?}");
        let mut b = CompiledBuilder::new();
        b.add(0, pat, flags);
        let c = b.build().unwrap();
        let got = c.any(&Candidate::from_bytes(s.as_bytes()), s.as_bytes());
        assert_eq!(got, want, "compiled {pat:?} {s:?}");
    }
}

#[test]
fn check_messages() {
    for ok in ["/etc/*", "[a-z]", "[]]", "[!]]", "\\*", "[[:alpha:]]", "a{b,c}", "%www%", ""] {
        assert_eq!(check(ok), Ok(()), "{ok:?}");
    }
    let bad = [
        ("/a/[abc", "unclosed character class; missing ']'"),
        ("abc\\", "dangling '\\'"),
        ("[z-a]", "invalid range; 'z' > 'a'"),
        ("[[:foo:]]", "invalid character class name 'foo'"),
        ("[[.ab.]]", "invalid collating element"),
        ("a\0b", "pattern contains a NUL byte"),
    ];
    for (pat, msg) in bad {
        assert_eq!(check(pat), Err(msg.to_string()), "{pat:?}");
    }
    let err = GroupMatcher::new(&rules("+/a -/b[ -*.c")).map(|_| ()).unwrap_err();
    assert_eq!(err.0, 1);
    let err = ActionMatcher::new(&["/a".to_string(), "x\\".to_string()]).map(|_| ()).unwrap_err();
    assert_eq!(err, (1, "dangling '\\'".to_string()));
}

/// Tiny deterministic generator for the agreement test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as usize
    }
}

/// The globset translation agrees with the fnmatch port (itself checked against
/// glibc over millions of random cases during development).
#[test]
fn globset_agrees_with_fnmatch_port() {
    let pat_atoms = [
        "a",
        "b",
        "/",
        "*",
        "?",
        "**",
        ".",
        "%",
        "[a-c]",
        "[!a]",
        "[]a]",
        "[/]",
        "[a/b]",
        "[!/]",
        "[[:alpha:]]",
        "[^.]",
        "[-!]",
        "[!^]",
        "\\*",
        "\\/",
        "{",
        ",",
    ];
    let str_atoms = ["a", "b", "c", "/", ".", "..", "-", "!", "*", "{", "%", "x/y"];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..4000 {
        let mut pat = String::new();
        for _ in 0..1 + rng.next() % 6 {
            pat.push_str(pat_atoms[rng.next() % pat_atoms.len()]);
        }
        let flags = Flags {
            pathname: rng.next().is_multiple_of(2),
            leading_dir: rng.next().is_multiple_of(2),
        };
        let mut b = CompiledBuilder::new();
        b.add(0, &pat, flags);
        let c = b.build().unwrap();
        for _ in 0..8 {
            let mut s = String::new();
            for _ in 0..rng.next() % 7 {
                s.push_str(str_atoms[rng.next() % str_atoms.len()]);
            }
            let want = fnmatch(pat.as_bytes(), s.as_bytes(), flags);
            let got = c.any(&Candidate::from_bytes(s.as_bytes()), s.as_bytes());
            assert_eq!(got, want, "{pat:?} {s:?} {flags:?}");
        }
    }
}

#[test]
fn levels_are_ordered() {
    assert!(Level::Managed > Level::StepInto && Level::StepInto > Level::Ignore);
}

/// `cargo test --release -- --ignored --nocapture level_timing`
#[test]
#[ignore]
fn level_timing() {
    let m = matcher("+/etc/apache +%www% -%www%/cache -*~ -.*");
    let dirs = ["%www%/site", "%www%/cache/x", "/etc/apache/conf.d", "/usr/share/doc"];
    let paths: Vec<Vec<u8>> = (0..100_000)
        .map(|i| {
            let ext = ["html", "conf~", "php", "png"][i % 4];
            let hidden = if i % 17 == 0 { "." } else { "" };
            format!("{}/d{}/{hidden}file{i}.{ext}", dirs[i % 4], i % 100).into_bytes()
        })
        .collect();
    let start = std::time::Instant::now();
    let mut counts = [0usize; 3];
    for p in &paths {
        counts[m.level(p) as usize] += 1;
    }
    let took = start.elapsed();
    println!(
        "100000 level() calls: {took:?} ({:.0} ns/call); ignore/step/managed = {counts:?}",
        took.as_nanos() as f64 / 100_000.0
    );
}
