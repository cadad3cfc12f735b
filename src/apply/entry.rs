//! Everything but file content: attributes of an existing entry, directories,
//! symlinks, fifos and devices made in place, deletes, the copies kept of a
//! replaced version, and a missing include root.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::tempname::temp_name;
use crate::types::{FileKind, Meta};

use super::*;

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
    Dirs::new().set_file_attrs(root, rel, entry, opts)
}

/// Sets the mtime of the directory holding `root/rel` (the sender's value,
/// after an entry in it was applied), without following symlinks. Nothing
/// happens for the root itself (`rel == b""`).
///
/// # Errors
/// As [`stat`], or when setting the time fails.
pub fn set_parent_mtime(root: &Path, rel: &[u8], mtime_ns: i64) -> Result<(), Error> {
    Dirs::new().set_parent_mtime(root, rel, mtime_ns)
}

/// Creates or updates a non-regular entry: see [`Dirs::make`] (one-off,
/// not part of a batch).
///
/// # Errors
/// As [`Dirs::make`].
pub fn make(root: &Path, rel: &[u8], entry: &Entry, opts: &Options) -> Result<Meta, Error> {
    let (meta, touched) = Dirs::new().make(root, rel, entry, opts)?;
    finish_dirs(touched.into_iter().collect())?;
    Ok(meta)
}

/// Deletes `root/rel`: `unlink` for non-directories, `rmdir` for directories
/// ([`Error::NotEmpty`] if it has entries). `Ok(false)` if already absent,
/// also when a parent is missing. Restores the parent's mtime and fsyncs the
/// parent. Deleting the root (`rel == b""`) is refused with [`Error::BadPath`].
pub fn delete(root: &Path, rel: &[u8]) -> Result<bool, Error> {
    match Dirs::new().delete(root, rel, None, None)? {
        Some(t) => {
            finish_dirs(vec![t])?;
            Ok(true)
        }
        None => Ok(false),
    }
}

impl Dirs {
    /// [`set_file_attrs`], through the batch's directories.
    ///
    /// # Errors
    /// As [`set_file_attrs`].
    pub fn set_file_attrs(
        &mut self,
        root: &Path,
        rel: &[u8],
        entry: &Entry,
        opts: &Options,
    ) -> Result<Option<Meta>, Error> {
        check_rel(rel)?;
        if rel.is_empty() {
            return Err(bad(rel, "the root is not a regular file"));
        }
        let p = self.parent(root, rel)?;
        let (dir, name) = (&*p.fd, p.name);
        let Some(file) = open_regular(dir, name, rel)? else { return Ok(None) };
        let cur = rfs::fstat(&file).map_err(|e| io_err(format!("fstat {}", show(rel)), e))?;
        chown_if_needed(&cur, wanted_owner(entry, opts, Some(&cur)), rel, |u, g| {
            rfs::fchown(&file, u, g)
        })?;
        if !opts.mode {
            rfs::fchmod(&file, Mode::from_raw_mode(entry.mode & 0o7777))
                .map_err(|e| io_err(format!("chmod {}", show(rel)), e))?;
        }
        rfs::futimens(&file, &mtime_only(entry.mtime_ns))
            .map_err(|e| io_err(format!("set mtime of {}", show(rel)), e))?;
        file.sync_all().map_err(|e| io_err(format!("fsync {}", show(rel)), e))?;
        final_meta(dir, name, rel).map(Some)
    }

    /// [`set_parent_mtime`], through the batch's directories.
    ///
    /// # Errors
    /// As [`set_parent_mtime`].
    pub fn set_parent_mtime(
        &mut self,
        root: &Path,
        rel: &[u8],
        mtime_ns: i64,
    ) -> Result<(), Error> {
        check_rel(rel)?;
        if rel.is_empty() {
            return Ok(());
        }
        let p = self.parent(root, rel)?;
        rfs::futimens(&*p.fd, &mtime_only(mtime_ns))
            .map_err(|e| io_err(format!("set mtime of the parent of {}", show(rel)), e))
    }
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
    if !(opts.mode && old.is_some()) {
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

impl Dirs {
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
    ///
    /// Returns the parent directory too, which the caller makes durable
    /// ([`finish_dirs`], once per directory for a batch) before the change
    /// may be reported as durable.
    ///
    /// # Errors
    /// As [`stat`], or when a step fails.
    pub fn make(
        &mut self,
        root: &Path,
        rel: &[u8],
        entry: &Entry,
        opts: &Options,
    ) -> Result<(Meta, Option<Touched>), Error> {
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
            return Ok((Meta::from_stat(&st), None));
        }
        let p = self.parent(root, rel)?;
        let parent_mtime = self.mtime_before(&p, rel)?;
        let dir = p.fd.clone();
        let result = make_in(&dir, p.name, rel, entry, opts);
        restore_mtime(&dir, parent_mtime);
        // A directory made or replaced, or an entry put in place of one: what
        // is kept for the batch may name a directory no longer there. (Rare
        // next to files: starting the cache over costs a walk.)
        self.clear();
        result.map(|m| (m, Some(Touched { dir, mtime: None })))
    }
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
                return final_meta(dir, name, rel);
            }
        }
        let fd = rfs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => Error::Symlink(show(rel)),
            e => io_err(what("open"), e),
        })?;
        let old_attrs = if existing_dir { old.as_ref() } else { None };
        set_dir_attrs(&fd, entry, opts, old_attrs, rel)?;
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

impl Dirs {
    /// Deletes `root/rel` ([`delete`]) without making it durable or touching
    /// the parent's mtime: returns the parent directory when something was
    /// removed, with the mtime it must get (the sender's `new_mtime` when
    /// given, else the one it had), for [`finish_dirs`] to set once per
    /// directory and make durable once per batch, before the delete is
    /// reported as durable. `seen`: the type the caller has just found
    /// there (saves an lstat; a type changed meanwhile is still handled).
    ///
    /// # Errors
    /// As [`delete`].
    pub fn delete(
        &mut self,
        root: &Path,
        rel: &[u8],
        new_mtime: Option<i64>,
        seen: Option<FileKind>,
    ) -> Result<Option<Touched>, Error> {
        let Some(d) = self.prepare_delete(root, rel, new_mtime, seen)? else {
            return Ok(None);
        };
        let r = d.run();
        if !d.is_file() {
            // A directory removed: what is kept may name it.
            self.clear();
        }
        r
    }

    /// The first half of [`Dirs::delete`]: walks to the entry's directory
    /// (`None`: a parent is missing, nothing to delete) and notes what the
    /// parent's mtime must become; [`Deletion::run`] removes it. A batch
    /// runs the removals of many files at once: on a file system that
    /// discards freed blocks synchronously (`-o discard`), each unlink
    /// waits for the device.
    ///
    /// # Errors
    /// As [`delete`].
    pub fn prepare_delete(
        &mut self,
        root: &Path,
        rel: &[u8],
        new_mtime: Option<i64>,
        seen: Option<FileKind>,
    ) -> Result<Option<Deletion>, Error> {
        check_rel(rel)?;
        if rel.is_empty() {
            return Err(bad(rel, "the root cannot be deleted"));
        }
        let p = match self.parent(root, rel) {
            Ok(v) => v,
            Err(Error::ParentMissing(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mtime = match new_mtime {
            Some(t) => t,
            None => self.mtime_before(&p, rel)?,
        };
        Ok(Some(Deletion {
            dir: p.fd.clone(),
            name: p.name.to_vec(),
            rel: rel.to_vec(),
            seen,
            mtime,
            stamp: None,
        }))
    }
}

/// A delete whose directory is open ([`Dirs::prepare_delete`]), to be run.
#[derive(Debug)]
pub struct Deletion {
    dir: Arc<OwnedFd>,
    name: Vec<u8>,
    rel: Vec<u8>,
    seen: Option<FileKind>,
    mtime: i64,
    /// `(st_ino, st_ctime in ns)` of the non-directory the request was
    /// judged against ([`Deletion::expecting`]).
    stamp: Option<(u64, i64)>,
}

impl Deletion {
    /// Removes the entry only if it is still the inode that was judged, with
    /// the same ctime. The removal runs at the batch's durability point,
    /// which may be a long transfer later: what a local user wrote there, or
    /// another session published, meanwhile is not what the peer asked to
    /// delete, and is kept (the delete fails and is retried, judged anew).
    /// Directories are not stamped: their ctime moves with the batch's own
    /// removals below them, and `rmdir` refuses one that is not empty.
    #[must_use]
    pub fn expecting(mut self, ino: u64, ctime_ns: i64) -> Self {
        self.stamp = Some((ino, ctime_ns));
        self
    }

    /// True when the entry was seen as a non-directory (its removal cannot
    /// depend on another's: a batch runs these together, directories after).
    pub fn is_file(&self) -> bool {
        self.seen.is_some_and(|k| k != FileKind::Dir)
    }

    /// Removes the entry: `unlink`, or `rmdir` for a directory
    /// ([`Error::NotEmpty`] if it has entries). Returns its parent with the
    /// mtime it must get (for [`finish_dirs`]), `None` if it was gone.
    ///
    /// # Errors
    /// As [`delete`].
    pub fn run(&self) -> Result<Option<Touched>, Error> {
        let (dir, name, rel) = (&*self.dir, self.name.as_slice(), self.rel.as_slice());
        let lstat_dir = || -> Result<Option<bool>, Error> {
            Ok(lstat_at(dir, name, rel)?.map(|st| kind_of(&st) == FileKind::Dir))
        };
        if let (Some((ino, ctime_ns)), false) = (self.stamp, self.seen == Some(FileKind::Dir)) {
            let Some(st) = lstat_at(dir, name, rel)? else { return Ok(None) };
            let ctime = st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64;
            if st.st_ino != ino || ctime != ctime_ns {
                return Err(io_err(
                    format!("delete {}", show(rel)),
                    io::Error::other("changed here since the delete was asked; kept"),
                ));
            }
        }
        // What the caller has just seen there saves an lstat; should it have
        // changed type meanwhile, the unlink says so and an lstat decides.
        let is_dir = match self.seen {
            Some(k) => k == FileKind::Dir,
            None => match lstat_dir()? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let unlink = |is_dir: bool| {
            let flags = if is_dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
            rfs::unlinkat(dir, name, flags)
        };
        let mut res = unlink(is_dir);
        if self.seen.is_some() && matches!(res, Err(Errno::ISDIR | Errno::NOTDIR | Errno::PERM)) {
            res = match lstat_dir()? {
                Some(d) => unlink(d),
                None => return Ok(None),
            };
        }
        match res {
            Ok(()) => Ok(Some(Touched { dir: self.dir.clone(), mtime: Some(self.mtime) })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Err(Error::NotEmpty(show(rel))),
            Err(e) => Err(io_err(format!("delete {}", show(rel)), e)),
        }
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
        copy_all(&mut src, &mut out, st.st_size as u64).map_err(|e| io_err(what("copy"), e))?;
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

/// Copies `src` to `dst`, with a buffer sized to the file (`size`, as last
/// seen; one byte more to see its end in one read), at most 64 KiB.
fn copy_all(src: &mut File, dst: &mut File, size: u64) -> io::Result<()> {
    let len = usize::try_from(size.saturating_add(1)).unwrap_or(usize::MAX).min(1 << 16);
    let mut buf = vec![0u8; len];
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
