//! Where a received path is written from, and which include roots a peer may
//! not replace: the real paths of every member group's include roots, taken
//! once per session.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::policy::GroupPolicy;
use crate::types::{FileKind, Meta};

/// The include roots of every member group, as real paths.
pub(super) struct Roots {
    /// Outermost first: a path is always resolved from the outermost root
    /// holding it.
    outer: Vec<PathBuf>,
    /// All of them, nested ones too.
    all: Vec<PathBuf>,
}

impl Roots {
    /// The roots of every member group of `config`, from their compiled
    /// `policies`.
    pub(super) fn of(config: &Config, policies: &[GroupPolicy]) -> Roots {
        let mut all: Vec<PathBuf> = policies
            .iter()
            .flat_map(|g| &g.roots)
            .filter_map(|r| crate::paths::real_path(config, r.as_bytes()))
            .collect();
        all.sort_by_key(|p| p.as_os_str().len());
        let mut outer: Vec<PathBuf> = Vec::new();
        for r in &all {
            if !outer.iter().any(|o| r.starts_with(o)) {
                outer.push(r.clone());
            }
        }
        Roots { outer, all }
    }

    /// Where a real path is written from: the directory holding the
    /// outermost include root that contains it (the *anchor*), and the path
    /// below that directory, starting with the root's own name. Every
    /// component of it is then opened without following symlinks, so a
    /// symlink pushed in place of an inner root (one group's root inside
    /// another group's tree) can never redirect a write.
    pub(super) fn place(&self, real: &Path) -> Option<(PathBuf, Vec<u8>)> {
        let root = self.outer.iter().find(|r| real.starts_with(r))?;
        let anchor = root.parent().unwrap_or(Path::new("/"));
        let rel = real.strip_prefix(anchor).ok()?;
        Some((anchor.to_path_buf(), rel.as_os_str().as_bytes().to_vec()))
    }

    /// True when `anchor/rel` is an include root of any member group.
    pub(super) fn is_root(&self, anchor: &Path, rel: &[u8]) -> bool {
        self.all.contains(&real_of(anchor, rel))
    }

    /// Why a change at an include root is refused, if it is: a root that is
    /// a directory here stays a directory (a peer turning it into a file,
    /// symlink or device would cut off, or redirect, everything other
    /// groups keep below it) and is never deleted. A root that is a file
    /// here changes like any other entry (`new == None`: a delete).
    pub(super) fn refusal(
        &self,
        root: &Path,
        rel: &[u8],
        cur: Option<&Meta>,
        new: Option<FileKind>,
    ) -> Option<String> {
        if !self.is_root(root, rel) || cur.is_none_or(|c| c.kind != FileKind::Dir) {
            return None;
        }
        let shown = real_of(root, rel).display().to_string();
        match new {
            Some(FileKind::Dir) => None,
            Some(k) => Some(format!(
                "{shown} is an include root and a directory here; a peer may not replace it with {}",
                k.describe()
            )),
            None => {
                Some(format!("{shown} is an include root and a directory here; it is not deleted"))
            }
        }
    }
}

/// The local path of `rel` below `root`.
pub(super) fn real_of(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(std::ffi::OsStr::from_bytes(rel)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::receive::tests::{config_for, meta};

    #[test]
    fn writes_start_at_the_outermost_root_and_roots_stay_directories() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("srv");
        let inner = top.join("www");
        let text = format!(
            "group outer {{ host a b; key k; include {}; }}\n\
             group inner {{ host a b; key k; include {}; }}",
            top.display(),
            inner.display()
        );
        let config = config_for(t.path(), &text);
        let roots = Roots::of(&config, &GroupPolicy::members(&config).unwrap());
        // A path below the inner root is placed from the outer root's parent.
        let (anchor, rel) = roots.place(&inner.join("index.html")).unwrap();
        assert_eq!(anchor, t.path());
        assert_eq!(rel, b"srv/www/index.html");
        assert!(roots.place(Path::new("/etc/passwd")).is_none());
        assert!(roots.is_root(t.path(), b"srv/www"));
        assert!(!roots.is_root(t.path(), b"srv/www/index.html"));
        // A directory root may not become a file or go away; a non-root may.
        let dir = meta(FileKind::Dir);
        let why = roots.refusal(t.path(), b"srv/www", Some(&dir), Some(FileKind::File)).unwrap();
        assert!(why.contains("is an include root and a directory here"), "{why}");
        let why = roots.refusal(t.path(), b"srv/www", Some(&dir), None).unwrap();
        assert!(why.ends_with("it is not deleted"), "{why}");
        assert!(roots.refusal(t.path(), b"srv/www", Some(&dir), Some(FileKind::Dir)).is_none());
        assert!(roots.refusal(t.path(), b"srv/www/x", Some(&dir), None).is_none());
        // A root that is a file here (or absent) changes like any entry.
        let file = meta(FileKind::File);
        assert!(roots.refusal(t.path(), b"srv/www", Some(&file), None).is_none());
        assert!(roots.refusal(t.path(), b"srv/www", None, Some(FileKind::File)).is_none());
    }

    #[test]
    fn real_of_an_empty_rel_is_the_root() {
        assert_eq!(real_of(Path::new("/srv"), b""), Path::new("/srv"));
        assert_eq!(real_of(Path::new("/srv"), b"a/b"), Path::new("/srv/a/b"));
    }
}
