//! Applying pushed entries on the receiver: the only code that writes into a
//! managed tree.
//!
//! Two guarantees rest on this module:
//!
//! 1. Nothing half-written or with the wrong owner/mode is ever visible at a
//!    final path: regular files, symlinks, fifos and device nodes are created
//!    under a temporary name in the target directory, get their owner, mode and
//!    mtime there, are fsynced (files), and only then renamed over the target.
//! 2. No write ever escapes the tree: relative paths are validated
//!    ([`check_rel`]), and every directory below the root is opened one
//!    component at a time with `O_NOFOLLOW | O_DIRECTORY` (`openat` from the
//!    previous descriptor), so a symlink planted anywhere in the tree is refused
//!    ([`Error::Symlink`]), never followed. Attributes are set through
//!    descriptors or with `AT_SYMLINK_NOFOLLOW`; the mode of a new fifo or
//!    device node is set through an `O_PATH` descriptor (`/proc/self/fd`).
//!
//! The root directory itself is trusted (it comes from the receiver's own
//! config) and may be reached through symlinks.
//!
//! This module must not decide *whether* a write is allowed (the caller checks
//! the path against the receiver's config), must not create missing parent
//! directories on its own (the caller sends parents first, and gets
//! [`Error::ParentMissing`] otherwise), and must not touch the index.
//!
//! Applying a child restores the parent directory's mtime, so directory mtimes
//! stay what the sender said. Owners are numeric; a receiver that is not root
//! cannot give files away, so a `chown` refused with `EPERM` is skipped
//! silently when the effective uid is not 0.
//!
//! Here: path checks, opening without following symlinks, temporaries,
//! owners and modes. [`mod@file`]: file content (write, verify, stage, publish);
//! [`entry`]: everything else (attributes, other kinds, deletes, kept copies).

pub mod dirs;
pub mod entry;
pub mod file;

pub use dirs::Dirs;
pub use entry::{Deletion, delete, ensure_root, make, preserve, set_file_attrs, set_parent_mtime};
pub use file::{
    FileWriter, SYNCFS_DIRS, Staged, Touched, begin_file, finish_dirs, syncfs_is_reliable,
};

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::tempname::{self, NAME_MAX, temp_name};
use crate::types::{FileKind, Meta};

/// Longest accepted relative path, in bytes (`PATH_MAX - 1`).
const PATH_MAX: usize = 4095;

/// Which of the sender's attributes the receiver leaves alone
/// (`ignore uid gid mod;`). An ignored attribute keeps the value of the entry
/// being replaced, or the receiver's default for a new entry. The same
/// struct the scanner and the version fingerprint read: one meaning, one type.
pub use crate::types::IgnoreFields as Options;

/// What to create: the sender's view of the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry type.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    /// Owner uid (numeric).
    pub uid: u32,
    /// Owner gid (numeric).
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Symlink target (symlinks only).
    pub target: Option<Vec<u8>>,
    /// Device number (character and block devices only).
    pub rdev: u64,
}

/// Why an entry could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relative path is refused: absolute, `..`, `.`, empty component,
    /// NUL, a component over 255 bytes, or over 4095 bytes in all.
    #[error("refused path {0}")]
    BadPath(String),
    /// A component below the root is a symlink (or not a directory).
    #[error("symlink or non-directory in path: {0}")]
    Symlink(String),
    /// A parent directory does not exist (the caller sends parents first).
    #[error("parent directory missing: {0}")]
    ParentMissing(String),
    /// Deleting or replacing a directory that still has entries.
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// The content written does not match the expected BLAKE3 hash.
    #[error("content does not match the expected hash")]
    HashMismatch,
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// Short description, including the relative path.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
}

fn show(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

fn io_err(what: impl Into<String>, e: impl Into<io::Error>) -> Error {
    Error::Io { what: what.into(), source: e.into() }
}

fn bad(rel: &[u8], why: &str) -> Error {
    Error::BadPath(format!("{:?}: {why}", show(rel)))
}

/// Validates a relative path (bytes, `/`-separated, no leading `/`; `""`
/// means the root itself).
///
/// Refused: absolute paths, `.` and `..` components, empty components (so
/// also `a//b` and a trailing `/`), NUL bytes, components over 255 bytes and
/// paths over 4095 bytes.
pub fn check_rel(rel: &[u8]) -> Result<(), Error> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel.len() > PATH_MAX {
        return Err(bad(rel, "path too long"));
    }
    if rel.contains(&0) {
        return Err(bad(rel, "NUL byte"));
    }
    if rel[0] == b'/' {
        return Err(bad(rel, "absolute path"));
    }
    for comp in rel.split(|&b| b == b'/') {
        match comp {
            b"" => return Err(bad(rel, "empty component")),
            b"." | b".." => return Err(bad(rel, "'.' or '..' component")),
            c if c.len() > NAME_MAX => return Err(bad(rel, "component too long")),
            _ => {}
        }
    }
    Ok(())
}

/// Opens the directory an include root lives in: see [`crate::confined`].
fn open_root(root: &Path) -> Result<OwnedFd, Error> {
    crate::confined::open_dir(root).map_err(|e| match e {
        crate::confined::Error::Missing => Error::ParentMissing(root.display().to_string()),
        crate::confined::Error::Untrusted => Error::Symlink(format!(
            "{} (a symlink on the way to an include root that root does not control)",
            root.display()
        )),
        crate::confined::Error::Io(e) => io_err(format!("open {}", root.display()), e),
    })
}

/// `lstat` of `name` in `dir`: `None` if absent.
fn lstat_at(dir: impl AsFd, name: &[u8], rel: &[u8]) -> Result<Option<rfs::Stat>, Error> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err(format!("lstat {}", show(rel)), e)),
    }
}

fn kind_of(st: &rfs::Stat) -> FileKind {
    FileKind::from_file_type(FileType::from_raw_mode(st.st_mode))
}

/// The final `Meta` of `name` in `dir` (link target filled in).
fn final_meta(dir: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<Meta, Error> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(format!("lstat {}", show(rel)), e))?;
    meta_of(dir, name, rel, &st)
}

/// The `Meta` of `name` in `dir` from its `lstat` (link target read).
fn meta_of(dir: &OwnedFd, name: &[u8], rel: &[u8], st: &rfs::Stat) -> Result<Meta, Error> {
    let mut meta = Meta::from_stat(st);
    if meta.kind == FileKind::Symlink {
        let t = rfs::readlinkat(dir, name, Vec::new())
            .map_err(|e| io_err(format!("readlink {}", show(rel)), e))?;
        meta.target = Some(t.into_bytes());
    }
    Ok(meta)
}

/// `lstat` of `root/rel` without following symlinks in any component below
/// the root: `Ok(None)` if absent (`ENOENT` on the last component),
/// [`Error::ParentMissing`] if a parent is absent, [`Error::Symlink`] if a
/// parent component is a symlink. The `Meta` has `hash: None` and, for
/// symlinks, the target filled in. `rel == b""` stats the root itself
/// (following symlinks to it). One-off: a batch uses [`Dirs::stat`].
pub fn stat(root: &Path, rel: &[u8]) -> Result<Option<Meta>, Error> {
    Dirs::new().stat(root, rel)
}

impl Dirs {
    /// [`stat`], through the batch's directories.
    ///
    /// # Errors
    /// As [`stat`].
    pub fn stat(&mut self, root: &Path, rel: &[u8]) -> Result<Option<Meta>, Error> {
        check_rel(rel)?;
        if rel.is_empty() {
            return match rfs::stat(root) {
                Ok(st) => Ok(Some(Meta::from_stat(&st))),
                Err(Errno::NOENT) => Ok(None),
                Err(e) => Err(io_err(format!("stat root {}", root.display()), e)),
            };
        }
        let p = self.parent(root, rel)?;
        let Some(st) = lstat_at(&*p.fd, p.name, rel)? else {
            return Ok(None);
        };
        match meta_of(&p.fd, p.name, rel, &st) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            r => r.map(Some),
        }
    }

    /// [`open_file`], through the batch's directories.
    ///
    /// # Errors
    /// As [`open_file`].
    pub fn open_file(&mut self, root: &Path, rel: &[u8]) -> Result<Option<File>, Error> {
        check_rel(rel)?;
        if rel.is_empty() {
            return Ok(None);
        }
        let p = self.parent(root, rel)?;
        open_regular(&p.fd, p.name, rel)
    }
}

/// Opens `name` in `dir` for reading if it is a regular file, without
/// following a symlink and without opening fifos or devices.
fn open_regular(dir: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<Option<File>, Error> {
    match lstat_at(dir, name, rel)? {
        Some(st) if kind_of(&st) == FileKind::File => {}
        _ => return Ok(None),
    }
    // O_NONBLOCK: should the entry turn into a fifo meanwhile, do not hang on it.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(io_err(format!("open {}", show(rel)), e)),
    };
    let st = rfs::fstat(&fd).map_err(|e| io_err(format!("fstat {}", show(rel)), e))?;
    if kind_of(&st) != FileKind::File {
        return Ok(None);
    }
    rfs::fcntl_setfl(&fd, OFlags::empty())
        .map_err(|e| io_err(format!("fcntl {}", show(rel)), e))?;
    Ok(Some(File::from(fd)))
}

/// Opens the current regular file at `root/rel` for reading (no symlink
/// following anywhere below the root); `None` if absent or not a regular file.
pub fn open_file(root: &Path, rel: &[u8]) -> Result<Option<File>, Error> {
    Dirs::new().open_file(root, rel)
}

/// The temporary for a file's content: one fixed name per target, created
/// exclusively and held under an exclusive `flock` while it is written. A
/// temporary that exists but can be locked was left by a crashed writer (of
/// this or another process): it is removed and replaced, so crashes leave no
/// growing litter. One that is locked belongs to a live transfer: refused.
fn locked_temp(dir: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<(Vec<u8>, OwnedFd), Error> {
    let tmp = tempname::fixed(name);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..4 {
        match rfs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => {
                rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive)
                    .map_err(|e| create_err(rel, e))?;
                return Ok((tmp, fd));
            }
            Err(Errno::EXIST) => {
                let old = rfs::openat(
                    dir,
                    &tmp,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                );
                match old.map(|fd| rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive)) {
                    Ok(Ok(())) | Err(Errno::NOENT) => {
                        let _ = rfs::unlinkat(dir, &tmp, AtFlags::empty());
                    }
                    Ok(Err(Errno::WOULDBLOCK)) => {
                        return Err(io_err(
                            format!(
                                "{} is being written by another transfer; try again",
                                show(rel)
                            ),
                            Errno::BUSY,
                        ));
                    }
                    Ok(Err(e)) | Err(e) => return Err(create_err(rel, e)),
                }
            }
            Err(e) => return Err(create_err(rel, e)),
        }
    }
    Err(create_err(rel, Errno::EXIST))
}

/// Calls `create` with fresh temporary names until one does not exist yet.
fn with_temp<T>(
    name: &[u8],
    rel: &[u8],
    mut create: impl FnMut(&[u8]) -> rustix::io::Result<T>,
) -> Result<(Vec<u8>, T), Error> {
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let tmp = temp_name(name);
        match create(&tmp) {
            Ok(v) => return Ok((tmp, v)),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(create_err(rel, e)),
        }
    }
    Err(create_err(rel, last))
}

fn create_err(rel: &[u8], e: Errno) -> Error {
    io_err(format!("create temporary for {}", show(rel)), e)
}

/// Removes a temporary entry when dropped, unless disarmed.
struct TempGuard<'a> {
    dir: BorrowedFd<'a>,
    name: &'a [u8],
    armed: bool,
    /// `REMOVEDIR` for a temporary directory.
    flags: AtFlags,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = rfs::unlinkat(self.dir, self.name, self.flags);
        }
    }
}

fn ts_of_ns(ns: i64) -> Timespec {
    Timespec { tv_sec: ns.div_euclid(1_000_000_000), tv_nsec: ns.rem_euclid(1_000_000_000) }
}

/// Timestamps setting only the mtime (atime left alone).
fn mtime_only(ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: rfs::UTIME_OMIT },
        last_modification: ts_of_ns(ns),
    }
}

/// The current mtime of an open directory, to restore after changing it.
fn dir_mtime(dir: &OwnedFd, rel: &[u8]) -> Result<i64, Error> {
    let st = rfs::fstat(dir).map_err(|e| io_err(format!("fstat parent of {}", show(rel)), e))?;
    Ok(st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64)
}

/// Puts the parent's mtime back. Best effort: the change itself is already
/// done and visible, so failing here must not report the apply as failed.
fn restore_mtime(dir: &OwnedFd, mtime_ns: i64) {
    let _ = rfs::futimens(dir, &mtime_only(mtime_ns));
}

/// Owner to apply: the sender's ids, or for ignored ones the replaced entry's
/// (`None`: leave as created).
fn wanted_owner(
    entry: &Entry,
    opts: &Options,
    old: Option<&rfs::Stat>,
) -> (Option<u32>, Option<u32>) {
    let uid = if opts.uid { old.map(|s| s.st_uid) } else { Some(entry.uid) };
    let gid = if opts.gid { old.map(|s| s.st_gid) } else { Some(entry.gid) };
    (uid, gid)
}

/// Mode to apply: the sender's bits, or with `ignore_mode` those of the
/// replaced entry of the same kind, else `default`.
fn wanted_mode(entry: &Entry, opts: &Options, old: Option<&rfs::Stat>, default: u32) -> u32 {
    if !opts.mode {
        return entry.mode & 0o7777;
    }
    match old {
        Some(st) if kind_of(st) == entry.kind => st.st_mode & 0o7777,
        _ => default,
    }
}

/// Changes the owner with `chown` when it differs from `current`; an `EPERM`
/// is skipped when not running as root.
fn chown_if_needed(
    current: &rfs::Stat,
    want: (Option<u32>, Option<u32>),
    rel: &[u8],
    chown: impl FnOnce(Option<Uid>, Option<Gid>) -> rustix::io::Result<()>,
) -> Result<(), Error> {
    let uid = want.0.filter(|&u| u != current.st_uid).map(Uid::from_raw);
    let gid = want.1.filter(|&g| g != current.st_gid).map(Gid::from_raw);
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    match chown(uid, gid) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) if !rustix::process::geteuid().is_root() => Ok(()),
        Err(e) => Err(io_err(format!("chown {}", show(rel)), e)),
    }
}

/// Removes an empty directory about to be replaced by a non-directory.
fn rmdir_for_replace(dir: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<(), Error> {
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::NOTEMPTY | Errno::EXIST) => Err(Error::NotEmpty(show(rel))),
        Err(e) => Err(io_err(format!("rmdir {}", show(rel)), e)),
    }
}

/// Renames the temporary over the target, replacing an empty directory
/// (the directory is made durable by the caller's [`finish_dirs`]).
fn replace(dir: &OwnedFd, tmp: &[u8], name: &[u8], rel: &[u8]) -> Result<(), Error> {
    if let Some(st) = lstat_at(dir, name, rel)?
        && kind_of(&st) == FileKind::Dir
    {
        rmdir_for_replace(dir, name, rel)?;
    }
    rfs::renameat(dir, tmp, dir, name).map_err(|e| io_err(format!("rename to {}", show(rel)), e))
}

#[cfg(test)]
mod tests;
