//! The scanner: walks include roots, `lstat`s what the config manages, hashes
//! only what may have changed, and compares with the indexed state.
//!
//! It never touches the database: previous state comes in as a sorted slice
//! and changes go out as [`Delta`]s. One walk plus one ordered merge, no
//! per-file queries: that is what keeps a no-change check near `find`'s cost.

mod compare;
mod read;

pub use compare::{Comparison, Delta, Known, compare};
pub use read::{Expected, hash_file, hash_reader, meta_of, open_checked};

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fd::OwnedFd;
use rustix::fs::{self as rfs, OFlags};

use crate::pattern::Level;
use crate::types::{FileKind, Meta};
use read::{in_trusted_parent, open_parent_below};

/// Where a walk starts: a real directory (or file) and its DB-form name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The real path on this node.
    pub real: PathBuf,
    /// The same path in DB form (`%prefix%/…` or the real path).
    pub db: Vec<u8>,
    /// For a walk that starts below an include root (`csync -c PATH`): that
    /// include root's real path. Only the config's paths are trusted to hold
    /// symlinks; from there on every component is opened without following
    /// one. `None`: `real` itself is such a trusted path.
    pub anchor: Option<PathBuf>,
}

impl Root {
    /// The real path of a DB-form path below (or at) this root.
    pub fn real_of(&self, db: &[u8]) -> PathBuf {
        let rest = &db[self.db.len()..];
        let mut p = self.real.as_os_str().as_bytes().to_vec();
        p.extend_from_slice(rest);
        PathBuf::from(OsStr::from_bytes(&p))
    }

    /// The trusted directory (or single file) a DB-form path below (or at)
    /// this root is opened from, and the path below it: the arguments of
    /// [`open_checked`].
    pub fn trusted_of(&self, db: &[u8]) -> (&Path, Vec<u8>) {
        let rest = &db[self.db.len()..];
        let Some(anchor) = &self.anchor else { return (&self.real, rest.to_vec()) };
        match self.real.strip_prefix(anchor) {
            Ok(below) if !below.as_os_str().is_empty() => {
                let mut rel = below.as_os_str().as_bytes().to_vec();
                rel.extend_from_slice(rest);
                (anchor, rel)
            }
            _ => (&self.real, rest.to_vec()),
        }
    }
}

/// One managed entry found on disk.
#[derive(Debug, Clone)]
pub struct Observed {
    /// DB-form path.
    pub path: Vec<u8>,
    /// Index into the roots slice the walk got: maps back to the real path.
    pub root: usize,
    /// What `lstat` said (the hash is filled in later, only when needed).
    pub meta: Meta,
    /// The device `lstat` said: with `meta.ino`, the inode whose content may be
    /// hashed (whatever else is at the path by then is not read).
    pub dev: u64,
}

/// A problem met during a walk; the walk goes on without that entry.
#[derive(Debug, Clone)]
pub struct ScanError {
    /// The real path.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The result of a walk.
#[derive(Debug, Default)]
pub struct Walk {
    /// Managed entries, sorted by DB path.
    pub observed: Vec<Observed>,
    /// DB paths of directories not descended into (excluded or unreadable):
    /// indexed entries below them are not seen, and must not count as deleted.
    pub pruned: HashSet<Vec<u8>>,
    /// Problems met.
    pub errors: Vec<ScanError>,
}

/// Walks `roots` (recursively, or just the roots themselves), keeping entries
/// whose `level` is `Managed` and descending into directories whose level is at
/// least `StepInto`. Symlinks are never followed, not even at a root.
///
/// Directories are shared out to one worker per core from a common queue, and
/// every entry is `lstat`ed relative to its open directory (`fstatat`), as
/// `find` does: the kernel then never re-walks the full path, and a warm
/// no-change check costs about what `find -printf` costs, or less on two cores.
/// (walkdir, which we used first, stats by full path on one thread: 1.6× find.)
pub fn walk<F>(roots: &[Root], recursive: bool, level: F) -> Walk
where
    F: Fn(&[u8]) -> Level + Sync,
{
    let mut out = Walk::default();
    let queue = WorkQueue::default();
    for (ri, root) in roots.iter().enumerate() {
        let (meta, dev, parent) = match stat_root(root) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.pruned.insert(root.db.clone());
                out.errors.push(ScanError { path: root.real.clone(), message: e.to_string() });
                continue;
            }
        };
        let lvl = level(&root.db);
        if lvl == Level::Ignore {
            continue;
        }
        if lvl == Level::Managed {
            if meta.kind == FileKind::Symlink && meta.target.is_none() {
                out.errors.push(ScanError {
                    path: root.real.clone(),
                    message: "cannot read link".into(),
                });
                continue;
            }
            out.observed.push(Observed {
                path: root.db.clone(),
                root: ri,
                meta: meta.clone(),
                dev,
            });
        }
        if recursive && meta.kind == FileKind::Dir {
            queue.push(DirJob { root: ri, db: root.db.clone(), parent });
        }
    }
    if !queue.is_empty() {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        let parts: Vec<Walk> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..workers).map(|_| s.spawn(|| walk_worker(roots, &queue, &level))).collect();
            handles.into_iter().map(|h| h.join().expect("walk worker panicked")).collect()
        });
        for p in parts {
            out.observed.extend(p.observed);
            out.pruned.extend(p.pruned);
            out.errors.extend(p.errors);
        }
    }
    // Roots may overlap (a path given twice, or under another root): keep one copy.
    out.observed.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    out.observed.dedup_by(|a, b| a.path == b.path);
    out
}

/// `lstat` of a walk's root (link target read), and for a root below an
/// include root the directory holding it, opened component-wise from there
/// without following symlinks (the walk then opens the root from it).
fn stat_root(root: &Root) -> io::Result<(Meta, u64, Option<Arc<OwnedFd>>)> {
    let (base, rel) = root.trusted_of(&root.db);
    if rel.is_empty() {
        let (parent, name) = in_trusted_parent(&root.real)?;
        let st = rfs::statat(&parent, name, rfs::AtFlags::SYMLINK_NOFOLLOW)?;
        let mut meta = Meta::from_stat(&st);
        if meta.kind == FileKind::Symlink {
            meta.target = rfs::readlinkat(&parent, name, Vec::new()).ok().map(|t| t.into_bytes());
        }
        return Ok((meta, st.st_dev, None));
    }
    let (dir, name) = open_parent_below(base, &rel)?;
    let st = rfs::statat(&dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)?;
    let mut meta = Meta::from_stat(&st);
    if meta.kind == FileKind::Symlink {
        meta.target = rfs::readlinkat(&dir, name, Vec::new()).ok().map(|t| t.into_bytes());
    }
    Ok((meta, st.st_dev, Some(Arc::new(dir))))
}

/// A directory still to be read: which root it is under, its DB path, and
/// the open directory it was found in (`None` for a root). A subdirectory is
/// opened relative to that descriptor, never by its full path: a directory
/// above it renamed or swapped for a symlink meanwhile cannot lead the walk
/// outside the tree. The descriptor is shared by the parent's queued children
/// and closed with the last of them.
struct DirJob {
    root: usize,
    db: Vec<u8>,
    parent: Option<Arc<OwnedFd>>,
}

/// Directories waiting to be read, shared by the walk workers. The walk is
/// over when the queue is empty and no worker is busy (a busy one may still
/// push subdirectories).
#[derive(Default)]
struct WorkQueue {
    state: Mutex<(Vec<DirJob>, usize)>,
    ready: Condvar,
}

impl WorkQueue {
    fn push(&self, job: DirJob) {
        self.state.lock().expect("walk queue poisoned").0.push(job);
        self.ready.notify_one();
    }

    fn is_empty(&self) -> bool {
        self.state.lock().expect("walk queue poisoned").0.is_empty()
    }

    /// The next directory to read, or `None` when the walk is complete.
    fn next(&self, finished_one: bool) -> Option<DirJob> {
        let mut st = self.state.lock().expect("walk queue poisoned");
        if finished_one {
            st.1 -= 1;
        }
        loop {
            if let Some(job) = st.0.pop() {
                st.1 += 1;
                return Some(job);
            }
            if st.1 == 0 {
                self.ready.notify_all();
                return None;
            }
            st = self.ready.wait(st).expect("walk queue poisoned");
        }
    }
}

fn walk_worker<F>(roots: &[Root], queue: &WorkQueue, level: &F) -> Walk
where
    F: Fn(&[u8]) -> Level + Sync,
{
    let mut out = Walk::default();
    let mut finished = false;
    while let Some(job) = queue.next(finished) {
        finished = true;
        read_dir_into(roots, &job, queue, level, &mut out);
    }
    out
}

/// Reads one directory: records its managed entries and queues its subdirectories.
fn read_dir_into<F>(roots: &[Root], job: &DirJob, queue: &WorkQueue, level: &F, out: &mut Walk)
where
    F: Fn(&[u8]) -> Level + Sync,
{
    let root = &roots[job.root];
    let real = root.real_of(&job.db);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Two descriptors: one the directory stream consumes, one to stat against
    // (and to open subdirectories from).
    let opened = match &job.parent {
        // A root: reached the way the config names it, through symlinks
        // only root controls; the root itself is never followed.
        None => match in_trusted_parent(&real) {
            Ok((parent, name)) => rfs::openat(&parent, name, flags, rfs::Mode::empty()),
            Err(e) => {
                out.pruned.insert(job.db.clone());
                out.errors.push(ScanError { path: real, message: e.to_string() });
                return;
            }
        },
        Some(parent) => {
            let name = match job.db.iter().rposition(|&b| b == b'/') {
                Some(i) => &job.db[i + 1..],
                None => &job.db[..],
            };
            rfs::openat(parent.as_ref(), name, flags, rfs::Mode::empty())
        }
    }
    .and_then(|fd| rfs::Dir::read_from(&fd).map(|d| (fd, d)));
    let (fd, dir) = match opened {
        Ok((fd, d)) => (Arc::new(fd), d),
        // Vanished since it was listed: its indexed children are simply gone.
        Err(rustix::io::Errno::NOENT) => return,
        Err(e) => {
            out.pruned.insert(job.db.clone());
            out.errors.push(ScanError { path: real, message: io::Error::from(e).to_string() });
            return;
        }
    };
    for entry in dir {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.pruned.insert(job.db.clone());
                out.errors.push(ScanError {
                    path: real.clone(),
                    message: io::Error::from(e).to_string(),
                });
                return;
            }
        };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || crate::tempname::is_temp_name(name) {
            continue;
        }
        let mut db = Vec::with_capacity(job.db.len() + 1 + name.len());
        db.extend_from_slice(&job.db);
        if db.last() != Some(&b'/') {
            db.push(b'/');
        }
        db.extend_from_slice(name);
        let lvl = level(&db);
        let dtype = entry.file_type();
        if lvl == Level::Ignore {
            if dtype == rfs::FileType::Directory {
                out.pruned.insert(db);
            } else if dtype == rfs::FileType::Unknown {
                // Some filesystems do not fill in d_type: ask, to prune correctly.
                if let Ok(st) =
                    rfs::statat(fd.as_ref(), entry.file_name(), rfs::AtFlags::SYMLINK_NOFOLLOW)
                    && rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory
                {
                    out.pruned.insert(db);
                }
            }
            continue;
        }
        if lvl == Level::StepInto && dtype != rfs::FileType::Unknown {
            if dtype == rfs::FileType::Directory {
                queue.push(DirJob { root: job.root, db, parent: Some(fd.clone()) });
            }
            continue;
        }
        let st = match rfs::statat(fd.as_ref(), entry.file_name(), rfs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => {
                out.errors.push(ScanError {
                    path: root.real_of(&db),
                    message: io::Error::from(e).to_string(),
                });
                continue;
            }
        };
        let mut meta = Meta::from_stat(&st);
        if meta.kind == FileKind::Dir {
            queue.push(DirJob { root: job.root, db: db.clone(), parent: Some(fd.clone()) });
        }
        if lvl != Level::Managed {
            continue;
        }
        if meta.kind == FileKind::Symlink {
            match rfs::readlinkat(fd.as_ref(), entry.file_name(), Vec::new()) {
                Ok(t) => meta.target = Some(t.into_bytes()),
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    out.errors.push(ScanError {
                        path: root.real_of(&db),
                        message: format!("cannot read link: {}", io::Error::from(e)),
                    });
                    continue;
                }
            }
        }
        out.observed.push(Observed { path: db, root: job.root, meta, dev: st.st_dev });
    }
}

#[cfg(test)]
mod tests;
