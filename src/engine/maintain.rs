//! `-m`, `-f` and `-R`: marking by hand and pruning what the config no longer wants.

use std::path::PathBuf;

use super::{CheckOptions, Error, Node};
use crate::index::{Mark, Scope};
use crate::types::{Base, Changes};

/// Marks `paths` (and with `recursive` everything indexed below them) dirty for
/// every peer; with `force` this node's version also wins the next push over a
/// conflict. The paths are checked first, so the marks describe what is on
/// disk now, and a path that was never indexed can be forced too. Returns the
/// number of marks written and the arguments no group manages.
///
/// # Errors
/// When the index fails.
pub fn mark_paths(
    node: &mut Node,
    paths: &[PathBuf],
    recursive: bool,
    force: bool,
) -> Result<(usize, Vec<PathBuf>), Error> {
    let report = node.check(&CheckOptions { paths: paths.to_vec(), recursive, init: false })?;
    let mut targets: Vec<Vec<u8>> = Vec::new();
    for (db, _) in paths.iter().flat_map(|arg| node.arg_forms(arg, recursive)) {
        let scope = Scope::Path { path: &db, recursive };
        targets.extend(node.index.files(scope)?.into_iter().map(|f| f.path));
        // Pending deletes have no file row but must be forceable as well.
        targets.extend(
            node.index.dirty()?.into_iter().filter(|d| scope.contains(&d.path)).map(|d| d.path),
        );
    }
    let n = node.mark_by_hand(targets, force)?;
    Ok((n, report.ignored_args))
}

impl Node {
    /// Marks `paths` dirty towards every peer that should have them, as a
    /// person asked (`-m`, `-f`, `-TI`): what the peer has is not known, and
    /// with `force` this node's version wins. Returns the marks written.
    ///
    /// # Errors
    /// When the index fails.
    pub fn mark_by_hand(&mut self, mut paths: Vec<Vec<u8>>, force: bool) -> Result<usize, Error> {
        paths.sort();
        paths.dedup();
        let mut owned: Vec<(Vec<u8>, String, String)> = Vec::new();
        for p in &paths {
            for (peer, me) in self.peers_for(p) {
                owned.push((p.clone(), peer.to_string(), me.to_string()));
            }
        }
        let marks: Vec<Mark<'_>> = owned
            .iter()
            .map(|(p, peer, me)| Mark {
                path: p,
                peer,
                myname: me,
                changes: Changes::MARKED,
                forced: force,
                base: Base::Unknown,
            })
            .collect();
        self.index.mark(&marks)?;
        Ok(marks.len())
    }
}

/// `-R`: removes index rows no member group manages any more, and dirty rows
/// towards hosts that are no longer peers for that path. Returns
/// `(file rows removed, dirty rows removed)`.
///
/// # Errors
/// When the index fails.
pub fn prune(node: &mut Node) -> Result<(usize, usize), Error> {
    let files: Vec<Vec<u8>> = node
        .index
        .files(Scope::All)?
        .into_iter()
        .filter(|f| !node.is_managed(&f.path))
        .map(|f| f.path)
        .collect();
    let dirty: Vec<(Vec<u8>, String)> = node
        .index
        .dirty()?
        .into_iter()
        .filter(|d| !node.peers_for(&d.path).iter().any(|(p, _)| *p == d.peer))
        .map(|d| (d.path, d.peer))
        .collect();
    node.index.prune(&dirty, &files)?;
    Ok((files.len(), dirty.len()))
}
