//! The syntax tree, seen from one node: membership, keys, prefix roots, and the
//! checks that need the whole file (prefix use, a node in no group).

use std::path::{Path, PathBuf};

use super::lexer::{Diags, Reader, Sources, io_reason};
use super::model::{Config, Group, GroupKey, Prefix, Rule};
use super::parser::{Ast, GroupAst, PrefixAst, Val};
use super::{LoadOptions, validate_key};
use crate::diag::Span;

/// Orders file-level diagnostics after everything positioned.
const FILE_LEVEL: u32 = u32::MAX;

/// Builds the [`Config`] for node `myname` (already lower-cased).
pub(crate) fn resolve(
    ast: Ast,
    source: &str,
    myname: &str,
    opts: &LoadOptions,
    src: &Sources,
    diags: &mut Diags,
    reader: Reader<'_>,
) -> Config {
    let prefixes: Vec<Prefix> = ast.prefixes.into_iter().map(|p| prefix(p, myname)).collect();
    let groups: Vec<Group> = ast
        .groups
        .into_iter()
        .map(|g| group(g, myname, opts, &prefixes, src, diags, reader))
        .collect();

    // Listed anywhere, whatever -G says: a -G naming groups this node is not
    // in is the command line's mistake, and the caller says so naming them.
    if !groups.iter().any(|g| g.hosts.iter().any(|h| h.name == myname)) {
        let span = Span { file: source.into(), line: 0, col: 0, len: 0 };
        let help = format!(
            "add '{myname}' to a group's 'host' line, or give this node's name with -N NAME"
        );
        diags.push(
            FILE_LEVEL,
            src.error(&span, format!("this node ({myname}) is not a member of any group"))
                .with_help(help),
        );
    }

    let config = Config {
        source: PathBuf::from(source),
        myname: myname.to_owned(),
        groups,
        prefixes,
        nossl: ast.nossl,
        ignore: ast.ignore,
        database: ast.database,
        tempdir: ast.tempdir,
        lock_timeout: ast.lock_timeout,
        warnings: Vec::new(),
    };
    super::lint::nested_roots(&config, src, diags);
    config
}

fn prefix(p: PrefixAst, myname: &str) -> Prefix {
    let local =
        p.entries.iter().find(|(pat, _)| fnmatch(pat, myname)).map(|(_, path)| path.clone());
    Prefix { name: p.name, entries: p.entries, local, span: p.span }
}

fn group(
    g: GroupAst,
    myname: &str,
    opts: &LoadOptions,
    prefixes: &[Prefix],
    src: &Sources,
    diags: &mut Diags,
    reader: Reader<'_>,
) -> Group {
    let listed = g.hosts.iter().any(|h| h.name == myname);
    let active = opts.active_groups.as_ref().is_none_or(|a| a.contains(&g.name));
    let is_member = listed && active;

    let key_file = g.key.as_ref().map(|k| opts.sysdir.join(&k.text)).unwrap_or_default();
    let mut key = None;
    match &g.key {
        None => diags.push(
            g.seq,
            src.error(&g.span, format!("group '{}' has no key", g.name))
                .with_help("add 'key FILE;' to the group (csync -k FILE creates a key file)"),
        ),
        // Only a member needs the key; other nodes' key files need not exist here.
        Some(k) if is_member => key = read_key(k, &key_file, src, diags, reader),
        Some(_) => {}
    }

    if is_member {
        for (rule, seq) in &g.rules {
            check_prefix(&rule.pattern, &rule.span, *seq, myname, prefixes, src, diags);
        }
        for v in g.actions.iter().flat_map(|(_, pats)| pats) {
            check_prefix(&v.text, &v.span, v.seq, myname, prefixes, src, diags);
        }
    }

    Group {
        name: g.name,
        span: g.span,
        hosts: g.hosts,
        key_file,
        key,
        rules: g.rules.into_iter().map(|(r, _): (Rule, u32)| r).collect(),
        auto: g.auto,
        actions: g.actions.into_iter().map(|(a, _)| a).collect(),
        backup_directory: g.backup_directory,
        backup_generations: g.backup_generations,
        allow_devices: g.allow_devices,
        allow_setid: g.allow_setid,
        owner_range: g.owner_range,
        is_member,
    }
}

fn read_key(
    k: &Val,
    path: &Path,
    src: &Sources,
    diags: &mut Diags,
    reader: Reader<'_>,
) -> Option<GroupKey> {
    // Relative names are resolved against the system directory, which the message
    // names only in words so that it reads the same on every machine.
    let help = if Path::new(&k.text).is_relative() {
        "a relative key file is read from the system directory ($CSYNC2_SYSTEM_DIR or /etc)"
    } else {
        "create a key file with: csync -k FILE"
    };
    match reader(path) {
        Err(e) => {
            let msg = format!("cannot read key file '{}': {}", k.text, io_reason(&e));
            diags.push(k.seq, src.error(&k.span, msg).with_help(help));
            None
        }
        Ok(text) => match validate_key(&text) {
            Ok(key) => Some(GroupKey(key)),
            Err(why) => {
                let msg = format!("invalid key file '{}': {why}", k.text);
                diags.push(
                    k.seq,
                    src.error(&k.span, msg).with_help("create a new key with: csync -k FILE"),
                );
                None
            }
        },
    }
}

/// Checks the `%NAME%` a pattern starts with: the prefix must exist and have a root
/// on this node, or the pattern could never be mapped to a local path.
fn check_prefix(
    pattern: &str,
    span: &Span,
    seq: u32,
    myname: &str,
    prefixes: &[Prefix],
    src: &Sources,
    diags: &mut Diags,
) {
    let Some(rest) = pattern.strip_prefix('%') else { return };
    let Some(end) = rest.find('%') else {
        let msg = format!("pattern '{pattern}' starts with '%' but has no closing '%'");
        diags.push(
            seq,
            src.error(span, msg).with_help("a prefix is written %NAME%, e.g. %www%/htdocs"),
        );
        return;
    };
    let name = &rest[..end];
    match prefixes.iter().find(|p| p.name == name) {
        None => {
            let msg = format!("prefix '{name}' is not defined (used as '%{name}%')");
            let help =
                format!("define it at top level: prefix {name} {{ on HOSTPATTERN: /path; }}");
            diags.push(seq, src.error(span, msg).with_help(help));
        }
        Some(p) if p.local.is_none() => {
            let pats: Vec<&str> = p.entries.iter().map(|(pat, _)| pat.as_str()).collect();
            let help = if pats.is_empty() {
                format!("prefix '{name}' has no 'on' entries")
            } else {
                format!("no 'on' entry of prefix '{name}' matches '{myname}': {}", pats.join(", "))
            };
            let msg = format!("prefix '{name}' is not defined for host '{myname}'");
            diags.push(seq, src.error(span, msg).with_help(help));
        }
        Some(_) => {}
    }
}

/// fnmatch(3) without flags, as csync2 matches `on` patterns: `*` and `?` match any
/// character (`/` included), `[…]` classes with `!`/`^` and ranges, `\` escapes.
pub(crate) fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| matches(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && matches(&p[1..], &n[1..]),
        Some('[') => match (class(&p[1..]), n.first()) {
            (Some((set_matches, used)), Some(&c)) => {
                set_matches(c) && matches(&p[1 + used..], &n[1..])
            }
            // An unclosed `[` is an ordinary character, as in fnmatch.
            (None, Some('[')) => matches(&p[1..], &n[1..]),
            _ => false,
        },
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && matches(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && matches(&p[1..], &n[1..]),
    }
}

/// Parses a bracket expression after its `[`; returns a matcher and how many pattern
/// characters it used (including the closing `]`).
#[allow(clippy::type_complexity)]
fn class(p: &[char]) -> Option<(Box<dyn Fn(char) -> bool>, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, p[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    Some((Box::new(move |c| ranges.iter().any(|&(a, b)| a <= c && c <= b) != negate), i))
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch("*", "anything"));
        assert!(fnmatch("alpha", "alpha"));
        assert!(!fnmatch("alpha", "alphas"));
        assert!(fnmatch("node?", "node1"));
        assert!(!fnmatch("node?", "node"));
        assert!(fnmatch("host[12]", "host2"));
        assert!(!fnmatch("host[12]", "host3"));
        assert!(fnmatch("host[!12]", "host3"));
        assert!(fnmatch("host[a-c]x", "hostbx"));
        assert!(fnmatch("*-sync", "alpha-sync"));
        assert!(fnmatch("a*b*c", "aXXbYYc"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("a[b", "a[b"));
        assert!(fnmatch("\\*", "*"));
        assert!(!fnmatch("\\*", "x"));
    }
}
