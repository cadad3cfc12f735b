//! Tests of `config/lexer.rs` (kept apart so the module itself stays readable).

use super::*;

fn no_files(_: &Path) -> io::Result<String> {
    Err(io::Error::from(io::ErrorKind::NotFound))
}

fn lex(text: &str) -> (Vec<Tok>, Vec<Diagnostic>) {
    let mut diags = Diags::default();
    let l = tokenize("t.cfg", text, &no_files, &mut diags);
    (l.tokens.into_iter().map(|t| t.tok).collect(), diags.into_sorted())
}

fn w(s: &str) -> Tok {
    Tok::Word(s.into())
}

#[test]
fn punctuation_words_and_keywords() {
    let (toks, d) = lex("group web { host a b@x (c); }");
    assert!(d.is_empty());
    assert_eq!(
        toks,
        vec![
            Tok::Kw(Kw::Group),
            w("web"),
            Tok::LBrace,
            Tok::Kw(Kw::Host),
            w("a"),
            w("b"),
            Tok::At,
            w("x"),
            Tok::LParen,
            w("c"),
            Tok::RParen,
            Tok::Semi,
            Tok::RBrace,
            Tok::Eof
        ]
    );
}

#[test]
fn keywords_only_as_whole_words() {
    let (toks, _) = lex("hosts configs do-local do-local-only do-locals");
    assert_eq!(
        toks,
        vec![
            w("hosts"),
            w("configs"),
            Tok::Kw(Kw::DoLocal),
            Tok::Kw(Kw::DoLocalOnly),
            w("do-locals"),
            Tok::Eof
        ]
    );
}

#[test]
fn colon_inside_word_but_not_at_end() {
    let (toks, _) = lex("on host[12]: /p; a:b c:: d:/x");
    assert_eq!(
        toks,
        vec![
            Tok::Kw(Kw::On),
            w("host[12]"),
            Tok::Colon,
            w("/p"),
            Tok::Semi,
            w("a:b"),
            w("c"),
            Tok::Colon,
            Tok::Colon,
            w("d:/x"),
            Tok::Eof
        ]
    );
}

#[test]
fn comments_and_quotes() {
    let (toks, d) = lex("exec \"a # b;\nc\"; # comment ; {\n\"host\"");
    assert!(d.is_empty());
    assert_eq!(
        toks,
        vec![
            Tok::Kw(Kw::Exec),
            Tok::Quoted("a # b;\nc".into()),
            Tok::Semi,
            Tok::Quoted("host".into()),
            Tok::Eof
        ]
    );
}

#[test]
fn braces_stuck_to_words() {
    let (toks, _) = lex("web{ }} /a/{b}");
    assert_eq!(toks, vec![w("web{"), Tok::RBrace, Tok::RBrace, w("/a/{b}"), Tok::Eof]);
}

#[test]
fn positions_are_line_and_char_column() {
    let mut diags = Diags::default();
    let l = tokenize("t.cfg", "  é x\n\tkey", &no_files, &mut diags);
    let pos: Vec<(u32, u32, u32)> =
        l.tokens.iter().map(|t| (t.span.line, t.span.col, t.span.len)).collect();
    assert_eq!(pos, vec![(1, 3, 1), (1, 5, 1), (2, 2, 3), (2, 5, 1)]);
}

#[test]
fn unterminated_string() {
    let (toks, d) = lex("key \"abc\n def");
    assert_eq!(toks, vec![Tok::Kw(Kw::Key), Tok::Quoted("abc\n def".into()), Tok::Eof]);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "unterminated quoted string");
    assert_eq!((d[0].span.line, d[0].span.col), (1, 5));
}

#[test]
fn include_is_spliced_relative_to_includer() {
    let reader = |p: &Path| -> io::Result<String> {
        match p.to_str() {
            Some("dir/b.cfg") => Ok("host x;\nconfig sub/c.cfg".into()),
            Some("dir/sub/c.cfg") => Ok("key k;".into()),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    };
    let mut diags = Diags::default();
    let l = tokenize("dir/a.cfg", "a config b.cfg; z", &reader, &mut diags);
    assert!(diags.into_sorted().is_empty());
    let toks: Vec<(Tok, String, u32)> =
        l.tokens.iter().map(|t| (t.tok.clone(), t.span.file.to_string(), t.span.line)).collect();
    assert_eq!(
        toks,
        vec![
            (w("a"), "dir/a.cfg".into(), 1),
            (Tok::Kw(Kw::Host), "dir/b.cfg".into(), 1),
            (w("x"), "dir/b.cfg".into(), 1),
            (Tok::Semi, "dir/b.cfg".into(), 1),
            (Tok::Kw(Kw::Key), "dir/sub/c.cfg".into(), 1),
            (w("k"), "dir/sub/c.cfg".into(), 1),
            (Tok::Semi, "dir/sub/c.cfg".into(), 1),
            (w("z"), "dir/a.cfg".into(), 1),
            (Tok::Eof, "dir/a.cfg".into(), 1),
        ]
    );
}

#[test]
fn include_missing_and_too_deep() {
    let (_, d) = lex("config nope.cfg;");
    assert_eq!(d[0].message, "cannot read included config file 'nope.cfg': entity not found");
    assert_eq!((d[0].span.line, d[0].span.col, d[0].span.len), (1, 8, 8));

    let reader = |_: &Path| -> io::Result<String> { Ok("config self.cfg;".into()) };
    let mut diags = Diags::default();
    tokenize("self.cfg", "config self.cfg;", &reader, &mut diags);
    let d = diags.into_sorted();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "config includes nested more than 10 levels deep");
}
