//! A small port of glibc's `fnmatch` (C locale, byte-wise), with its bracket
//! expression parsing: the reference the globs must agree with, and the
//! matcher for the patterns globset cannot express.

use super::*;

/// A bracket expression, parsed statically with glibc's grammar.
pub(super) struct Bracket {
    /// `[!…]` or `[^…]`.
    pub(super) negated: bool,
    /// The bytes listed (before negation), C locale.
    pub(super) members: [bool; 256],
    /// Index just after the closing `]`.
    pub(super) end: usize,
    /// The first range written backwards (`[z-a]`): valid for glibc, matches nothing.
    pub(super) reversed: Option<(u8, u8)>,
}

/// Why a bracket expression can never match.
#[derive(Debug)]
pub(super) enum BracketError {
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
    pub(super) fn message(&self) -> String {
        match self {
            Self::Unclosed => "unclosed character class; missing ']'".to_string(),
            Self::DanglingEscape => "dangling '\\'".to_string(),
            Self::BadClass(name) => format!("invalid character class name '{name}'"),
            Self::BadCollating => "invalid collating element".to_string(),
        }
    }
}

/// Parses the bracket expression whose `[` is at `start` into its byte set.
pub(super) fn parse_bracket(pat: &[u8], start: usize) -> Result<Bracket, BracketError> {
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
pub(super) enum Elem {
    /// A byte: `a`, `\]`, `[=a=]`, `[.a.]`.
    Byte(u8),
    /// `a-z` (empty when reversed).
    Range(u8, u8),
    /// `[:alpha:]`.
    Class(CharClass),
}

impl Elem {
    /// Whether byte `b` belongs to the element.
    pub(super) fn contains(self, b: u8) -> bool {
        match self {
            Self::Byte(x) => x == b,
            Self::Range(lo, hi) => lo <= b && b <= hi,
            Self::Class(class) => class.contains(b),
        }
    }
}

/// Why the element list of a bracket expression stopped before its `]`.
pub(super) enum Stop {
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
pub(super) struct Elems<'a> {
    /// The whole pattern (a NUL or its end terminates it, as in C).
    pub(super) pat: &'a [u8],
    /// Index just after `c` (glibc's `p`).
    pub(super) p: usize,
    /// The character being looked at (glibc's `c`).
    pub(super) c: u8,
    /// No element read yet: a `]` here is an ordinary character.
    pub(super) first: bool,
    /// The last single character, which a following `-x` turns into a range.
    pub(super) pending: Option<u8>,
}

impl<'a> Elems<'a> {
    /// Starts after the `[` (at index `p - 1`); also returns whether it is negated.
    pub(super) fn new(pat: &'a [u8], mut p: usize) -> (bool, Self) {
        let at = |i: usize| pat.get(i).copied().unwrap_or(0);
        let negated = at(p) == b'!' || at(p) == b'^';
        if negated {
            p += 1;
        }
        (negated, Self { pat, p: p + 1, c: at(p), first: true, pending: None })
    }

    /// Pattern byte at `i`, 0 past the end.
    pub(super) fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// Moves to the next character.
    pub(super) fn advance(&mut self) {
        self.c = self.pc(self.p);
        self.p += 1;
    }

    /// Where glibc's "skip the rest" loop starts after a matching element.
    pub(super) fn resume(&self) -> usize {
        self.p - 1
    }

    /// The next element; `Ok(None)` at the closing `]` (then `p` is just after it).
    pub(super) fn next(&mut self) -> Result<Option<Elem>, Stop> {
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
    pub(super) fn single(&mut self, x: u8) -> Option<Elem> {
        let is_range =
            self.pc(self.p) == b'-' && self.pc(self.p + 1) != 0 && self.pc(self.p + 1) != b']';
        self.pending = Some(x);
        self.advance();
        (!is_range).then_some(Elem::Byte(x))
    }

    /// The end of a range, after its `-` (`c`); leaves `p` just after it.
    pub(super) fn range_end(&mut self) -> Result<u8, Stop> {
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
    pub(super) fn collating(&mut self) -> Result<u8, Stop> {
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
    pub(super) fn class_name(&mut self) -> Result<Option<Vec<u8>>, Stop> {
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
pub(super) enum CharClass {
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
    pub(super) fn from_name(name: &[u8]) -> Option<Self> {
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
    pub(super) fn contains(self, b: u8) -> bool {
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
pub(super) fn fnmatch(pattern: &[u8], string: &[u8], flags: Flags) -> bool {
    Fnm { pat: pattern, s: string, flags }.fct(0, 0, None)
}

/// One `fnmatch` evaluation.
pub(super) struct Fnm<'a> {
    /// The pattern (a NUL or its end terminates it, as in C).
    pub(super) pat: &'a [u8],
    /// The string.
    pub(super) s: &'a [u8],
    /// The flags.
    pub(super) flags: Flags,
}

impl Fnm<'_> {
    /// Pattern byte at `i`, 0 past the end.
    pub(super) fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// glibc's `FCT`: does `pat[p..]` match `s[n..]`? With `ends` (glibc's `struct
    /// STRUCT`), the next `*` ends the attempt successfully and `ends` says where it
    /// was reached (pattern index, string index); the caller continues from there.
    pub(super) fn fct(
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
    pub(super) fn bracket(&self, p: usize, n: usize) -> BracketMatch {
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
pub(super) enum BracketMatch {
    /// Matched; the pattern continues at this index.
    Yes(usize),
    /// No match: the whole `fnmatch` fails.
    No,
    /// Unterminated: glibc treats the `[` as an ordinary character.
    Literal,
}
