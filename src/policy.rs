//! The compiled group policy: everything a member group decides, worked out
//! once per config load. Before, each user rebuilt what it needed from the
//! raw [`Group`] (matchers in six places, push targets in two, the
//! receive-only rule in four); now the engine builds one [`GroupPolicy`] per
//! member group when a node or a listener starts, and every consumer reads it.
//!
//! It sits just above `config` and `pattern` and below everything that acts
//! (engine, actions, cli), so all of them can share it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{AutoMethod, Config, Group};
use crate::pattern::{GroupMatcher, Level};
use crate::types::IgnoreFields;

/// A group's patterns did not compile (the config check should have caught it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("group '{group}': pattern '{pattern}': {message}")]
pub struct PatternError {
    /// Group name.
    pub group: String,
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub message: String,
}

/// What a peer may create in a group (`allow-devices`, `allow-setid`,
/// `owners`): device nodes and setuid/setgid bits would turn "a write inside
/// a root" into root on this host, so they are off unless the group allows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// `allow-devices;`.
    pub allow_devices: bool,
    /// `allow-setid;`.
    pub allow_setid: bool,
    /// `owners MIN-MAX;` (inclusive), `None`: any.
    pub owners: Option<(u32, u32)>,
}

/// One member group, compiled.
#[derive(Debug, Clone)]
pub struct GroupPolicy {
    /// Index into `Config::groups`.
    pub index: usize,
    /// The group's name.
    pub name: String,
    /// Compiled include/exclude rules.
    pub matcher: GroupMatcher,
    /// The matcher's walk roots (DB form).
    pub roots: Vec<String>,
    /// `(peer, myname)` pairs this node pushes its changes to. Empty when this
    /// node is receive-only in the group: its own changes are never queued.
    pub push_to: Vec<(String, String)>,
    /// Every host of the group in file order (the `auto` rule's host order).
    pub hosts: Arc<Vec<String>>,
    /// Hosts that are receive-only in the group (this node included).
    receive_only: Vec<String>,
    /// This node is receive-only in the group.
    pub me_receive_only: bool,
    /// The `auto` conflict rule.
    pub auto: AutoMethod,
    /// `ignore uid gid mod;` (global in the config; carried per group so a
    /// consumer holds one thing).
    pub ignore: IgnoreFields,
    /// `backup-directory` and `backup-generations`, when backups are on.
    pub backup: Option<(PathBuf, u32)>,
    /// `backup-directory` alone (conflict copies go there even without generations).
    pub backup_directory: Option<PathBuf>,
    /// What a peer may create here.
    pub admission: Admission,
}

impl GroupPolicy {
    /// Compiles group `index` of `config`.
    ///
    /// # Errors
    /// When a pattern does not compile.
    pub fn compile(config: &Config, index: usize) -> Result<GroupPolicy, PatternError> {
        let g: &Group = &config.groups[index];
        let matcher = GroupMatcher::new(&g.rules).map_err(|(ri, message)| PatternError {
            group: g.name.clone(),
            pattern: g.rules.get(ri).map(|r| r.pattern.clone()).unwrap_or_default(),
            message,
        })?;
        let me_receive_only = g.me(&config.myname).is_some_and(|h| h.receive_only);
        let push_to = if me_receive_only {
            Vec::new()
        } else {
            g.peers(&config.myname).map(|h| (h.name.clone(), config.myname.clone())).collect()
        };
        let roots = matcher.walk_roots();
        Ok(GroupPolicy {
            index,
            name: g.name.clone(),
            roots,
            matcher,
            push_to,
            hosts: Arc::new(g.hosts.iter().map(|h| h.name.clone()).collect()),
            receive_only: g
                .hosts
                .iter()
                .filter(|h| h.receive_only)
                .map(|h| h.name.clone())
                .collect(),
            me_receive_only,
            auto: g.auto,
            ignore: config.ignore,
            backup: g
                .backup_directory
                .clone()
                .filter(|_| g.backup_generations > 0)
                .map(|d| (d, g.backup_generations)),
            backup_directory: g.backup_directory.clone(),
            admission: Admission {
                allow_devices: g.allow_devices,
                allow_setid: g.allow_setid,
                owners: g.owner_range,
            },
        })
    }

    /// Every member group of `config`, compiled, in file order.
    ///
    /// # Errors
    /// When a pattern does not compile.
    pub fn members(config: &Config) -> Result<Vec<GroupPolicy>, PatternError> {
        (0..config.groups.len())
            .filter(|&i| config.groups[i].is_member)
            .map(|i| GroupPolicy::compile(config, i))
            .collect()
    }

    /// True when `host` is receive-only in this group.
    pub fn is_receive_only(&self, host: &str) -> bool {
        self.receive_only.iter().any(|h| h == host)
    }

    /// True when this node pushes its changes to `peer` in this group.
    pub fn pushes_to(&self, peer: &str) -> bool {
        self.push_to.iter().any(|(p, _)| p == peer)
    }

    /// Where conflict copies go: the backup directory, else beside the index.
    pub fn conflict_dir(&self, index_dir: &Path, myname: &str) -> PathBuf {
        self.backup_directory
            .clone()
            .unwrap_or_else(|| index_dir.join(format!("{myname}.conflicts")))
    }

    /// Length of the DB form of the walk root holding `path` (0: none).
    pub fn root_len(&self, path: &[u8]) -> usize {
        self.roots
            .iter()
            .map(|r| r.as_bytes())
            .filter(|r| path == *r || is_below(path, r))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0)
    }
}

/// The strongest match level any of `groups` gives `path`.
pub fn level_of(groups: &[GroupPolicy], path: &[u8]) -> Level {
    let mut best = Level::Ignore;
    for g in groups {
        match g.matcher.level(path) {
            Level::Managed => return Level::Managed,
            Level::StepInto => best = Level::StepInto,
            Level::Ignore => {}
        }
    }
    best
}

/// `(peer, myname)` pairs a change of `path` must be pushed to: the peers of
/// every group in `groups` that manages it, each once, in group order.
pub fn peers_for<'a>(groups: &'a [GroupPolicy], path: &[u8]) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for g in groups {
        if g.push_to.is_empty() || !g.matcher.is_managed(path) {
            continue;
        }
        for (peer, me) in &g.push_to {
            if !out.iter().any(|(p, _)| p == peer) {
                out.push((peer, me));
            }
        }
    }
    out
}

/// True when DB path `p` lies strictly below `dir` (same rule as the index's).
fn is_below(p: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return p.len() > 1 && p[0] == b'/';
    }
    p.len() > dir.len() + 1 && p.starts_with(dir) && p[dir.len()] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, me: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let key = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr";
        std::fs::write(dir.path().join("k"), key).unwrap();
        let opts = crate::config::LoadOptions {
            myname: me.into(),
            sysdir: dir.path().to_path_buf(),
            active_groups: None,
        };
        crate::config::load_str("t.cfg", text, &opts).unwrap()
    }

    #[test]
    fn one_policy_per_member_group_with_everything_a_group_decides() {
        let c = load(
            "ignore uid; group a { host x y (z); key k; include /srv; exclude /srv/tmp; \
             auto younger; backup-directory /b; backup-generations 2; allow-devices; \
             owners 10-20; } group other { host p q; key k; include /o; }",
            "x",
        );
        let p = GroupPolicy::members(&c).unwrap();
        assert_eq!(p.len(), 1, "only member groups");
        let g = &p[0];
        assert_eq!(g.name, "a");
        assert!(g.matcher.is_managed(b"/srv/f") && !g.matcher.is_managed(b"/srv/tmp/f"));
        assert_eq!(g.push_to, vec![("y".into(), "x".into()), ("z".into(), "x".into())]);
        assert!(g.is_receive_only("z") && !g.is_receive_only("y") && !g.me_receive_only);
        assert_eq!(*g.hosts, vec!["x", "y", "z"]);
        assert_eq!(g.auto, AutoMethod::Younger);
        assert!(g.ignore.uid && !g.ignore.gid);
        assert_eq!(g.backup, Some((PathBuf::from("/b"), 2)));
        assert_eq!(
            g.admission,
            Admission { allow_devices: true, allow_setid: false, owners: Some((10, 20)) }
        );
        assert_eq!(g.root_len(b"/srv/f"), 4);
        assert_eq!(g.root_len(b"/other"), 0);
        assert_eq!(g.conflict_dir(Path::new("/db"), "x"), PathBuf::from("/b"));
    }

    #[test]
    fn a_receive_only_node_pushes_to_nobody() {
        let c = load("group a { host x (y); key k; include /srv; }", "y");
        let p = GroupPolicy::members(&c).unwrap();
        assert!(p[0].me_receive_only && p[0].push_to.is_empty());
        assert!(peers_for(&p, b"/srv/f").is_empty());
        assert_eq!(level_of(&p, b"/srv/f"), Level::Managed);
        assert_eq!(level_of(&p, b"/"), Level::StepInto);
        assert_eq!(level_of(&p, b"/etc"), Level::Ignore);
        assert_eq!(p[0].conflict_dir(Path::new("/db"), "y"), PathBuf::from("/db/y.conflicts"));
    }

    #[test]
    fn peers_for_lists_each_peer_once_in_group_order() {
        let c = load(
            "group a { host x y z; key k; include /srv; } \
             group b { host x z w; key k; include /srv/w; }",
            "x",
        );
        let p = GroupPolicy::members(&c).unwrap();
        let peers: Vec<&str> = peers_for(&p, b"/srv/w/f").into_iter().map(|(p, _)| p).collect();
        assert_eq!(peers, vec!["y", "z", "w"]);
    }
}
