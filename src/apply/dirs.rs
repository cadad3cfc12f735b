//! The directories a batch writes into, opened once for the batch instead of
//! once per entry and step.
//!
//! Every directory is still reached the one safe way ([`walk`]: from the
//! trusted anchor, one component at a time, `O_NOFOLLOW | O_DIRECTORY`);
//! what is kept is the descriptor that walk ended with. Why keeping it is as
//! safe as walking again, against a local user who can write in a synced
//! directory and, mid-batch, renames it away and puts a symlink (or another
//! directory) in its place:
//!
//! - A descriptor names the directory *inode* the safe walk reached, never a
//!   path: nothing written through it is resolved through the symlink, so a
//!   write can only land in that directory. Every name created or replaced
//!   in it is one path component (checked by [`super::check_rel`]), opened
//!   or created with `O_NOFOLLOW`/`O_EXCL`, as before.
//! - The directory itself can be moved only where its mover may write (a
//!   rename needs write permission on both parents; directories cannot be
//!   hard-linked). So a write through a kept descriptor lands where the
//!   attacker could have put the same bytes anyway, never in a place only
//!   root controls (`/etc`). The walk of today has the same window between
//!   its last `openat` and the write; keeping the descriptor lengthens the
//!   window (lookups reuse a kept directory for at most [`TTL`]; a staged
//!   file or a delete holds its own directory until the batch's durability
//!   point, which a long transfer in the same batch can delay), it does not
//!   open a new kind of hole. A delete unlinks only the inode it judged
//!   ([`super::Deletion::expecting`]). The anchor cache ([`crate::confined::open_dir`]) already rests on
//!   this for 2 s.
//! - A directory removed meanwhile stays removed: creating a name in it
//!   fails (`ENOENT`), nothing is written anywhere else.
//! - The receiver's own changes that end a directory (a delete or a
//!   replace of one) drop what is kept ([`Dirs::clear`]), and so does every
//!   batch's end, so a later batch never writes into a directory a local
//!   user or admin replaced meanwhile (the staleness is one batch, as the
//!   anchor's is 2 s).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::{Error, io_err, open_root, show};

/// Longest a directory is kept (a batch normally ends long before).
pub const TTL: Duration = Duration::from_secs(2);

/// Most directories kept at once: beyond that the cache starts over (the
/// batch's staged files keep their own directories alive). Entries arrive
/// in path order, so a few cover a batch; each one is a descriptor a peer's
/// session holds, next to the batch's staged files (128 sessions at once).
const MAX_KEPT: usize = 64;

/// One kept directory.
struct Kept {
    fd: Arc<OwnedFd>,
    /// Its mtime before this batch changed it (fetched on first need).
    mtime: Option<i64>,
}

/// The directories of one batch, by anchor and path below it. A receiver
/// keeps one per session and [`Dirs::clear`]s it at every batch's end.
#[derive(Default)]
pub struct Dirs {
    kept: HashMap<Vec<u8>, Kept>,
    since: Option<Instant>,
}

impl std::fmt::Debug for Dirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dirs").field("kept", &self.kept.len()).finish()
    }
}

/// The directory holding an entry: its descriptor, the entry's name in it,
/// and the key it is kept under.
pub(super) struct Parent<'a> {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) name: &'a [u8],
    key: Vec<u8>,
}

fn key(root: &Path, dir: &[u8]) -> Vec<u8> {
    let r = root.as_os_str().as_bytes();
    let mut k = Vec::with_capacity(r.len() + 1 + dir.len());
    k.extend_from_slice(r);
    k.push(0);
    k.extend_from_slice(dir);
    k
}

/// Splits a checked, non-empty relative path into its directory and name.
pub(super) fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

/// Opens `dir` (below `from`, which is `done` bytes into `full`) one
/// component at a time without following symlinks.
fn walk(mut fd: Arc<OwnedFd>, full: &[u8], done: usize) -> Result<Arc<OwnedFd>, Error> {
    let rest = &full[done..];
    if rest.is_empty() {
        return Ok(fd);
    }
    let mut end = done;
    for comp in rest.split(|&b| b == b'/') {
        end += comp.len();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let next = rfs::openat(&*fd, comp, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT => Error::ParentMissing(show(&full[..end])),
            Errno::LOOP | Errno::NOTDIR => Error::Symlink(show(&full[..end])),
            e => io_err(format!("open {}", show(&full[..end])), e),
        })?;
        fd = Arc::new(next);
        end += 1;
    }
    Ok(fd)
}

impl Dirs {
    /// Nothing kept yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every kept directory: at a batch's end, and when the
    /// receiver removed or replaced a directory (a kept descriptor of it, or
    /// of anything below it, would then name a directory no longer there).
    pub fn clear(&mut self) {
        self.kept.clear();
        self.since = None;
    }

    /// The directory `root/dir` (`dir` checked; `""` is the root itself),
    /// opened from the closest kept ancestor (or the anchor) one component
    /// at a time with `O_NOFOLLOW`.
    pub(super) fn dir(
        &mut self,
        root: &Path,
        dir: &[u8],
    ) -> Result<(Arc<OwnedFd>, Vec<u8>), Error> {
        let now = Instant::now();
        if self.since.is_some_and(|t| now.duration_since(t) >= TTL) || self.kept.len() >= MAX_KEPT {
            self.clear();
        }
        let k = key(root, dir);
        if let Some(kept) = self.kept.get(&k) {
            return Ok((kept.fd.clone(), k));
        }
        // The closest ancestor kept, else the root (trusted, from the config).
        let mut from: Option<(Arc<OwnedFd>, usize)> = None;
        let mut cut = dir.len();
        while let Some(i) = dir[..cut].iter().rposition(|&b| b == b'/') {
            if let Some(kept) = self.kept.get(&key(root, &dir[..i])) {
                from = Some((kept.fd.clone(), i + 1));
                break;
            }
            cut = i;
        }
        let (start, done) = match from {
            Some(f) => f,
            None => match self.kept.get(&key(root, b"")) {
                Some(kept) => (kept.fd.clone(), 0),
                None => {
                    let fd = Arc::new(open_root(root)?);
                    self.keep(key(root, b""), fd.clone());
                    (fd, 0)
                }
            },
        };
        let fd = walk(start, dir, done)?;
        self.keep(k.clone(), fd.clone());
        Ok((fd, k))
    }

    fn keep(&mut self, k: Vec<u8>, fd: Arc<OwnedFd>) {
        if self.kept.is_empty() {
            self.since = Some(Instant::now());
        }
        self.kept.insert(k, Kept { fd, mtime: None });
    }

    /// The directory holding `rel` (checked and non-empty), and its name.
    pub(super) fn parent<'a>(&mut self, root: &Path, rel: &'a [u8]) -> Result<Parent<'a>, Error> {
        let (dir, name) = split(rel);
        let (fd, key) = self.dir(root, dir)?;
        Ok(Parent { fd, name, key })
    }

    /// The mtime `p` had before this batch changed it (one `fstat` per
    /// directory and batch): what it gets back when the sender gave none.
    pub(super) fn mtime_before(&mut self, p: &Parent<'_>, rel: &[u8]) -> Result<i64, Error> {
        if let Some(t) = self.kept.get(&p.key).and_then(|k| k.mtime) {
            return Ok(t);
        }
        let t = super::dir_mtime(&p.fd, rel)?;
        if let Some(k) = self.kept.get_mut(&p.key) {
            k.mtime = Some(t);
        }
        Ok(t)
    }
}
