//! Comparing a walk with the previously indexed state: which entries are
//! new, changed, only refreshed, or deleted, hashing (in parallel) only what
//! may have changed.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use super::{Expected, Observed, Root, ScanError, Walk, hash_file, open_checked};
use crate::types::{Changes, FileKind, IgnoreFields, Meta, classify};

/// What the comparison found for one path.
#[derive(Debug, Clone)]
pub enum Delta {
    /// Not indexed before.
    New(Observed),
    /// Indexed, and something a peer should know changed (with the old state).
    Changed(Observed, Changes, Meta),
    /// Only change hints (inode, ctime) moved: store silently, mark nothing.
    Refreshed(Observed),
    /// Indexed, managed, and gone from disk (with the old state).
    Deleted(Vec<u8>, Meta),
}

/// A previously indexed entry, as the comparison needs it.
pub trait Known {
    /// DB-form path.
    fn path(&self) -> &[u8];
    /// Last seen state.
    fn meta(&self) -> &Meta;
}

/// Compares a walk with the previously indexed entries of the same scope,
/// all at once (see [`Comparison`] for the same a part at a time).
///
/// `known` must be sorted by path. Entries not seen on disk count as deleted
/// only when `still_managed` says the config still wants them and they do not
/// lie below a pruned directory. Files whose stat says the content may have
/// changed are hashed (in parallel) before classification.
pub fn compare<K, M>(
    walk: Walk,
    roots: &[Root],
    known: &[K],
    ignore: IgnoreFields,
    still_managed: M,
) -> (Vec<Delta>, Vec<ScanError>)
where
    K: Known + Sync,
    M: Fn(&[u8]) -> bool,
{
    let mut cmp = Comparison::new(walk, roots, known, ignore);
    let mut out = Vec::new();
    while let Some(part) = cmp.next_part(PART, &still_managed) {
        out.extend(part);
    }
    (out, cmp.into_errors())
}

/// How many walked entries [`compare`] classifies per part.
const PART: usize = 4096;

/// A comparison handing out its deltas a part at a time, in path order: a
/// 100,000-entry check then hashes, classifies and stores a few thousand
/// entries at a time instead of holding a delta (an observed and an old
/// state) for every entry before the first is stored.
pub struct Comparison<'a, K> {
    observed: std::vec::IntoIter<Observed>,
    pruned: HashSet<Vec<u8>>,
    errors: Vec<ScanError>,
    roots: &'a [Root],
    known: &'a [K],
    /// The first indexed entry not yet merged.
    k: usize,
    ignore: IgnoreFields,
}

impl<'a, K: Known + Sync> Comparison<'a, K> {
    /// Starts comparing `walk` with `known` (sorted by path, the same scope).
    pub fn new(walk: Walk, roots: &'a [Root], known: &'a [K], ignore: IgnoreFields) -> Self {
        let Walk { observed, pruned, errors } = walk;
        Comparison { observed: observed.into_iter(), pruned, errors, roots, known, k: 0, ignore }
    }

    /// The deltas of the next `max` walked entries (at least one) and of the
    /// indexed entries gone before them, in path order; then those of up to
    /// `max` indexed entries gone after the last walked one; `None` when the
    /// comparison is over. A part may be empty (nothing changed there).
    /// `still_managed` as for [`compare`].
    pub fn next_part(
        &mut self,
        max: usize,
        still_managed: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Vec<Delta>> {
        let max = max.max(1);
        let mut out = Vec::new();
        let mut chunk: Vec<Observed> = self.observed.by_ref().take(max).collect();
        if chunk.is_empty() {
            if self.k >= self.known.len() {
                return None;
            }
            let end = self.known.len().min(self.k.saturating_add(max));
            while self.k < end {
                self.gone(self.k, &mut out, still_managed);
                self.k += 1;
            }
            return Some(out);
        }

        // Pass 1: find what needs hashing (new files, or stat hints moved).
        let known = self.known;
        let mut need_hash = Vec::new();
        let mut k = self.k;
        for (i, o) in chunk.iter().enumerate() {
            while k < known.len() && known[k].path() < o.path.as_slice() {
                k += 1;
            }
            if o.meta.kind != FileKind::File {
                continue;
            }
            let old = known.get(k).filter(|e| e.path() == o.path.as_slice());
            if old.is_none_or(|e| o.meta.content_may_differ(e.meta())) {
                need_hash.push(i);
            }
        }
        let failed = hash_all(&mut chunk, self.roots, &need_hash, &mut self.errors);

        // Pass 2: merge.
        for (i, o) in chunk.into_iter().enumerate() {
            while self.k < known.len() && known[self.k].path() < o.path.as_slice() {
                self.gone(self.k, &mut out, still_managed);
                self.k += 1;
            }
            let same = self.k < known.len() && known[self.k].path() == o.path.as_slice();
            if failed.contains(&i) {
                // Unreadable or vanished while hashing: leave the index as it was.
                if same {
                    self.k += 1;
                }
                continue;
            }
            if same {
                let mut old = known[self.k].meta().clone();
                self.k += 1;
                let mut o = o;
                if o.meta.kind == FileKind::File && o.meta.hash.is_none() {
                    o.meta.hash = old.hash;
                }
                // A row stored without its hash is repaired, not reported as a
                // content change: what it missed is not known to have changed.
                let repaired = old.kind == FileKind::File && old.hash.is_none();
                if repaired {
                    old.hash = o.meta.hash;
                }
                let changes = classify(&old, &o.meta, self.ignore);
                if !changes.is_empty() {
                    out.push(Delta::Changed(o, changes, old));
                } else if o.meta != old || repaired {
                    out.push(Delta::Refreshed(o));
                }
            } else {
                out.push(Delta::New(o));
            }
        }
        Some(out)
    }

    /// The indexed entry `k` was not seen: a delete, unless the config no
    /// longer manages it or it lies below a directory the walk pruned.
    fn gone(&self, k: usize, out: &mut Vec<Delta>, still_managed: &dyn Fn(&[u8]) -> bool) {
        let e = &self.known[k];
        let p = e.path();
        if still_managed(p) && !below_pruned(p, &self.pruned) {
            out.push(Delta::Deleted(p.to_vec(), e.meta().clone()));
        }
    }

    /// The problems met (the walk's, then those of hashing).
    pub fn into_errors(self) -> Vec<ScanError> {
        self.errors
    }
}

pub(super) fn below_pruned(p: &[u8], pruned: &HashSet<Vec<u8>>) -> bool {
    if pruned.is_empty() {
        return false;
    }
    let mut end = p.len();
    while let Some(slash) = p[..end].iter().rposition(|&b| b == b'/') {
        if slash == 0 {
            return pruned.contains(&b"/"[..]);
        }
        if pruned.contains(&p[..slash]) {
            return true;
        }
        end = slash;
    }
    false
}

/// Hashes the selected files, spreading the work over a few threads: warm files
/// hash at GB/s on one core, but cold ones are I/O-latency bound and gain from
/// several reads in flight. Returns the indices that could not be hashed.
fn hash_all(
    observed: &mut [Observed],
    roots: &[Root],
    which: &[usize],
    errors: &mut Vec<ScanError>,
) -> HashSet<usize> {
    let mut failed = HashSet::new();
    if which.is_empty() {
        return failed;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let threads = threads.min(which.len().div_ceil(64)).max(1);
    // Each file is opened from its root, component by component, and must be
    // the inode the walk saw: see `open_checked`.
    let jobs: Vec<(usize, &Path, Vec<u8>, Expected, u64)> = which
        .iter()
        .map(|&i| {
            let o = &observed[i];
            let (base, rel) = roots[o.root].trusted_of(&o.path);
            (i, base, rel, Expected { dev: Some(o.dev), ino: o.meta.ino }, o.meta.size)
        })
        .collect();
    let chunk = jobs.len().div_ceil(threads);
    let results: Vec<(usize, io::Result<[u8; 32]>)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(i, root, rel, expect, size)| {
                            let h = open_checked(root, rel, *expect)
                                .and_then(|mut f| hash_file(&mut f, *size));
                            (*i, h)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("hash thread panicked")).collect()
    });
    for (i, r) in results {
        match r {
            Ok(h) => observed[i].meta.hash = Some(h),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    errors.push(ScanError {
                        path: roots[observed[i].root].real_of(&observed[i].path),
                        message: if e.kind() == io::ErrorKind::Other {
                            e.to_string()
                        } else {
                            format!("cannot read: {e}")
                        },
                    });
                }
                failed.insert(i);
            }
        }
    }
    failed
}
