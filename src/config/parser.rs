//! Tokens to a syntax tree, reporting every syntax error and recovering at `;` and `}`.
//!
//! The grammar is csync2's (reference §2.2). Checks that need only one statement
//! (numbers, `auto` values, pattern syntax, …) are done here; checks that need the
//! whole file or the node's name are left to `resolve`.

mod statements;

use std::path::PathBuf;

use super::lexer::{Diags, Kw, Lexed, Sources, Tok, Token};
use super::model::{Action, AutoMethod, Host, Ignore, Rule};
use crate::diag::Span;

/// A value token (bare word or quoted string) with its position.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub text: String,
    pub span: Span,
    pub seq: u32,
}

/// One `group` block as written.
#[derive(Debug)]
pub(crate) struct GroupAst {
    pub name: String,
    pub span: Span,
    pub seq: u32,
    pub hosts: Vec<Host>,
    pub key: Option<Val>,
    /// Rules with the sequence number of their pattern token.
    pub rules: Vec<(Rule, u32)>,
    pub auto: AutoMethod,
    /// Each action with its pattern tokens (for prefix checks).
    pub actions: Vec<(Action, Vec<Val>)>,
    pub backup_directory: Option<PathBuf>,
    pub backup_generations: u32,
    /// Where `backup-generations` was written (for the check that it has a directory).
    pub generations_at: Option<Val>,
    pub allow_devices: bool,
    pub allow_setid: bool,
    pub owner_range: Option<(u32, u32)>,
}

/// One `prefix` block as written.
#[derive(Debug)]
pub(crate) struct PrefixAst {
    pub name: String,
    pub span: Span,
    pub entries: Vec<(String, PathBuf)>,
}

/// The whole file as written.
#[derive(Debug, Default)]
pub(crate) struct Ast {
    pub groups: Vec<GroupAst>,
    pub prefixes: Vec<PrefixAst>,
    pub nossl: Vec<(String, String)>,
    pub ignore: Ignore,
    pub database: Option<String>,
    pub tempdir: Option<PathBuf>,
    pub lock_timeout: Option<u32>,
}

/// Which block a statement is in; decides which directives are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    Group,
    Action,
    Prefix,
}

impl Ctx {
    fn of(kw: Kw) -> Ctx {
        match kw {
            Kw::Group
            | Kw::Prefix
            | Kw::Nossl
            | Kw::Ignore
            | Kw::Database
            | Kw::Tempdir
            | Kw::LockTimeout
            | Kw::NoCygwinLowercase => Ctx::Top,
            Kw::Host
            | Kw::Exclude
            | Kw::Include
            | Kw::Compare
            | Kw::Key
            | Kw::Auto
            | Kw::Action
            | Kw::BackupDirectory
            | Kw::BackupGenerations
            | Kw::AllowDevices
            | Kw::AllowSetid
            | Kw::Owners => Ctx::Group,
            Kw::Pattern | Kw::Exec | Kw::Logfile | Kw::DoLocal | Kw::DoLocalOnly | Kw::Timeout => {
                Ctx::Action
            }
            Kw::On => Ctx::Prefix,
        }
    }

    fn valid(self) -> &'static [&'static str] {
        match self {
            Ctx::Top => &[
                "group",
                "prefix",
                "nossl",
                "ignore",
                "database",
                "tempdir",
                "lock-timeout",
                "config",
            ],
            Ctx::Group => &[
                "host",
                "key",
                "include",
                "exclude",
                "compare",
                "auto",
                "action",
                "backup-directory",
                "backup-generations",
                "allow-devices",
                "allow-setid",
                "owners",
            ],
            Ctx::Action => &["pattern", "exec", "logfile", "do-local", "do-local-only", "timeout"],
            Ctx::Prefix => &["on"],
        }
    }

    fn where_(self) -> &'static str {
        match self {
            Ctx::Top => "at top level",
            Ctx::Group => "in a group block",
            Ctx::Action => "in an action block",
            Ctx::Prefix => "in a prefix block",
        }
    }
}

/// The `auto` methods, for help texts.
const AUTO_METHODS: [&str; 8] =
    ["none", "first", "younger", "older", "bigger", "smaller", "left", "right"];

/// Parses the token stream into an [`Ast`], recording every problem in `diags`.
pub(crate) fn parse(lexed: &Lexed, diags: &mut Diags) -> Ast {
    let mut p = Parser {
        toks: &lexed.tokens,
        pos: 0,
        src: &lexed.sources,
        diags,
        eof_reported: lexed.unterminated,
        nameless: 0,
        ctx: Ctx::Top,
        quiet_end: false,
        ast: Ast::default(),
    };
    p.top();
    p.ast
}

/// What the block loop found next.
enum Step {
    /// The block's `}` (consumed).
    Close,
    /// A directive that belongs in this block (not consumed).
    Stmt(Kw),
    /// Something already reported and skipped.
    Again,
    /// The block cannot go on (end of file, or an outer block's directive); reported.
    Leave,
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    src: &'a Sources,
    diags: &'a mut Diags,
    /// Only the innermost unclosed block is reported at end of file, and nothing
    /// when an unterminated string ate it.
    eof_reported: bool,
    /// Counter for `group_1`, `group_2`, … (csync2's names for nameless groups).
    nameless: u32,
    /// The block whose statements are being parsed.
    ctx: Ctx,
    /// The current statement already has an error; its end is found without another.
    quiet_end: bool,
    ast: Ast,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &'a Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> &'a Token {
        let t = self.peek();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn error(&mut self, seq: u32, span: &Span, msg: impl Into<String>, help: Option<String>) {
        let mut d = self.src.error(span, msg);
        d.help = help;
        self.diags.push(seq, d);
    }

    fn warning(&mut self, seq: u32, span: &Span, msg: impl Into<String>) {
        let d = self.src.warning(span, msg);
        self.diags.push(seq, d);
    }

    /// A bare word or quoted string, consumed.
    fn value(&mut self) -> Option<Val> {
        let t = self.peek();
        match &t.tok {
            Tok::Word(s) | Tok::Quoted(s) => {
                self.bump();
                Some(Val { text: s.clone(), span: t.span.clone(), seq: t.seq })
            }
            _ => None,
        }
    }

    fn values(&mut self) -> Vec<Val> {
        std::iter::from_fn(|| self.value()).collect()
    }

    /// Exactly one value after directive `kw`; reports its absence.
    fn one_value(&mut self, kw: &Token, what: &str) -> Option<Val> {
        let v = self.value();
        if v.is_none() {
            self.quiet_end = true;
            let t = self.peek();
            let name = kw_name(kw);
            self.error(
                t.seq,
                &t.span,
                format!("'{name}' needs {what}, found {}", t.tok.describe()),
                None,
            );
        }
        v
    }

    /// The `;` that ends a statement started by `kw`. A missing `;` before a keyword,
    /// `}` or end of file is reported and assumed, so the next statement still parses.
    fn end_stmt(&mut self, kw: &Token) {
        let t = self.peek();
        let name = kw_name(kw);
        if std::mem::take(&mut self.quiet_end) {
            match t.tok {
                Tok::Semi => {
                    self.bump();
                }
                Tok::Kw(_) | Tok::RBrace | Tok::Eof => {}
                _ => self.skip_stmt(),
            }
            return;
        }
        match &t.tok {
            Tok::Semi => {
                self.bump();
            }
            Tok::Eof if self.eof_reported => {}
            // A keyword that cannot start a statement here, on the statement's own line,
            // was meant as a value (`host a on;`): one error, not two.
            Tok::Kw(k)
                if Ctx::of(*k) != self.ctx
                    && t.span.line == self.toks[self.pos - 1].span.line
                    && t.span.file == self.toks[self.pos - 1].span.file =>
            {
                let msg =
                    format!("'{0}' is a keyword and cannot be a value of '{name}'", k.as_str());
                let help = format!("to use it as a value, quote it: \"{}\"", k.as_str());
                self.error(t.seq, &t.span, msg, Some(help));
                self.skip_stmt();
            }
            // A soft keyword starting the next line is the next statement too.
            Tok::Word(w)
                if Kw::soft(w).is_some_and(|k| Ctx::of(k) == self.ctx)
                    && t.span.line != self.toks[self.pos - 1].span.line =>
            {
                let prev = &self.toks[self.pos.saturating_sub(1)];
                let at = Span { col: prev.span.col + prev.span.len, len: 1, ..prev.span.clone() };
                self.error(t.seq, &at, format!("missing ';' after '{name}' statement"), None);
            }
            Tok::Kw(_) | Tok::RBrace | Tok::Eof => {
                let prev = &self.toks[self.pos.saturating_sub(1)];
                let at = Span { col: prev.span.col + prev.span.len, len: 1, ..prev.span.clone() };
                self.error(t.seq, &at, format!("missing ';' after '{name}' statement"), None);
            }
            Tok::Word(_) | Tok::Quoted(_) => {
                let takes = if is_flag(kw) { "takes no value" } else { "takes one value" };
                let msg = format!("unexpected {}: '{name}' {takes}", t.tok.describe());
                self.error(t.seq, &t.span, msg, None);
                self.skip_stmt();
            }
            _ => {
                let msg = format!("unexpected {}: expected ';' after '{name}'", t.tok.describe());
                self.error(t.seq, &t.span, msg, None);
                self.skip_stmt();
            }
        }
    }

    /// Skips to the end of a bad statement: past its `;` or its `{…}` block, or up
    /// to the `}` of the enclosing block.
    fn skip_stmt(&mut self) {
        loop {
            match self.peek().tok {
                Tok::Semi => {
                    self.bump();
                    return;
                }
                Tok::LBrace => {
                    self.skip_block();
                    return;
                }
                Tok::RBrace | Tok::Eof => return,
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn skip_block(&mut self) {
        let mut depth = 0u32;
        loop {
            match self.bump().tok {
                Tok::LBrace => depth += 1,
                Tok::RBrace => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                Tok::Eof => return,
                _ => {}
            }
        }
    }

    /// Reports the token at hand as out of place in `ctx`, then skips its statement.
    fn unexpected(&mut self, ctx: Ctx) {
        let t = self.peek();
        let valid = ctx.valid().join(", ");
        let (msg, help) = match &t.tok {
            Tok::Kw(k) => (
                format!("'{}' is not allowed {}", k.as_str(), ctx.where_()),
                format!("'{}' belongs {}; valid here: {valid}", k.as_str(), Ctx::of(*k).where_()),
            ),
            Tok::Word(w) if let Some(k) = Kw::soft(w) => (
                format!("'{w}' is not allowed {}", ctx.where_()),
                format!("'{w}' belongs {}; valid here: {valid}", Ctx::of(k).where_()),
            ),
            Tok::Word(w) | Tok::Quoted(w) => {
                let help = match did_you_mean(w, ctx.valid()) {
                    Some(s) => format!("did you mean '{s}'? valid {}: {valid}", ctx.where_()),
                    None => format!("valid {}: {valid}", ctx.where_()),
                };
                (format!("unknown directive '{w}' {}", ctx.where_()), help)
            }
            Tok::RBrace => ("unexpected '}': no block is open".to_owned(), String::new()),
            other => (
                format!("unexpected {}", other.describe()),
                format!("expected a directive; valid {}: {valid}", ctx.where_()),
            ),
        };
        self.error(t.seq, &t.span, msg, Some(help).filter(|h| !h.is_empty()));
        if t.tok == Tok::RBrace {
            self.bump();
        } else {
            self.skip_stmt();
        }
    }

    /// Expects the `{` of a block; returns the token to blame if it is never closed.
    fn open_block(&mut self, kw: &'a Token, what: &str) -> &'a Token {
        let t = self.peek();
        if t.tok == Tok::LBrace {
            return self.bump();
        }
        let prev = &self.toks[self.pos.saturating_sub(1)];
        if let Tok::Word(w) = &prev.tok
            && w.len() > 1
            && w.ends_with('{')
        {
            // `group web{`: csync2 reads `web{` as the name. Say so once and parse the
            // block as meant, rather than reporting every statement in it.
            let msg = format!("'{w}' is read as one word: put a space before '{{'");
            self.error(prev.seq, &prev.span, msg, None);
            return prev;
        }
        self.error(
            t.seq,
            &t.span,
            format!("expected '{{' after '{what}', found {}", t.tok.describe()),
            None,
        );
        kw
    }

    /// One step of a block's statement loop.
    fn step(&mut self, ctx: Ctx, open: &Token, label: &str) -> Step {
        self.ctx = ctx;
        let t = self.peek();
        match &t.tok {
            Tok::RBrace => {
                self.bump();
                Step::Close
            }
            Tok::Eof => {
                if !self.eof_reported {
                    self.eof_reported = true;
                    self.error(
                        open.seq,
                        &open.span,
                        format!("unclosed {label}: missing '}}'"),
                        Some("the file ends before this block is closed".to_owned()),
                    );
                }
                Step::Leave
            }
            Tok::Semi => {
                self.bump();
                Step::Again
            }
            Tok::Kw(k) if Ctx::of(*k) == ctx => Step::Stmt(*k),
            Tok::Word(w) if Kw::soft(w).is_some_and(|k| Ctx::of(k) == ctx) => {
                Step::Stmt(Kw::soft(w).expect("checked"))
            }
            Tok::Kw(k) if encloses(Ctx::of(*k), ctx) => {
                self.error(
                    open.seq,
                    &open.span,
                    format!("unclosed {label}: missing '}}'"),
                    Some(format!(
                        "'{}' on line {} belongs {}: close this block before it",
                        k.as_str(),
                        t.span.line,
                        Ctx::of(*k).where_()
                    )),
                );
                Step::Leave
            }
            _ => {
                self.unexpected(ctx);
                Step::Again
            }
        }
    }
}

/// True when directives of `outer` may legitimately follow a block of kind `inner`,
/// which means the inner block was left unclosed.
fn encloses(outer: Ctx, inner: Ctx) -> bool {
    match inner {
        Ctx::Top => false,
        Ctx::Group | Ctx::Prefix => outer == Ctx::Top,
        Ctx::Action => matches!(outer, Ctx::Top | Ctx::Group),
    }
}

/// Directives that stand alone (`do-local;`, `allow-devices;`).
fn is_flag(t: &Token) -> bool {
    match &t.tok {
        Tok::Kw(k) => matches!(k, Kw::DoLocal | Kw::DoLocalOnly),
        Tok::Word(w) => matches!(Kw::soft(w), Some(Kw::AllowDevices | Kw::AllowSetid)),
        _ => false,
    }
}

fn kw_name(t: &Token) -> String {
    match &t.tok {
        Tok::Kw(k) => k.as_str().to_owned(),
        // A soft keyword (our group extensions) starts its statement as a word.
        Tok::Word(w) => w.clone(),
        other => other.describe(),
    }
}

/// `"/a/b//"` → `"/a/b"`, but a lone `"/"` stays.
pub(crate) fn strip_trailing_slashes(s: &str) -> String {
    let t = s.trim_end_matches('/');
    if t.is_empty() && s.starts_with('/') { "/".to_owned() } else { t.to_owned() }
}

/// The closest candidate within a small edit distance, for "did you mean".
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (osa_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().min(word.len().max(1)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting an adjacent swap as one edit (typos like `hots`).
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes() {
        assert_eq!(strip_trailing_slashes("/a/b//"), "/a/b");
        assert_eq!(strip_trailing_slashes("///"), "/");
        assert_eq!(strip_trailing_slashes("%www%/"), "%www%");
        assert_eq!(strip_trailing_slashes("*.o"), "*.o");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("hots", Ctx::Group.valid()), Some("host"));
        assert_eq!(did_you_mean("gruop", Ctx::Top.valid()), Some("group"));
        assert_eq!(did_you_mean("youngest", &AUTO_METHODS), Some("younger"));
        assert_eq!(did_you_mean("zzzz", Ctx::Top.valid()), None);
        assert_eq!(did_you_mean("x", Ctx::Prefix.valid()), None);
    }
}
