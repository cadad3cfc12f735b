//! The orchestrator: joins the config, the pattern matchers, the scanner and
//! the index into the operations the CLI offers (check, mark, force, prune,
//! listings). It is the only layer that knows all of them.
//!
//! # Inside
//!
//! [`Node`] (this file) holds the config, the compiled groups
//! ([`crate::policy::GroupPolicy`]) and the index; the submodules add its
//! operations. They form layers too (checked by `tests/it/layering.rs` like
//! the crate's): a submodule uses those of lower lines only.
//!
//! ```text
//! run, status                  one run (check, push, actions); --status as a value
//! check, maintain, push, receive  -c; -m/-f/-R; -u, first contact, -T; a peer's session here
//! remote, conflict, wire       talking to peers; who wins a conflict; Meta <-> wire
//! ```
//!
//! Where things would go: a watch mode is a loop around [`Node::run`] fed by
//! file events (a new module beside `run`); a status endpoint serves
//! [`Node::status`]; a "never delete" policy is a field of `GroupPolicy`
//! read by the planner (`push::plan`, which would turn deletes into
//! nothing) and by the receiver (`receive::delete`, which would refuse them).

mod check;
pub mod conflict;
mod maintain;
pub mod push;
pub mod receive;
pub mod remote;
pub mod run;
pub mod status;
pub mod wire;

use std::path::{Path, PathBuf};

pub use check::{CheckOptions, CheckReport};
pub use maintain::{mark_paths, prune};
pub use run::{PushOutcome, PushRequest, RunOutcome, RunRequest};

use crate::actions;
use crate::config::{Config, Group};
use crate::index::{Index, IndexedFile};
use crate::pattern::Level;
use crate::policy::GroupPolicy;
use crate::scan::{Known, Root};
use crate::types::Meta;

/// Errors that stop an operation (soft, per-path problems are reported instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index failed.
    #[error(transparent)]
    Index(#[from] crate::index::Error),
    /// A group's patterns could not be compiled (the config check should have caught it).
    #[error(transparent)]
    Pattern(#[from] crate::policy::PatternError),
    /// The action journal's lock could not be taken.
    #[error("actions: {0}")]
    Actions(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// An include root uses a prefix this node does not define.
    #[error("group '{group}': prefix '%{prefix}%' is not defined for host '{host}'")]
    Prefix {
        /// Group name.
        group: String,
        /// Prefix name.
        prefix: String,
        /// This node.
        host: String,
    },
}

impl From<actions::Error> for Error {
    fn from(e: actions::Error) -> Self {
        match e {
            actions::Error::Index(e) => Error::Index(e),
            actions::Error::Pattern(e) => Error::Pattern(e),
            actions::Error::Lock(m) => Error::Actions(m),
        }
    }
}

/// One node: its resolved config, compiled groups and open index.
#[derive(Debug)]
pub struct Node {
    /// The resolved configuration.
    pub config: Config,
    /// The groups this node is a member of (and active under `-G`).
    pub groups: Vec<GroupPolicy>,
    /// The node's index.
    pub index: Index,
    /// The actions of the member groups.
    pub actions: actions::ActionTable,
}

impl Node {
    /// Compiles the member groups of `config` and takes the index.
    ///
    /// # Errors
    /// When a group's patterns do not compile.
    pub fn new(config: Config, index: Index) -> Result<Node, Error> {
        let groups = GroupPolicy::members(&config)?;
        let actions = actions::ActionTable::new(&config, &groups)?;
        Ok(Node { config, groups, index, actions })
    }

    /// The config group behind an active group.
    pub fn group(&self, g: &GroupPolicy) -> &Group {
        &self.config.groups[g.index]
    }

    /// The strongest match level any member group gives `path`.
    pub fn level(&self, path: &[u8]) -> Level {
        crate::policy::level_of(&self.groups, path)
    }

    /// True when some member group manages `path`.
    pub fn is_managed(&self, path: &[u8]) -> bool {
        self.groups.iter().any(|g| g.matcher.is_managed(path))
    }

    /// `(peer, myname)` pairs a change of `path` must be pushed to: the peers of
    /// every member group that manages it, each once, in group order.
    pub fn peers_for(&self, path: &[u8]) -> Vec<(&str, &str)> {
        crate::policy::peers_for(&self.groups, path)
    }

    /// The walk roots of all member groups, mapped to real paths, overlaps removed.
    ///
    /// # Errors
    /// When a root uses a prefix this node does not define.
    pub fn roots(&self) -> Result<Vec<Root>, Error> {
        let mut roots: Vec<Root> = Vec::new();
        for g in &self.groups {
            for r in &g.roots {
                let db = r.as_bytes().to_vec();
                let real = crate::paths::real_path(&self.config, &db).ok_or_else(|| {
                    let name = String::from_utf8_lossy(&db[1..])
                        .split('%')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    Error::Prefix {
                        group: g.name.clone(),
                        prefix: name,
                        host: self.config.myname.clone(),
                    }
                })?;
                roots.push(Root { real, db, anchor: None });
            }
        }
        roots.sort_by(|a, b| a.db.cmp(&b.db));
        let mut kept: Vec<Root> = Vec::new();
        for r in roots {
            if !kept.iter().any(|k| k.db == r.db || crate::index::is_below(&r.db, &k.db)) {
                kept.push(r);
            }
        }
        Ok(kept)
    }

    /// Maps a command-line path to the DB form some member group cares about.
    /// `None` when no group manages or walks through it (csync2: "Parameter
    /// will be ignored").
    pub fn db_form_of(&self, arg: &Path) -> Option<(Vec<u8>, PathBuf)> {
        let real = crate::paths::absolute(arg);
        crate::paths::db_forms(&self.config, &real)
            .into_iter()
            .find(|db| self.level(db) != Level::Ignore)
            .map(|db| (db, real))
    }
}

impl Node {
    /// What a command-line path stands for, in DB form with its real path:
    /// the path itself when a group manages or walks through it, and with
    /// `recursive` also every include root below it that the first form
    /// does not already cover, prefixed roots included (`csync -cr /`, csync2's
    /// cron line, means every root; `-cr /etc` every root under `/etc`).
    pub fn arg_forms(&self, arg: &Path, recursive: bool) -> Vec<(Vec<u8>, PathBuf)> {
        let mut out: Vec<(Vec<u8>, PathBuf)> = self.db_form_of(arg).into_iter().collect();
        if !recursive {
            return out;
        }
        let real = crate::paths::absolute(arg);
        for r in self.roots().unwrap_or_default() {
            let covered =
                out.iter().any(|(db, _)| r.db == *db || crate::index::is_below(&r.db, db));
            if !covered && r.real != real && r.real.starts_with(&real) {
                out.push((r.db, r.real));
            }
        }
        out
    }
}

impl Known for IndexedFile {
    fn path(&self) -> &[u8] {
        &self.path
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
}
