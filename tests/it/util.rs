//! Test helpers: a node = a system dir with config and key, an index dir, and
//! a root tree, all under one temp dir; the binary is run with `-N` and `-D`.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A valid csync2 group key (64 chars of `[A-Za-z0-9._]`).
pub const KEY: &str = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr";

/// A scratch cluster directory holding several nodes' trees and one shared config.
pub struct Env {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A new empty environment with a key file in its system dir.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/csync2.key"), format!("{KEY}\n")).unwrap();
        Env { dir }
    }

    /// The system dir (`CSYNC2_SYSTEM_DIR`).
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Node `n`'s root tree (created).
    pub fn root(&self, node: &str) -> PathBuf {
        let p = self.dir.path().join("nodes").join(node);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Node `n`'s index directory.
    pub fn db_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("db").join(node)
    }

    /// Node `n`'s index file.
    pub fn db_file(&self, node: &str) -> PathBuf {
        self.db_dir(node).join(format!("{node}.db"))
    }

    /// Writes `csync2.cfg`; `%ROOT_n1%`-style markers are replaced by real roots.
    pub fn config(&self, text: &str) {
        let mut t = text.to_string();
        for n in ["n1", "n2", "n3"] {
            t = t.replace(&format!("@ROOT_{n}@"), self.root(n).to_str().unwrap());
        }
        fs::write(self.etc().join("csync2.cfg"), t).unwrap();
    }

    /// `csync -N node -D <its db dir> ARGS…`.
    pub fn csync(&self, node: &str) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin!("csync"));
        c.env("CSYNC2_SYSTEM_DIR", self.etc()).arg("-N").arg(node).arg("-D").arg(self.db_dir(node));
        c
    }

    /// Writes a file under node `n`'s root, creating parents.
    pub fn write(&self, node: &str, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.root(node).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }

    /// Dirty rows `(path, peer, forced, changes)` straight from the index file.
    pub fn dirty_rows(&self, node: &str) -> Vec<(String, String, bool, u32)> {
        let c = rusqlite::Connection::open(self.db_file(node)).unwrap();
        let mut st =
            c.prepare("SELECT path, peer, forced, changes FROM dirty ORDER BY path, peer").unwrap();
        st.query_map([], |r| {
            Ok((
                String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned(),
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? != 0,
                r.get::<_, i64>(3)? as u32,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Paths of the `file` table, straight from the index file.
    pub fn file_rows(&self, node: &str) -> Vec<String> {
        let c = rusqlite::Connection::open(self.db_file(node)).unwrap();
        let mut st = c.prepare("SELECT path FROM file ORDER BY path").unwrap();
        st.query_map([], |r| Ok(String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned()))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// stdout of a finished command as a String.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a finished command as a String.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The repository root (for fixtures and the example config).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
