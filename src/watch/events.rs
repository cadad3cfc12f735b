//! The inotify side of watch mode: one watch per managed directory (none
//! under excluded ones), events turned into paths to check.
//!
//! The `inotify` crate is used directly rather than `notify`, whose mask
//! includes `IN_OPEN`: every file our own check reads would wake us again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchMask};
use tracing::{debug, warn};

use super::debounce::Touch;
use crate::pattern::Level;
use crate::scan::Root;

/// What is watched on every directory. `IN_MODIFY` only tells that a file is
/// being written (so it is not pushed half-done); `IN_OPEN` and `IN_ACCESS`
/// are left out, or our own reads would wake us.
fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

/// What the events say should be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A path to check (with everything below it for [`Touch::Tree`]).
    Path(PathBuf, Touch),
    /// A peer's transfer is writing here.
    Receiving,
    /// Events were lost (queue overflow) or a directory could not be
    /// watched: check this root in full (`None`: every root).
    Rescan(Option<PathBuf>),
    /// The inotify watch limit ran out: this many more watches are needed.
    Limit {
        /// Directories that could not be watched.
        missing: usize,
    },
}

/// One watched directory.
#[derive(Debug)]
struct Watched {
    wd: inotify::WatchDescriptor,
    path: PathBuf,
    /// Inside an include root: every entry may matter.
    tree: bool,
    /// Parent of single-file (or not yet existing) roots: only these names.
    names: Vec<OsString>,
}

/// The watches of one node.
pub struct Watcher {
    ino: Inotify,
    roots: Vec<Root>,
    dirs: HashMap<i32, Watched>,
    by_path: BTreeMap<PathBuf, i32>,
    /// Rename cookies of a peer's temporaries moved into place.
    received: HashSet<u32>,
    buf: Vec<u8>,
    /// The watch limit ran out at some point (fallback: periodic checks).
    pub limited: bool,
}

impl Watcher {
    /// An inotify instance for `roots` (nothing watched yet).
    ///
    /// # Errors
    /// When inotify is not available (or its instance limit ran out).
    pub fn new(roots: Vec<Root>) -> io::Result<Watcher> {
        Ok(Watcher {
            ino: Inotify::init()?,
            roots,
            dirs: HashMap::new(),
            by_path: BTreeMap::new(),
            received: HashSet::new(),
            buf: vec![0; 64 * 1024],
            limited: false,
        })
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ino.as_fd()
    }

    /// Number of directories watched.
    pub fn watches(&self) -> usize {
        self.dirs.len()
    }

    /// The include roots (real paths).
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|r| r.real.as_path())
    }

    /// The DB form of a real path below a root.
    fn db_of(&self, real: &Path) -> Option<Vec<u8>> {
        let r = self.roots.iter().find(|r| real.starts_with(&r.real))?;
        let rest = real.strip_prefix(&r.real).ok()?;
        let mut db = r.db.clone();
        if !rest.as_os_str().is_empty() {
            db.push(b'/');
            db.extend_from_slice(rest.as_os_str().as_bytes());
        }
        Some(db)
    }

    fn level(&self, real: &Path, level: &dyn Fn(&[u8]) -> Level) -> Level {
        self.db_of(real).map_or(Level::Ignore, |db| level(&db))
    }

    /// Watches every root: the parent directory of each (so a root that is a
    /// single file, or is replaced, is seen) and every managed directory
    /// below it.
    pub fn watch_roots(&mut self, level: &dyn Fn(&[u8]) -> Level, out: &mut Vec<Seen>) {
        let roots: Vec<PathBuf> = self.roots.iter().map(|r| r.real.clone()).collect();
        for root in roots {
            if let (Some(parent), Some(name)) = (root.parent(), root.file_name())
                && matches!(self.add(parent, false, Some(name), out), Added::Limit)
            {
                out.push(Seen::Limit { missing: 1 });
            }
            let is_dir = std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir());
            // The config may name a symlink as the root: it is followed there.
            let is_dir = is_dir || std::fs::metadata(&root).is_ok_and(|m| m.is_dir());
            if is_dir {
                self.add_tree(&root, level, false, out);
            }
        }
    }

    /// Adds one watch. `tree`: the directory lies inside a root; else only
    /// `name` in it matters.
    fn add(&mut self, dir: &Path, tree: bool, name: Option<&OsStr>, out: &mut Vec<Seen>) -> Added {
        let mut m = mask();
        if tree && self.roots.iter().any(|r| r.real == dir) {
            // A root that is a symlink in the config: follow it.
            m.remove(WatchMask::DONT_FOLLOW);
        }
        match self.ino.watches().add(dir, m) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                let w = self.dirs.entry(id).or_insert_with(|| Watched {
                    wd,
                    path: dir.to_path_buf(),
                    tree: false,
                    names: Vec::new(),
                });
                if w.path != dir {
                    // Same inode under a new name (a renamed directory).
                    self.by_path.remove(&w.path);
                    w.path = dir.to_path_buf();
                }
                w.tree |= tree;
                if let Some(n) = name
                    && !w.names.iter().any(|x| x == n)
                {
                    w.names.push(n.to_os_string());
                }
                self.by_path.insert(dir.to_path_buf(), id);
                Added::Yes
            }
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => {
                self.limited = true;
                Added::Limit
            }
            // Gone already: its parent's event covers it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Added::No,
            Err(e) => {
                warn!("watch: cannot watch {}: {e}; checking it in full instead", dir.display());
                out.push(Seen::Rescan(Some(dir.to_path_buf())));
                Added::No
            }
        }
    }

    /// Watches `dir` and every directory below it that some group manages
    /// or walks through (excluded ones cost no watch), never following
    /// symlinks.
    ///
    /// `fresh`: the directory just appeared, and files in it may have been
    /// created before its watch was: each is reported, so a file still
    /// moving (and the directory's check) waits for it to hold still.
    pub fn add_tree(
        &mut self,
        dir: &Path,
        level: &dyn Fn(&[u8]) -> Level,
        fresh: bool,
        out: &mut Vec<Seen>,
    ) {
        let mut stack = vec![dir.to_path_buf()];
        let mut missing = 0usize;
        while let Some(d) = stack.pop() {
            if self.level(&d, level) == Level::Ignore {
                continue;
            }
            // Past the limit, the rest is only counted (for the message).
            let added = if missing > 0 { Added::Limit } else { self.add(&d, true, None, out) };
            match added {
                Added::Yes => {}
                Added::Limit => missing += 1,
                Added::No => continue,
            }
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Ok(t) = e.file_type() else { continue };
                if crate::tempname::is_temp_name(e.file_name().as_bytes()) {
                    continue;
                }
                if t.is_dir() {
                    stack.push(e.path());
                } else if fresh && t.is_file() {
                    // Written before the watch existed: an empty one just
                    // made is probably about to be written (wait for its
                    // close or the grace); others are checked when their
                    // size and mtime hold still.
                    let touch =
                        if just_created(&e.path()) { Touch::Writing } else { Touch::Changed };
                    out.push(Seen::Path(e.path(), touch));
                }
            }
        }
        if missing > 0 {
            out.push(Seen::Limit { missing });
        }
    }

    /// Stops watching `dir` and everything below it (moved away, deleted).
    fn forget_tree(&mut self, dir: &Path) {
        let below: Vec<(PathBuf, i32)> = self
            .by_path
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (p, id) in below {
            self.by_path.remove(&p);
            if let Some(w) = self.dirs.get(&id)
                && w.path == p
                && w.names.is_empty()
                && let Some(w) = self.dirs.remove(&id)
            {
                // Moved out of the tree: the kernel would keep it watched.
                // (Moved within, the new name is watched again.)
                let _ = self.ino.watches().remove(w.wd);
            }
        }
    }

    /// Reads every event queued now (never blocks) into `out`.
    ///
    /// # Errors
    /// When reading the inotify descriptor fails.
    pub fn read(&mut self, level: &dyn Fn(&[u8]) -> Level, out: &mut Vec<Seen>) -> io::Result<()> {
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let events: Vec<(i32, EventMask, u32, Option<OsString>)> =
                match self.ino.read_events(&mut buf) {
                    Ok(evs) => evs
                        .map(|e| {
                            (
                                e.wd.get_watch_descriptor_id(),
                                e.mask,
                                e.cookie,
                                e.name.map(|n| n.to_os_string()),
                            )
                        })
                        .collect(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Vec::new(),
                    Err(e) => {
                        self.buf = buf;
                        return Err(e);
                    }
                };
            self.buf = buf;
            if events.is_empty() {
                return Ok(());
            }
            for (wd, mask, cookie, name) in events {
                self.one(wd, mask, cookie, name, level, out);
            }
        }
    }

    fn one(
        &mut self,
        wd: i32,
        mask: EventMask,
        cookie: u32,
        name: Option<OsString>,
        level: &dyn Fn(&[u8]) -> Level,
        out: &mut Vec<Seen>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            warn!("watch: inotify queue overflowed, events were lost; checking every root in full");
            out.push(Seen::Rescan(None));
            return;
        }
        let Some(w) = self.dirs.get(&wd) else { return };
        if mask.contains(EventMask::IGNORED) {
            let p = w.path.clone();
            self.dirs.remove(&wd);
            if self.by_path.get(&p) == Some(&wd) {
                self.by_path.remove(&p);
            }
            return;
        }
        let (dir, tree) = (w.path.clone(), w.tree);
        let Some(name) = name else {
            // The watched directory itself.
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) && !w.names.is_empty()
            {
                // A root's parent went away: its roots are looked at again.
                let roots: Vec<PathBuf> = w.names.iter().map(|n| dir.join(n)).collect();
                for r in roots {
                    out.push(Seen::Rescan(Some(r)));
                }
            } else if tree && mask.contains(EventMask::ATTRIB) {
                out.push(Seen::Path(dir, Touch::Changed));
            }
            return;
        };
        if !tree && !w.names.contains(&name) {
            return;
        }
        if crate::tempname::is_temp_name(name.as_bytes()) {
            // A peer's transfer: its rename into place is not a local change.
            if mask.contains(EventMask::MOVED_FROM) {
                if self.received.len() > 4096 {
                    self.received.clear();
                }
                self.received.insert(cookie);
            }
            out.push(Seen::Receiving);
            return;
        }
        let path = dir.join(&name);
        if self.level(&path, level) == Level::Ignore {
            return;
        }
        let is_dir = mask.contains(EventMask::ISDIR);
        if mask.contains(EventMask::MOVED_TO) && self.received.remove(&cookie) {
            debug!("watch: {} received from a peer", path.display());
            if is_dir {
                self.add_tree(&path, level, false, out);
            }
            out.push(Seen::Receiving);
            return;
        }
        let touch = if is_dir && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            self.add_tree(&path, level, true, out);
            Touch::Tree
        } else if is_dir && mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            self.forget_tree(&path);
            Touch::Tree
        } else if !tree && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            // A root appeared (or was replaced): watch below it, check it all.
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.add_tree(&path, level, true, out);
            }
            Touch::Tree
        } else if mask.contains(EventMask::MODIFY) {
            Touch::Writing
        } else if mask.contains(EventMask::CREATE) && created_open(&path) {
            // open(O_CREAT): its creator holds it open for writing until
            // the close (a link, symlink or node is complete at once).
            Touch::Writing
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            Touch::Closed
        } else {
            Touch::Changed
        };
        out.push(Seen::Path(path, touch));
    }
}

/// Empty and modified within the write grace: most likely created by a
/// writer that has not written yet.
fn just_created(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        m.len() == 0
            && m.modified()
                .is_ok_and(|t| t.elapsed().is_ok_and(|d| d < super::debounce::WRITE_GRACE))
    })
}

/// True for a regular file with one link: what `open(O_CREAT)` makes (a
/// hard link to an existing file, a symlink or a node is not being written).
fn created_open(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.nlink() == 1)
}

/// How adding one watch went.
enum Added {
    Yes,
    /// `max_user_watches` ran out.
    Limit,
    /// Gone, or failed (a rescan was asked for).
    No,
}

/// `ENOSPC`: what `inotify_add_watch` says when `max_user_watches` ran out.
fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// The current `fs.inotify.max_user_watches`.
pub fn max_user_watches() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok()?.trim().parse().ok()
}
