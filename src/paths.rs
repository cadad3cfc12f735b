//! Where things live: the system dir, the config file, the index file, and the
//! mapping between real paths and DB form (`%prefix%/…`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::config::Config;

/// Default index directory (csync2 used `/var/lib/csync2`; ours is separate so
/// both can be installed side by side during a migration).
pub const DEFAULT_DB_DIR: &str = "/var/lib/csync";

/// `$CSYNC2_SYSTEM_DIR`, else `/etc`.
pub fn system_dir() -> PathBuf {
    match std::env::var_os("CSYNC2_SYSTEM_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/etc"),
    }
}

/// Checks a `-C NAME` config name against csync2's rule (`[a-z0-9]+`).
///
/// # Errors
/// With csync2's message when the name has other characters.
pub fn check_config_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("config name '{name}': config names are limited to [a-z0-9]+"))
    }
}

/// `<sysdir>/csync2.cfg`, or `<sysdir>/csync2_NAME.cfg` with `-C NAME`.
pub fn config_file(sysdir: &Path, name: Option<&str>) -> PathBuf {
    match name {
        Some(n) => sysdir.join(format!("csync2_{n}.cfg")),
        None => sysdir.join("csync2.cfg"),
    }
}

/// The index file: `-D` wins over the config's `database`, else the default dir.
///
/// A value naming a file (ending in `.db`/`.db3`, or a `sqlite3://` URL to a
/// non-directory) is used as is; anything else is a directory that gets
/// `<node>[_<cfgname>].db`. csync2 treated every absolute path as a directory,
/// which made `database /x/y.db3;` fail; we fix that.
pub fn index_file(
    dash_d: Option<&str>,
    config_db: Option<&str>,
    myname: &str,
    cfgname: Option<&str>,
) -> PathBuf {
    let file_name = match cfgname {
        Some(c) => format!("{myname}_{c}.db"),
        None => format!("{myname}.db"),
    };
    let Some(spec) = dash_d.or(config_db) else {
        return Path::new(DEFAULT_DB_DIR).join(file_name);
    };
    let spec =
        spec.strip_prefix("sqlite3://").or_else(|| spec.strip_prefix("sqlite://")).unwrap_or(spec);
    let p = PathBuf::from(spec);
    let names_file = (p.extension() == Some(OsStr::new("db"))
        || p.extension() == Some(OsStr::new("db3")))
        && !p.is_dir();
    if names_file { p } else { p.join(file_name) }
}

/// The config's `database` value with a relative path made relative to the
/// config file's directory: cron, a shell and the listener (whose working
/// directory is `/`) must all open the same index.
pub fn config_database(config: &Config) -> Option<String> {
    let spec = config.database.as_deref()?;
    let (scheme, path) = match spec.find("://") {
        Some(i) => spec.split_at(i + 3),
        None => ("", spec),
    };
    if path.is_empty() || Path::new(path).is_absolute() {
        return Some(spec.to_string());
    }
    let dir = config.source.parent().unwrap_or(Path::new("/"));
    Some(format!("{scheme}{}", dir.join(path).display()))
}

/// Makes a command-line path absolute and clean, the way csync2 did: `.` and
/// `..` resolved, the parent directory canonicalised when it exists, the last
/// component kept as is (it may be a symlink, which is managed, not followed).
pub fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|c| c.join(p)).unwrap_or_else(|_| p.to_path_buf())
    };
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                clean.pop();
            }
            Component::Normal(n) => clean.push(n),
        }
    }
    match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(real_parent) => real_parent.join(name),
            Err(_) => clean,
        },
        _ => clean,
    }
}

/// The DB-form candidates for a real absolute path: `%NAME%/rest` for every
/// prefix whose local root contains it, then the real path itself.
pub fn db_forms(config: &Config, real: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for prefix in &config.prefixes {
        let Some(root) = &prefix.local else { continue };
        if let Ok(rest) = real.strip_prefix(root) {
            let mut db = format!("%{}%", prefix.name).into_bytes();
            let rest = rest.as_os_str().as_bytes();
            if !rest.is_empty() {
                db.push(b'/');
                db.extend_from_slice(rest);
            }
            out.push(db);
        }
    }
    out.push(real.as_os_str().as_bytes().to_vec());
    out
}

/// The real path of a DB-form path on this node, or `None` when it names a
/// prefix this node does not define.
pub fn real_path(config: &Config, db: &[u8]) -> Option<PathBuf> {
    if db.first() != Some(&b'%') {
        return Some(PathBuf::from(OsStr::from_bytes(db)));
    }
    let end = db[1..].iter().position(|&b| b == b'%')? + 1;
    let name = std::str::from_utf8(&db[1..end]).ok()?;
    let root = config.prefix_root(name)?;
    let mut p = root.as_os_str().as_bytes().to_vec();
    p.extend_from_slice(&db[end + 1..]);
    Some(PathBuf::from(OsStr::from_bytes(&p)))
}

/// A path for humans: UTF-8 shown as is, control characters and invalid bytes
/// escaped (`\n`, `\t`, `\xNN`), backslashes doubled, so a file name sent by a
/// peer can never forge output lines or terminal escapes.
pub fn display(db: &[u8]) -> String {
    let mut out = String::with_capacity(db.len());
    for chunk in db.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || is_bidi(c) => {
                    for b in c.to_string().bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Any other string that came from a peer (a node or group name in a
/// handshake, an error text, an action's status), escaped as [`display`]
/// does, so it can never forge log lines or send terminal escapes.
pub fn escape(s: &str) -> String {
    display(s.as_bytes())
}

/// Unicode bidirectional controls: they can make a listed name read differently
/// from what it is.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_file_rules() {
        assert_eq!(index_file(None, None, "n1", None), PathBuf::from("/var/lib/csync/n1.db"));
        assert_eq!(index_file(Some("/x"), None, "n1", Some("web")), PathBuf::from("/x/n1_web.db"));
        assert_eq!(index_file(None, Some("/x/y.db3"), "n1", None), PathBuf::from("/x/y.db3"));
        assert_eq!(
            index_file(None, Some("sqlite3:///var/db/"), "n1", None),
            PathBuf::from("/var/db/n1.db")
        );
        assert_eq!(index_file(Some("/d"), Some("/x/y.db"), "n1", None), PathBuf::from("/d/n1.db"));
    }

    #[test]
    fn config_names() {
        assert!(check_config_name("web2").is_ok());
        assert!(check_config_name("Web").is_err());
        assert!(check_config_name("").is_err());
    }

    #[test]
    fn absolute_is_clean() {
        assert_eq!(
            absolute(Path::new("/nonexistent/a/../b/./c")),
            PathBuf::from("/nonexistent/b/c")
        );
    }

    #[test]
    fn display_escapes() {
        assert_eq!(display(b"a b/\xc3\xa4"), "a b/ä");
        assert_eq!(display(b"x\ny\\z\xff"), "x\\ny\\\\z\\xff");
        assert_eq!(display("a\u{202E}b".as_bytes()), "a\\xe2\\x80\\xaeb");
        assert_eq!(escape("g\n\x1b[31mx"), "g\\n\\x1b[31mx");
    }
}
