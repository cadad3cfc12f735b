//! The way to an include root: directories named by the config are opened
//! from `/` one component at a time, following a symlink only when nobody
//! but root (or csync's own user) could have put it there. Below that,
//! callers ([`crate::apply`], [`crate::scan`]) open every component with
//! `O_NOFOLLOW`. A leaf module: it knows nothing of configs or trees.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A component does not exist.
    #[error("missing")]
    Missing,
    /// A symlink on the way that someone other than root could have planted.
    #[error("a symlink on the way that root does not control")]
    Untrusted,
    /// Any other failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Most symlinks followed while opening an anchor (as the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// True when a symlink met on the way to an anchor may be followed: the
/// admin's own link (`/var/www -> /srv/www`), not one a local user could
/// have planted or swapped. The link and the directory holding it must be
/// owned by root (or by us) and that directory must not be writable by
/// anyone else (unless sticky, where others cannot replace our link).
fn trusted_link(dir: &OwnedFd, link: &rfs::Stat) -> bool {
    let me = rustix::process::geteuid().as_raw();
    let ok_owner = |uid: u32| uid == 0 || uid == me;
    let Ok(d) = rfs::fstat(dir) else { return false };
    let others_write = d.st_mode & 0o022 != 0;
    let sticky = d.st_mode & 0o1000 != 0;
    ok_owner(link.st_uid) && ok_owner(d.st_uid) && (!others_write || sticky)
}

/// How long an opened anchor is reused: a batch of thousands of entries
/// resolves it once instead of once per entry and step. The descriptor is
/// the directory as it was resolved (safely); a swap on the way to it later
/// cannot redirect what is written through it.
const ANCHOR_TTL: std::time::Duration = std::time::Duration::from_secs(2);

type AnchorCache = std::collections::HashMap<PathBuf, (OwnedFd, std::time::Instant)>;

static ANCHORS: std::sync::Mutex<Option<AnchorCache>> = std::sync::Mutex::new(None);

/// Opens a directory named by the config (where an include root lives, or
/// the root itself) as [`open_uncached`] does, through a short-lived cache.
///
/// # Errors
/// [`Error::Missing`], [`Error::Untrusted`] or another I/O error.
pub fn open_dir(root: &Path) -> Result<OwnedFd, Error> {
    let now = std::time::Instant::now();
    if let Ok(mut cache) = ANCHORS.lock() {
        let cache = cache.get_or_insert_with(Default::default);
        cache.retain(|_, (_, t)| now.duration_since(*t) < ANCHOR_TTL);
        if let Some((fd, _)) = cache.get(root)
            && let Ok(dup) = fd.try_clone()
        {
            return Ok(dup);
        }
    }
    let fd = open_uncached(root)?;
    if let (Ok(mut cache), Ok(dup)) = (ANCHORS.lock(), fd.try_clone()) {
        // Bounded: entries expire, and a node has a handful of anchors.
        let cache = cache.get_or_insert_with(Default::default);
        if cache.len() < 1024 {
            cache.insert(root.to_path_buf(), (dup, now));
        }
    }
    Ok(fd)
}

/// Opens a directory from `/`, one component at a time. A symlink on the
/// way is followed only when it is [`trusted_link`]: a local user who owns
/// a directory above an include root cannot redirect csync's reads or
/// writes elsewhere by swapping in a link.
///
/// # Errors
/// [`Error::Missing`], [`Error::Untrusted`] or another I/O error.
pub fn open_uncached(root: &Path) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fail = |e: Errno| match e {
        Errno::NOENT => Error::Missing,
        e => Error::Io(e.into()),
    };
    if !root.is_absolute() {
        return rfs::open(root, flags & !OFlags::NOFOLLOW, Mode::empty()).map_err(fail);
    }
    let top = || rfs::open("/", flags, Mode::empty());
    // The directories opened so far (for `..` in a link's target).
    let mut stack: Vec<OwnedFd> = vec![top().map_err(fail)?];
    let mut todo: Vec<Vec<u8>> = components(root.as_os_str().as_bytes());
    todo.reverse();
    let mut links = 0;
    while let Some(comp) = todo.pop() {
        let cur = stack.last().expect("never empty");
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        match rfs::openat(cur, comp.as_slice(), flags, Mode::empty()) {
            Ok(fd) => stack.push(fd),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let st =
                    rfs::statat(cur, comp.as_slice(), AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    return Err(fail(Errno::NOTDIR));
                }
                links += 1;
                if links > MAX_LINKS || !trusted_link(cur, &st) {
                    return Err(Error::Untrusted);
                }
                let target = rfs::readlinkat(cur, comp.as_slice(), Vec::new()).map_err(fail)?;
                let target = target.into_bytes();
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(stack.pop().expect("never empty"))
}

/// The non-empty, non-`.` components of a path.
fn components(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec).collect()
}
