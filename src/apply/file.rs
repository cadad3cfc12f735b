//! File content: written to a locked temporary next to its target, checked
//! against its hash, staged, made durable (`fsync`, or `syncfs` where that is
//! as good) and published by a rename.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode};

use crate::types::{FileKind, Meta};

use super::*;

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
