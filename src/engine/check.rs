//! `-c`: find what changed since the last check and mark it dirty for peers.

use std::path::PathBuf;
use std::time::Instant;

use super::wire::version;
use super::{Error, Node};
use crate::actions::ActionTable;
use crate::config::Config;
use crate::index::{Batch, IndexedFile, OwnedMark, Scope};
use crate::policy::GroupPolicy;
use crate::scan::{self, Delta, Root, ScanError};
use crate::types::{Base, Changes, IgnoreFields};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Paths from the command line; empty means every include root.
    pub paths: Vec<PathBuf>,
    /// Descend into directories given as paths (always true without paths).
    pub recursive: bool,
    /// `-I`: record the current state without marking anything dirty.
    pub init: bool,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// `(DB path, changes)` for every entry found new, changed or deleted;
    /// empty when the caller asked for counts only ([`Node::check_with`]).
    pub changed: Vec<(Vec<u8>, Changes)>,
    /// How many entries were found new, changed or deleted (listed or not).
    pub changed_count: usize,
    /// Number of dirty marks written.
    pub marks: usize,
    /// Number of managed entries seen on disk.
    pub seen: usize,
    /// Problems with single paths (the check went on).
    pub errors: Vec<ScanError>,
    /// Command-line paths that no group manages.
    pub ignored_args: Vec<PathBuf>,
    /// Wall time per phase (walk, index read, compare, store), for `-vv`.
    pub timings: Vec<(&'static str, std::time::Duration)>,
}

/// How many walked entries are compared, classified and stored at a time.
const PART: usize = 4096;

impl Node {
    /// Walks, compares with the index, and stores the result with its dirty
    /// marks in one transaction.
    ///
    /// # Errors
    /// When the index fails or the roots cannot be resolved; per-path problems
    /// are in the report instead.
    pub fn check(&mut self, opts: &CheckOptions) -> Result<CheckReport, Error> {
        self.check_with(opts, true)
    }

    /// [`Node::check`], listing the changed paths in the report only when
    /// `list` is true (otherwise only counting them): a plain `csync -x`
    /// prints no path, and 100,000 of them are megabytes held until the end.
    ///
    /// # Errors
    /// As [`Node::check`].
    pub fn check_with(&mut self, opts: &CheckOptions, list: bool) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();
        let mut jobs: Vec<(Vec<Root>, bool, Option<Vec<u8>>)> = Vec::new();
        if opts.paths.is_empty() {
            jobs.push((self.roots()?, true, None));
        } else {
            let include_roots = self.roots()?;
            for arg in &opts.paths {
                let forms = self.arg_forms(arg, opts.recursive);
                if forms.is_empty() {
                    report.ignored_args.push(arg.clone());
                }
                for (db, real) in forms {
                    // Below an include root: only that root's path is trusted.
                    let anchor = include_roots
                        .iter()
                        .find(|r| crate::index::is_below(&db, &r.db))
                        .map(|r| r.real.clone());
                    let root = Root { real, db: db.clone(), anchor };
                    jobs.push((vec![root], opts.recursive, Some(db)));
                }
            }
        }
        let ignore = self.ignore_fields();
        let mut batch = Batch::default();
        // One walk (the usual case) is stored part by part as it is
        // classified, in one transaction: 100,000 new entries with a mark per
        // peer need not all be held first. Several walks are collected and
        // stored together, so no walk reads what another one wrote.
        let single = jobs.len() == 1;
        let mut stored = std::time::Duration::ZERO;
        for (roots, recursive, scope_path) in jobs {
            let scope = match &scope_path {
                None => Scope::All,
                Some(p) => Scope::Path { path: p, recursive },
            };
            // Read the index while the tree is walked: the two are independent,
            // and on two cores this hides most of the database read.
            let (walk, known) = {
                let groups = &self.groups;
                let roots = &roots;
                std::thread::scope(|s| {
                    let walker = s.spawn(move || {
                        let t = Instant::now();
                        let w =
                            scan::walk(roots, recursive, |p| crate::policy::level_of(groups, p));
                        (w, t.elapsed())
                    });
                    let t = Instant::now();
                    let known = self.index.files(scope);
                    report.timings.push(("index read", t.elapsed()));
                    let (w, dt) = walker.join().expect("walker panicked");
                    report.timings.push(("walk", dt));
                    (w, known)
                })
            };
            let known: Vec<IndexedFile> = match scope {
                // A full check only owns what lies under its roots; rows elsewhere
                // (e.g. a root that is gone from the config) are left for `-R`.
                Scope::All => known?
                    .into_iter()
                    .filter(|f| {
                        roots
                            .iter()
                            .any(|r| f.path == r.db || crate::index::is_below(&f.path, &r.db))
                    })
                    .collect(),
                Scope::Path { .. } => known?,
            };
            report.seen += walk.observed.len();
            let t = Instant::now();
            if single {
                let input = (walk, &roots[..], &known[..], ignore);
                stored = self.store_in_parts(input, opts.init, list, &mut report)?;
            } else {
                let mut cmp = scan::Comparison::new(walk, &roots, &known, ignore);
                while let Some(part) = cmp.next_part(PART, &|p| self.is_managed(p)) {
                    self.collect(part, opts.init, list, &mut batch, &mut report);
                }
                report.errors.extend(cmp.into_errors());
            }
            report.timings.push(("compare", t.elapsed().saturating_sub(stored)));
        }
        if !single {
            report.marks = batch.marks.len();
            let t = Instant::now();
            self.index.apply(&batch)?;
            stored = t.elapsed();
        }
        report.timings.push(("store", stored));
        Ok(report)
    }

    /// Compares, classifies and stores a part at a time in one transaction,
    /// opened with the first part that changes anything (a check that finds
    /// nothing writes nothing); returns the time spent writing. A thread
    /// compares (and hashes) the next part while this one stores the last:
    /// on a disk, writing the index would otherwise wait for hashing and
    /// hashing for writing.
    fn store_in_parts(
        &mut self,
        (walk, roots, known, ignore): (scan::Walk, &[Root], &[IndexedFile], IgnoreFields),
        init: bool,
        list: bool,
        report: &mut CheckReport,
    ) -> Result<std::time::Duration, Error> {
        let Node { config, groups, index, actions } = self;
        let (config, groups, actions) = (&*config, &groups[..], &*actions);
        let mut spent = std::time::Duration::ZERO;
        let mut open = false;
        let mut failed = None;
        let errors = std::thread::scope(|s| {
            // One part waits while one is stored: two parts in memory at most.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Delta>>(1);
            let comparer = s.spawn(move || {
                let mut cmp = scan::Comparison::new(walk, roots, known, ignore);
                let managed = |p: &[u8]| groups.iter().any(|g| g.matcher.is_managed(p));
                while let Some(part) = cmp.next_part(PART, &managed) {
                    // The store failed when nobody receives: stop there.
                    if !part.is_empty() && tx.send(part).is_err() {
                        break;
                    }
                }
                cmp.into_errors()
            });
            for part in rx {
                let mut batch = Batch::default();
                collect(config, groups, actions, part, init, list, &mut batch, report);
                report.marks += batch.marks.len();
                let t = Instant::now();
                let r = if open { Ok(()) } else { index.begin_parts() };
                open = true;
                let r = r.and_then(|()| index.apply_part(&batch));
                spent += t.elapsed();
                if let Err(e) = r {
                    failed = Some(e);
                    break;
                }
            }
            comparer.join().expect("comparison panicked")
        });
        report.errors.extend(errors);
        if let Some(e) = failed {
            index.rollback_parts();
            return Err(e.into());
        }
        if open {
            let t = Instant::now();
            index.commit_parts()?;
            spent += t.elapsed();
        }
        Ok(spent)
    }

    /// The config's `ignore uid gid mod;` as the scanner wants it.
    pub fn ignore_fields(&self) -> IgnoreFields {
        self.config.ignore
    }

    fn collect(
        &self,
        deltas: Vec<Delta>,
        init: bool,
        list: bool,
        batch: &mut Batch,
        report: &mut CheckReport,
    ) {
        collect(&self.config, &self.groups, &self.actions, deltas, init, list, batch, report);
    }
}

/// Turns deltas into index rows, dirty marks for each peer (none with
/// `-I`), owed `do-local` actions and the report's count (and list).
#[allow(clippy::too_many_arguments)]
fn collect(
    config: &Config,
    groups: &[GroupPolicy],
    actions: &ActionTable,
    deltas: Vec<Delta>,
    init: bool,
    list: bool,
    batch: &mut Batch,
    report: &mut CheckReport,
) {
    let ignore = config.ignore;
    for d in deltas {
        let (path, changes, base) = match d {
            Delta::Refreshed(o) => {
                batch.upserts.push(IndexedFile { path: o.path, meta: o.meta });
                continue;
            }
            Delta::New(o) => {
                let p = o.path.clone();
                batch.upserts.push(IndexedFile { path: o.path, meta: o.meta });
                (p, Changes::NEW, Base::Absent)
            }
            Delta::Changed(o, c, old) => {
                let p = o.path.clone();
                batch.upserts.push(IndexedFile { path: o.path, meta: o.meta });
                (p, c, Base::Version(version(&old, ignore)))
            }
            Delta::Deleted(p, old) => {
                batch.removals.push(p.clone());
                (p, Changes::DELETE, Base::Version(version(&old, ignore)))
            }
        };
        batch.local.push(path.clone());
        if !init && changes.is_real() && !actions.is_empty() {
            // `do-local` actions: the change is on disk already, so the
            // journal row is ready and goes in with the index update.
            if let Some(real) = crate::paths::real_path(config, &path) {
                batch.actions.extend(actions.owed(&path, &real, None, true));
            }
        }
        if !init {
            for (peer, myname) in crate::policy::peers_for(groups, &path) {
                batch.marks.push(OwnedMark {
                    path: path.clone(),
                    peer: peer.to_string(),
                    myname: myname.to_string(),
                    changes,
                    forced: false,
                    base,
                });
            }
        }
        report.changed_count += 1;
        if list {
            report.changed.push((path, changes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;

    /// Node `a` of group `g` (peers `b` and `c`) managing `dir/srv`.
    fn node(dir: &std::path::Path) -> (Node, PathBuf) {
        let srv = dir.join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let text = format!("group g {{ host a b c; key k; include {}; }}", srv.display());
        let config = crate::config::load_for_test(dir, &text);
        (Node::new(config, Index::open_in_memory().unwrap()).unwrap(), srv)
    }

    fn full() -> CheckOptions {
        CheckOptions { paths: Vec::new(), recursive: true, init: false }
    }

    /// More entries than one part: every part is stored (with a mark per
    /// peer) in the one transaction, and the next check, across the same
    /// part boundaries, finds exactly the edits, deletes and additions.
    #[test]
    fn a_check_of_several_parts_stores_and_then_finds_every_change() {
        let d = tempfile::tempdir().unwrap();
        let (mut n, srv) = node(d.path());
        let files = PART + PART / 2;
        for i in 0..files {
            let sub = srv.join(format!("d{}", i % 7));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i:05}")), format!("{i}")).unwrap();
        }
        let r = n.check(&full()).unwrap();
        // The root, its 7 directories and the files.
        assert_eq!((r.changed_count, r.changed.len(), r.seen), (files + 8, files + 8, files + 8));
        assert_eq!(r.marks, 2 * (files + 8));
        assert_eq!(n.index.files(crate::index::Scope::All).unwrap().len(), files + 8);
        assert!(r.errors.is_empty(), "{:?}", r.errors);

        // Changes on both sides of the first part's end, and at the very end.
        std::fs::write(srv.join("d0/f00000"), "edited").unwrap();
        std::fs::remove_file(srv.join(format!("d{}/f{:05}", PART % 7, PART))).unwrap();
        std::fs::write(srv.join("d6/zz-new"), "new").unwrap();
        let last = files - 1;
        std::fs::remove_file(srv.join(format!("d{}/f{last:05}", last % 7))).unwrap();
        let r = n.check_with(&full(), false).unwrap();
        // Counted, not listed: the four files, and at most the three
        // directories whose entries changed.
        assert!(r.changed.is_empty());
        assert!((4..=7).contains(&r.changed_count), "{}", r.changed_count);
        let again = n.check(&full()).unwrap();
        assert_eq!(again.changed_count, 0, "{:?}", again.changed);
        let rows = n.index.files(crate::index::Scope::All).unwrap();
        assert_eq!(rows.len(), files + 8 - 2 + 1);
        let edited = srv.join("d0/f00000").into_os_string().into_encoded_bytes();
        let meta = rows.iter().find(|f| f.path == edited).unwrap();
        assert_eq!(meta.meta.hash.unwrap(), *blake3::hash(b"edited").as_bytes());
    }
}
