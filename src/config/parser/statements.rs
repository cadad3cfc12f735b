//! The statements of each block: the top level, `group` (hosts, patterns,
//! `auto`, backups, receive policy), `action` and `prefix`, each checked as
//! far as one statement allows.

use std::path::PathBuf;

use super::{
    AUTO_METHODS, Ctx, GroupAst, Parser, PrefixAst, Step, Val, did_you_mean, strip_trailing_slashes,
};
use crate::config::lexer::{Kw, Tok, Token};
use crate::config::model::{Action, AutoMethod, Host, Rule, RuleKind};
use crate::diag::Span;

impl<'a> Parser<'a> {
    pub(super) fn top(&mut self) {
        loop {
            self.ctx = Ctx::Top;
            let t = self.peek();
            match &t.tok {
                Tok::Eof => return,
                Tok::Semi => {
                    self.bump();
                }
                Tok::Kw(k) if Ctx::of(*k) == Ctx::Top => self.top_stmt(*k),
                _ => self.unexpected(Ctx::Top),
            }
        }
    }

    fn top_stmt(&mut self, k: Kw) {
        let kw = self.bump();
        match k {
            Kw::Group => return self.group(kw),
            Kw::Prefix => return self.prefix(kw),
            Kw::Nossl => {
                self.warning(kw.seq, &kw.span, "nossl is ignored: csync always uses TLS");
                let v = self.values();
                if let [from, to] = &v[..] {
                    self.ast.nossl.push((from.text.clone(), to.text.clone()));
                } else {
                    self.error(
                        kw.seq,
                        &kw.span,
                        format!("'nossl' takes two host patterns (FROM TO), found {}", v.len()),
                        None,
                    );
                }
            }
            Kw::Ignore => {
                for v in self.values() {
                    match v.text.as_str() {
                        "uid" => self.ast.ignore.uid = true,
                        "gid" => self.ast.ignore.gid = true,
                        "mod" => self.ast.ignore.mode = true,
                        other => {
                            let valid = ["uid", "gid", "mod"];
                            let help = match did_you_mean(other, &valid) {
                                Some(s) => format!("did you mean '{s}'? valid: uid, gid, mod"),
                                None => "valid: uid, gid, mod".to_owned(),
                            };
                            let msg = format!("unknown ignore flag '{other}'");
                            self.error(v.seq, &v.span, msg, Some(help));
                        }
                    }
                }
            }
            Kw::Database => {
                if let Some(v) = self.one_value(kw, "a database name or URL") {
                    if let Err((msg, help)) = crate::config::check_database(&v.text) {
                        self.error(v.seq, &v.span, msg, Some(help));
                    }
                    self.ast.database = Some(v.text);
                }
            }
            Kw::Tempdir => {
                if let Some(v) = self.one_value(kw, "a directory") {
                    self.ast.tempdir = Some(PathBuf::from(v.text));
                }
            }
            Kw::LockTimeout => {
                if let Some(v) = self.one_value(kw, "a number of seconds") {
                    self.ast.lock_timeout = self.number(&v, "lock-timeout");
                }
            }
            Kw::NoCygwinLowercase => {
                self.warning(
                    kw.seq,
                    &kw.span,
                    "no-cygwin-lowercase is ignored: it applied only to csync2 on Cygwin",
                );
            }
            _ => unreachable!("only top-level keywords are dispatched here"),
        }
        self.end_stmt(kw);
    }

    fn number(&mut self, v: &Val, what: &str) -> Option<u32> {
        match v.text.parse::<u32>() {
            Ok(n) if v.text.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                let msg = format!("'{what}' needs a whole number, found '{}'", v.text);
                self.error(v.seq, &v.span, msg, None);
                None
            }
        }
    }

    /// `owners MIN-MAX`: an inclusive range of numeric uids/gids.
    fn owner_range(&mut self, v: &Val) -> Option<(u32, u32)> {
        let num = |s: &str| {
            s.parse::<u32>().ok().filter(|_| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        };
        let parsed = v.text.split_once('-').and_then(|(a, b)| Some((num(a)?, num(b)?)));
        match parsed {
            Some((lo, hi)) if lo <= hi => Some((lo, hi)),
            Some((lo, hi)) => {
                let msg = format!("'owners' range '{}' is empty: {lo} is above {hi}", v.text);
                self.error(v.seq, &v.span, msg, Some(format!("write it low to high: {hi}-{lo}")));
                None
            }
            None => {
                let msg =
                    format!("'owners' needs a range MIN-MAX of numeric ids, found '{}'", v.text);
                let help = "e.g. owners 1000-1999; (the uids and gids peers may give files here)";
                self.error(v.seq, &v.span, msg, Some(help.to_owned()));
                None
            }
        }
    }

    fn group(&mut self, kw: &'a Token) {
        let name_val = self.value();
        let name = match &name_val {
            Some(v) => v.text.clone(),
            None => {
                self.nameless += 1;
                format!("group_{}", self.nameless)
            }
        };
        let mut span = kw.span.clone();
        if let Some(v) = name_val.as_ref().filter(|v| v.span.line == kw.span.line) {
            span.len = v.span.col + v.span.len - kw.span.col;
        }
        let open = self.open_block(kw, &format!("group {name}"));
        let mut g = GroupAst {
            name,
            span,
            seq: kw.seq,
            hosts: Vec::new(),
            key: None,
            rules: Vec::new(),
            auto: AutoMethod::None,
            actions: Vec::new(),
            backup_directory: None,
            backup_generations: 3,
            generations_at: None,
            allow_devices: false,
            allow_setid: false,
            owner_range: None,
        };
        let label = format!("group '{}'", g.name);
        let mut auto_line: Option<u32> = None;
        let mut owners_line: Option<u32> = None;
        loop {
            let k = match self.step(Ctx::Group, open, &label) {
                Step::Close | Step::Leave => break,
                Step::Again => continue,
                Step::Stmt(k) => k,
            };
            let kw = self.bump();
            match k {
                Kw::Host => self.hosts(&mut g.hosts),
                Kw::Key => {
                    if let Some(v) = self.one_value(kw, "a key file") {
                        if let Some(first) = &g.key {
                            let help = format!("the first 'key' is on line {}", first.span.line);
                            let msg = format!("duplicate 'key' in group '{}'", g.name);
                            self.error(kw.seq, &kw.span, msg, Some(help));
                        } else {
                            g.key = Some(v);
                        }
                    }
                }
                Kw::Include | Kw::Exclude | Kw::Compare => {
                    let kind = match k {
                        Kw::Include => RuleKind::Include,
                        Kw::Exclude => RuleKind::Exclude,
                        _ => RuleKind::Compare,
                    };
                    for v in self.values() {
                        let pattern = strip_trailing_slashes(&v.text);
                        self.check_pattern(&v, &pattern);
                        self.check_basename(&v, &pattern);
                        g.rules.push((Rule { kind, pattern, span: v.span.clone() }, v.seq));
                    }
                }
                Kw::Auto => {
                    if let Some(v) = self.one_value(kw, "a method") {
                        if let Some(line) = auto_line {
                            let help = format!("the first 'auto' is on line {line}");
                            let msg = format!("duplicate 'auto' in group '{}'", g.name);
                            self.error(kw.seq, &kw.span, msg, Some(help));
                        }
                        auto_line.get_or_insert(kw.span.line);
                        match AutoMethod::parse(&v.text) {
                            Some(m) => g.auto = m,
                            None => {
                                let valid = AUTO_METHODS.join(", ");
                                let help = match did_you_mean(&v.text, &AUTO_METHODS) {
                                    Some(s) => {
                                        format!("did you mean '{s}'? valid methods: {valid}")
                                    }
                                    None => format!("valid methods: {valid}"),
                                };
                                let msg = format!("unknown auto method '{}'", v.text);
                                self.error(v.seq, &v.span, msg, Some(help));
                            }
                        }
                    }
                }
                Kw::BackupDirectory => {
                    if let Some(v) = self.one_value(kw, "a directory") {
                        g.backup_directory = Some(PathBuf::from(v.text));
                    }
                }
                Kw::BackupGenerations => {
                    if let Some(v) = self.one_value(kw, "a number")
                        && let Some(n) = self.number(&v, "backup-generations")
                    {
                        g.backup_generations = n;
                        g.generations_at = Some(v);
                    }
                }
                // Our extensions: what a peer may make this node create. Off by
                // default, because a peer's key should not be a root shell here.
                Kw::AllowDevices => g.allow_devices = true,
                Kw::AllowSetid => g.allow_setid = true,
                Kw::Owners => {
                    if let Some(v) = self.one_value(kw, "a range MIN-MAX of numeric ids") {
                        if let Some(first) = &owners_line {
                            let help = format!("the first 'owners' is on line {first}");
                            let msg = format!("duplicate 'owners' in group '{}'", g.name);
                            self.error(kw.seq, &kw.span, msg, Some(help));
                        }
                        owners_line.get_or_insert(kw.span.line);
                        if let Some(r) = self.owner_range(&v) {
                            g.owner_range = Some(r);
                        }
                    }
                }
                Kw::Action => {
                    self.action(kw, &mut g);
                    continue;
                }
                _ => unreachable!("only group keywords are dispatched here"),
            }
            self.end_stmt(kw);
        }
        if let (Some(v), None) = (&g.generations_at, &g.backup_directory) {
            let msg = format!(
                "'backup-generations' has no effect without 'backup-directory' in group '{}'",
                g.name
            );
            let help = "add 'backup-directory DIR;' to keep replaced files, or drop this line";
            let d = self.src.warning(&v.span, msg).with_help(help);
            self.diags.push(v.seq, d);
        }
        self.ast.groups.push(g);
    }

    /// `host a b@addr (c d@x);` after the keyword; the `;` is left to the caller.
    fn hosts(&mut self, hosts: &mut Vec<Host>) {
        let mut paren: Option<&'a Token> = None;
        loop {
            let t = self.peek();
            match &t.tok {
                Tok::Word(_) | Tok::Quoted(_) => {
                    let name = self.value().expect("peeked a value");
                    let mut addr = None;
                    if self.peek().tok == Tok::At {
                        let at = self.bump();
                        match self.value() {
                            Some(a) => addr = Some(a.text),
                            None => {
                                let msg =
                                    format!("host '{}' has '@' but no address after it", name.text);
                                let help = "write NAME@ADDRESS, e.g. alpha@10.0.0.1".to_owned();
                                self.error(at.seq, &at.span, msg, Some(help));
                            }
                        }
                    }
                    hosts.push(Host {
                        name: name.text.to_lowercase(),
                        addr,
                        receive_only: paren.is_some(),
                    });
                }
                Tok::LParen => {
                    if paren.is_some() {
                        self.error(t.seq, &t.span, "nested '(' in host list", None);
                    }
                    paren = Some(self.bump());
                }
                Tok::RParen => {
                    if paren.is_none() {
                        self.error(t.seq, &t.span, "')' without a matching '(' in host list", None);
                    }
                    paren = None;
                    self.bump();
                }
                Tok::At => {
                    self.error(t.seq, &t.span, "'@' without a host name before it", None);
                    self.bump();
                }
                _ => break,
            }
        }
        if let Some(p) = paren {
            self.error(p.seq, &p.span, "unclosed '(' in host list", None);
        }
    }

    fn check_pattern(&mut self, v: &Val, pattern: &str) {
        if let Err(msg) = crate::pattern::check(pattern) {
            self.error(v.seq, &v.span, format!("invalid pattern '{}': {msg}", v.text), None);
        }
    }

    /// A pattern without a leading `/` or `%` is matched against a file's name
    /// alone, which never contains `/`: `include etc/nginx;` can never match.
    fn check_basename(&mut self, v: &Val, pattern: &str) {
        if crate::pattern::is_path_pattern(pattern) || !pattern.contains('/') {
            return;
        }
        let msg = format!(
            "pattern '{}' can never match: without a leading '/' it is matched against file names, which never contain '/'",
            v.text
        );
        let d = self.src.warning(&v.span, msg).with_help(format!("did you mean '/{pattern}'?"));
        self.diags.push(v.seq, d);
    }

    fn action(&mut self, kw: &'a Token, g: &mut GroupAst) {
        let open = self.open_block(kw, "action");
        let mut a = Action { span: kw.span.clone(), ..Action::default() };
        let mut pattern_vals = Vec::new();
        let (mut local_at, mut local_only_at) = (None, None);
        loop {
            let k = match self.step(Ctx::Action, open, "action block") {
                Step::Close | Step::Leave => break,
                Step::Again => continue,
                Step::Stmt(k) => k,
            };
            let kw = self.bump();
            match k {
                Kw::Pattern => {
                    // csync2 does not strip slashes from action patterns.
                    for v in self.values() {
                        self.check_pattern(&v, &v.text);
                        a.patterns.push(v.text.clone());
                        pattern_vals.push(v);
                    }
                }
                Kw::Exec => {
                    for v in self.values() {
                        if let Err(msg) = crate::rewrite::expand_paths(&v.text) {
                            self.error(v.seq, &v.span, msg, None);
                        }
                        a.exec.push(v.text);
                    }
                }
                Kw::Logfile => {
                    if let Some(v) = self.one_value(kw, "a file") {
                        a.logfile = Some(PathBuf::from(v.text));
                    }
                }
                Kw::DoLocal => {
                    a.do_local = true;
                    local_at.get_or_insert((kw.seq, kw.span.clone()));
                }
                Kw::DoLocalOnly => {
                    a.do_local = true;
                    a.do_local_only = true;
                    local_only_at.get_or_insert(kw.span.line);
                }
                Kw::Timeout => {
                    // Our extension: csync2 waited for ever.
                    if let Some(v) = self.one_value(kw, "a number of seconds") {
                        match self.number(&v, "timeout") {
                            Some(0) => self.error(
                                v.seq,
                                &v.span,
                                "'timeout' must be at least 1 second".to_string(),
                                None,
                            ),
                            Some(n) => a.timeout = Some(n),
                            None => {}
                        }
                    }
                }
                _ => unreachable!("only action keywords are dispatched here"),
            }
            self.end_stmt(kw);
        }
        if a.exec.is_empty() {
            self.warning(kw.seq, &kw.span, "action has no 'exec': it will never run anything");
        }
        if let (Some((seq, span)), Some(line)) = (local_at, local_only_at) {
            // They contradict each other (here too, or only here); csync2 and
            // csync let do-local-only win, which the author may not expect.
            let msg = "action has both 'do-local' and 'do-local-only': do-local-only wins, so it never runs on the receiving hosts";
            let help = format!(
                "keep one: 'do-local' (here and on receivers) or 'do-local-only' (line {line}: only here)"
            );
            let d = self.src.warning(&span, msg).with_help(help);
            self.diags.push(seq, d);
        }
        g.actions.push((a, pattern_vals));
    }

    fn prefix(&mut self, kw: &'a Token) {
        let name = self.one_value(kw, "a name");
        let mut span = kw.span.clone();
        if let Some(v) = name.as_ref().filter(|v| v.span.line == kw.span.line) {
            span.len = v.span.col + v.span.len - kw.span.col;
        }
        let name = name.map(|v| v.text).unwrap_or_default();
        let open = self.open_block(kw, &format!("prefix {name}"));
        let mut p = PrefixAst { name, span, entries: Vec::new() };
        let label = format!("prefix '{}'", p.name);
        loop {
            match self.step(Ctx::Prefix, open, &label) {
                Step::Close | Step::Leave => break,
                Step::Again => continue,
                Step::Stmt(_) => {}
            }
            let kw = self.bump();
            if let Some(entry) = self.on_entry(kw) {
                p.entries.push(entry);
            }
            self.end_stmt(kw);
        }
        self.ast.prefixes.push(p);
    }

    /// `on HOSTPATTERN: /path` after the `on`.
    fn on_entry(&mut self, kw: &Token) -> Option<(String, PathBuf)> {
        let pat = self.one_value(kw, "a host pattern")?;
        let path = if self.peek().tok == Tok::Colon {
            self.bump();
            self.one_value(kw, "a path after ':'")?
        } else if let Some(i) = pat.text.find(':') {
            // `on alpha:/srv` lexes as one word; csync2 rejects it, but the intent is
            // clear, so split it rather than fail.
            let before = pat.text[..i].chars().count() as u32;
            let path = Val {
                text: pat.text[i + 1..].to_owned(),
                span: Span {
                    col: pat.span.col + before + 1,
                    len: pat.span.len.saturating_sub(before + 1),
                    ..pat.span.clone()
                },
                seq: pat.seq,
            };
            let pat = Val {
                text: pat.text[..i].to_owned(),
                span: Span { len: before, ..pat.span.clone() },
                seq: pat.seq,
            };
            return self.on_path(pat, path);
        } else {
            let t = self.peek();
            let msg = format!(
                "expected ':' after host pattern '{}', found {}",
                pat.text,
                t.tok.describe()
            );
            let help = "write: on HOSTPATTERN: /path;".to_owned();
            self.error(t.seq, &t.span, msg, Some(help));
            self.quiet_end = true;
            return None;
        };
        self.on_path(pat, path)
    }

    fn on_path(&mut self, pat: Val, path: Val) -> Option<(String, PathBuf)> {
        if !path.text.starts_with('/') {
            let msg = format!("prefix path must be absolute, found '{}'", path.text);
            self.error(path.seq, &path.span, msg, None);
            return None;
        }
        Some((pat.text.to_lowercase(), PathBuf::from(strip_trailing_slashes(&path.text))))
    }
}
