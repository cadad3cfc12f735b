//! Compiling a group's patterns into [`globset::GlobSet`]s: each csync2
//! pattern translated to a glob that matches exactly what glibc's `fnmatch`
//! would; the few it cannot express are left to [`super::glibc`].

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use super::*;

/// The `fnmatch` flags csync2 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flags {
    /// `FNM_PATHNAME`: `*`, `?` and bracket expressions never match `/`.
    pub(super) pathname: bool,
    /// `FNM_LEADING_DIR`: also match when the pattern matches a prefix of the string
    /// that is followed by `/`.
    pub(super) leading_dir: bool,
}

/// A set of fnmatch patterns, each belonging to an item (a rule or pattern index).
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    /// The patterns globset can express.
    pub(super) set: GlobSet,
    /// Item of each glob in `set` (ascending: globs are added in item order).
    pub(super) owner: Vec<usize>,
    /// `(item, pattern, flags)` matched with [`fnmatch`], in item order.
    pub(super) fallback: Vec<(usize, Vec<u8>, Flags)>,
    /// Every `(item, pattern, flags)`, for strings globset mishandles.
    pub(super) all: Vec<(usize, Vec<u8>, Flags)>,
}

/// False for a string whose last component is `..`: globset's candidate has no
/// basename then, and its extension strategies miss (`*.` does not match `..`).
pub(super) fn globset_safe(bytes: &[u8]) -> bool {
    basename(bytes) != b".."
}

/// Collects patterns for a [`Compiled`].
pub(super) struct CompiledBuilder {
    /// The globs so far.
    pub(super) set: GlobSetBuilder,
    /// Item of each glob.
    pub(super) owner: Vec<usize>,
    /// Patterns left to the fnmatch port.
    pub(super) fallback: Vec<(usize, Vec<u8>, Flags)>,
    /// Every pattern.
    pub(super) all: Vec<(usize, Vec<u8>, Flags)>,
}

impl CompiledBuilder {
    /// An empty builder.
    pub(super) fn new() -> Self {
        Self {
            set: GlobSetBuilder::new(),
            owner: Vec::new(),
            fallback: Vec::new(),
            all: Vec::new(),
        }
    }

    /// Adds `pattern` for `item`; items must be added in ascending order.
    pub(super) fn add(&mut self, item: usize, pattern: &str, flags: Flags) {
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
    pub(super) fn build(self) -> Result<Compiled, globset::Error> {
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
    pub(super) fn last_match(
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
    pub(super) fn any(&self, cand: &Candidate<'_>, bytes: &[u8]) -> bool {
        if !globset_safe(bytes) {
            return self.all.iter().any(|(_, pat, flags)| fnmatch(pat, bytes, *flags));
        }
        self.set.is_match_candidate(cand)
            || self.fallback.iter().any(|(_, pat, flags)| fnmatch(pat, bytes, *flags))
    }
}

/// Translates an fnmatch pattern (with `flags`) into equivalent globset globs (one,
/// or two for `FNM_LEADING_DIR`), or `None` when globset cannot express it exactly.
pub(super) fn to_globs(pattern: &str, flags: Flags) -> Option<Vec<globset::Glob>> {
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
pub(super) fn translate(pattern: &str, pathname: bool) -> Option<String> {
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
pub(super) fn has_odd_bracket(text: &[u8]) -> bool {
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
pub(super) fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_punctuation() && c != '/' {
        out.push('\\');
    }
    out.push(c);
}

/// Appends a globset class equivalent to the fnmatch bracket expression with byte set
/// `members` (negated or not). `None` when that cannot be written.
pub(super) fn emit_class(
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
