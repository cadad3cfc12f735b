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

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::tempname::{self, NAME_MAX, temp_name};
use crate::types::{FileKind, Meta};

/// Longest accepted relative path, in bytes (`PATH_MAX - 1`).
const PATH_MAX: usize = 4095;

/// Which of the sender's attributes the receiver leaves alone
/// (`ignore uid gid mod;`). An ignored attribute keeps the value of the entry
/// being replaced, or the receiver's default for a new entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Do not apply the sender's uid.
    pub ignore_uid: bool,
    /// Do not apply the sender's gid.
    pub ignore_gid: bool,
    /// Do not apply the sender's permission bits.
    pub ignore_mode: bool,
}

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

/// Opens the directory containing `rel` (which must be checked and non-empty)
/// one component at a time without following symlinks. Returns that
/// directory and the last component.
fn open_parent<'a>(root: &Path, rel: &'a [u8]) -> Result<(OwnedFd, &'a [u8]), Error> {
    let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    };
    let mut fd = open_root(root)?;
    if dir.is_empty() {
        return Ok((fd, name));
    }
    let mut end = 0;
    for comp in dir.split(|&b| b == b'/') {
        end += comp.len();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        fd = rfs::openat(&fd, comp, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT => Error::ParentMissing(show(&dir[..end])),
            Errno::LOOP | Errno::NOTDIR => Error::Symlink(show(&dir[..end])),
            e => io_err(format!("open {}", show(&dir[..end])), e),
        })?;
        end += 1;
    }
    Ok((fd, name))
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
    let mut meta = Meta::from_stat(&st);
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
/// (following symlinks to it).
pub fn stat(root: &Path, rel: &[u8]) -> Result<Option<Meta>, Error> {
    check_rel(rel)?;
    if rel.is_empty() {
        return match rfs::stat(root) {
            Ok(st) => Ok(Some(Meta::from_stat(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(format!("stat root {}", root.display()), e)),
        };
    }
    let (dir, name) = open_parent(root, rel)?;
    if lstat_at(&dir, name, rel)?.is_none() {
        return Ok(None);
    }
    match final_meta(&dir, name, rel) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        r => r.map(Some),
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
    check_rel(rel)?;
    if rel.is_empty() {
        return Ok(None);
    }
    let (dir, name) = open_parent(root, rel)?;
    open_regular(&dir, name, rel)
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
    let uid = if opts.ignore_uid { old.map(|s| s.st_uid) } else { Some(entry.uid) };
    let gid = if opts.ignore_gid { old.map(|s| s.st_gid) } else { Some(entry.gid) };
    (uid, gid)
}

/// Mode to apply: the sender's bits, or with `ignore_mode` those of the
/// replaced entry of the same kind, else `default`.
fn wanted_mode(entry: &Entry, opts: &Options, old: Option<&rfs::Stat>, default: u32) -> u32 {
    if !opts.ignore_mode {
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

/// Renames the temporary over the target, replacing an empty directory.
fn replace(dir: &OwnedFd, tmp: &[u8], name: &[u8], rel: &[u8]) -> Result<(), Error> {
    if let Some(st) = lstat_at(dir, name, rel)?
        && kind_of(&st) == FileKind::Dir
    {
        rmdir_for_replace(dir, name, rel)?;
    }
    rfs::renameat(dir, tmp, dir, name)
        .map_err(|e| io_err(format!("rename to {}", show(rel)), e))?;
    rfs::fsync(dir).map_err(|e| io_err(format!("fsync parent of {}", show(rel)), e))
}

/// Writes one regular file: created by [`begin_file`], filled through
/// [`std::io::Write`] (which also hashes the content), made visible by
/// [`FileWriter::commit`]. Dropped without commit, it removes its temporary
/// file and leaves the target untouched.
pub struct FileWriter {
    dir: OwnedFd,
    name: Vec<u8>,
    tmp: Vec<u8>,
    rel: Vec<u8>,
    file: File,
    hasher: blake3::Hasher,
    expected: [u8; 32],
    entry: Entry,
    opts: Options,
    parent_mtime: i64,
    done: bool,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("rel", &show(&self.rel))
            .field("tmp", &show(&self.tmp))
            .finish_non_exhaustive()
    }
}

/// Starts writing a regular file: creates an exclusive temporary file
/// `.csync.<name>.<random>` (mode 0600) in the parent directory, which must
/// exist ([`Error::ParentMissing`] otherwise). `rel` must not be the root.
pub fn begin_file(
    root: &Path,
    rel: &[u8],
    entry: &Entry,
    expected_hash: [u8; 32],
    opts: &Options,
) -> Result<FileWriter, Error> {
    check_rel(rel)?;
    if rel.is_empty() {
        return Err(bad(rel, "the root cannot be a file"));
    }
    let (dir, name) = open_parent(root, rel)?;
    let parent_mtime = dir_mtime(&dir, rel)?;
    let (tmp, fd) = locked_temp(&dir, name, rel)?;
    Ok(FileWriter {
        name: name.to_vec(),
        tmp,
        rel: rel.to_vec(),
        file: File::from(fd),
        hasher: blake3::Hasher::new(),
        expected: expected_hash,
        entry: entry.clone(),
        opts: *opts,
        parent_mtime,
        done: false,
        dir,
    })
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl FileWriter {
    /// The mtime the parent directory gets at commit: the sender's, instead of
    /// the one it had before (which [`FileWriter::commit`] restores by default).
    pub fn set_parent_mtime(&mut self, mtime_ns: i64) {
        self.parent_mtime = mtime_ns;
    }

    /// Checks the BLAKE3 of what was written ([`Error::HashMismatch`]
    /// otherwise, temporary removed), sets owner (`fchown`, unless ignored:
    /// then the replaced file's owner is kept), mode (`fchmod`; with
    /// `ignore_mode` the replaced file's mode, or 0644 for a new file), mtime
    /// (`futimens`, ns), fsyncs, then replaces the target atomically
    /// (`renameat`) and fsyncs the directory. An existing empty directory at
    /// the target is removed first; a non-empty one gives [`Error::NotEmpty`]
    /// (temporary removed). Restores the parent directory's mtime and returns
    /// the final `Meta` (`hash = Some(expected_hash)`).
    ///
    /// The same as [`FileWriter::stage`], [`Staged::sync`],
    /// [`Staged::publish`] and an fsync of the directory: a receiver applying
    /// many files does those steps for a whole batch instead.
    pub fn commit(self) -> Result<Meta, Error> {
        let staged = self.stage()?;
        staged.sync()?;
        let (meta, dir) = staged.publish()?;
        rfs::fsync(&dir).map_err(|e| io_err("fsync parent directory", e))?;
        Ok(meta)
    }

    /// Checks the content's hash and gives the temporary file its owner,
    /// mode and mtime: complete, but neither durable nor visible yet.
    pub fn stage(mut self) -> Result<Staged, Error> {
        if *self.hasher.finalize().as_bytes() != self.expected {
            return Err(Error::HashMismatch);
        }
        let rel = self.rel.clone();
        let what = |op: &str| format!("{op} {}", show(&rel));
        let old = lstat_at(&self.dir, &self.name, &rel)?;
        let cur = rfs::fstat(&self.file).map_err(|e| io_err(what("fstat temporary for"), e))?;
        let want = wanted_owner(&self.entry, &self.opts, old.as_ref());
        chown_if_needed(&cur, want, &rel, |u, g| rfs::fchown(&self.file, u, g))?;
        let mode = wanted_mode(&self.entry, &self.opts, old.as_ref(), 0o644);
        rfs::fchmod(&self.file, Mode::from_raw_mode(mode)).map_err(|e| io_err(what("chmod"), e))?;
        rfs::futimens(&self.file, &mtime_only(self.entry.mtime_ns))
            .map_err(|e| io_err(what("set mtime of"), e))?;
        self.done = true;
        let (dir, file) = (self.dir.try_clone(), self.file.try_clone());
        let (dir, file) = match (dir, file) {
            (Ok(d), Ok(f)) => (d, f),
            (Err(e), _) | (_, Err(e)) => {
                self.done = false;
                return Err(io_err(what("dup descriptors of"), e));
            }
        };
        Ok(Staged {
            dir,
            file,
            name: std::mem::take(&mut self.name),
            tmp: std::mem::take(&mut self.tmp),
            rel,
            parent_mtime: self.parent_mtime,
            hash: self.expected,
            published: false,
        })
    }
}

/// A regular file written, checked and given its attributes under its
/// temporary name ([`FileWriter::stage`]): [`Staged::sync`] makes it
/// durable, [`Staged::publish`] renames it into place. Dropped before
/// publishing, it removes the temporary file.
pub struct Staged {
    dir: OwnedFd,
    file: File,
    name: Vec<u8>,
    tmp: Vec<u8>,
    rel: Vec<u8>,
    parent_mtime: i64,
    hash: [u8; 32],
    published: bool,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged").field("rel", &show(&self.rel)).finish_non_exhaustive()
    }
}

impl Staged {
    /// Makes the content and attributes durable (`fsync`). Independent of
    /// every other staged file: a batch runs these in parallel.
    pub fn sync(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(|e| io_err(format!("fsync {}", show(&self.rel)), e))
    }

    /// The device the file lives on (files on one device are made durable
    /// together by one `syncfs`).
    pub fn dev(&self) -> Result<u64, Error> {
        rfs::fstat(&self.file).map(|st| st.st_dev).map_err(|e| io_err("fstat", e))
    }

    /// True when one `syncfs` may stand for this file's fsync: see
    /// [`syncfs_is_reliable`].
    pub fn syncfs_ok(&self) -> bool {
        syncfs_is_reliable(&self.file)
    }

    /// Makes everything written to this file's file system durable
    /// (`syncfs`): for a large batch, one flush instead of one per file.
    pub fn sync_fs(&self) -> Result<(), Error> {
        rfs::syncfs(&self.file).map_err(|e| io_err(format!("syncfs for {}", show(&self.rel)), e))
    }

    /// Renames the (synced) file over its target, restores the parent's
    /// mtime, and returns the final `Meta` and the directory, which the
    /// caller must fsync (once per directory for a whole batch) before it
    /// reports the file as durably applied.
    pub fn publish(mut self) -> Result<(Meta, OwnedFd), Error> {
        let rel = self.rel.clone();
        let what = |op: &str| format!("{op} {}", show(&rel));
        if let Some(st) = lstat_at(&self.dir, &self.name, &rel)?
            && kind_of(&st) == FileKind::Dir
        {
            rmdir_for_replace(&self.dir, &self.name, &rel)?;
        }
        rfs::renameat(&self.dir, &self.tmp, &self.dir, &self.name)
            .map_err(|e| io_err(what("rename to"), e))?;
        self.published = true;
        restore_mtime(&self.dir, self.parent_mtime);
        let st = rfs::fstat(&self.file).map_err(|e| io_err(what("fstat"), e))?;
        let mut meta = Meta::from_stat(&st);
        meta.hash = Some(self.hash);
        let dir = self.dir.try_clone().map_err(|e| io_err(what("dup directory of"), e))?;
        Ok((meta, dir))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            let _ = rfs::unlinkat(&self.dir, &self.tmp, AtFlags::empty());
            restore_mtime(&self.dir, self.parent_mtime);
        }
    }
}

/// Fsyncs each directory once (the same directory may come many times from
/// one batch, as separate descriptors).
///
/// # Errors
/// The first fsync that fails.
pub fn sync_dirs(dirs: Vec<OwnedFd>) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    let mut unique = Vec::new();
    for d in dirs {
        let st = rfs::fstat(&d).map_err(|e| io_err("fstat directory", e))?;
        if seen.insert((st.st_dev, st.st_ino)) {
            unique.push((st.st_dev, d));
        }
    }
    if unique.len() > SYNCFS_DIRS && unique.iter().all(|(_, d)| syncfs_is_reliable(d)) {
        // Many directories: one syncfs per file system instead of a cache
        // flush per directory.
        let mut devs = std::collections::HashSet::new();
        for (dev, d) in &unique {
            if devs.insert(*dev) {
                rfs::syncfs(d).map_err(|e| io_err("syncfs", e))?;
            }
        }
        return Ok(());
    }
    for (_, d) in unique {
        rfs::fsync(&d).map_err(|e| io_err("fsync directory", e))?;
    }
    Ok(())
}

/// True when `syncfs` on `fd`'s file system is as good as fsyncing each
/// file: a local file system known to flush and report errors through it
/// (ext4, XFS, Btrfs, F2FS, tmpfs), and a kernel from 5.8 on (before,
/// `syncfs` did not report writeback errors). FUSE and network file
/// systems may not pass a `syncfs` on to where the data lives.
pub fn syncfs_is_reliable(fd: impl AsFd) -> bool {
    const LOCAL: [i64; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0x0102_1994];
    static KERNEL_OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let kernel_ok = *KERNEL_OK.get_or_init(|| {
        let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut it =
            rel.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
        let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        (major, minor) >= (5, 8)
    });
    kernel_ok
        && rfs::fstatfs(fd).is_ok_and(|st| {
            #[allow(clippy::unnecessary_cast)]
            let t = st.f_type as i64;
            LOCAL.contains(&t)
        })
}

/// Directories in one batch above which [`sync_dirs`] uses `syncfs`.
pub const SYNCFS_DIRS: usize = 8;

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = rfs::unlinkat(&self.dir, &self.tmp, AtFlags::empty());
            restore_mtime(&self.dir, self.parent_mtime);
        }
    }
}

/// Sets owner, mode and mtime of the existing regular file at `root/rel`
/// whose content is already right (a `touch` or `chmod` on the sender): no
/// content moves, nothing is replaced. `Ok(None)` when there is no regular
/// file there (the caller then needs the content).
///
/// # Errors
/// As [`stat`], or when a change fails.
pub fn set_file_attrs(
    root: &Path,
    rel: &[u8],
    entry: &Entry,
    opts: &Options,
) -> Result<Option<Meta>, Error> {
    check_rel(rel)?;
    if rel.is_empty() {
        return Err(bad(rel, "the root is not a regular file"));
    }
    let (dir, name) = open_parent(root, rel)?;
    let Some(file) = open_regular(&dir, name, rel)? else { return Ok(None) };
    let cur = rfs::fstat(&file).map_err(|e| io_err(format!("fstat {}", show(rel)), e))?;
    chown_if_needed(&cur, wanted_owner(entry, opts, Some(&cur)), rel, |u, g| {
        rfs::fchown(&file, u, g)
    })?;
    if !opts.ignore_mode {
        rfs::fchmod(&file, Mode::from_raw_mode(entry.mode & 0o7777))
            .map_err(|e| io_err(format!("chmod {}", show(rel)), e))?;
    }
    rfs::futimens(&file, &mtime_only(entry.mtime_ns))
        .map_err(|e| io_err(format!("set mtime of {}", show(rel)), e))?;
    file.sync_all().map_err(|e| io_err(format!("fsync {}", show(rel)), e))?;
    final_meta(&dir, name, rel).map(Some)
}

/// Sets the mtime of the directory holding `root/rel` (the sender's value,
/// after an entry in it was applied), without following symlinks. Nothing
/// happens for the root itself (`rel == b""`).
///
/// # Errors
/// As [`stat`], or when setting the time fails.
pub fn set_parent_mtime(root: &Path, rel: &[u8], mtime_ns: i64) -> Result<(), Error> {
    check_rel(rel)?;
    if rel.is_empty() {
        return Ok(());
    }
    let (dir, _) = open_parent(root, rel)?;
    rfs::futimens(&dir, &mtime_only(mtime_ns))
        .map_err(|e| io_err(format!("set mtime of the parent of {}", show(rel)), e))
}

/// Sets owner, mode and mtime of an open directory.
fn set_dir_attrs(
    fd: &OwnedFd,
    entry: &Entry,
    opts: &Options,
    old: Option<&rfs::Stat>,
    rel: &[u8],
) -> Result<(), Error> {
    let cur = rfs::fstat(fd).map_err(|e| io_err(format!("fstat {}", show(rel)), e))?;
    chown_if_needed(&cur, wanted_owner(entry, opts, old), rel, |u, g| rfs::fchown(fd, u, g))?;
    if !(opts.ignore_mode && old.is_some()) {
        let mode = wanted_mode(entry, opts, old, 0o755);
        rfs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_err(format!("chmod {}", show(rel)), e))?;
    }
    rfs::futimens(fd, &mtime_only(entry.mtime_ns))
        .map_err(|e| io_err(format!("set mtime of {}", show(rel)), e))
}

/// Sets the mode of a fresh fifo or device node `name` in `dir` without
/// following a symlink swapped in meanwhile: through an `O_PATH` descriptor
/// and `/proc/self/fd` (plain `fchmodat` if `/proc` is not mounted).
fn chmod_nofollow(dir: &OwnedFd, name: &[u8], mode: u32) -> rustix::io::Result<()> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty())?;
    if kind_of(&rfs::fstat(&fd)?) == FileKind::Symlink {
        return Err(Errno::LOOP);
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match rfs::chmodat(rfs::CWD, proc.as_str(), Mode::from_raw_mode(mode), AtFlags::empty()) {
        Err(Errno::NOENT) => rfs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty()),
        r => r,
    }
}

/// Creates or updates a non-regular entry (Dir, Symlink, Fifo, CharDevice,
/// BlockDevice) and returns its final `Meta`.
///
/// - Dir: `mkdir` (mode 0700 first, then owner/mode/mtime through a
///   descriptor) if absent; if a directory exists, only owner/mode/mtime are
///   set; another type there is replaced (unlink, then mkdir).
/// - Symlink, fifo, devices: created under a temporary name (`symlinkat`, or
///   `mknodat` with the real rdev), owner set with `AT_SYMLINK_NOFOLLOW`, mode
///   (not for symlinks), mtime (`AT_SYMLINK_NOFOLLOW`), then renamed over the
///   target; an existing directory there is removed first
///   ([`Error::NotEmpty`] if it has entries). Device nodes need root.
/// - Sockets are refused (`Error::Io`, "sockets are not synchronized"), and
///   so are regular files (use [`begin_file`]).
///
/// With the `ignore_*` options, ignored attributes keep the replaced entry's
/// values (mode only from an entry of the same kind); new entries get the
/// creator's ids and 0755 (dirs), 0644 (fifos) or 0600 (devices).
///
/// The parent directory's mtime is restored. `rel == b""` may only make a
/// Dir: it sets the root's own owner/mode/mtime.
pub fn make(root: &Path, rel: &[u8], entry: &Entry, opts: &Options) -> Result<Meta, Error> {
    check_rel(rel)?;
    let unsupported =
        |msg: &str| io_err(show(rel), io::Error::new(io::ErrorKind::Unsupported, msg));
    match entry.kind {
        FileKind::Socket => return Err(unsupported("sockets are not synchronized")),
        FileKind::File => return Err(unsupported("regular files are written with begin_file")),
        _ => {}
    }
    if rel.is_empty() {
        if entry.kind != FileKind::Dir {
            return Err(bad(rel, "the root can only be a directory"));
        }
        let fd = open_root(root)?;
        let old = rfs::fstat(&fd).map_err(|e| io_err("fstat root", e))?;
        set_dir_attrs(&fd, entry, opts, Some(&old), rel)?;
        let st = rfs::fstat(&fd).map_err(|e| io_err("fstat root", e))?;
        return Ok(Meta::from_stat(&st));
    }
    let (dir, name) = open_parent(root, rel)?;
    let parent_mtime = dir_mtime(&dir, rel)?;
    let result = make_in(&dir, name, rel, entry, opts);
    restore_mtime(&dir, parent_mtime);
    result
}

fn make_in(
    dir: &OwnedFd,
    name: &[u8],
    rel: &[u8],
    entry: &Entry,
    opts: &Options,
) -> Result<Meta, Error> {
    let what = |op: &str| format!("{op} {}", show(rel));
    let old = lstat_at(dir, name, rel)?;
    if entry.kind == FileKind::Dir {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut existing_dir = old.as_ref().is_some_and(|st| kind_of(st) == FileKind::Dir);
        if !existing_dir {
            if old.is_some() {
                // A directory cannot be renamed over a non-directory.
                match rfs::unlinkat(dir, name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(io_err(what("unlink"), e)),
                }
            }
            // Made whole under a temporary name and renamed into place: never
            // visible with the wrong owner, mode or mtime (another session
            // looking at it meanwhile would see a change that is not there).
            let (tmp, ()) =
                with_temp(name, rel, |t| rfs::mkdirat(dir, t, Mode::from_raw_mode(0o700)))?;
            let mut guard =
                TempGuard { dir: dir.as_fd(), name: &tmp, armed: true, flags: AtFlags::REMOVEDIR };
            let fd = rfs::openat(dir, tmp.as_slice(), flags, Mode::empty())
                .map_err(|e| io_err(what("open temporary for"), e))?;
            set_dir_attrs(&fd, entry, opts, None, rel)?;
            match rfs::renameat_with(dir, tmp.as_slice(), dir, name, rfs::RenameFlags::NOREPLACE) {
                Ok(()) => guard.armed = false,
                // Made meanwhile by someone else: use theirs (the guard removes ours).
                Err(Errno::EXIST) => existing_dir = true,
                // No RENAME_NOREPLACE on this filesystem.
                Err(Errno::INVAL) => {
                    rfs::renameat(dir, tmp.as_slice(), dir, name)
                        .map_err(|e| io_err(what("rename to"), e))?;
                    guard.armed = false;
                }
                Err(e) => return Err(io_err(what("rename to"), e)),
            }
            if !existing_dir {
                rfs::fsync(dir).map_err(|e| io_err(what("fsync parent of"), e))?;
                return final_meta(dir, name, rel);
            }
        }
        let fd = rfs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => Error::Symlink(show(rel)),
            e => io_err(what("open"), e),
        })?;
        let old_attrs = if existing_dir { old.as_ref() } else { None };
        set_dir_attrs(&fd, entry, opts, old_attrs, rel)?;
        rfs::fsync(dir).map_err(|e| io_err(what("fsync parent of"), e))?;
        return final_meta(dir, name, rel);
    }

    let (tmp, ()) = match entry.kind {
        FileKind::Symlink => {
            let target = match entry.target.as_deref() {
                Some(t) if !t.is_empty() && !t.contains(&0) => t,
                _ => return Err(bad(rel, "symlink without a valid target")),
            };
            with_temp(name, rel, |t| rfs::symlinkat(target, dir, t))?
        }
        kind => {
            let ft = match kind {
                FileKind::Fifo => FileType::Fifo,
                FileKind::CharDevice => FileType::CharacterDevice,
                _ => FileType::BlockDevice,
            };
            let rdev = if kind == FileKind::Fifo { 0 } else { entry.rdev };
            let made = with_temp(name, rel, |t| {
                rfs::mknodat(dir, t, ft, Mode::from_raw_mode(0o600), rdev)
            });
            match made {
                Err(Error::Io { source, .. })
                    if kind != FileKind::Fifo
                        && source.raw_os_error() == Some(Errno::PERM.raw_os_error()) =>
                {
                    return Err(io_err(
                        what("create device node"),
                        io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            "creating device nodes needs root",
                        ),
                    ));
                }
                r => r?,
            }
        }
    };
    let mut guard =
        TempGuard { dir: dir.as_fd(), name: &tmp, armed: true, flags: AtFlags::empty() };
    let cur = rfs::statat(dir, tmp.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(what("lstat temporary for"), e))?;
    chown_if_needed(&cur, wanted_owner(entry, opts, old.as_ref()), rel, |u, g| {
        rfs::chownat(dir, tmp.as_slice(), u, g, AtFlags::SYMLINK_NOFOLLOW)
    })?;
    if entry.kind != FileKind::Symlink {
        let default = if entry.kind == FileKind::Fifo { 0o644 } else { 0o600 };
        let mode = wanted_mode(entry, opts, old.as_ref(), default);
        chmod_nofollow(dir, &tmp, mode).map_err(|e| io_err(what("chmod"), e))?;
    }
    rfs::utimensat(dir, tmp.as_slice(), &mtime_only(entry.mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(what("set mtime of"), e))?;
    replace(dir, &tmp, name, rel)?;
    guard.armed = false;
    final_meta(dir, name, rel)
}

/// Deletes `root/rel`: `unlink` for non-directories, `rmdir` for directories
/// ([`Error::NotEmpty`] if it has entries). `Ok(false)` if already absent,
/// also when a parent is missing. Restores the parent's mtime and fsyncs the
/// parent. Deleting the root (`rel == b""`) is refused with [`Error::BadPath`].
pub fn delete(root: &Path, rel: &[u8]) -> Result<bool, Error> {
    match delete_unsynced(root, rel, None)? {
        Some(dir) => {
            rfs::fsync(&dir).map_err(|e| io_err(format!("fsync parent of {}", show(rel)), e))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// [`delete`] without the fsync: returns the parent directory when something
/// was removed, for the caller to fsync (once per directory for a batch)
/// before it reports the delete as durable. The parent gets `new_mtime`
/// (the sender's) when given, else keeps the mtime it had.
pub fn delete_unsynced(
    root: &Path,
    rel: &[u8],
    new_mtime: Option<i64>,
) -> Result<Option<OwnedFd>, Error> {
    check_rel(rel)?;
    if rel.is_empty() {
        return Err(bad(rel, "the root cannot be deleted"));
    }
    let (dir, name) = match open_parent(root, rel) {
        Ok(v) => v,
        Err(Error::ParentMissing(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(st) = lstat_at(&dir, name, rel)? else {
        return Ok(None);
    };
    let parent_mtime = dir_mtime(&dir, rel)?;
    let res = if kind_of(&st) == FileKind::Dir {
        rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR)
    } else {
        rfs::unlinkat(&dir, name, AtFlags::empty())
    };
    match res {
        Ok(()) => {
            restore_mtime(&dir, new_mtime.unwrap_or(parent_mtime));
            Ok(Some(dir))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::NOTEMPTY | Errno::EXIST) => Err(Error::NotEmpty(show(rel))),
        Err(e) => Err(io_err(format!("delete {}", show(rel)), e)),
    }
}

/// Copies the current regular file at `root/rel` (content, mode, owner,
/// mtime) to `dest`, an absolute path outside the tree (missing parents are
/// created with mode 0700), through a temporary file, fsync and rename, so the
/// copy is complete or absent. `Ok(false)` if there is no regular file at
/// `root/rel`. Used to keep conflict losers and backups.
pub fn preserve(root: &Path, rel: &[u8], dest: &Path) -> Result<bool, Error> {
    let Some(mut src) = open_file(root, rel)? else {
        return Ok(false);
    };
    let what = |op: &str| format!("{op} {} to {}", show(rel), dest.display());
    let st = rfs::fstat(&src).map_err(|e| io_err(what("fstat"), e))?;
    let (Some(parent), Some(fname)) = (dest.parent(), dest.file_name()) else {
        return Err(io_err(what("preserve"), io::Error::from(io::ErrorKind::InvalidInput)));
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| io_err(what("create directory for"), e))?;
    let mut tmp = PathBuf::new();
    let mut out = None;
    for _ in 0..16 {
        tmp = parent.join(OsStr::from_bytes(&temp_name(fname.as_bytes())));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(f) => {
                out = Some(f);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(what("create temporary for"), e)),
        }
    }
    let Some(mut out) = out else {
        return Err(io_err(
            what("create temporary for"),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    };
    let res = (|| -> Result<(), Error> {
        copy_all(&mut src, &mut out).map_err(|e| io_err(what("copy"), e))?;
        let cur = rfs::fstat(&out).map_err(|e| io_err(what("fstat"), e))?;
        chown_if_needed(&cur, (Some(st.st_uid), Some(st.st_gid)), rel, |u, g| {
            rfs::fchown(&out, u, g)
        })?;
        rfs::fchmod(&out, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| io_err(what("chmod"), e))?;
        let mtime = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64;
        rfs::futimens(&out, &mtime_only(mtime)).map_err(|e| io_err(what("set mtime"), e))?;
        out.sync_all().map_err(|e| io_err(what("fsync"), e))?;
        std::fs::rename(&tmp, dest).map_err(|e| io_err(what("rename"), e))?;
        if let Ok(d) = File::open(parent) {
            d.sync_all().map_err(|e| io_err(what("fsync directory of"), e))?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|()| true)
}

fn copy_all(src: &mut File, dst: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
    }
}

/// Creates a missing anchor directory (`mkdir -p`, mode 0755) with the same
/// care as [`open_root`]: each missing component is made with `mkdirat` in
/// its parent, opened without following untrusted symlinks. Used when a
/// peer's first push lands where the root's parent does not exist yet
/// (`include /root/.ssh/authorized_keys;` on a fresh node).
pub fn ensure_root(root: &Path) -> Result<(), Error> {
    match open_root(root) {
        Ok(_) => return Ok(()),
        Err(Error::ParentMissing(_)) => {}
        Err(e) => return Err(e),
    }
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return Err(Error::ParentMissing(root.display().to_string()));
    };
    ensure_root(parent)?;
    let dir = open_root(parent)?;
    match rfs::mkdirat(&dir, name.as_bytes(), Mode::from_raw_mode(0o755)) {
        // Durable before anything is written below it and confirmed.
        Ok(()) => {
            rfs::fsync(&dir).map_err(|e| io_err(format!("fsync parent of {}", root.display()), e))
        }
        Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(io_err(format!("create {}", root.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempname::TEMP_PREFIX;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const MTIME: i64 = 1_600_000_000_123_456_789;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Owner ids to ask for: foreign ones as root, our own otherwise.
    fn ids() -> (u32, u32) {
        if is_root() {
            (1234, 2345)
        } else {
            (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
        }
    }

    fn entry(kind: FileKind, mode: u32) -> Entry {
        let (uid, gid) = ids();
        Entry { kind, mode, uid, gid, mtime_ns: MTIME, target: None, rdev: 0 }
    }

    fn hash(data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn put(root: &Path, rel: &[u8], data: &[u8], e: &Entry) -> Result<Meta, Error> {
        let mut w = begin_file(root, rel, e, hash(data), &Options::default())?;
        w.write_all(data).unwrap();
        w.commit()
    }

    fn put_file(root: &Path, rel: &str, data: &[u8]) -> Meta {
        put(root, rel.as_bytes(), data, &entry(FileKind::File, 0o644)).unwrap()
    }

    fn mkdir(root: &Path, rel: &str) -> Meta {
        make(root, rel.as_bytes(), &entry(FileKind::Dir, 0o755), &Options::default()).unwrap()
    }

    /// Temporary names left anywhere below `dir`.
    fn temps(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_name().as_bytes().starts_with(TEMP_PREFIX) {
                    out.push(e.path());
                }
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                }
            }
        }
        out
    }

    fn mtime_of(p: &Path) -> i64 {
        let md = std::fs::symlink_metadata(p).unwrap();
        md.mtime() * 1_000_000_000 + md.mtime_nsec()
    }

    #[test]
    fn check_rel_accepts_and_refuses() {
        for ok in [&b""[..], b"a", b"a/b/c", b".hidden", b"a/..b", b"...", &[b'x'; 255]] {
            assert!(check_rel(ok).is_ok(), "{:?}", show(ok));
        }
        let long_comp = [b'x'; 256];
        let long_path = [b"a/".as_slice(); 2048].concat();
        let bad_ones: [&[u8]; 13] = [
            b"../x",
            b"a/../b",
            b"/abs",
            b"a//b",
            b"a/./b",
            b".",
            b"..",
            b"a/",
            b"a/..",
            b"a\0b",
            &long_comp,
            &long_path[..4096],
            b"/",
        ];
        for b in bad_ones {
            assert!(matches!(check_rel(b), Err(Error::BadPath(_))), "{:?}", show(b));
        }
        // 4095 bytes in all is still fine.
        assert!(check_rel(&long_path[..4095]).is_ok());
    }

    #[test]
    fn bad_paths_are_refused_everywhere() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let e = entry(FileKind::File, 0o644);
        for b in [&b"../x"[..], b"a/../b", b"/abs", b"a//b", b"a/./b", b"a\0b", &[b'y'; 256]] {
            let r = begin_file(root, b, &e, hash(b""), &Options::default());
            assert!(matches!(r, Err(Error::BadPath(_))), "{:?}", show(b));
            assert!(matches!(stat(root, b), Err(Error::BadPath(_))));
            assert!(matches!(delete(root, b), Err(Error::BadPath(_))));
            let d = entry(FileKind::Dir, 0o755);
            assert!(matches!(make(root, b, &d, &Options::default()), Err(Error::BadPath(_))));
        }
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
    }

    #[test]
    fn file_is_written_exactly() {
        let t = tempfile::tempdir().unwrap();
        let e = entry(FileKind::File, 0o4750);
        let m = put(t.path(), b"f", b"hello", &e).unwrap();
        let p = t.path().join("f");
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o7777, 0o4750);
        assert_eq!(mtime_of(&p), MTIME);
        assert_eq!((md.uid(), md.gid()), ids());
        assert_eq!(m.kind, FileKind::File);
        assert_eq!((m.mode, m.uid, m.gid, m.size, m.mtime_ns), (0o4750, e.uid, e.gid, 5, MTIME));
        assert_eq!(m.ino, md.ino());
        assert_eq!(m.hash, Some(hash(b"hello")));
        assert!(temps(t.path()).is_empty());
        // stat agrees, without the hash.
        let s = stat(t.path(), b"f").unwrap().unwrap();
        assert_eq!(s, Meta { hash: None, ..m });
    }

    #[test]
    fn overwrite_replaces_atomically() {
        let t = tempfile::tempdir().unwrap();
        let m1 = put_file(t.path(), "f", b"old content");
        let mut old = std::fs::File::open(t.path().join("f")).unwrap();
        let m2 = put_file(t.path(), "f", b"new");
        assert_ne!(m1.ino, m2.ino);
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"new");
        // A reader of the old file still sees the complete old content.
        let mut s = String::new();
        old.read_to_string(&mut s).unwrap();
        assert_eq!(s, "old content");
        assert!(temps(t.path()).is_empty());
    }

    #[test]
    fn hash_mismatch_leaves_target_untouched() {
        let t = tempfile::tempdir().unwrap();
        let m1 = put_file(t.path(), "f", b"old");
        let e = entry(FileKind::File, 0o600);
        let mut w = begin_file(t.path(), b"f", &e, hash(b"other"), &Options::default()).unwrap();
        w.write_all(b"new").unwrap();
        assert!(matches!(w.commit(), Err(Error::HashMismatch)));
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"old");
        assert_eq!(stat(t.path(), b"f").unwrap().unwrap().ino, m1.ino);
        assert!(temps(t.path()).is_empty());
        // Also for a new file: nothing appears.
        let mut w = begin_file(t.path(), b"g", &e, hash(b"other"), &Options::default()).unwrap();
        w.write_all(b"new").unwrap();
        assert!(matches!(w.commit(), Err(Error::HashMismatch)));
        assert!(stat(t.path(), b"g").unwrap().is_none());
        assert!(temps(t.path()).is_empty());
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        put_file(t.path(), "f", b"old");
        let e = entry(FileKind::File, 0o600);
        let mut w = begin_file(t.path(), b"f", &e, hash(b"new"), &Options::default()).unwrap();
        w.write_all(b"ne").unwrap();
        assert_eq!(temps(t.path()).len(), 1);
        drop(w);
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"old");
        let w = begin_file(t.path(), b"g", &e, hash(b"new"), &Options::default()).unwrap();
        drop(w);
        assert!(!t.path().join("g").exists());
        assert!(temps(t.path()).is_empty());
    }

    #[test]
    fn temp_file_is_private_and_in_target_dir() {
        let t = tempfile::tempdir().unwrap();
        mkdir(t.path(), "d");
        let e = entry(FileKind::File, 0o644);
        let w = begin_file(t.path(), b"d/f", &e, hash(b""), &Options::default()).unwrap();
        let tmp = temps(t.path());
        assert_eq!(tmp.len(), 1);
        assert_eq!(tmp[0].parent().unwrap(), t.path().join("d"));
        assert!(tmp[0].file_name().unwrap().as_bytes().starts_with(b".csync.f."));
        let md = std::fs::symlink_metadata(&tmp[0]).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        let m = w.commit().unwrap();
        assert_eq!(m.size, 0);
        assert!(temps(t.path()).is_empty());
    }

    #[test]
    fn parent_missing() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let e = entry(FileKind::File, 0o644);
        let r = begin_file(root, b"a/b/f", &e, hash(b""), &Options::default());
        assert!(matches!(r, Err(Error::ParentMissing(ref p)) if p == "a"), "{r:?}");
        let d = entry(FileKind::Dir, 0o755);
        assert!(matches!(
            make(root, b"a/b", &d, &Options::default()),
            Err(Error::ParentMissing(_))
        ));
        assert!(matches!(stat(root, b"a/b"), Err(Error::ParentMissing(_))));
        assert!(matches!(open_file(root, b"a/b"), Err(Error::ParentMissing(_))));
        assert!(!delete(root, b"a/b").unwrap());
        assert!(stat(root, b"a").unwrap().is_none());
        assert!(open_file(root, b"a").unwrap().is_none());
        mkdir(root, "a");
        let r = begin_file(root, b"a/b/f", &e, hash(b""), &Options::default());
        assert!(matches!(r, Err(Error::ParentMissing(ref p)) if p == "a/b"), "{r:?}");
        assert_eq!(std::fs::read_dir(root.join("a")).unwrap().count(), 0);
    }

    #[test]
    fn symlinked_parent_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x"), b"secret").unwrap();
        let root = t.path().join("root");
        ensure_root(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        mkdir(&root, "a");
        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        std::fs::write(root.join("plain"), b"").unwrap();
        let e = entry(FileKind::File, 0o644);
        let d = entry(FileKind::Dir, 0o755);
        let o = Options::default();
        for rel in [&b"link/x"[..], b"a/link/x", b"link/y/z", b"plain/x"] {
            let r = begin_file(&root, rel, &e, hash(b""), &o);
            assert!(matches!(r, Err(Error::Symlink(_))), "{:?}: {r:?}", show(rel));
            assert!(matches!(make(&root, rel, &d, &o), Err(Error::Symlink(_))));
            assert!(matches!(stat(&root, rel), Err(Error::Symlink(_))));
            assert!(matches!(open_file(&root, rel), Err(Error::Symlink(_))));
            assert!(matches!(delete(&root, rel), Err(Error::Symlink(_))));
            let s = Entry { target: Some(b"t".to_vec()), ..entry(FileKind::Symlink, 0o777) };
            assert!(matches!(make(&root, rel, &s, &o), Err(Error::Symlink(_))));
        }
        // Nothing was created or changed outside.
        let names: Vec<_> =
            std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
        assert_eq!(std::fs::read(outside.path().join("x")).unwrap(), b"secret");
        // A symlink as the last component is the entry itself: never read
        // through, and replaced (not written through) by a file.
        std::os::unix::fs::symlink(outside.path().join("x"), root.join("lx")).unwrap();
        assert!(open_file(&root, b"lx").unwrap().is_none());
        assert_eq!(stat(&root, b"lx").unwrap().unwrap().kind, FileKind::Symlink);
        assert!(!preserve(&root, b"lx", &t.path().join("keep")).unwrap());
        put_file(&root, "lx", b"mine");
        assert_eq!(std::fs::read(outside.path().join("x")).unwrap(), b"secret");
        assert!(std::fs::symlink_metadata(root.join("lx")).unwrap().is_file());
        assert!(delete(&root, b"link").unwrap());
        assert!(outside.path().join("x").exists());
    }

    #[test]
    fn root_may_be_reached_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        ensure_root(&real).unwrap();
        let via = t.path().join("via");
        std::os::unix::fs::symlink(&real, &via).unwrap();
        put_file(&via, "f", b"x");
        assert_eq!(std::fs::read(real.join("f")).unwrap(), b"x");
        assert_eq!(stat(&via, b"").unwrap().unwrap().kind, FileKind::Dir);
    }

    #[test]
    fn root_itself() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        assert!(stat(&root, b"").unwrap().is_none());
        ensure_root(&root.join("deeper")).unwrap();
        ensure_root(&root).unwrap();
        let d = Entry { mtime_ns: MTIME, ..entry(FileKind::Dir, 0o751) };
        let m = make(&root, b"", &d, &Options::default()).unwrap();
        assert_eq!((m.kind, m.mode, m.mtime_ns), (FileKind::Dir, 0o751, MTIME));
        assert_eq!(stat(&root, b"").unwrap().unwrap(), m);
        assert!(matches!(delete(&root, b""), Err(Error::BadPath(_))));
        let e = entry(FileKind::File, 0o644);
        assert!(matches!(
            begin_file(&root, b"", &e, hash(b""), &Options::default()),
            Err(Error::BadPath(_))
        ));
        assert!(open_file(&root, b"").unwrap().is_none());
        let f = entry(FileKind::Fifo, 0o644);
        assert!(matches!(make(&root, b"", &f, &Options::default()), Err(Error::BadPath(_))));
    }

    #[test]
    fn dir_create_and_update() {
        let t = tempfile::tempdir().unwrap();
        let e = entry(FileKind::Dir, 0o2750);
        let m = make(t.path(), b"d", &e, &Options::default()).unwrap();
        assert_eq!(
            (m.kind, m.mode, m.uid, m.gid, m.mtime_ns),
            (FileKind::Dir, 0o2750, e.uid, e.gid, MTIME)
        );
        let ino = m.ino;
        let e2 = Entry { mode: 0o700, mtime_ns: MTIME + 5, ..e };
        let m2 = make(t.path(), b"d", &e2, &Options::default()).unwrap();
        assert_eq!((m2.mode, m2.mtime_ns, m2.ino), (0o700, MTIME + 5, ino));
        // ignore_mode keeps the existing mode.
        let e3 = Entry { mode: 0o777, ..e2 };
        let o = Options { ignore_mode: true, ..Options::default() };
        assert_eq!(make(t.path(), b"d", &e3, &o).unwrap().mode, 0o700);
        // A new dir with ignore_mode gets 0755.
        assert_eq!(make(t.path(), b"d/n", &e3, &o).unwrap().mode, 0o755);
    }

    #[test]
    fn symlink_create_and_retarget() {
        let t = tempfile::tempdir().unwrap();
        let e = Entry { target: Some(b"/etc/passwd".to_vec()), ..entry(FileKind::Symlink, 0o777) };
        let m = make(t.path(), b"l", &e, &Options::default()).unwrap();
        assert_eq!(m.kind, FileKind::Symlink);
        assert_eq!(m.target.as_deref(), Some(&b"/etc/passwd"[..]));
        assert_eq!((m.uid, m.gid, m.mtime_ns), (e.uid, e.gid, MTIME));
        assert_eq!(std::fs::read_link(t.path().join("l")).unwrap(), Path::new("/etc/passwd"));
        assert_eq!(mtime_of(&t.path().join("l")), MTIME);
        let e2 = Entry { target: Some(b"../x/y".to_vec()), mtime_ns: MTIME + 1, ..e };
        let m2 = make(t.path(), b"l", &e2, &Options::default()).unwrap();
        assert_eq!(m2.target.as_deref(), Some(&b"../x/y"[..]));
        assert_eq!(m2.mtime_ns, MTIME + 1);
        assert_ne!(m2.ino, m.ino);
        assert_eq!(stat(t.path(), b"l").unwrap().unwrap(), m2);
        assert!(temps(t.path()).is_empty());
        let bad_target = Entry { target: None, ..e };
        assert!(matches!(
            make(t.path(), b"l2", &bad_target, &Options::default()),
            Err(Error::BadPath(_))
        ));
    }

    #[test]
    fn fifo_and_socket() {
        let t = tempfile::tempdir().unwrap();
        let m = make(t.path(), b"p", &entry(FileKind::Fifo, 0o640), &Options::default()).unwrap();
        assert_eq!((m.kind, m.mode, m.mtime_ns), (FileKind::Fifo, 0o640, MTIME));
        assert_eq!((m.uid, m.gid), ids());
        assert!(open_file(t.path(), b"p").unwrap().is_none());
        let r = make(t.path(), b"s", &entry(FileKind::Socket, 0o640), &Options::default());
        assert!(
            matches!(r, Err(Error::Io { ref source, .. }) if source.to_string().contains("sockets"))
        );
        let r = make(t.path(), b"f", &entry(FileKind::File, 0o640), &Options::default());
        assert!(matches!(r, Err(Error::Io { .. })));
        assert!(temps(t.path()).is_empty());
    }

    #[test]
    fn char_device() {
        let t = tempfile::tempdir().unwrap();
        let e = Entry { rdev: rfs::makedev(1, 3), ..entry(FileKind::CharDevice, 0o666) };
        let r = make(t.path(), b"null", &e, &Options::default());
        if !is_root() {
            assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
            assert!(temps(t.path()).is_empty());
            return;
        }
        let m = r.unwrap();
        assert_eq!(
            (m.kind, m.mode, m.rdev, m.mtime_ns),
            (FileKind::CharDevice, 0o666, e.rdev, MTIME)
        );
        assert_eq!((m.uid, m.gid), (1234, 2345));
        assert!(open_file(t.path(), b"null").unwrap().is_none());
        assert!(temps(t.path()).is_empty());
    }

    #[test]
    fn type_changes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let o = Options::default();
        // file -> dir
        put_file(root, "a", b"x");
        assert_eq!(make(root, b"a", &entry(FileKind::Dir, 0o755), &o).unwrap().kind, FileKind::Dir);
        // empty dir -> file
        assert_eq!(put_file(root, "a", b"y").kind, FileKind::File);
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"y");
        // non-empty dir -> file: NotEmpty, dir kept.
        mkdir(root, "d");
        put_file(root, "d/child", b"c");
        let r = put(root, b"d", b"z", &entry(FileKind::File, 0o644));
        assert!(matches!(r, Err(Error::NotEmpty(_))), "{r:?}");
        assert!(root.join("d/child").is_file());
        let s = Entry { target: Some(b"t".to_vec()), ..entry(FileKind::Symlink, 0o777) };
        assert!(matches!(make(root, b"d", &s, &o), Err(Error::NotEmpty(_))));
        assert!(matches!(
            make(root, b"d", &entry(FileKind::Fifo, 0o644), &o),
            Err(Error::NotEmpty(_))
        ));
        assert!(root.join("d/child").is_file());
        // symlink -> file, file -> symlink, fifo -> dir, empty dir -> symlink.
        make(root, b"l", &s, &o).unwrap();
        assert_eq!(put_file(root, "l", b"f").kind, FileKind::File);
        assert_eq!(make(root, b"l", &s, &o).unwrap().kind, FileKind::Symlink);
        make(root, b"p", &entry(FileKind::Fifo, 0o644), &o).unwrap();
        assert_eq!(make(root, b"p", &entry(FileKind::Dir, 0o755), &o).unwrap().kind, FileKind::Dir);
        assert_eq!(make(root, b"p", &s, &o).unwrap().kind, FileKind::Symlink);
        assert!(temps(root).is_empty());
    }

    #[test]
    fn parent_mtime_is_restored() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let o = Options::default();
        make(root, b"d", &entry(FileKind::Dir, 0o755), &o).unwrap();
        let d = root.join("d");
        assert_eq!(mtime_of(&d), MTIME);
        put_file(root, "d/f", b"1");
        assert_eq!(mtime_of(&d), MTIME);
        put_file(root, "d/f", b"2");
        assert_eq!(mtime_of(&d), MTIME);
        let s = Entry { target: Some(b"f".to_vec()), ..entry(FileKind::Symlink, 0o777) };
        make(root, b"d/l", &s, &o).unwrap();
        make(root, b"d/sub", &entry(FileKind::Dir, 0o755), &o).unwrap();
        assert_eq!(mtime_of(&d), MTIME);
        let e = entry(FileKind::File, 0o644);
        drop(begin_file(root, b"d/g", &e, hash(b""), &o).unwrap());
        assert_eq!(mtime_of(&d), MTIME);
        assert!(delete(root, b"d/f").unwrap());
        assert!(delete(root, b"d/sub").unwrap());
        assert_eq!(mtime_of(&d), MTIME);
    }

    #[test]
    fn delete_cases() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        put_file(root, "f", b"x");
        mkdir(root, "empty");
        mkdir(root, "full");
        put_file(root, "full/f", b"x");
        assert!(delete(root, b"f").unwrap());
        assert!(!root.join("f").exists());
        assert!(delete(root, b"empty").unwrap());
        assert!(!root.join("empty").exists());
        assert!(matches!(delete(root, b"full"), Err(Error::NotEmpty(_))));
        assert!(root.join("full/f").exists());
        assert!(!delete(root, b"f").unwrap());
        assert!(!delete(root, b"nope/x").unwrap());
    }

    #[test]
    fn preserve_copies_file() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        ensure_root(&root).unwrap();
        let e = entry(FileKind::File, 0o640);
        put(&root, b"f", b"precious", &e).unwrap();
        let keep = t.path().join("keep/a/b/f.conflict");
        assert!(preserve(&root, b"f", &keep).unwrap());
        assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
        let md = std::fs::metadata(&keep).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(mtime_of(&keep), MTIME);
        assert_eq!((md.uid(), md.gid()), ids());
        let dmode = std::fs::metadata(t.path().join("keep/a")).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert!(temps(t.path()).is_empty());
        // Overwrites an older copy; nothing to keep for absent or non-files.
        put_file(&root, "f", b"v2");
        assert!(preserve(&root, b"f", &keep).unwrap());
        assert_eq!(std::fs::read(&keep).unwrap(), b"v2");
        assert!(!preserve(&root, b"nope", &t.path().join("k2")).unwrap());
        mkdir(&root, "d");
        assert!(!preserve(&root, b"d", &t.path().join("k3")).unwrap());
        assert!(!t.path().join("k2").exists() && !t.path().join("k3").exists());
    }

    #[test]
    fn long_names_and_paths() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let name = "n".repeat(255);
        put_file(root, &name, b"long");
        assert_eq!(std::fs::read(root.join(&name)).unwrap(), b"long");
        let comp = "c".repeat(200);
        let mut rel = String::new();
        while rel.len() + 1 + 255 < 3995 {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(&comp);
            mkdir(root, &rel);
        }
        rel.push('/');
        rel.push_str(&name[..3995 - rel.len()]);
        assert!(rel.len() >= 3990 && rel.len() <= 4095, "{}", rel.len());
        let m = put_file(root, &rel, b"deep");
        assert_eq!(m.size, 4);
        let mut f = open_file(root, rel.as_bytes()).unwrap().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "deep");
        assert!(delete(root, rel.as_bytes()).unwrap());
        assert!(temps(root).is_empty());
    }

    #[test]
    fn ignore_options() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let all = Options { ignore_uid: true, ignore_gid: true, ignore_mode: true };
        // New file: default mode, the writer's own ids.
        let m = put_with(root, "f", &entry(FileKind::File, 0o4777), &all);
        assert_eq!(m.mode, 0o644);
        let me = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        assert_eq!((m.uid, m.gid), me);
        // Existing file: its mode (and owner) are kept.
        let m = put_with(root, "g", &entry(FileKind::File, 0o600), &Options::default());
        let m2 =
            put_with(root, "g", &Entry { uid: 7, gid: 8, ..entry(FileKind::File, 0o777) }, &all);
        assert_eq!((m2.mode, m2.uid, m2.gid), (0o600, m.uid, m.gid));
        assert_ne!(m.ino, m2.ino);
    }

    fn put_with(root: &Path, rel: &str, e: &Entry, o: &Options) -> Meta {
        let mut w = begin_file(root, rel.as_bytes(), e, hash(b"data"), o).unwrap();
        w.write_all(b"data").unwrap();
        w.commit().unwrap()
    }

    #[test]
    fn foreign_owner_is_skipped_when_not_root() {
        let t = tempfile::tempdir().unwrap();
        let e = Entry { uid: 4321, gid: 5432, ..entry(FileKind::File, 0o644) };
        let m = put(t.path(), b"f", b"x", &e).unwrap();
        let s = Entry { target: Some(b"f".to_vec()), ..e.clone() };
        let l = make(t.path(), b"l", &Entry { kind: FileKind::Symlink, ..s }, &Options::default())
            .unwrap();
        if is_root() {
            assert_eq!((m.uid, m.gid, l.uid, l.gid), (4321, 5432, 4321, 5432));
        } else {
            let me = rustix::process::geteuid().as_raw();
            assert_eq!((m.uid, l.uid), (me, me));
        }
    }

    #[test]
    fn temp_names_fit_and_differ() {
        let a = temp_name(&[b'x'; 255]);
        let b = temp_name(&[b'x'; 255]);
        assert!(a.len() <= NAME_MAX && a != b);
        assert!(a.starts_with(TEMP_PREFIX));
        assert!(check_rel(&a).is_ok());
    }

    #[test]
    fn anchors_follow_only_symlinks_nobody_else_controls() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("conf")).unwrap();
        // A link in a directory only its owner may change: followed.
        let safe = t.path().join("safe");
        std::fs::create_dir(&safe).unwrap();
        std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&real, safe.join("www")).unwrap();
        ensure_root(&safe.join("www/conf")).unwrap();
        assert!(open_root(&safe.join("www/conf")).is_ok());
        // The same link in a directory anyone may write to: refused, since a
        // local user could have swapped it to point anywhere.
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&real, open.join("www")).unwrap();
        assert!(matches!(
            crate::confined::open_uncached(&open.join("www/conf")),
            Err(crate::confined::Error::Untrusted)
        ));
        assert!(matches!(
            make(&open.join("www"), b"conf/x", &entry(FileKind::Dir, 0o755), &Options::default()),
            Err(Error::Symlink(_))
        ));
        assert!(!real.join("conf/x").exists());
        // Sticky (like /tmp): others cannot replace our link.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(crate::confined::open_uncached(&open.join("www/conf")).is_ok());
        // A missing anchor is made, component by component.
        ensure_root(&t.path().join("new/a/b")).unwrap();
        assert!(t.path().join("new/a/b").is_dir());
    }
}
