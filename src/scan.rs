//! The scanner: walks include roots, `lstat`s what the config manages, hashes
//! only what may have changed, and compares with the indexed state.
//!
//! It never touches the database: previous state comes in as a sorted slice
//! and changes go out as [`Delta`]s. One walk plus one ordered merge, no
//! per-file queries: that is what keeps a no-change check near `find`'s cost.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fd::OwnedFd;
use rustix::fs::{self as rfs, OFlags};

use crate::pattern::Level;
use crate::types::{Changes, FileKind, IgnoreFields, Meta, classify};

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

/// The metadata csync tracks, from an `lstat` result (no hash, no link target).
pub fn meta_of(md: &Metadata) -> Meta {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::Socket
    };
    let is_dev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
    Meta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == FileKind::File { md.size() } else { 0 },
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ino: md.ino(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        rdev: if is_dev { md.rdev() } else { 0 },
        target: None,
        hash: None,
    }
}

/// BLAKE3 of a file's content, read in 64 KiB chunks (as fast as mmap here, and
/// never holds a large file in memory).
///
/// # Errors
/// When the file cannot be read.
pub fn hash_reader(f: &mut impl Read) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(*h.finalize().as_bytes())
}

/// The file a walk (or the index) saw at a path: content is read only from
/// that inode. `dev: None` when only the inode number is known (the index
/// does not keep device numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// `st_dev`, if known.
    pub dev: Option<u64>,
    /// `st_ino`.
    pub ino: u64,
}

/// The error for a path that is no longer the regular file that was seen: it
/// is never read, and the next check sees what is there now.
fn changed(why: &str) -> io::Error {
    io::Error::other(format!(
        "changed since it was checked ({why}); not read, checked again on the next run"
    ))
}

/// Opens the regular file at `root/rel` for reading without following a
/// symlink anywhere below `root`, and only if it is still the inode that was
/// seen (`expect`).
///
/// `root` is an include root (its path is the config's and trusted: symlinks
/// in it are followed); every component of `rel` is opened relative to the
/// previous one with `O_NOFOLLOW`, so a user who can write below the root
/// cannot swap in a symlink (to a file only root may read) between the walk's
/// `lstat` and this open and have that file hashed or sent. An empty `rel`
/// means the root itself is the file (`include /etc/hosts;`): its parent
/// directory is trusted, the file is opened in it with `O_NOFOLLOW`.
///
/// # Errors
/// `NotFound` when it vanished; another error when it is now a symlink, a
/// directory, a fifo or a different file (a per-path message: skip it this
/// run), or cannot be opened.
pub fn open_checked(root: &Path, rel: &[u8], expect: Expected) -> io::Result<File> {
    let (dir, name) = open_parent_below(root, rel)?;
    // O_NONBLOCK: should a fifo have been swapped in, do not hang on it (the
    // type check below then refuses it). O_NOCTTY: nor adopt a terminal.
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rfs::openat(&dir, name, flags, rfs::Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(changed("now a symlink")),
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(changed("no longer a regular file"));
    }
    if st.st_ino != expect.ino || expect.dev.is_some_and(|d| d != st.st_dev) {
        return Err(changed("now another file"));
    }
    rfs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// The directory holding `path` (opened through [`crate::confined`]: only
/// symlinks root controls are followed on the way) and `path`'s last
/// component (empty for `/`).
fn in_trusted_parent(path: &Path) -> io::Result<(OwnedFd, &[u8])> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p, n.as_bytes()),
        _ => (path, &b""[..]),
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let fd = crate::confined::open_dir(parent).map_err(|e| match e {
        crate::confined::Error::Missing => io::Error::from(io::ErrorKind::NotFound),
        crate::confined::Error::Untrusted => io::Error::other(format!(
            "{}: a symlink on the way that root does not control; not read",
            parent.display()
        )),
        crate::confined::Error::Io(e) => e,
    })?;
    Ok((fd, name))
}

/// The directory holding `root/rel` and the last component: `root` is
/// opened as given (trusted), every directory of `rel` below it with
/// `O_NOFOLLOW`. An empty `rel` names `root` itself, in its (trusted) parent.
fn open_parent_below<'a>(root: &'a Path, rel: &'a [u8]) -> io::Result<(OwnedFd, &'a [u8])> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let (dir, name): (OwnedFd, &[u8]) = if rel.is_empty() {
        in_trusted_parent(root)?
    } else {
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        let (dirs, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let mut fd = match in_trusted_parent(root)? {
            (parent, b"") => parent,
            (parent, name) => {
                match rfs::openat(&parent, name, dir_flags | OFlags::NOFOLLOW, rfs::Mode::empty()) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                        return Err(changed("the include root is now a symlink or a file"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if !dirs.is_empty() {
            for comp in dirs.split(|&b| b == b'/') {
                if comp.is_empty() || comp == b"." || comp == b".." {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "unclean path"));
                }
                fd = match rfs::openat(&fd, comp, dir_flags | OFlags::NOFOLLOW, rfs::Mode::empty())
                {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                        return Err(changed("a directory above it is now a symlink or a file"));
                    }
                    Err(e) => return Err(e.into()),
                };
            }
        }
        (fd, name)
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "unclean path"));
    }
    Ok((dir, name))
}

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

fn below_pruned(p: &[u8], pruned: &HashSet<Vec<u8>>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct K(Vec<u8>, Meta);
    impl Known for K {
        fn path(&self) -> &[u8] {
            &self.0
        }
        fn meta(&self) -> &Meta {
            &self.1
        }
    }

    fn managed(_: &[u8]) -> Level {
        Level::Managed
    }

    fn setup() -> (tempfile::TempDir, Vec<Root>) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/f"), b"hello").unwrap();
        fs::write(d.path().join("a/b/g"), b"world").unwrap();
        std::os::unix::fs::symlink("f", d.path().join("a/l")).unwrap();
        let roots = vec![Root { real: d.path().join("a"), db: b"%p%".to_vec(), anchor: None }];
        (d, roots)
    }

    fn known_from(deltas: &[Delta]) -> Vec<K> {
        deltas
            .iter()
            .filter_map(|d| match d {
                Delta::New(o) | Delta::Changed(o, _, _) | Delta::Refreshed(o) => {
                    Some(K(o.path.clone(), o.meta.clone()))
                }
                Delta::Deleted(..) => None,
            })
            .collect()
    }

    #[test]
    fn walk_maps_to_db_form_and_reads_links() {
        let (_d, roots) = setup();
        let w = walk(&roots, true, managed);
        let names: Vec<_> =
            w.observed.iter().map(|o| String::from_utf8_lossy(&o.path).into_owned()).collect();
        assert_eq!(names, ["%p%", "%p%/b", "%p%/b/g", "%p%/f", "%p%/l"]);
        let l = w.observed.iter().find(|o| o.path == b"%p%/l").unwrap();
        assert_eq!(l.meta.target.as_deref(), Some(&b"f"[..]));
    }

    #[test]
    fn second_compare_of_unchanged_tree_is_empty() {
        let (_d, roots) = setup();
        let (d1, e) = compare::<K, _>(
            walk(&roots, true, managed),
            &roots,
            &[],
            IgnoreFields::default(),
            |_| true,
        );
        assert!(e.is_empty());
        assert_eq!(d1.len(), 5);
        assert!(d1.iter().all(|d| matches!(d, Delta::New(_))));
        let f = d1.iter().find_map(|d| match d {
            Delta::New(o) if o.path == b"%p%/f" => Some(o.meta.hash),
            _ => None,
        });
        assert_eq!(f.unwrap().unwrap(), *blake3::hash(b"hello").as_bytes());
        let known = known_from(&d1);
        let (d2, _) =
            compare(walk(&roots, true, managed), &roots, &known, IgnoreFields::default(), |_| true);
        assert!(d2.is_empty(), "{d2:?}");
    }

    #[test]
    fn content_change_delete_and_pruned_subtree() {
        let (d, roots) = setup();
        let (d1, _) = compare::<K, _>(
            walk(&roots, true, managed),
            &roots,
            &[],
            IgnoreFields::default(),
            |_| true,
        );
        let known = known_from(&d1);
        fs::write(d.path().join("a/f"), b"HELLO").unwrap();
        fs::remove_file(d.path().join("a/l")).unwrap();
        // b is now excluded: its indexed child must not count as deleted.
        let lvl = |p: &[u8]| if p == b"%p%/b" { Level::Ignore } else { Level::Managed };
        let (d2, _) =
            compare(walk(&roots, true, lvl), &roots, &known, IgnoreFields::default(), |p| {
                p != b"%p%/b"
            });
        let summary: Vec<String> = d2
            .iter()
            .map(|d| match d {
                Delta::New(o) => format!("new {}", String::from_utf8_lossy(&o.path)),
                Delta::Changed(o, c, _) => format!("{c} {}", String::from_utf8_lossy(&o.path)),
                Delta::Refreshed(o) => format!("refresh {}", String::from_utf8_lossy(&o.path)),
                Delta::Deleted(p, _) => format!("delete {}", String::from_utf8_lossy(p)),
            })
            .collect();
        assert!(summary.contains(&"delete %p%/l".to_string()), "{summary:?}");
        assert!(
            summary.iter().any(|s| s.starts_with("content") && s.ends_with("%p%/f")),
            "{summary:?}"
        );
        assert!(!summary.iter().any(|s| s.contains("%p%/b")), "{summary:?}");
    }

    #[test]
    fn pruned_lookup_is_component_wise() {
        let mut p = HashSet::new();
        p.insert(b"%p%/a".to_vec());
        assert!(below_pruned(b"%p%/a/x/y", &p));
        assert!(!below_pruned(b"%p%/a.x/y", &p));
        assert!(!below_pruned(b"%p%/a", &p));
    }

    fn ident(p: &Path) -> Expected {
        let md = fs::symlink_metadata(p).unwrap();
        Expected { dev: Some(md.dev()), ino: md.ino() }
    }

    #[test]
    fn open_checked_reads_the_file_that_was_seen() {
        let (d, _roots) = setup();
        let root = d.path().join("a");
        let mut s = String::new();
        open_checked(&root, b"/b/g", ident(&root.join("b/g")))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "world");
        // A single-file root: the root itself, opened in its (trusted) parent.
        let f = root.join("f");
        let mut s = String::new();
        open_checked(&f, b"", ident(&f)).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn open_checked_refuses_a_swapped_in_symlink_or_inode() {
        let (d, _roots) = setup();
        let root = d.path().join("a");
        let secret = d.path().join("secret");
        fs::write(&secret, b"root only").unwrap();
        let seen = ident(&root.join("f"));
        // The file the walk saw is replaced by a symlink to the secret.
        fs::remove_file(root.join("f")).unwrap();
        std::os::unix::fs::symlink(&secret, root.join("f")).unwrap();
        let e = open_checked(&root, b"/f", seen).unwrap_err();
        assert!(e.to_string().contains("now a symlink"), "{e}");
        // ... or by a hard link to it, or any other file: another inode.
        fs::remove_file(root.join("f")).unwrap();
        fs::hard_link(&secret, root.join("f")).unwrap();
        let e = open_checked(&root, b"/f", seen).unwrap_err();
        assert!(e.to_string().contains("now another file"), "{e}");
        // A directory above it swapped for a symlink to a directory outside.
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("g"), b"root only").unwrap();
        let g = ident(&outside.join("g"));
        fs::remove_dir_all(root.join("b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
        let e = open_checked(&root, b"/b/g", g).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // A single-file root that became a symlink.
        let single = d.path().join("single");
        fs::write(&single, b"x").unwrap();
        let seen = ident(&single);
        fs::remove_file(&single).unwrap();
        std::os::unix::fs::symlink(&secret, &single).unwrap();
        assert!(open_checked(&single, b"", seen).is_err());
        // A fifo: refused without hanging.
        let fifo = root.join("p");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = open_checked(&root, b"/p", ident(&fifo)).unwrap_err();
        assert!(e.to_string().contains("no longer a regular file"), "{e}");
    }

    #[test]
    fn compare_skips_a_file_swapped_after_the_walk() {
        let (d, roots) = setup();
        let secret = d.path().join("secret");
        fs::write(&secret, b"root only").unwrap();
        let w = walk(&roots, true, managed);
        fs::remove_file(d.path().join("a/f")).unwrap();
        std::os::unix::fs::symlink(&secret, d.path().join("a/f")).unwrap();
        let (deltas, errors) = compare::<K, _>(w, &roots, &[], IgnoreFields::default(), |_| true);
        assert!(!deltas.iter().any(|d| matches!(d, Delta::New(o) if o.path == b"%p%/f")));
        assert!(
            errors.iter().any(|e| e.path.ends_with("a/f") && e.message.contains("symlink")),
            "{errors:?}"
        );
        let secret_hash = *blake3::hash(b"root only").as_bytes();
        assert!(!deltas.iter().any(|d| match d {
            Delta::New(o) => o.meta.hash == Some(secret_hash),
            _ => false,
        }));
    }

    #[test]
    fn walk_never_descends_into_a_symlinked_directory() {
        // (The race, a directory swapped after its lstat, is what opening it
        // relative to its parent with O_NOFOLLOW closes; this is the plain case.)
        let (d, roots) = setup();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"x").unwrap();
        fs::remove_dir_all(d.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("a/b")).unwrap();
        let w = walk(&roots, true, managed);
        assert!(!w.observed.iter().any(|o| o.path.starts_with(b"%p%/b/")));
    }

    #[test]
    fn a_scoped_walk_trusts_only_the_include_root() {
        // `csync -c ROOT/b/sub` after b became a symlink to a directory outside.
        let (d, _roots) = setup();
        let outside = d.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("sub/secret"), b"x").unwrap();
        fs::remove_dir_all(d.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("a/b")).unwrap();
        let scoped = vec![Root {
            real: d.path().join("a/b/sub"),
            db: b"%p%/b/sub".to_vec(),
            anchor: Some(d.path().join("a")),
        }];
        let w = walk(&scoped, true, managed);
        assert!(w.observed.is_empty(), "{:?}", w.observed);
        assert_eq!(w.errors.len(), 1, "{:?}", w.errors);
        // A scoped walk of a real subdirectory works as before.
        fs::remove_file(d.path().join("a/b")).unwrap();
        fs::create_dir_all(d.path().join("a/b/sub")).unwrap();
        fs::write(d.path().join("a/b/sub/g"), b"world").unwrap();
        let (deltas, errors) = compare::<K, _>(
            walk(&scoped, true, managed),
            &scoped,
            &[],
            IgnoreFields::default(),
            |_| true,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let g = deltas.iter().find_map(|d| match d {
            Delta::New(o) if o.path == b"%p%/b/sub/g" => o.meta.hash,
            _ => None,
        });
        assert_eq!(g, Some(*blake3::hash(b"world").as_bytes()));
    }
}
