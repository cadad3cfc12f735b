//! The `%%` rewriter: the one piece of shell syntax csync writes (`%%` in an
//! action's `exec`). A leaf, used by the config check and by [`crate::actions`].
//!
//! csync2 pasted the changed file names into the command text. Here every
//! `%%` becomes a reference to the positional parameters, and the paths are
//! passed as arguments (`sh -c SCRIPT csync-action PATH…`), so the shell never
//! parses a file name. The reference must keep each path one word whatever
//! quoting surrounds the `%%`, so the command is scanned with a stack of
//! quoting contexts:
//!
//! | `%%` found in | becomes |
//! |---|---|
//! | plain text, `$( … )`, backquotes | `"$@"` |
//! | `" … "` | `$@` (already inside double quotes) |
//! | `' … '` | `'"$@"'` (closes and reopens the single quotes) |
//! | `${ … }` | left alone: `${name%%suffix}` is the shell's own operator |
//! | a `#` comment | left alone |
//! | after `<<` (a here-document) | refused: its text is not shell syntax |

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Plain,
    Single,
    Double,
    /// `$( … )`: plain text that ends at the matching `)`.
    Subst,
    /// `` ` … ` ``.
    Backquote,
    /// `${ … }`.
    Brace,
    /// From `#` at the start of a word to the end of the line.
    Comment,
}

/// Rewrites every `%%` of `command` as described in the module docs.
///
/// # Errors
/// A message when a `%%` appears where it cannot be rewritten safely (in or
/// after a here-document); the command can use `"$@"` itself there.
pub fn expand_paths(command: &str) -> Result<String, String> {
    let mut out = String::with_capacity(command.len() + 8);
    let mut stack = vec![Ctx::Plain];
    let mut heredoc = false;
    let chars: Vec<char> = command.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let top = *stack.last().expect("never empty");
        if c == '%' && next == Some('%') && !matches!(top, Ctx::Brace | Ctx::Comment) {
            if heredoc {
                return Err("'%%' after a here-document ('<<') cannot be passed safely; \
                            write \"$@\" where the paths should go"
                    .into());
            }
            out.push_str(match top {
                Ctx::Double => "$@",
                Ctx::Single => "'\"$@\"'",
                _ => "\"$@\"",
            });
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
        match top {
            Ctx::Single => {
                if c == '\'' {
                    stack.pop();
                }
            }
            Ctx::Comment => {
                if c == '\n' {
                    stack.pop();
                }
            }
            Ctx::Brace => match (c, next) {
                ('}', _) => {
                    stack.pop();
                }
                ('$', Some('{')) => {
                    out.push('{');
                    i += 1;
                    stack.push(Ctx::Brace);
                }
                _ => {}
            },
            Ctx::Double | Ctx::Plain | Ctx::Subst | Ctx::Backquote => {
                let code = top != Ctx::Double;
                match (c, next) {
                    ('\\', Some(n)) => {
                        out.push(n);
                        i += 1;
                    }
                    ('$', Some('(')) => {
                        out.push('(');
                        i += 1;
                        stack.push(Ctx::Subst);
                    }
                    ('$', Some('{')) => {
                        out.push('{');
                        i += 1;
                        stack.push(Ctx::Brace);
                    }
                    ('`', _) if top == Ctx::Backquote => {
                        stack.pop();
                    }
                    ('`', _) => stack.push(Ctx::Backquote),
                    ('"', _) if top == Ctx::Double => {
                        stack.pop();
                    }
                    ('"', _) => stack.push(Ctx::Double),
                    ('\'', _) if code => stack.push(Ctx::Single),
                    (')', _) if top == Ctx::Subst => {
                        stack.pop();
                    }
                    ('<', Some('<')) if code => heredoc = true,
                    ('#', _) if code && word_start(&chars, i - 1) => stack.push(Ctx::Comment),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// True when the character at `at` begins a word (where `#` starts a comment).
fn word_start(chars: &[char], at: usize) -> bool {
    at == 0 || matches!(chars[at - 1], ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '`')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` hands `printf` for the given arguments, as `<arg>` items.
    fn run(script: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("csync-action")
            .args(args)
            .current_dir("/")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn rewrites() {
        let e = |c: &str| expand_paths(c).unwrap();
        assert_eq!(e("echo %%"), "echo \"$@\"");
        assert_eq!(e("echo \"files: %%\""), "echo \"files: $@\"");
        assert_eq!(e("echo '%%'"), "echo ''\"$@\"''");
        assert_eq!(e("echo 100\\%% %%"), "echo 100\\%% \"$@\"");
        assert_eq!(e("no paths"), "no paths");
        assert_eq!(e("a %% b %%"), "a \"$@\" b \"$@\"");
        assert_eq!(e("f=${x%%.conf} %%"), "f=${x%%.conf} \"$@\"");
        assert_eq!(e("echo %% # and %% here"), "echo \"$@\" # and %% here");
        assert_eq!(e("echo a#%%"), "echo a#\"$@\"");
        assert!(expand_paths("cat <<EOF\n%%\nEOF").is_err());
        assert!(expand_paths("cat <<EOF\nx\nEOF\necho %%").is_err());
        assert_eq!(e("cat <<EOF\nno paths\nEOF"), "cat <<EOF\nno paths\nEOF");
    }

    #[test]
    fn every_context_keeps_each_path_one_word() {
        let names = [
            "x; touch /tmp/csync-pwned",
            "$(id)",
            "`id`",
            "a b",
            "*",
            "'\"q",
            "/etc/host*",
            "-n",
            "#c",
        ];
        let want: String = names.iter().map(|n| format!("<{n}>")).collect();
        for cmd in [
            "printf '<%s>' %%",
            "printf '<%s>' \"%%\"",
            "printf '<%s>' '%%'",
            "printf '%s' \"$(printf '<%s>' %%)\"",
            "printf '%s' \"$(printf '<%s>' \"%%\")\"",
            "x=`printf '<%s>' %%`; printf '%s' \"$x\"",
            "# a comment with ' and \" in it\nprintf '<%s>' %%",
            "x=\"it's\"; printf '<%s>' %%",
            "f=${0%%-action}; printf '<%s>' %%",
            "for f in %%; do printf '<%s>' \"$f\"; done",
        ] {
            let script = expand_paths(cmd).unwrap();
            assert_eq!(run(&script, &names), want, "{cmd}\n=> {script}");
        }
    }
}
