//! Comparing a walk with the previously indexed state: which entries are
//! new, changed, only refreshed, or deleted, hashing (in parallel) only what
//! may have changed.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use super::{Expected, Observed, Root, ScanError, Walk, hash_reader, open_checked};
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

/// Compares a walk with the previously indexed entries of the same scope.
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
    let Walk { mut observed, pruned, mut errors } = walk;

    // Pass 1: find what needs hashing (new files, or stat hints moved).
    let mut need_hash = Vec::new();
    {
        let mut k = 0;
        for (i, o) in observed.iter().enumerate() {
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
    }
    let failed = hash_all(&mut observed, roots, &need_hash, &mut errors);

    // Pass 2: merge.
    let mut out = Vec::new();
    let mut k = 0;
    let gone = |k: &K, out: &mut Vec<Delta>| {
        let p = k.path();
        if still_managed(p) && !below_pruned(p, &pruned) {
            out.push(Delta::Deleted(p.to_vec(), k.meta().clone()));
        }
    };
    for (i, o) in observed.into_iter().enumerate() {
        while k < known.len() && known[k].path() < o.path.as_slice() {
            gone(&known[k], &mut out);
            k += 1;
        }
        if failed.contains(&i) {
            // Unreadable or vanished while hashing: leave the index as it was.
            if k < known.len() && known[k].path() == o.path.as_slice() {
                k += 1;
            }
            continue;
        }
        if k < known.len() && known[k].path() == o.path.as_slice() {
            let mut old = known[k].meta().clone();
            k += 1;
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
            let old = &old;
            let changes = classify(old, &o.meta, ignore);
            if !changes.is_empty() {
                out.push(Delta::Changed(o, changes, old.clone()));
            } else if o.meta != *old || repaired {
                out.push(Delta::Refreshed(o));
            }
        } else {
            out.push(Delta::New(o));
        }
    }
    while k < known.len() {
        gone(&known[k], &mut out);
        k += 1;
    }
    (out, errors)
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
    let jobs: Vec<(usize, &Path, Vec<u8>, Expected)> = which
        .iter()
        .map(|&i| {
            let o = &observed[i];
            let (base, rel) = roots[o.root].trusted_of(&o.path);
            (i, base, rel, Expected { dev: Some(o.dev), ino: o.meta.ino })
        })
        .collect();
    let chunk = jobs.len().div_ceil(threads);
    let results: Vec<(usize, io::Result<[u8; 32]>)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(i, root, rel, expect)| {
                            let h = open_checked(root, rel, *expect)
                                .and_then(|mut f| hash_reader(&mut f));
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
