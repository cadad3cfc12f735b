//! File content: written to a locked temporary next to its target, checked
//! against its hash, staged, made durable (`fsync`, or `syncfs` where that is
//! as good) and published by a rename.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode};
use rustix::io::Errno;

use crate::types::Meta;

use super::*;

/// Writes one regular file: created by [`begin_file`], filled through
/// [`std::io::Write`] (which also hashes the content), made visible by
/// [`FileWriter::commit`]. Dropped without commit, it removes its temporary
/// file and leaves the target untouched.
pub struct FileWriter {
    dir: Arc<OwnedFd>,
    name: Vec<u8>,
    tmp: Vec<u8>,
    rel: Vec<u8>,
    /// `None` once staged.
    file: Option<File>,
    hasher: blake3::Hasher,
    expected: [u8; 32],
    entry: Entry,
    opts: Options,
    parent_mtime: i64,
    done: bool,
    /// Bytes written, and up to where write-back was started.
    written: u64,
    kicked: u64,
}

/// Write-back of a large file's content is started every this many bytes
/// while it is still arriving, so the fsync at the batch's durability
/// point finds little left to write.
const KICK_EVERY: u64 = 8 << 20;

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
/// One-off: a batch uses [`Dirs::begin_file`].
pub fn begin_file(
    root: &Path,
    rel: &[u8],
    entry: &Entry,
    expected_hash: [u8; 32],
    opts: &Options,
) -> Result<FileWriter, Error> {
    Dirs::new().begin_file(root, rel, entry, expected_hash, opts, None)
}

impl Dirs {
    /// [`begin_file`] through the batch's directories. The parent gets
    /// `parent_mtime` (the sender's) when the file is published, else the
    /// mtime it had before the batch.
    ///
    /// # Errors
    /// As [`begin_file`].
    pub fn begin_file(
        &mut self,
        root: &Path,
        rel: &[u8],
        entry: &Entry,
        expected_hash: [u8; 32],
        opts: &Options,
        parent_mtime: Option<i64>,
    ) -> Result<FileWriter, Error> {
        check_rel(rel)?;
        if rel.is_empty() {
            return Err(bad(rel, "the root cannot be a file"));
        }
        let p = self.parent(root, rel)?;
        let parent_mtime = match parent_mtime {
            Some(t) => t,
            None => self.mtime_before(&p, rel)?,
        };
        let (tmp, fd) = locked_temp(&p.fd, p.name, rel)?;
        Ok(FileWriter {
            name: p.name.to_vec(),
            tmp,
            rel: rel.to_vec(),
            file: Some(File::from(fd)),
            hasher: blake3::Hasher::new(),
            expected: expected_hash,
            entry: entry.clone(),
            opts: *opts,
            parent_mtime,
            done: false,
            written: 0,
            kicked: 0,
            dir: p.fd,
        })
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("already staged"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        if let Some(len) = std::num::NonZeroU64::new(self.written - self.kicked)
            && len.get() >= KICK_EVERY
        {
            // Starts write-back of what came since the last time, without
            // waiting for it (what `sync_file_range(SYNC_FILE_RANGE_WRITE)`
            // does; Linux's `POSIX_FADV_DONTNEED` starts it the same way and
            // drops only pages already clean). The disk writes while the
            // network delivers the rest. Advice: a failure changes nothing.
            let _ = rfs::fadvise(&*file, self.kicked, Some(len), rfs::Advice::DontNeed);
            self.kicked = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), File::flush)
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
        let (meta, touched) = staged.publish()?;
        finish_dirs(vec![touched])?;
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
        // The replaced entry matters only for what is ignored: no lstat
        // otherwise.
        let old = if self.opts.uid || self.opts.gid || self.opts.mode {
            lstat_at(&*self.dir, &self.name, &rel)?
        } else {
            None
        };
        let file = self.file.as_ref().expect("present until staged");
        let cur = rfs::fstat(file).map_err(|e| io_err(what("fstat temporary for"), e))?;
        let want = wanted_owner(&self.entry, &self.opts, old.as_ref());
        chown_if_needed(&cur, want, &rel, |u, g| rfs::fchown(file, u, g))?;
        let mode = wanted_mode(&self.entry, &self.opts, old.as_ref(), 0o644);
        rfs::fchmod(file, Mode::from_raw_mode(mode)).map_err(|e| io_err(what("chmod"), e))?;
        rfs::futimens(file, &mtime_only(self.entry.mtime_ns))
            .map_err(|e| io_err(what("set mtime of"), e))?;
        self.done = true;
        // The descriptors move on to the staged file (no dup).
        Ok(Staged {
            dir: self.dir.clone(),
            file: self.file.take().expect("present until staged"),
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
    dir: Arc<OwnedFd>,
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

    /// The directory the file is published in (on the file's file system).
    pub fn dir(&self) -> &Arc<OwnedFd> {
        &self.dir
    }

    /// Renames the (synced) file over its target (an empty directory there
    /// is removed first) and returns the final `Meta` and the directory with
    /// the mtime it must get: [`finish_dirs`] sets that and makes the
    /// directory durable (once per directory for a whole batch) before the
    /// file may be reported as durably applied.
    pub fn publish(mut self) -> Result<(Meta, Touched), Error> {
        let rel = self.rel.clone();
        let what = |op: &str| format!("{op} {}", show(&rel));
        let dir = &*self.dir;
        match rfs::renameat(dir, &self.tmp, dir, &self.name) {
            Ok(()) => {}
            // A directory there (no lstat before every rename for this rare
            // case): an empty one is replaced.
            Err(Errno::ISDIR) => {
                rmdir_for_replace(dir, &self.name, &rel)?;
                rfs::renameat(dir, &self.tmp, dir, &self.name)
                    .map_err(|e| io_err(what("rename to"), e))?;
            }
            Err(e) => return Err(io_err(what("rename to"), e)),
        }
        self.published = true;
        let st = rfs::fstat(&self.file).map_err(|e| io_err(what("fstat"), e))?;
        let mut meta = Meta::from_stat(&st);
        meta.hash = Some(self.hash);
        Ok((meta, Touched { dir: self.dir.clone(), mtime: Some(self.parent_mtime) }))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            let _ = rfs::unlinkat(&*self.dir, &self.tmp, AtFlags::empty());
            restore_mtime(&self.dir, self.parent_mtime);
        }
    }
}

/// A directory an applied change touched: it gets `mtime` (the sender's,
/// or the one it had before) and is made durable by [`finish_dirs`].
#[derive(Debug)]
pub struct Touched {
    /// The directory.
    pub dir: Arc<OwnedFd>,
    /// The mtime it must have once the batch is done.
    pub mtime: Option<i64>,
}

/// Gives each touched directory its mtime (once, the last one wanted:
/// the parent's mtime is set once per directory, not once per entry), then
/// makes each durable once (fsync, or one `syncfs` per file system for many
/// directories). The same directory may come many times from one batch.
///
/// # Errors
/// The first fsync that fails.
pub fn finish_dirs(touched: Vec<Touched>) -> Result<(), Error> {
    // Mostly the very same descriptor (the batch's directories are kept):
    // by pointer first, then by inode for copies opened apart.
    let mut by_ptr: Vec<Touched> = Vec::new();
    let mut at: std::collections::HashMap<*const OwnedFd, usize> = Default::default();
    for t in touched {
        match at.get(&Arc::as_ptr(&t.dir)) {
            Some(&i) => {
                if t.mtime.is_some() {
                    by_ptr[i].mtime = t.mtime;
                }
            }
            None => {
                at.insert(Arc::as_ptr(&t.dir), by_ptr.len());
                by_ptr.push(t);
            }
        }
    }
    let mut seen: std::collections::HashMap<(u64, u64), usize> = Default::default();
    let mut unique: Vec<(u64, Touched)> = Vec::new();
    for t in by_ptr {
        let st = rfs::fstat(&*t.dir).map_err(|e| io_err("fstat directory", e))?;
        match seen.get(&(st.st_dev, st.st_ino)) {
            Some(&i) => {
                if t.mtime.is_some() {
                    unique[i].1.mtime = t.mtime;
                }
            }
            None => {
                seen.insert((st.st_dev, st.st_ino), unique.len());
                unique.push((st.st_dev, t));
            }
        }
    }
    for (_, t) in &unique {
        if let Some(m) = t.mtime {
            restore_mtime(&t.dir, m);
        }
    }
    if unique.len() > SYNCFS_DIRS && unique.iter().all(|(_, t)| syncfs_is_reliable(&*t.dir)) {
        // Many directories: one syncfs per file system instead of a cache
        // flush per directory.
        let mut devs = std::collections::HashSet::new();
        for (dev, t) in &unique {
            if devs.insert(*dev) {
                rfs::syncfs(&*t.dir).map_err(|e| io_err("syncfs", e))?;
            }
        }
        return Ok(());
    }
    for (_, t) in unique {
        rfs::fsync(&*t.dir).map_err(|e| io_err("fsync directory", e))?;
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
            let _ = rfs::unlinkat(&*self.dir, &self.tmp, AtFlags::empty());
            restore_mtime(&self.dir, self.parent_mtime);
        }
    }
}
