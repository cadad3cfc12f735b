//! The push planner: from the index's dirty rows to what goes to which peer,
//! in which order. Pure: it reads the index only through [`Lookup`] and the
//! disk not at all (the mass-delete guard is told which roots are gone), so
//! every rule here is tested without a network or a database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{AutoMethod, Config};
use crate::index::{DirtyRow, is_below};
use crate::policy::GroupPolicy;
use crate::scan::Root;
use crate::types::{Base, Changes, Meta};

/// One entry to push to one peer.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) path: Vec<u8>,
    pub(super) group: String,
    pub(super) generation: i64,
    pub(super) forced: bool,
    pub(super) changes: Changes,
    /// The local state; `None`: deleted here.
    pub(super) local: Option<Meta>,
    /// Real path of the local entry (for content).
    pub(super) real: Option<PathBuf>,
    /// The include root it lies under (real path) and the rest of its path:
    /// content is read only through `scan::open_checked` from there.
    pub(super) source: Option<(PathBuf, Vec<u8>)>,
    /// What the peer was last known to have.
    pub(super) base: Option<[u8; 32]>,
    /// Whether a peer state is known at all (a delta needs an older version there).
    pub(super) peer_has_old: bool,
    /// When the delete was seen (for younger/older against a deletion).
    pub(super) marked_at_ns: i64,
    /// The peer said it needs the content after all.
    pub(super) need_content: bool,
    /// Pushed only to create a missing parent: no dirty row to clear.
    pub(super) ancestor: bool,
    /// Conflict rule inputs: the rule, the group's host order, who made our
    /// version, and whether each side is receive-only.
    pub(super) rule: AutoMethod,
    pub(super) hosts: Arc<Vec<String>>,
    pub(super) origin: String,
    pub(super) me_receive_only: bool,
    pub(super) peer_receive_only: bool,
    /// Length of the DB form of the include root holding the path: missing
    /// parents are sent down from there, never the directories above a
    /// root (`/etc` for `/etc/hosts`), which no group manages.
    pub(super) root_len: usize,
    /// This push is a conflict's winner by the rule (recorded once applied).
    pub(super) won: Option<String>,
    /// The path's content, read once for all the peers planned together
    /// (small files only); `None`: the session reads it itself.
    pub(super) shared: Option<Arc<super::shared::Slot>>,
}

/// The per-peer plan: peers in name order, each with its items in push order.
pub(super) type Plan = Vec<(String, Vec<Item>)>;

/// What the planner reads of the index beyond the dirty rows.
pub(super) trait Lookup {
    /// The local state of `path` (`None`: not in the index, deleted here).
    fn file(&self, path: &[u8]) -> Result<Option<Meta>, crate::index::Error>;
    /// Which host made the version of `path` this node holds.
    fn origin(&self, path: &[u8]) -> Result<Option<String>, crate::index::Error>;
    /// The version `peer` was last known to hold of `path`.
    fn peer_version(
        &self,
        path: &[u8],
        peer: &str,
    ) -> Result<Option<[u8; 32]>, crate::index::Error>;
}

/// Dirty marks above which planning reads the index in one pass.
pub(super) const PRELOAD_ABOVE: usize = 512;

/// The index, read entry by entry, or for many marks in one ordered pass
/// (one pass beats one query per mark for thousands; a handful: the queries).
pub(super) struct IndexLookup<'a> {
    pub(super) index: &'a crate::index::Index,
    pub(super) pre: Option<Preloaded>,
}

/// The index read in one pass, for planning many marks.
pub(super) struct Preloaded {
    pub(super) files: HashMap<Vec<u8>, Meta>,
    pub(super) origins: HashMap<Vec<u8>, String>,
}

impl Preloaded {
    /// Reads every file state and origin.
    pub(super) fn read(index: &crate::index::Index) -> Result<Preloaded, crate::index::Error> {
        Ok(Preloaded {
            files: index
                .files(crate::index::Scope::All)?
                .into_iter()
                .map(|f| (f.path, f.meta))
                .collect(),
            origins: index.origins()?.into_iter().collect(),
        })
    }
}

impl Preloaded {
    /// The states one chunk of `peer`'s dirty rows (paths `lo` to `hi`) needs.
    pub(super) fn chunk(
        index: &crate::index::Index,
        peer: &str,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<Preloaded, crate::index::Error> {
        let (files, origins) = index.chunk_states(peer, lo, hi)?;
        Ok(Preloaded { files, origins })
    }
}

impl Lookup for IndexLookup<'_> {
    fn file(&self, path: &[u8]) -> Result<Option<Meta>, crate::index::Error> {
        match &self.pre {
            Some(p) => Ok(p.files.get(path).cloned()),
            None => self.index.file(path),
        }
    }
    fn origin(&self, path: &[u8]) -> Result<Option<String>, crate::index::Error> {
        match &self.pre {
            Some(p) => Ok(p.origins.get(path).cloned()),
            None => self.index.origin(path),
        }
    }
    fn peer_version(
        &self,
        path: &[u8],
        peer: &str,
    ) -> Result<Option<[u8; 32]>, crate::index::Error> {
        Ok(self.index.peer_version(path, peer)?.flatten())
    }
}

/// Which rows take part in this push.
#[derive(Debug, Default)]
pub(super) struct Filter<'a> {
    /// Only these peers (`-P`); empty: all.
    pub(super) peers: &'a [String],
    /// Only these DB paths (and with the flag, what lies below them).
    pub(super) paths: &'a [(Vec<u8>, bool)],
    /// Peers first contact could not list: not pushed to this run.
    pub(super) unreachable: &'a [String],
    /// Roots held back by the mass-delete guard (forced rows still go).
    pub(super) guarded: &'a [Vec<u8>],
}

impl Filter<'_> {
    fn admits(&self, row: &DirtyRow) -> bool {
        let under = |p: &[u8], dir: &[u8]| p == dir || is_below(p, dir);
        (self.peers.is_empty() || self.peers.contains(&row.peer))
            && !self.unreachable.contains(&row.peer)
            && (self.paths.is_empty()
                || self
                    .paths
                    .iter()
                    .any(|(p, rec)| row.path == *p || (*rec && is_below(&row.path, p))))
            && (row.forced || !self.guarded.iter().any(|g| under(&row.path, g)))
    }
}

/// The rows to push, as items per peer: peers in name order; per peer,
/// deletes first (deepest first), then everything else (parents first).
pub(super) fn plan(
    rows: &[DirtyRow],
    filter: &Filter<'_>,
    config: &Config,
    groups: &[GroupPolicy],
    roots: &[Root],
    lookup: &dyn Lookup,
) -> Result<Plan, crate::index::Error> {
    let mut per_peer: HashMap<String, Vec<Item>> = HashMap::new();
    for row in rows.iter().filter(|r| filter.admits(r)) {
        let Some(item) = item(row, config, groups, roots, lookup)? else { continue };
        per_peer.entry(row.peer.clone()).or_default().push(item);
    }
    let mut peers: Plan = per_peer.into_iter().collect();
    peers.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, items) in &mut peers {
        items.sort_by(|a, b| match (a.local.is_none(), b.local.is_none()) {
            (true, true) => b.path.cmp(&a.path),
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            (false, false) => a.path.cmp(&b.path),
        });
    }
    Ok(peers)
}

/// One chunk of rows (already in push order) as items, in the same order;
/// rows the filter or the groups leave out are dropped.
pub(super) fn items(
    rows: &[DirtyRow],
    filter: &Filter<'_>,
    config: &Config,
    groups: &[GroupPolicy],
    roots: &[Root],
    lookup: &dyn Lookup,
) -> Result<Vec<Item>, crate::index::Error> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| filter.admits(r)) {
        out.extend(item(row, config, groups, roots, lookup)?);
    }
    Ok(out)
}

/// One row as an item, or `None` when no member group links its path to its
/// peer any more (the config changed since it was marked).
fn item(
    row: &DirtyRow,
    config: &Config,
    groups: &[GroupPolicy],
    roots: &[Root],
    lookup: &dyn Lookup,
) -> Result<Option<Item>, crate::index::Error> {
    let managed = |g: &&GroupPolicy| g.matcher.is_managed(&row.path);
    if !groups.iter().filter(managed).any(|g| g.pushes_to(&row.peer)) {
        return Ok(None);
    }
    let part = PathPart::read(&row.path, config, groups, roots, lookup)?;
    row_item(row, &part, config, groups, lookup)
}

/// What an item takes from its path alone, whichever the peer: read once
/// for all the peers a path is marked for.
struct PathPart {
    /// Groups managing the path, as indices into `groups` (in file order).
    managed: Vec<usize>,
    local: Option<Meta>,
    real: Option<PathBuf>,
    source: Option<(PathBuf, Vec<u8>)>,
    origin: String,
}

impl PathPart {
    fn read(
        path: &[u8],
        config: &Config,
        groups: &[GroupPolicy],
        roots: &[Root],
        lookup: &dyn Lookup,
    ) -> Result<PathPart, crate::index::Error> {
        Ok(PathPart {
            managed: (0..groups.len()).filter(|&i| groups[i].matcher.is_managed(path)).collect(),
            local: lookup.file(path)?,
            real: crate::paths::real_path(config, path),
            source: roots
                .iter()
                .find(|r| path == r.db || is_below(path, &r.db))
                .map(|r| (r.real.clone(), path[r.db.len()..].to_vec())),
            origin: lookup.origin(path)?.unwrap_or_else(|| config.myname.clone()),
        })
    }
}

/// One row as an item, from its path's part.
fn row_item(
    row: &DirtyRow,
    part: &PathPart,
    config: &Config,
    groups: &[GroupPolicy],
    lookup: &dyn Lookup,
) -> Result<Option<Item>, crate::index::Error> {
    // The group that links this path to this peer (first in file order).
    let Some(g) = part.managed.iter().map(|&i| &groups[i]).find(|g| g.pushes_to(&row.peer)) else {
        return Ok(None);
    };
    // What the peer should have if it changed nothing: the version before
    // our change; for a mark made by hand, what it was last known to have.
    let base = match row.base {
        Base::Version(v) => Some(v),
        Base::Absent => None,
        Base::Unknown => lookup.peer_version(&row.path, &row.peer)?,
    };
    Ok(Some(Item {
        path: row.path.clone(),
        group: g.name.clone(),
        generation: row.generation,
        forced: row.forced,
        changes: row.changes,
        local: part.local.clone(),
        real: part.real.clone(),
        source: part.source.clone(),
        base,
        peer_has_old: base.is_some(),
        marked_at_ns: row.marked_at * 1_000_000_000,
        need_content: false,
        ancestor: false,
        rule: g.auto,
        hosts: g.hosts.clone(),
        origin: part.origin.clone(),
        me_receive_only: g.is_receive_only(&config.myname),
        peer_receive_only: g.is_receive_only(&row.peer),
        root_len: g.root_len(&row.path),
        won: None,
        shared: None,
    }))
}

/// Rows of every peer (each path's rows together, each peer's rows in push
/// order) as `(peer, item)` in the same order: each path's state is looked
/// up and worked out once for all the peers it is marked for.
pub(super) fn items_all(
    rows: &[DirtyRow],
    filter: &Filter<'_>,
    config: &Config,
    groups: &[GroupPolicy],
    roots: &[Root],
    lookup: &dyn Lookup,
) -> Result<Vec<(String, Item)>, crate::index::Error> {
    let mut out = Vec::new();
    let mut part: Option<(&[u8], PathPart)> = None;
    for row in rows.iter().filter(|r| filter.admits(r)) {
        let p = match part.take() {
            Some((path, p)) if path == row.path.as_slice() => p,
            _ => PathPart::read(&row.path, config, groups, roots, lookup)?,
        };
        if let Some(it) = row_item(row, &p, config, groups, lookup)? {
            out.push((row.peer.clone(), it));
        }
        part = Some((&row.path, p));
    }
    Ok(out)
}

/// Roots that are gone here while deletes below them are queued, with how
/// many (unforced) deletes each holds back: an unmounted disk must not empty
/// every peer. `gone` says whether a root's real path is missing, empty or
/// no longer a directory (see [`root_gone`]).
pub(super) fn guarded_roots(
    rows: &[DirtyRow],
    roots: &[Root],
    gone: impl Fn(&Path) -> bool,
) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let deleting = |r: &&DirtyRow| !r.forced && r.changes.contains(Changes::DELETE);
    for root in roots {
        let deletes = rows
            .iter()
            .filter(deleting)
            .filter(|r| r.path == root.db || is_below(&r.path, &root.db))
            .count();
        // A root that was a single file (`include /etc/hosts;`) and is gone
        // was deleted: only deletes below a root can be the mass delete of
        // an unmounted disk.
        let below = rows.iter().filter(deleting).any(|r| is_below(&r.path, &root.db));
        if deletes > 0 && below && gone(&root.real) {
            out.push((root.db.clone(), deletes));
        }
    }
    out
}

/// Missing, empty, or no longer a directory (a symlink to where the tree was
/// moved, a file): whatever was below it here is gone in one stroke, not
/// file by file. Never followed.
pub(super) fn root_gone(real: &Path) -> bool {
    match std::fs::symlink_metadata(real) {
        Ok(md) if md.is_dir() => std::fs::read_dir(real).map_or(true, |mut it| it.next().is_none()),
        _ => true,
    }
}

/// A dry run's lines: what would be pushed or deleted where.
pub(super) fn describe(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for (peer, items) in plan {
        for it in items {
            let what = if it.local.is_none() { "delete" } else { "push" };
            let force = if it.forced { " (forced)" } else { "" };
            out.push(format!(
                "would {what} {} to {peer}{force} [{}]",
                crate::paths::display(&it.path),
                it.changes
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        files: HashMap<Vec<u8>, Meta>,
        origins: HashMap<Vec<u8>, String>,
        peer: HashMap<(Vec<u8>, String), [u8; 32]>,
    }

    impl Lookup for Fake {
        fn file(&self, path: &[u8]) -> Result<Option<Meta>, crate::index::Error> {
            Ok(self.files.get(path).cloned())
        }
        fn origin(&self, path: &[u8]) -> Result<Option<String>, crate::index::Error> {
            Ok(self.origins.get(path).cloned())
        }
        fn peer_version(
            &self,
            path: &[u8],
            peer: &str,
        ) -> Result<Option<[u8; 32]>, crate::index::Error> {
            Ok(self.peer.get(&(path.to_vec(), peer.to_string())).copied())
        }
    }

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let key = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr";
        std::fs::write(dir.path().join("k"), key).unwrap();
        let opts = crate::config::LoadOptions {
            myname: "a".into(),
            sysdir: dir.path().to_path_buf(),
            active_groups: None,
        };
        crate::config::load_str(
            "t.cfg",
            "group g { host a b (c); key k; include /srv; auto younger; } \
             group h { host a d; key k; include /srv/d; }",
            &opts,
        )
        .unwrap()
    }

    fn row(path: &str, peer: &str, changes: Changes) -> DirtyRow {
        DirtyRow {
            path: path.as_bytes().to_vec(),
            peer: peer.into(),
            myname: "a".into(),
            forced: false,
            changes,
            marked_at: 7,
            generation: 3,
            base: Base::Unknown,
        }
    }

    fn file() -> Meta {
        Meta { mtime_ns: 0, ctime_ns: 0, hash: Some([1; 32]), ..Meta::test_file() }
    }

    fn roots() -> Vec<Root> {
        vec![Root { real: "/srv".into(), db: b"/srv".to_vec(), anchor: None }]
    }

    fn paths(plan: &Plan, peer: &str) -> Vec<String> {
        let items = &plan.iter().find(|(p, _)| p == peer).unwrap().1;
        items.iter().map(|i| String::from_utf8(i.path.clone()).unwrap()).collect()
    }

    #[test]
    fn items_carry_the_group_rule_and_both_sides_receive_only_flags() {
        let c = config();
        let groups = GroupPolicy::members(&c).unwrap();
        let mut fake = Fake::default();
        fake.files.insert(b"/srv/x".to_vec(), file());
        fake.origins.insert(b"/srv/x".to_vec(), "b".into());
        fake.peer.insert((b"/srv/x".to_vec(), "c".into()), [9; 32]);
        let rows = [row("/srv/x", "c", Changes::CONTENT), row("/srv/d/y", "d", Changes::NEW)];
        let plan = plan(&rows, &Filter::default(), &c, &groups, &roots(), &fake).unwrap();
        assert_eq!(plan.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        let x = &plan[0].1[0];
        assert_eq!((x.group.as_str(), x.rule), ("g", AutoMethod::Younger));
        assert!(x.peer_receive_only && !x.me_receive_only);
        assert_eq!(x.origin, "b");
        assert_eq!(x.base, Some([9; 32]), "an unknown base is the peer's last known version");
        assert!(x.peer_has_old);
        assert_eq!(x.source, Some(("/srv".into(), b"/x".to_vec())));
        assert_eq!((x.root_len, x.marked_at_ns, x.generation), (4, 7_000_000_000, 3));
        let y = &plan[1].1[0];
        assert_eq!(y.group, "h", "only group h links /srv/d to d");
        assert!(y.local.is_none(), "not in the index: a delete");
        assert_eq!(y.origin, "a", "no origin recorded: this node");
    }

    #[test]
    fn a_row_no_group_links_to_its_peer_is_dropped() {
        let c = config();
        let groups = GroupPolicy::members(&c).unwrap();
        let rows = [row("/srv/x", "d", Changes::NEW), row("/etc/x", "b", Changes::NEW)];
        let plan = plan(&rows, &Filter::default(), &c, &groups, &roots(), &Fake::default());
        assert!(plan.unwrap().is_empty());
    }

    #[test]
    fn deletes_go_first_deepest_first_then_the_rest_parents_first() {
        let c = config();
        let groups = GroupPolicy::members(&c).unwrap();
        let mut fake = Fake::default();
        for p in ["/srv/a", "/srv/a/b"] {
            fake.files.insert(p.as_bytes().to_vec(), file());
        }
        let rows = [
            row("/srv/a/b", "b", Changes::NEW),
            row("/srv/z", "b", Changes::DELETE),
            row("/srv/a", "b", Changes::NEW),
            row("/srv/z/q", "b", Changes::DELETE),
        ];
        let plan = plan(&rows, &Filter::default(), &c, &groups, &roots(), &fake).unwrap();
        assert_eq!(paths(&plan, "b"), ["/srv/z/q", "/srv/z", "/srv/a", "/srv/a/b"]);
    }

    #[test]
    fn the_filter_keeps_peers_paths_and_guarded_roots_out() {
        let c = config();
        let groups = GroupPolicy::members(&c).unwrap();
        let rows = [
            row("/srv/x", "b", Changes::NEW),
            row("/srv/x/y", "b", Changes::NEW),
            row("/srv/w", "b", Changes::NEW),
            row("/srv/x", "c", Changes::NEW),
        ];
        let only = ["b".to_string()];
        let sel = [(b"/srv/x".to_vec(), false)];
        let f = Filter { peers: &only, paths: &sel, ..Filter::default() };
        let p = plan(&rows, &f, &c, &groups, &roots(), &Fake::default()).unwrap();
        assert_eq!(paths(&p, "b"), ["/srv/x"]);
        assert_eq!(p.len(), 1);
        let sel = [(b"/srv/x".to_vec(), true)];
        let f = Filter { paths: &sel, unreachable: &only, ..Filter::default() };
        let p = plan(&rows, &f, &c, &groups, &roots(), &Fake::default()).unwrap();
        assert_eq!(p.len(), 1, "b is unreachable");
        assert_eq!(paths(&p, "c"), ["/srv/x"]);
        let mut forced = row("/srv/w", "b", Changes::DELETE);
        forced.forced = true;
        let rows = [row("/srv/x", "b", Changes::DELETE), forced];
        let g = [b"/srv".to_vec()];
        let f = Filter { guarded: &g, ..Filter::default() };
        let p = plan(&rows, &f, &c, &groups, &roots(), &Fake::default()).unwrap();
        assert_eq!(paths(&p, "b"), ["/srv/w"], "forced rows pass the guard");
    }

    #[test]
    fn the_guard_holds_deletes_below_a_gone_root_only() {
        let rows = [row("/srv/x", "b", Changes::DELETE), row("/srv/y", "c", Changes::DELETE)];
        assert_eq!(guarded_roots(&rows, &roots(), |_| true), vec![(b"/srv".to_vec(), 2)]);
        assert!(guarded_roots(&rows, &roots(), |_| false).is_empty(), "root still there");
        // A single-file root that is gone was deleted, not unmounted.
        let rows = [row("/srv", "b", Changes::DELETE)];
        assert!(guarded_roots(&rows, &roots(), |_| true).is_empty());
        // Forced deletes are meant.
        let mut f = row("/srv/x", "b", Changes::DELETE);
        f.forced = true;
        assert!(guarded_roots(&[f], &roots(), |_| true).is_empty());
    }

    #[test]
    fn a_root_is_gone_when_missing_empty_or_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(root_gone(&dir.path().join("missing")));
        assert!(root_gone(dir.path()), "empty");
        std::fs::write(dir.path().join("f"), "x").unwrap();
        assert!(!root_gone(dir.path()));
        assert!(root_gone(&dir.path().join("f")), "a file");
        std::os::unix::fs::symlink(dir.path(), dir.path().join("l")).unwrap();
        assert!(root_gone(&dir.path().join("l")), "a symlink is never followed");
    }

    #[test]
    fn a_dry_run_says_what_would_go_where() {
        let c = config();
        let groups = GroupPolicy::members(&c).unwrap();
        let mut fake = Fake::default();
        fake.files.insert(b"/srv/a".to_vec(), file());
        let mut del = row("/srv/z", "b", Changes::DELETE);
        del.forced = true;
        let rows = [row("/srv/a", "b", Changes::NEW), del];
        let p = plan(&rows, &Filter::default(), &c, &groups, &roots(), &fake).unwrap();
        let lines = describe(&p);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("would delete /srv/z to b (forced) ["), "{}", lines[0]);
        assert!(lines[1].starts_with("would push /srv/a to b ["), "{}", lines[1]);
    }
}
