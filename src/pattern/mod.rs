//! Which paths a group manages: csync2's include/exclude rules and action patterns.
//!
//! This is csync2's `groups.c` logic, kept exactly (PRODUCT §3.3, csync2-behaviour
//! §2.3–2.4). Every path here is a "DB form" path, as bytes: `/etc/hosts`, or
//! `%www%/a/b` under a prefix. A pattern such as `%www%/cache` matches such a path
//! literally; prefix substitution happens elsewhere. Nothing in this module touches
//! the filesystem: it only compares strings.
//!
//! The rules, for one group:
//!
//! * A pattern starting with `/` or `%` is a *path pattern*; any other pattern is a
//!   *basename pattern*.
//! * A basename pattern is `fnmatch(pattern, basename, 0)`: `*`, `?` and classes match
//!   any byte, a leading dot included (so `exclude .*;` works).
//! * A path pattern is `fnmatch(pattern, path, FNM_LEADING_DIR | FNM_PATHNAME)`, without
//!   `FNM_PATHNAME` when the pattern text contains `**` anywhere. So `/etc/apache` also
//!   matches everything below it, `*` does not cross `/`, and in a pattern with `**`
//!   *every* `*` crosses `/` (`/a/**/b` needs `/a/` + something + `/b`).
//! * Walking the rules in order (compare rules skipped), the last matching path rule and
//!   the last matching basename rule decide. Path rules exclude by default, basename
//!   rules include by default; a path is managed when both say include.
//! * "Step into" (csync2's match level 1): a directory that is an ancestor of some
//!   include path pattern, found by cutting the pattern at each `/` from the right and
//!   matching the prefix (without `FNM_LEADING_DIR`). `/` itself is always stepped into.
//!
//! Matching is byte-wise, as glibc's `fnmatch` in the C locale (csync2's `main` does not
//! call `setlocale`). The rules of a group are compiled into a few [`globset::GlobSet`]s;
//! the rare pattern that globset cannot express exactly (odd bracket expressions) is
//! matched by a small port of glibc's `fnmatch` instead.

mod glibc;
mod glob;

use std::cell::RefCell;

use glibc::{CharClass, fnmatch, parse_bracket};
use glob::{Compiled, CompiledBuilder, Flags};

use globset::Candidate;

use crate::diag::Span;

/// What a pattern does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `include`.
    Include,
    /// `exclude`.
    Exclude,
    /// `compare` (used only by compare listings; ignored for sync).
    Compare,
}

/// One include/exclude/compare pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// include, exclude or compare.
    pub kind: RuleKind,
    /// The pattern text, trailing slashes stripped.
    pub pattern: String,
    /// Where it was written.
    pub span: Span,
}

/// Longest `[:name:]` glibc accepts in a bracket expression.
const CHAR_CLASS_MAX_LENGTH: usize = 256;

/// True for a path pattern (starts with `/` or `%`); false for a basename pattern.
pub fn is_path_pattern(pattern: &str) -> bool {
    pattern.starts_with('/') || pattern.starts_with('%')
}

/// Checks a pattern's syntax, for the config parser.
///
/// glibc's `fnmatch` accepts any text, but some patterns can never match what their
/// author meant; they are reported here with a globset-like message (without the
/// pattern itself, which the caller quotes): an unclosed `[`, a trailing `\`, a
/// reversed range such as `[z-a]`, an unknown `[:class:]`, a `[.collating.]` element
/// longer than one character, or a NUL byte.
pub fn check(pattern: &str) -> Result<(), String> {
    let pat = pattern.as_bytes();
    if pat.contains(&0) {
        return Err("pattern contains a NUL byte".to_string());
    }
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'\\' => {
                if i + 1 >= pat.len() {
                    return Err("dangling '\\'".to_string());
                }
                i += 2;
            }
            b'[' => {
                let br = parse_bracket(pat, i).map_err(|e| e.message())?;
                if let Some((lo, hi)) = br.reversed {
                    return Err(format!(
                        "invalid range; '{}' > '{}'",
                        char::from(lo).escape_default(),
                        char::from(hi).escape_default()
                    ));
                }
                i = br.end;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// How a path relates to a group (csync2's `csync_match_file` levels).
///
/// The variants are ordered, so the level of a path across several groups is the
/// `max` of its per-group levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Neither managed nor on the way to anything managed (level 0).
    Ignore,
    /// A directory the walker must descend into but not sync (level 1).
    StepInto,
    /// The group manages the path (level 2).
    Managed,
}

/// Why a path is or is not managed: for `--explain` and debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the group manages the path.
    pub managed: bool,
    /// Index (into the rules given to [`GroupMatcher::new`]) of the last path rule
    /// that matched; `None` when none did and the default (excluded) applied.
    pub path_rule: Option<usize>,
    /// Index of the last basename rule that matched; `None` when none did and the
    /// default (included) applied.
    pub base_rule: Option<usize>,
}

/// The compiled include/exclude rules of one group.
///
/// Building it checks every rule (compare rules included) and compiles the
/// include/exclude rules. Matching reuses a per-thread buffer and does not allocate
/// (except in the rare fnmatch fallback for a `[:class:]` name).
#[derive(Debug, Clone)]
pub struct GroupMatcher {
    /// Path rules: item = rule index.
    path: Compiled,
    /// Basename rules: item = rule index.
    base: Compiled,
    /// Ancestor prefixes of include path rules: item = rule index.
    step: Compiled,
    /// Some include path pattern has a `/` at index 0, which yields the empty prefix
    /// (csync2 matches it against the path too; only an empty path matches it).
    step_empty: bool,
    /// Per rule: true for include.
    include: Vec<bool>,
    /// Walk roots, computed once.
    roots: Vec<String>,
}

impl GroupMatcher {
    /// Compiles a group's rules (in file order, as in the config).
    ///
    /// Compare rules are checked but otherwise ignored (they matter only for compare
    /// listings). The error is `(index of the offending rule, message)`.
    pub fn new(rules: &[Rule]) -> Result<Self, (usize, String)> {
        let mut path = CompiledBuilder::new();
        let mut base = CompiledBuilder::new();
        let mut step = CompiledBuilder::new();
        let mut step_empty = false;
        let mut include = Vec::with_capacity(rules.len());
        let mut roots = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            check(&rule.pattern).map_err(|e| (i, e))?;
            include.push(rule.kind == RuleKind::Include);
            if rule.kind == RuleKind::Compare {
                continue;
            }
            let pat = rule.pattern.as_str();
            if !is_path_pattern(pat) {
                base.add(i, pat, Flags { pathname: false, leading_dir: false });
                continue;
            }
            let pathname = !pat.contains("**");
            path.add(i, pat, Flags { pathname, leading_dir: true });
            if rule.kind == RuleKind::Include {
                let mut t = pat;
                while let Some(cut) = t.rfind('/') {
                    t = &t[..cut];
                    if t.is_empty() {
                        step_empty = true;
                    } else {
                        step.add(i, t, Flags { pathname, leading_dir: false });
                    }
                }
                if let Some(root) = walk_root(pat) {
                    roots.push(root);
                }
            }
        }
        let err = |e: globset::Error| (0, e.to_string());
        Ok(Self {
            path: path.build().map_err(err)?,
            base: base.build().map_err(err)?,
            step: step.build().map_err(err)?,
            step_empty,
            include,
            roots: prune_roots(roots),
        })
    }

    /// True when the group manages `path` (csync2 match level 2).
    pub fn is_managed(&self, path: &[u8]) -> bool {
        with_scratch(|buf| self.decide(path, false, buf).managed)
    }

    /// The match level of `path`; `Managed` wins over `StepInto`.
    pub fn level(&self, path: &[u8]) -> Level {
        with_scratch(|buf| {
            if self.decide(path, false, buf).managed {
                Level::Managed
            } else if path == b"/"
                || (path.is_empty() && self.step_empty)
                || self.step.any(&Candidate::from_bytes(path), path)
            {
                Level::StepInto
            } else {
                Level::Ignore
            }
        })
    }

    /// Which rules decide `path`, and the outcome.
    pub fn explain(&self, path: &[u8]) -> Verdict {
        with_scratch(|buf| self.decide(path, true, buf))
    }

    /// Where a scan of this group starts: the literal leading part of every include
    /// path pattern (see [`walk_root`]), in file order, without duplicates and without
    /// roots that lie below another root.
    pub fn walk_roots(&self) -> Vec<String> {
        self.roots.clone()
    }

    /// csync2's `match_pattern_list`. With `full == false` the basename rules are
    /// skipped when the path rules already exclude (the verdict's `base_rule` is then
    /// `None`).
    fn decide(&self, path: &[u8], full: bool, buf: &mut Vec<usize>) -> Verdict {
        let path_rule = self.path.last_match(&Candidate::from_bytes(path), path, buf);
        let path_ok = path_rule.is_some_and(|i| self.include[i]);
        if !path_ok && !full {
            return Verdict { managed: false, path_rule, base_rule: None };
        }
        let base = basename(path);
        let base_rule = self.base.last_match(&Candidate::from_bytes(base), base, buf);
        let base_ok = base_rule.is_none_or(|i| self.include[i]);
        Verdict { managed: path_ok && base_ok, path_rule, base_rule }
    }
}

/// The `pattern` list of one `action { … }` block.
#[derive(Debug, Clone)]
pub struct ActionMatcher {
    /// All patterns; item = pattern index.
    set: Compiled,
    /// No patterns: every file of the group matches.
    all: bool,
}

impl ActionMatcher {
    /// Compiles an action's patterns (as written: trailing slashes are *not* stripped).
    ///
    /// Each is `fnmatch(pattern, path, FNM_LEADING_DIR | FNM_PATHNAME)`, without
    /// `FNM_PATHNAME` when the pattern contains `**`; there is no basename/path
    /// distinction. The error is `(index of the offending pattern, message)`.
    pub fn new(patterns: &[String]) -> Result<Self, (usize, String)> {
        let mut set = CompiledBuilder::new();
        for (i, pat) in patterns.iter().enumerate() {
            check(pat).map_err(|e| (i, e))?;
            set.add(i, pat, Flags { pathname: !pat.contains("**"), leading_dir: true });
        }
        let set = set.build().map_err(|e| (0, e.to_string()))?;
        Ok(Self { set, all: patterns.is_empty() })
    }

    /// True when the action applies to `path` (DB form). An empty list matches all.
    pub fn matches(&self, path: &[u8]) -> bool {
        self.all || self.set.any(&Candidate::from_bytes(path), path)
    }
}

/// The literal leading part of a path pattern: where a scan for it starts.
///
/// Components are kept up to (not including) the first one containing a glob
/// metacharacter (`*`, `?`, `[` or `\`): `/etc/nginx/*.conf` → `/etc/nginx`,
/// `/etc/hosts` → `/etc/hosts`, `%www%/a*/b` → `%www%`, `/*.conf` → `/`. Empty
/// components are dropped. `None` for a basename pattern, and for a prefix pattern
/// whose `%NAME%` part itself contains a metacharacter.
pub fn walk_root(pattern: &str) -> Option<String> {
    if !is_path_pattern(pattern) {
        return None;
    }
    let is_literal = |c: &str| !c.contains(['*', '?', '[', '\\']);
    let mut comps = pattern.split('/').filter(|c| !c.is_empty());
    let mut root = if pattern.starts_with('/') {
        String::from("/")
    } else {
        let first = comps.next()?;
        if !is_literal(first) {
            return None;
        }
        first.to_string()
    };
    for comp in comps {
        if !is_literal(comp) {
            break;
        }
        if !root.ends_with('/') {
            root.push('/');
        }
        root.push_str(comp);
    }
    Some(root)
}

/// Drops duplicates and roots below another root, keeping file order.
fn prune_roots(roots: Vec<String>) -> Vec<String> {
    let covered = |i: usize, r: &str| {
        roots.iter().enumerate().any(|(j, a)| {
            (j < i && a == r)
                || (r.len() > a.len()
                    && r.starts_with(a.as_str())
                    && (a.ends_with('/') || r.as_bytes()[a.len()] == b'/'))
        })
    };
    let keep: Vec<bool> = roots.iter().enumerate().map(|(i, r)| !covered(i, r)).collect();
    roots.into_iter().zip(keep).filter_map(|(r, k)| k.then_some(r)).collect()
}

/// csync2's basename: everything after the last `/` (the whole path if none).
fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

thread_local! {
    /// Reused buffer for `GlobSet::matches_candidate_into`.
    static SCRATCH: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the thread's scratch buffer (a fresh one if it is already in use).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<usize>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests;
