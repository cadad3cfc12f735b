//! Turns csync2 config text into tokens, following `config FILE;` includes.
//!
//! The rules are csync2's scanner's (see the reference, §2.1): `#` comments, quoted
//! strings without escapes, bare words that may contain `:` but not end with it, and
//! keywords only as whole words. Includes are lexical, as in csync2, so they are
//! expanded here and the parser sees one token stream.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Diagnostic, Span};

/// csync2 refuses deeper nesting; a cycle of includes ends here too.
pub(crate) const MAX_INCLUDE_DEPTH: usize = 10;

/// The reserved words of the grammar (`config` is handled by the lexer itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    Group,
    Host,
    Exclude,
    Include,
    Compare,
    Key,
    Auto,
    Action,
    Pattern,
    Exec,
    Logfile,
    DoLocal,
    DoLocalOnly,
    Timeout,
    Prefix,
    On,
    Nossl,
    Ignore,
    Database,
    Tempdir,
    LockTimeout,
    BackupDirectory,
    BackupGenerations,
    NoCygwinLowercase,
    // Our group extensions below are "soft": the lexer never produces them
    // (they are not in `ALL`), the parser recognises the words only where a
    // group statement starts. So `exclude owners;` in a csync2 config keeps
    // meaning a file named `owners`.
    AllowDevices,
    AllowSetid,
    Owners,
}

impl Kw {
    const ALL: [Kw; 24] = [
        Kw::Group,
        Kw::Host,
        Kw::Exclude,
        Kw::Include,
        Kw::Compare,
        Kw::Key,
        Kw::Auto,
        Kw::Action,
        Kw::Pattern,
        Kw::Exec,
        Kw::Logfile,
        Kw::DoLocal,
        Kw::DoLocalOnly,
        Kw::Timeout,
        Kw::Prefix,
        Kw::On,
        Kw::Nossl,
        Kw::Ignore,
        Kw::Database,
        Kw::Tempdir,
        Kw::LockTimeout,
        Kw::BackupDirectory,
        Kw::BackupGenerations,
        Kw::NoCygwinLowercase,
    ];

    /// The keyword's spelling in a config file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kw::Group => "group",
            Kw::Host => "host",
            Kw::Exclude => "exclude",
            Kw::Include => "include",
            Kw::Compare => "compare",
            Kw::Key => "key",
            Kw::Auto => "auto",
            Kw::Action => "action",
            Kw::Pattern => "pattern",
            Kw::Exec => "exec",
            Kw::Logfile => "logfile",
            Kw::DoLocal => "do-local",
            Kw::DoLocalOnly => "do-local-only",
            Kw::Timeout => "timeout",
            Kw::Prefix => "prefix",
            Kw::On => "on",
            Kw::Nossl => "nossl",
            Kw::Ignore => "ignore",
            Kw::Database => "database",
            Kw::Tempdir => "tempdir",
            Kw::LockTimeout => "lock-timeout",
            Kw::BackupDirectory => "backup-directory",
            Kw::BackupGenerations => "backup-generations",
            Kw::NoCygwinLowercase => "no-cygwin-lowercase",
            Kw::AllowDevices => "allow-devices",
            Kw::AllowSetid => "allow-setid",
            Kw::Owners => "owners",
        }
    }

    /// The soft keyword a bare word spells, if any (see [`Kw::AllowDevices`]).
    pub(crate) fn soft(w: &str) -> Option<Kw> {
        [Kw::AllowDevices, Kw::AllowSetid, Kw::Owners].into_iter().find(|k| k.as_str() == w)
    }

    fn from_word(w: &str) -> Option<Kw> {
        Kw::ALL.into_iter().find(|k| k.as_str() == w)
    }
}

/// Every word the config language gives a meaning (for csync.cfg(5)'s test).
#[cfg(test)]
pub(crate) fn keywords() -> impl Iterator<Item = &'static str> {
    Kw::ALL.into_iter().chain([Kw::AllowDevices, Kw::AllowSetid, Kw::Owners]).map(|k| k.as_str())
}

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Semi,
    Colon,
    At,
    /// A bare word that is not a keyword.
    Word(String),
    /// A `"…"` string, without the quotes. Never a keyword.
    Quoted(String),
    Kw(Kw),
    /// End of the main file (included files end silently, as in csync2).
    Eof,
}

impl Tok {
    /// How the token reads in a message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Semi => "';'".into(),
            Tok::Colon => "':'".into(),
            Tok::At => "'@'".into(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Quoted(w) => format!("\"{w}\""),
            Tok::Kw(k) => format!("'{}'", k.as_str()),
            Tok::Eof => "end of file".into(),
        }
    }
}

/// One token with its position. `seq` is its index in the whole (include-expanded)
/// stream, which is how diagnostics from different phases are put in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
    pub seq: u32,
}

/// The text of every file read, so that any phase can quote a source line.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    files: HashMap<Arc<str>, Vec<String>>,
}

impl Sources {
    fn add(&mut self, name: &Arc<str>, text: &str) {
        self.files
            .entry(name.clone())
            .or_insert_with(|| text.lines().map(|l| l.trim_end_matches('\r').to_owned()).collect());
    }

    /// The source line a span points into (empty for whole-file spans).
    pub(crate) fn line(&self, span: &Span) -> String {
        if span.line == 0 {
            return String::new();
        }
        self.files
            .get(&span.file)
            .and_then(|lines| lines.get(span.line as usize - 1))
            .cloned()
            .unwrap_or_default()
    }

    /// An error at `span`, quoting its line.
    pub(crate) fn error(&self, span: &Span, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::error(span.clone(), self.line(span), msg)
    }

    /// A warning at `span`, quoting its line.
    pub(crate) fn warning(&self, span: &Span, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(span.clone(), self.line(span), msg)
    }
}

/// Diagnostics tagged with the token sequence number they belong before or at, so
/// that the final list can be sorted into source order.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    items: Vec<(u32, Diagnostic)>,
}

impl Diags {
    /// Records `d`, ordered as token `seq`.
    pub(crate) fn push(&mut self, seq: u32, d: Diagnostic) {
        self.items.push((seq, d));
    }

    /// True when some recorded diagnostic is an error.
    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(|(_, d)| d.severity == crate::diag::Severity::Error)
    }

    /// Everything recorded, in source order (ties keep the order of recording).
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|(seq, _)| *seq);
        self.items.into_iter().map(|(_, d)| d).collect()
    }
}

/// How the lexer reads included files; tests substitute an in-memory map.
pub(crate) type Reader<'a> = &'a dyn Fn(&Path) -> io::Result<String>;

/// The result of lexing a file and everything it includes.
#[derive(Debug)]
pub(crate) struct Lexed {
    /// Tokens of all files, in include-expanded order, ending with one `Eof`.
    pub tokens: Vec<Token>,
    /// The text of every file read.
    pub sources: Sources,
    /// An unterminated string swallowed the rest of a file; the parser then keeps
    /// quiet about the end of file, which is only a consequence.
    pub unterminated: bool,
}

/// One open file on the include stack.
struct Cursor {
    name: Arc<str>,
    chars: Vec<char>,
    pos: usize,
    line: u32,
    col: u32,
}

impl Cursor {
    fn new(name: Arc<str>, text: &str) -> Self {
        Cursor { name, chars: text.chars().collect(), pos: 0, line: 1, col: 1 }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn span(&self, line: u32, col: u32, len: usize) -> Span {
        Span { file: self.name.clone(), line, col, len: len as u32 }
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_word_char(c: char) -> bool {
    !is_space(c) && !matches!(c, '@' | ';' | '(' | ')' | '#' | '"')
}

/// Lexes `text` (the file `name`) and every file it includes. Lexical errors go to
/// `diags`; lexing always completes so that the parser can report more.
pub(crate) fn tokenize(name: &str, text: &str, reader: Reader<'_>, diags: &mut Diags) -> Lexed {
    let mut sources = Sources::default();
    let name: Arc<str> = Arc::from(name);
    sources.add(&name, text);
    let mut stack = vec![Cursor::new(name, text)];
    let mut tokens: Vec<Token> = Vec::new();
    let mut unterminated = false;

    while let Some(cur) = stack.last_mut() {
        let Some(c) = cur.peek() else {
            stack.pop();
            continue;
        };
        let seq = tokens.len() as u32;
        let (line, col) = (cur.line, cur.col);
        if is_space(c) {
            cur.bump();
            continue;
        }
        if c == '#' {
            while cur.peek().is_some_and(|c| c != '\n') {
                cur.bump();
            }
            continue;
        }
        let punct = match c {
            ';' => Some(Tok::Semi),
            '@' => Some(Tok::At),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            _ => None,
        };
        if let Some(tok) = punct {
            cur.bump();
            tokens.push(Token { tok, span: cur.span(line, col, 1), seq });
            continue;
        }
        if c == '"' {
            cur.bump();
            let mut s = String::new();
            loop {
                match cur.bump() {
                    Some('"') => break,
                    Some(c) => s.push(c),
                    None => {
                        unterminated = true;
                        let span = cur.span(line, col, 1);
                        diags.push(
                            seq,
                            sources.error(&span, "unterminated quoted string").with_help(
                                "a quoted string ends at the next '\"' (there are no escapes)",
                            ),
                        );
                        break;
                    }
                }
            }
            // A string spanning lines is underlined to the end of its first line only.
            let width = s.chars().take_while(|&c| c != '\n').count() + 2;
            tokens.push(Token { tok: Tok::Quoted(s), span: cur.span(line, col, width), seq });
            continue;
        }

        // A bare word: the longest run of word characters, minus trailing colons,
        // which csync2 lexes as separate `:` tokens (`on host: /path`).
        let mut run = String::new();
        while let Some(c) = cur.peek().filter(|&c| is_word_char(c)) {
            run.push(c);
            cur.bump();
        }
        let word_len = run.trim_end_matches(':').chars().count();
        let mut col_at = col;
        if word_len == 0 {
            // Nothing but colons.
        } else if run.chars().take(word_len).all(|c| c == '{' || c == '}') {
            // `{`, `}` and runs like `}}` are punctuation, never words.
            for c in run.chars().take(word_len) {
                let tok = if c == '{' { Tok::LBrace } else { Tok::RBrace };
                tokens.push(Token {
                    tok,
                    span: cur.span(line, col_at, 1),
                    seq: tokens.len() as u32,
                });
                col_at += 1;
            }
        } else {
            let word: String = run.chars().take(word_len).collect();
            let span = cur.span(line, col, word_len);
            col_at += word_len as u32;
            if word == "config" {
                include(&mut stack, &mut sources, &span, reader, seq, diags);
                // The include pushed a file (or failed); trailing colons are ignored
                // like the rest of csync2's odd spellings of this line.
                continue;
            }
            let tok = match Kw::from_word(&word) {
                Some(k) => Tok::Kw(k),
                None => Tok::Word(word),
            };
            tokens.push(Token { tok, span, seq });
        }
        let cur = stack.last().expect("still lexing this file");
        for _ in word_len..run.chars().count() {
            tokens.push(Token {
                tok: Tok::Colon,
                span: cur.span(line, col_at, 1),
                seq: tokens.len() as u32,
            });
            col_at += 1;
        }
    }

    let seq = tokens.len() as u32;
    let span = match tokens.last() {
        // End of file: just past the last token of the main file, so that "missing ';'"
        // and "unclosed block" errors point somewhere visible.
        Some(t) => Span { len: 1, col: t.span.col + t.span.len, ..t.span.clone() },
        None => Span { file: Arc::from(""), line: 0, col: 0, len: 0 },
    };
    tokens.push(Token { tok: Tok::Eof, span, seq });
    Lexed { tokens, sources, unterminated }
}

/// Handles `config FILE;` right after the word `config`: reads FILE and pushes it.
fn include(
    stack: &mut Vec<Cursor>,
    sources: &mut Sources,
    kw_span: &Span,
    reader: Reader<'_>,
    seq: u32,
    diags: &mut Diags,
) {
    let cur = stack.last_mut().expect("include from an open file");
    while cur.peek().is_some_and(is_space) {
        cur.bump();
    }
    let (line, col) = (cur.line, cur.col);
    let mut file = String::new();
    if cur.peek() == Some('"') {
        cur.bump();
        while let Some(c) = cur.bump() {
            if c == '"' {
                break;
            }
            file.push(c);
        }
    } else {
        while let Some(c) = cur.peek().filter(|&c| !is_space(c) && c != ';') {
            file.push(c);
            cur.bump();
        }
    }
    let file_span = cur.span(line, col, (cur.col.saturating_sub(col)).max(1) as usize);
    // csync2 eats the `;` after the file name but does not insist on it.
    let save = (cur.pos, cur.line, cur.col);
    while cur.peek().is_some_and(is_space) {
        cur.bump();
    }
    if cur.peek() == Some(';') {
        cur.bump();
    } else {
        (cur.pos, cur.line, cur.col) = save;
    }
    if file.is_empty() {
        diags.push(seq, sources.error(kw_span, "'config' needs a file name: config FILE;"));
        return;
    }
    if stack.len() > MAX_INCLUDE_DEPTH {
        diags.push(
            seq,
            sources
                .error(
                    &file_span,
                    format!("config includes nested more than {MAX_INCLUDE_DEPTH} levels deep"),
                )
                .with_help("check for a file that includes itself"),
        );
        return;
    }
    // Relative to the including file, not the working directory (csync2 used the cwd,
    // which made configs depend on where csync was started).
    let including = Path::new(&*stack.last().expect("open file").name);
    let path: PathBuf = match including.parent() {
        Some(dir) => dir.join(&file),
        None => PathBuf::from(&file),
    };
    match reader(&path) {
        Ok(text) => {
            let name: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
            sources.add(&name, &text);
            stack.push(Cursor::new(name, &text));
        }
        Err(e) => diags.push(
            seq,
            sources.error(
                &file_span,
                format!("cannot read included config file '{file}': {}", io_reason(&e)),
            ),
        ),
    }
}

/// An I/O error's reason without Rust's " (os error N)" suffix, which users need not see.
pub(crate) fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
#[path = "lexer_tests.rs"]
mod tests;
