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

use std::cell::RefCell;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

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

/// The `fnmatch` flags csync2 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    /// `FNM_PATHNAME`: `*`, `?` and bracket expressions never match `/`.
    pathname: bool,
    /// `FNM_LEADING_DIR`: also match when the pattern matches a prefix of the string
    /// that is followed by `/`.
    leading_dir: bool,
}

/// A set of fnmatch patterns, each belonging to an item (a rule or pattern index).
#[derive(Debug, Clone)]
struct Compiled {
    /// The patterns globset can express.
    set: GlobSet,
    /// Item of each glob in `set` (ascending: globs are added in item order).
    owner: Vec<usize>,
    /// `(item, pattern, flags)` matched with [`fnmatch`], in item order.
    fallback: Vec<(usize, Vec<u8>, Flags)>,
    /// Every `(item, pattern, flags)`, for strings globset mishandles.
    all: Vec<(usize, Vec<u8>, Flags)>,
}

/// False for a string whose last component is `..`: globset's candidate has no
/// basename then, and its extension strategies miss (`*.` does not match `..`).
fn globset_safe(bytes: &[u8]) -> bool {
    basename(bytes) != b".."
}

/// Collects patterns for a [`Compiled`].
struct CompiledBuilder {
    /// The globs so far.
    set: GlobSetBuilder,
    /// Item of each glob.
    owner: Vec<usize>,
    /// Patterns left to the fnmatch port.
    fallback: Vec<(usize, Vec<u8>, Flags)>,
    /// Every pattern.
    all: Vec<(usize, Vec<u8>, Flags)>,
}

impl CompiledBuilder {
    /// An empty builder.
    fn new() -> Self {
        Self {
            set: GlobSetBuilder::new(),
            owner: Vec::new(),
            fallback: Vec::new(),
            all: Vec::new(),
        }
    }

    /// Adds `pattern` for `item`; items must be added in ascending order.
    fn add(&mut self, item: usize, pattern: &str, flags: Flags) {
        self.all.push((item, pattern.as_bytes().to_vec(), flags));
        let globs = to_globs(pattern, flags);
        match globs {
            Some(globs) => {
                for glob in globs {
                    self.set.add(glob);
                    self.owner.push(item);
                }
            }
            None => self.fallback.push((item, pattern.as_bytes().to_vec(), flags)),
        }
    }

    /// Compiles the set.
    fn build(self) -> Result<Compiled, globset::Error> {
        Ok(Compiled {
            set: self.set.build()?,
            owner: self.owner,
            fallback: self.fallback,
            all: self.all,
        })
    }
}

impl Compiled {
    /// The highest item with a pattern that matches.
    fn last_match(
        &self,
        cand: &Candidate<'_>,
        bytes: &[u8],
        buf: &mut Vec<usize>,
    ) -> Option<usize> {
        if !globset_safe(bytes) {
            return self
                .all
                .iter()
                .rev()
                .find(|(_, pat, flags)| fnmatch(pat, bytes, *flags))
                .map(|x| x.0);
        }
        let mut best = None;
        if !self.set.is_empty() {
            self.set.matches_candidate_into(cand, buf);
            best = buf.last().map(|&g| self.owner[g]);
        }
        for (item, pat, flags) in self.fallback.iter().rev() {
            if best.is_some_and(|b| b >= *item) {
                break;
            }
            if fnmatch(pat, bytes, *flags) {
                return Some(*item);
            }
        }
        best
    }

    /// True when any pattern matches.
    fn any(&self, cand: &Candidate<'_>, bytes: &[u8]) -> bool {
        if !globset_safe(bytes) {
            return self.all.iter().any(|(_, pat, flags)| fnmatch(pat, bytes, *flags));
        }
        self.set.is_match_candidate(cand)
            || self.fallback.iter().any(|(_, pat, flags)| fnmatch(pat, bytes, *flags))
    }
}

/// Translates an fnmatch pattern (with `flags`) into equivalent globset globs (one,
/// or two for `FNM_LEADING_DIR`), or `None` when globset cannot express it exactly.
fn to_globs(pattern: &str, flags: Flags) -> Option<Vec<globset::Glob>> {
    let body = translate(pattern, flags.pathname)?;
    let build = |g: &str| {
        GlobBuilder::new(g)
            .literal_separator(flags.pathname)
            .backslash_escape(true)
            .case_insensitive(false)
            .allow_unclosed_class(false)
            .build()
            .ok()
    };
    let mut globs = vec![build(&body)?];
    if flags.leading_dir {
        // The pattern, then `/` and anything. With `literal_separator` a trailing
        // `/**` is globset's "/ and anything"; without it a plain `*` crosses `/`.
        let tail = if flags.pathname { "/**" } else { "/*" };
        globs.push(build(&format!("{body}{tail}"))?);
    }
    Some(globs)
}

/// Rewrites an fnmatch pattern in globset syntax (without the leading-dir part).
///
/// Runs of `*` collapse into one (equivalent in fnmatch), so globset never sees `**`;
/// every literal punctuation character is escaped (globset has `{a,b}`); bracket
/// expressions are rebuilt from their byte set, with `/` taken out under
/// `FNM_PATHNAME`. Returns `None` for what cannot be expressed exactly.
fn translate(pattern: &str, pathname: bool) -> Option<String> {
    let pat = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'*' => {
                while i < pat.len() && pat[i] == b'*' {
                    i += 1;
                }
                // glibc quirk: under FNM_PATHNAME a `*` (and any `?`/`*` after it)
                // followed by an escaped `\/` never matches; leave that to the port.
                let next = pat[i..].iter().position(|&b| b != b'*' && b != b'?').map(|k| i + k);
                if pathname && next.is_some_and(|k| pat[k..].starts_with(b"\\/")) {
                    return None;
                }
                out.push('*');
            }
            b'?' => {
                out.push('?');
                i += 1;
            }
            b'\\' => {
                let c = pattern.get(i + 1..)?.chars().next()?;
                push_literal(&mut out, c);
                i += 1 + c.len_utf8();
            }
            b'[' => {
                let br = parse_bracket(pat, i).ok()?;
                if has_odd_bracket(&pat[i + 1..br.end]) {
                    return None; // `[.x.]`, `[=x=]` and stray `[`: left to the fnmatch port
                }
                emit_class(&mut out, br.negated, &br.members, pathname)?;
                i = br.end;
            }
            0 => return None,
            _ => {
                let c = pattern[i..].chars().next()?;
                push_literal(&mut out, c);
                i += c.len_utf8();
            }
        }
    }
    Some(out)
}

/// True when a bracket expression's text contains a `[` other than the opening of a
/// well-formed `[:name:]` class.
fn has_odd_bracket(text: &[u8]) -> bool {
    let mut i = 0;
    while let Some(k) = text[i..].iter().position(|&b| b == b'[') {
        let at = i + k;
        let rest = &text[at..];
        let class_len = rest
            .strip_prefix(b"[:")
            .and_then(|r| r.windows(2).position(|w| w == b":]"))
            .filter(|&n| CharClass::from_name(&rest[2..2 + n]).is_some());
        match class_len {
            Some(n) => i = at + n + 4,
            None => return true,
        }
    }
    false
}

/// Appends `c` as a globset literal.
fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_punctuation() && c != '/' {
        out.push('\\');
    }
    out.push(c);
}

/// Appends a globset class equivalent to the fnmatch bracket expression with byte set
/// `members` (negated or not). `None` when that cannot be written.
fn emit_class(
    out: &mut String,
    negated: bool,
    members: &[bool; 256],
    pathname: bool,
) -> Option<()> {
    if members[128..].iter().any(|&m| m) {
        return None; // bytes of a multibyte character: globset classes hold characters
    }
    let mut set = [false; 128];
    set.copy_from_slice(&members[..128]);
    if pathname {
        // glibc: under FNM_PATHNAME a bracket expression never matches `/`.
        set[usize::from(b'/')] = negated;
    }
    let count = set.iter().filter(|&&m| m).count();
    if set[0] || count == 0 || (negated && count == 128) {
        return None;
    }
    if !negated && count == 1 {
        let c = set.iter().position(|&m| m)?;
        push_literal(out, char::from(u8::try_from(c).ok()?));
        return Some(());
    }
    let has_rb = std::mem::take(&mut set[usize::from(b']')]);
    let has_dash = std::mem::take(&mut set[usize::from(b'-')]);
    let mut ranges: Vec<(u8, u8)> = Vec::new();
    for b in 0u8..128 {
        if set[usize::from(b)] {
            match ranges.last_mut() {
                Some(r) if r.1 + 1 == b => r.1 = b,
                _ => ranges.push((b, b)),
            }
        }
    }
    // A positive class must not start with `!` or `^` (that would negate it).
    if !negated && !has_rb && !has_dash {
        let bad = |r: &(u8, u8)| r.0 == b'!' || r.0 == b'^';
        if ranges.first().is_some_and(bad) {
            if let Some(k) = ranges.iter().position(|r| !bad(r)) {
                ranges.swap(0, k);
            } else if let Some(k) = ranges.iter().position(|r| r.1 > r.0) {
                let (lo, hi) = ranges[k];
                ranges[k] = (lo + 1, hi);
                ranges.push((lo, lo));
                ranges.swap(0, k);
            } else {
                return None;
            }
        }
    }
    out.push('[');
    if negated {
        out.push('!');
    }
    let mut dash_done = false;
    if has_rb {
        out.push(']');
    } else if has_dash {
        out.push('-');
        dash_done = true;
    }
    for (lo, hi) in ranges {
        out.push(char::from(lo));
        if hi > lo {
            out.push('-');
            out.push(char::from(hi));
        }
    }
    if has_dash && !dash_done {
        out.push('-');
    }
    out.push(']');
    Some(())
}

/// A bracket expression, parsed statically with glibc's grammar.
struct Bracket {
    /// `[!…]` or `[^…]`.
    negated: bool,
    /// The bytes listed (before negation), C locale.
    members: [bool; 256],
    /// Index just after the closing `]`.
    end: usize,
    /// The first range written backwards (`[z-a]`): valid for glibc, matches nothing.
    reversed: Option<(u8, u8)>,
}

/// Why a bracket expression can never match.
#[derive(Debug)]
enum BracketError {
    /// No closing `]`.
    Unclosed,
    /// A `\` at the very end.
    DanglingEscape,
    /// `[:name:]` with an unknown name.
    BadClass(String),
    /// `[.xy.]`: only one-character collating elements exist in the C locale.
    BadCollating,
}

impl BracketError {
    /// A globset-like message.
    fn message(&self) -> String {
        match self {
            Self::Unclosed => "unclosed character class; missing ']'".to_string(),
            Self::DanglingEscape => "dangling '\\'".to_string(),
            Self::BadClass(name) => format!("invalid character class name '{name}'"),
            Self::BadCollating => "invalid collating element".to_string(),
        }
    }
}

/// Parses the bracket expression whose `[` is at `start` into its byte set.
fn parse_bracket(pat: &[u8], start: usize) -> Result<Bracket, BracketError> {
    let (negated, mut elems) = Elems::new(pat, start + 1);
    let mut members = [false; 256];
    let mut reversed = None;
    loop {
        match elems.next() {
            Ok(Some(Elem::Byte(x))) => members[usize::from(x)] = true,
            Ok(Some(Elem::Range(lo, hi))) => {
                if lo > hi && reversed.is_none() {
                    reversed = Some((lo, hi));
                }
                for b in lo..=hi {
                    members[usize::from(b)] = true;
                }
            }
            Ok(Some(Elem::Class(class))) => {
                for b in 0..=255u8 {
                    members[usize::from(b)] |= class.contains(b);
                }
            }
            Ok(None) => break,
            Err(Stop::Unterminated) => return Err(BracketError::Unclosed),
            Err(Stop::Invalid(e)) => return Err(e),
        }
    }
    Ok(Bracket { negated, members, end: elems.p, reversed })
}

/// One element of a bracket expression.
#[derive(Debug, Clone, Copy)]
enum Elem {
    /// A byte: `a`, `\]`, `[=a=]`, `[.a.]`.
    Byte(u8),
    /// `a-z` (empty when reversed).
    Range(u8, u8),
    /// `[:alpha:]`.
    Class(CharClass),
}

impl Elem {
    /// Whether byte `b` belongs to the element.
    fn contains(self, b: u8) -> bool {
        match self {
            Self::Byte(x) => x == b,
            Self::Range(lo, hi) => lo <= b && b <= hi,
            Self::Class(class) => class.contains(b),
        }
    }
}

/// Why the element list of a bracket expression stopped before its `]`.
enum Stop {
    /// The pattern ended where an element should start: glibc then reads the `[` as
    /// an ordinary character.
    Unterminated,
    /// Malformed: glibc's `fnmatch` fails.
    Invalid(BracketError),
}

/// Reads the elements of a bracket expression one by one, exactly as the main loop of
/// glibc's bracket matching does (`posix/fnmatch_loop.c`, C locale). Shared by the
/// static parse (for `check` and the globset translation) and by [`fnmatch`], which
/// stops at the first element that matches.
struct Elems<'a> {
    /// The whole pattern (a NUL or its end terminates it, as in C).
    pat: &'a [u8],
    /// Index just after `c` (glibc's `p`).
    p: usize,
    /// The character being looked at (glibc's `c`).
    c: u8,
    /// No element read yet: a `]` here is an ordinary character.
    first: bool,
    /// The last single character, which a following `-x` turns into a range.
    pending: Option<u8>,
}

impl<'a> Elems<'a> {
    /// Starts after the `[` (at index `p - 1`); also returns whether it is negated.
    fn new(pat: &'a [u8], mut p: usize) -> (bool, Self) {
        let at = |i: usize| pat.get(i).copied().unwrap_or(0);
        let negated = at(p) == b'!' || at(p) == b'^';
        if negated {
            p += 1;
        }
        (negated, Self { pat, p: p + 1, c: at(p), first: true, pending: None })
    }

    /// Pattern byte at `i`, 0 past the end.
    fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// Moves to the next character.
    fn advance(&mut self) {
        self.c = self.pc(self.p);
        self.p += 1;
    }

    /// Where glibc's "skip the rest" loop starts after a matching element.
    fn resume(&self) -> usize {
        self.p - 1
    }

    /// The next element; `Ok(None)` at the closing `]` (then `p` is just after it).
    fn next(&mut self) -> Result<Option<Elem>, Stop> {
        loop {
            if let Some(lo) = self.pending.take()
                && self.c == b'-'
                && self.pc(self.p) != b']'
            {
                let hi = self.range_end()?;
                self.advance();
                return Ok(Some(Elem::Range(lo, hi)));
            }
            if !self.first && self.c == b']' {
                return Ok(None);
            }
            self.first = false;
            let (c, p) = (self.c, self.p);
            if c == b'\\' {
                let x = self.pc(p);
                if x == 0 {
                    return Err(Stop::Invalid(BracketError::DanglingEscape));
                }
                self.p += 1;
                if let Some(e) = self.single(x) {
                    return Ok(Some(e));
                }
            } else if c == b'[' && self.pc(p) == b':' {
                match self.class_name()? {
                    Some(name) => {
                        let class = CharClass::from_name(&name).ok_or_else(|| {
                            Stop::Invalid(BracketError::BadClass(
                                String::from_utf8_lossy(&name).into(),
                            ))
                        })?;
                        self.advance();
                        return Ok(Some(Elem::Class(class)));
                    }
                    None => {
                        if let Some(e) = self.single(b'[') {
                            return Ok(Some(e));
                        }
                    }
                }
            } else if c == b'[' && self.pc(p) == b'=' {
                let x = self.pc(p + 1);
                if x != 0 && self.pc(p + 2) == b'=' && self.pc(p + 3) == b']' {
                    self.p += 4;
                    self.advance();
                    return Ok(Some(Elem::Byte(x)));
                }
                if let Some(e) = self.single(b'[') {
                    return Ok(Some(e));
                }
            } else if c == 0 {
                return Err(Stop::Unterminated);
            } else if c == b'[' && self.pc(p) == b'.' {
                let x = self.collating()?;
                // glibc quirk: no `]` test here, so `[.a.]-]` is neither `a` nor a range.
                let is_range = self.pc(self.p) == b'-' && self.pc(self.p + 1) != 0;
                self.pending = Some(x);
                self.advance();
                if !is_range {
                    return Ok(Some(Elem::Byte(x)));
                }
            } else if let Some(e) = self.single(c) {
                return Ok(Some(e));
            }
        }
    }

    /// glibc's `normal_bracket`: `x` is a member unless a range starts here.
    fn single(&mut self, x: u8) -> Option<Elem> {
        let is_range =
            self.pc(self.p) == b'-' && self.pc(self.p + 1) != 0 && self.pc(self.p + 1) != b']';
        self.pending = Some(x);
        self.advance();
        (!is_range).then_some(Elem::Byte(x))
    }

    /// The end of a range, after its `-` (`c`); leaves `p` just after it.
    fn range_end(&mut self) -> Result<u8, Stop> {
        let mut hi = self.pc(self.p);
        self.p += 1;
        if hi == b'[' && self.pc(self.p) == b'.' {
            return self.collating();
        }
        if hi == b'\\' {
            hi = self.pc(self.p);
            self.p += 1;
        }
        if hi == 0 {
            return Err(Stop::Invalid(BracketError::Unclosed));
        }
        Ok(hi)
    }

    /// `[.x.]` with `p` at the `.`: returns `x` and leaves `p` after the `.]`.
    fn collating(&mut self) -> Result<u8, Stop> {
        let start = self.p;
        loop {
            self.p += 1;
            let d = self.pc(self.p);
            if d == b'.' && self.pc(self.p + 1) == b']' {
                self.p += 2;
                break;
            }
            if d == 0 {
                return Err(Stop::Invalid(BracketError::Unclosed));
            }
        }
        if self.p - start != 4 {
            return Err(Stop::Invalid(BracketError::BadCollating));
        }
        Ok(self.pc(start + 1))
    }

    /// `[:name:]` with `p` at the `:`: the name (and `p` after the `:]`), or `None`
    /// (and `p` unchanged) when this cannot be a class name.
    fn class_name(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let start = self.p;
        let mut name = Vec::new();
        loop {
            if name.len() == CHAR_CLASS_MAX_LENGTH {
                let name = String::from_utf8_lossy(&name).into();
                return Err(Stop::Invalid(BracketError::BadClass(name)));
            }
            self.p += 1;
            let d = self.pc(self.p);
            if d == b':' && self.pc(self.p + 1) == b']' {
                self.p += 2;
                return Ok(Some(name));
            }
            // glibc: a name is made of `a`..`y` (`c >= 'z'` ends it).
            if !(b'a'..=b'y').contains(&d) {
                self.p = start;
                return Ok(None);
            }
            name.push(d);
        }
    }
}

/// The `[:name:]` classes of the C locale.
#[derive(Debug, Clone, Copy)]
enum CharClass {
    /// `alnum`
    Alnum,
    /// `alpha`
    Alpha,
    /// `blank`
    Blank,
    /// `cntrl`
    Cntrl,
    /// `digit`
    Digit,
    /// `graph`
    Graph,
    /// `lower`
    Lower,
    /// `print`
    Print,
    /// `punct`
    Punct,
    /// `space`
    Space,
    /// `upper`
    Upper,
    /// `xdigit`
    Xdigit,
}

impl CharClass {
    /// The class called `name`.
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"alnum" => Self::Alnum,
            b"alpha" => Self::Alpha,
            b"blank" => Self::Blank,
            b"cntrl" => Self::Cntrl,
            b"digit" => Self::Digit,
            b"graph" => Self::Graph,
            b"lower" => Self::Lower,
            b"print" => Self::Print,
            b"punct" => Self::Punct,
            b"space" => Self::Space,
            b"upper" => Self::Upper,
            b"xdigit" => Self::Xdigit,
            _ => return None,
        })
    }

    /// C-locale membership (bytes >= 0x80 belong to no class).
    fn contains(self, b: u8) -> bool {
        match self {
            Self::Alnum => b.is_ascii_alphanumeric(),
            Self::Alpha => b.is_ascii_alphabetic(),
            Self::Blank => b == b' ' || b == b'\t',
            Self::Cntrl => b.is_ascii_control(),
            Self::Digit => b.is_ascii_digit(),
            Self::Graph => b.is_ascii_graphic(),
            Self::Lower => b.is_ascii_lowercase(),
            Self::Print => b == b' ' || b.is_ascii_graphic(),
            Self::Punct => b.is_ascii_punctuation(),
            Self::Space => matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
            Self::Upper => b.is_ascii_uppercase(),
            Self::Xdigit => b.is_ascii_hexdigit(),
        }
    }
}

/// glibc's `fnmatch` (C locale, no `FNM_NOESCAPE`/`FNM_PERIOD`/`FNM_CASEFOLD`), ported
/// from `posix/fnmatch_loop.c`, quirks included. Used for patterns globset cannot
/// express, and as the reference the globset translation is tested against.
fn fnmatch(pattern: &[u8], string: &[u8], flags: Flags) -> bool {
    Fnm { pat: pattern, s: string, flags }.fct(0, 0, None)
}

/// One `fnmatch` evaluation.
struct Fnm<'a> {
    /// The pattern (a NUL or its end terminates it, as in C).
    pat: &'a [u8],
    /// The string.
    s: &'a [u8],
    /// The flags.
    flags: Flags,
}

impl Fnm<'_> {
    /// Pattern byte at `i`, 0 past the end.
    fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// glibc's `FCT`: does `pat[p..]` match `s[n..]`? With `ends` (glibc's `struct
    /// STRUCT`), the next `*` ends the attempt successfully and `ends` says where it
    /// was reached (pattern index, string index); the caller continues from there.
    fn fct(
        &self,
        mut p: usize,
        mut n: usize,
        mut ends: Option<&mut Option<(usize, usize)>>,
    ) -> bool {
        let s = self.s;
        let end = s.len();
        let pathname = self.flags.pathname;
        loop {
            let mut c = self.pc(p);
            p += 1;
            if c == 0 {
                break;
            }
            match c {
                b'?' => {
                    if n == end || (s[n] == b'/' && pathname) {
                        return false;
                    }
                }
                b'\\' => {
                    c = self.pc(p);
                    p += 1;
                    if c == 0 || n == end || s[n] != c {
                        return false;
                    }
                }
                b'*' => {
                    if let Some(ends) = ends.as_mut() {
                        **ends = Some((p - 1, n));
                        return true;
                    }
                    c = self.pc(p);
                    p += 1;
                    while c == b'?' || c == b'*' {
                        if c == b'?' {
                            if n == end || (s[n] == b'/' && pathname) {
                                return false;
                            }
                            n += 1;
                        }
                        c = self.pc(p);
                        p += 1;
                    }
                    if c == 0 {
                        return !pathname || self.flags.leading_dir || !s[n..].contains(&b'/');
                    }
                    let endp = if pathname {
                        s[n..].iter().position(|&b| b == b'/').map_or(end, |k| n + k)
                    } else {
                        end
                    };
                    if c == b'/' && pathname {
                        while n < end && s[n] != b'/' {
                            n += 1;
                        }
                        return n < end && self.fct(p, n + 1, None);
                    }
                    // Try the rest at each position before `endp` (where the next pattern
                    // character, when literal, occurs), stopping at the next `*`.
                    let lit = match c {
                        b'[' => None,
                        b'\\' => Some(self.pc(p)),
                        _ => Some(c),
                    };
                    p -= 1;
                    let found = (n..endp).find_map(|nn| {
                        if lit.is_some_and(|l| s[nn] != l) {
                            return None;
                        }
                        let mut next_star = None;
                        self.fct(p, nn, Some(&mut next_star)).then_some(next_star)
                    });
                    match found {
                        // The rest matched without reaching another `*`.
                        Some(None) => return true,
                        // It matched up to the next `*`: continue from there.
                        Some(Some((sp, sn))) => {
                            p = sp;
                            n = sn;
                            continue;
                        }
                        None => return false,
                    }
                }
                b'[' => match self.bracket(p, n) {
                    BracketMatch::Yes(next) => p = next,
                    BracketMatch::No => return false,
                    BracketMatch::Literal => {
                        if n == end || s[n] != b'[' {
                            return false;
                        }
                    }
                },
                _ => {
                    if n == end || s[n] != c {
                        return false;
                    }
                }
            }
            n += 1;
        }
        n == end || (self.flags.leading_dir && s[n] == b'/')
    }

    /// Evaluates the bracket expression starting after the `[` at `p - 1` against
    /// `s[n]`, exactly as glibc does (the element list is read while matching).
    fn bracket(&self, p: usize, n: usize) -> BracketMatch {
        let s = self.s;
        if n == s.len() || (s[n] == b'/' && self.flags.pathname) {
            return BracketMatch::No;
        }
        let (not, mut elems) = Elems::new(self.pat, p);
        loop {
            match elems.next() {
                Ok(Some(e)) if e.contains(s[n]) => break,
                Ok(Some(_)) => {}
                Ok(None) => return if not { BracketMatch::Yes(elems.p) } else { BracketMatch::No },
                Err(Stop::Unterminated) => return BracketMatch::Literal,
                Err(Stop::Invalid(_)) => return BracketMatch::No,
            }
        }
        let mut p = elems.resume();
        // Skip the rest of the expression that already matched.
        loop {
            let c = self.pc(p);
            p += 1;
            if c == b']' {
                break;
            }
            if c == 0 {
                // glibc >= 2.35 (see `posix/fnmatch_loop.c`): unterminated after all.
                return BracketMatch::Literal;
            }
            if c == b'\\' {
                if self.pc(p) == 0 {
                    return BracketMatch::No;
                }
                p += 1;
            } else if c == b'[' && self.pc(p) == b':' {
                let startp = p;
                let mut c1 = 0;
                loop {
                    p += 1;
                    let d = self.pc(p);
                    c1 += 1;
                    if c1 == CHAR_CLASS_MAX_LENGTH {
                        return BracketMatch::No;
                    }
                    if self.pc(p) == b':' && self.pc(p + 1) == b']' {
                        break;
                    }
                    if !(b'a'..=b'y').contains(&d) {
                        p = startp - 2;
                        break;
                    }
                }
                p += 2;
            } else if c == b'[' && self.pc(p) == b'=' {
                p += 1;
                if self.pc(p) == 0 {
                    return BracketMatch::No;
                }
                p += 1;
                if self.pc(p) != b'=' || self.pc(p + 1) != b']' {
                    return BracketMatch::No;
                }
                p += 2;
            } else if c == b'[' && self.pc(p) == b'.' {
                loop {
                    p += 1;
                    let d = self.pc(p);
                    if d == 0 {
                        return BracketMatch::No;
                    }
                    if d == b'.' && self.pc(p + 1) == b']' {
                        break;
                    }
                }
                p += 2;
            }
        }
        if not { BracketMatch::No } else { BracketMatch::Yes(p) }
    }
}

/// Outcome of one bracket expression in [`Fnm::bracket`].
enum BracketMatch {
    /// Matched; the pattern continues at this index.
    Yes(usize),
    /// No match: the whole `fnmatch` fails.
    No,
    /// Unterminated: glibc treats the `[` as an ordinary character.
    Literal,
}

#[cfg(test)]
mod tests {
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
        let err =
            ActionMatcher::new(&["/a".to_string(), "x\\".to_string()]).map(|_| ()).unwrap_err();
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
}
