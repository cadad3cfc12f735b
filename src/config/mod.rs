//! The csync2 config file: loading, include expansion, parsing and resolution.
//!
//! `load` reads csync2's syntax unchanged and returns the resolved [`Config`] for one
//! node, or every problem found in the file, each as a positioned [`Diagnostic`].
//! The phases are `lexer` (tokens and `config FILE;` includes), `parser` (syntax and
//! per-statement checks) and `resolve` (membership, keys, prefixes).

mod key;
mod lexer;
mod lint;
pub mod model;
mod parser;
mod resolve;

pub use key::{MIN_KEY_LEN, validate_key};
#[cfg(test)]
pub(crate) use lexer::keywords;
pub use model::*;

use std::fs;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Span};

/// How to read a config file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// This node's name (`-N` or the host name); compared lower-cased.
    pub myname: String,
    /// The system directory: relative `key` files are read from here.
    pub sysdir: PathBuf,
    /// `-G g1,g2`: only these groups count for membership; `None` means all.
    pub active_groups: Option<Vec<String>>,
}

/// Loads the file, follows `config FILE;` includes, resolves for `opts.myname`.
///
/// # Errors
/// All error diagnostics (and the warnings) in source order; the caller renders them
/// with [`crate::diag::render`]. On success, [`Config::warnings`] holds the rendered
/// warnings.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Config, Vec<Diagnostic>> {
    let name = path.to_string_lossy();
    match fs::read_to_string(path) {
        Ok(text) => load_with(&name, &text, opts, &read_file),
        Err(e) => {
            let span = Span { file: name.as_ref().into(), line: 0, col: 0, len: 0 };
            let msg = format!("cannot read config file: {}", lexer::io_reason(&e));
            Err(vec![Diagnostic::error(span, "", msg)])
        }
    }
}

/// For tests: `text` loaded as node `a`'s config, with the group key file
/// `k` written into `dir` (the system directory).
#[cfg(test)]
pub(crate) fn load_for_test(dir: &std::path::Path, text: &str) -> Config {
    let key = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr";
    std::fs::write(dir.join("k"), key).unwrap();
    let opts = LoadOptions { myname: "a".into(), sysdir: dir.to_path_buf(), active_groups: None };
    load_str("t.cfg", text, &opts).unwrap()
}

/// Same as [`load`], from a string; `name` is what spans show as the file, and
/// relative includes are resolved against its directory.
///
/// # Errors
/// As for [`load`].
pub fn load_str(name: &str, text: &str, opts: &LoadOptions) -> Result<Config, Vec<Diagnostic>> {
    load_with(name, text, opts, &read_file)
}

/// Checks a `database` value (or `-D`): csync's index is SQLite only, so a
/// csync2 `mysql://` or `pgsql://` URL must be an error, never a directory
/// named after the URL.
///
/// # Errors
/// `(message, help)` when the value is a URL with another scheme.
pub fn check_database(spec: &str) -> Result<(), (String, String)> {
    let Some((scheme, _)) = spec.split_once("://") else { return Ok(()) };
    // A scheme is a word (RFC 3986); anything else is a path that happens to
    // contain "://", which csync would use as a directory like csync2 did.
    let is_scheme = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme || matches!(scheme.to_ascii_lowercase().as_str(), "sqlite" | "sqlite3") {
        return Ok(());
    }
    let what = match scheme.to_ascii_lowercase().as_str() {
        "mysql" => " (MySQL)",
        "pgsql" | "postgres" | "postgresql" => " (PostgreSQL)",
        _ => "",
    };
    Err((
        format!("database URL '{scheme}://…'{what} is not supported: csync keeps its index in SQLite"),
        "use a directory or file (database /var/lib/csync;) or sqlite3:///path, or drop the line for the default /var/lib/csync".to_owned(),
    ))
}

fn read_file(path: &Path) -> std::io::Result<String> {
    fs::read_to_string(path)
}

fn load_with(
    name: &str,
    text: &str,
    opts: &LoadOptions,
    reader: lexer::Reader<'_>,
) -> Result<Config, Vec<Diagnostic>> {
    let mut diags = lexer::Diags::default();
    let lexed = lexer::tokenize(name, text, reader, &mut diags);
    let ast = parser::parse(&lexed, &mut diags);
    let myname = opts.myname.to_lowercase();
    let mut config = resolve::resolve(ast, name, &myname, opts, &lexed.sources, &mut diags, reader);
    if diags.has_errors() {
        return Err(diags.into_sorted());
    }
    config.warnings = diags.into_sorted().iter().map(ToString::to_string).collect();
    Ok(config)
}

/// Same as [`load_str`], reading `config FILE;` includes and key files
/// through `reader` instead of the filesystem (the fuzz targets use an
/// in-memory one, so that no input makes them read the host's files).
///
/// # Errors
/// As for [`load`].
#[doc(hidden)]
pub fn load_str_with(
    name: &str,
    text: &str,
    opts: &LoadOptions,
    reader: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, Vec<Diagnostic>> {
    load_with(name, text, opts, reader)
}

#[cfg(test)]
mod tests;
