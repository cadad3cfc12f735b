//! Reading what a walk found: the metadata csync tracks, content hashes,
//! and opening a file for reading only if it is still what was seen (no
//! symlink followed on the way).

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::fs::{self as rfs, OFlags};

use crate::types::{FileKind, Meta};

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
/// The buffer is the thread's, kept between calls: a check hashes thousands
/// of small files, and a fresh zeroed 64 KiB per file was most of the cost
/// of hashing one of 4 KiB.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_reader(f: &mut impl Read) -> io::Result<[u8; 32]> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| {
        // A nested call (none today) would find the buffer taken: it gets
        // its own instead of failing.
        let mut own = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let buf = match guard.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut own,
        };
        if buf.len() < HASH_CHUNK {
            buf.resize(HASH_CHUNK, 0);
        }
        let mut h = blake3::Hasher::new();
        loop {
            let n = match f.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
        }
        Ok(*h.finalize().as_bytes())
    })
}

/// Read size of [`hash_reader`].
const HASH_CHUNK: usize = 64 * 1024;

/// Files at least this large are hashed in parallel pieces by [`hash_file`].
const PARALLEL_ABOVE: u64 = 32 << 20;

/// BLAKE3 of a file just opened (read from its start), like [`hash_reader`],
/// but a file the walk saw `size` bytes long, if that is large, is hashed as
/// several BLAKE3 subtrees read in parallel (`pread`, one thread each), then
/// joined: the same hash, in about half the time on two cores. A new 200 MiB
/// file was hashed by one core while the other idled before the push could
/// start.
///
/// A file whose length is no longer `size` is hashed again from the start,
/// in one pass, exactly as [`hash_reader`] would. Small files cost nothing
/// more than [`hash_reader`]: no `fstat`, no seek.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_file(f: &mut std::fs::File, size: u64) -> io::Result<[u8; 32]> {
    // Asked only for a large file: `available_parallelism` reads the
    // cgroup's CPU quota from /proc and /sys on every call (a third of a
    // 10,000-file check's CPU when it was asked for every file).
    if size >= PARALLEL_ABOVE {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4) as u64;
        let most = size.div_ceil(2 * threads).max(4 << 20);
        if threads > 1
            && let Some(h) = parallel_hash(f, size, threads, most)?
        {
            return Ok(h);
        }
        io::Seek::seek(f, io::SeekFrom::Start(0))?;
    }
    hash_reader(f)
}

/// The parallel pass of [`hash_file`], on `threads` threads, in pieces of at
/// most `most` bytes (less than `len`, at least a BLAKE3 chunk); `None` when
/// the file's length moved.
fn parallel_hash(
    f: &std::fs::File,
    len: u64,
    threads: u64,
    most: u64,
) -> io::Result<Option<[u8; 32]>> {
    use blake3::hazmat::{self, HasherExt, Mode};
    use std::os::unix::fs::FileExt;

    debug_assert!(most < len && most >= blake3::CHUNK_LEN as u64);
    // The pieces are subtrees of BLAKE3's tree (its left subtrees hold a
    // power of two of chunks), small enough to share out evenly.
    let mut pieces = Vec::new();
    split(0, len, most, &mut pieces);
    let piece_cv = |&(at, n): &(u64, u64)| -> io::Result<Option<hazmat::ChainingValue>> {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(at);
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut done = 0;
        while done < n {
            let want = (n - done).min(HASH_CHUNK as u64) as usize;
            let got = match f.read_at(&mut buf[..want], at + done) {
                Ok(0) => return Ok(None),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..got]);
            done += got as u64;
        }
        Ok(Some(h.finalize_non_root()))
    };
    let per = pieces.len().div_ceil(threads as usize);
    let cvs: Vec<io::Result<Option<hazmat::ChainingValue>>> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(piece_cv).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("hash thread panicked")).collect()
    });
    let mut leaves = Vec::with_capacity(cvs.len());
    for cv in cvs {
        match cv? {
            Some(cv) => leaves.push(cv),
            None => return Ok(None),
        }
    }
    // Grown since: one pass from the start sees what is there now.
    if f.read_at(&mut [0u8; 1], len)? != 0 {
        return Ok(None);
    }
    let mut leaves = leaves.into_iter();
    let (left, right) = join(0, len, most, &mut leaves);
    Ok(Some(*hazmat::merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()))
}

/// Splits the subtree `[at, at + len)` into pieces of at most `most` bytes,
/// along BLAKE3's own tree.
fn split(at: u64, len: u64, most: u64, out: &mut Vec<(u64, u64)>) {
    if len <= most {
        out.push((at, len));
    } else {
        let left = blake3::hazmat::left_subtree_len(len);
        split(at, left, most, out);
        split(at + left, len - left, most, out);
    }
}

/// The chaining values of the two halves of the subtree `[at, at + len)`
/// (larger than `most`), from the pieces' values in [`split`]'s order.
fn join(
    at: u64,
    len: u64,
    most: u64,
    leaves: &mut impl Iterator<Item = blake3::hazmat::ChainingValue>,
) -> (blake3::hazmat::ChainingValue, blake3::hazmat::ChainingValue) {
    let left = blake3::hazmat::left_subtree_len(len);
    let mut side = |at: u64, len: u64| {
        if len <= most {
            leaves.next().expect("one value per piece")
        } else {
            let (l, r) = join(at, len, most, leaves);
            blake3::hazmat::merge_subtrees_non_root(&l, &r, blake3::hazmat::Mode::Hash)
        }
    };
    let l = side(at, left);
    let r = side(at + left, len - left);
    (l, r)
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
/// The directory opened for the last file is kept by the calling thread
/// and reused for the next file in the same directory (see [`Parent`]):
/// callers open files in path order, so one confined walk serves a whole
/// directory instead of one walk per file.
///
/// # Errors
/// `NotFound` when it vanished; another error when it is now a symlink, a
/// directory, a fifo or a different file (a per-path message: skip it this
/// run), or cannot be opened.
pub fn open_checked(root: &Path, rel: &[u8], expect: Expected) -> io::Result<File> {
    if rel.is_empty() {
        let (dir, name) = open_parent_below(root, rel)?;
        return open_in(&dir, name, expect);
    }
    let (dirs, name) = split_rel(rel);
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "unclean path"));
    }
    let cached = PARENT.with(|p| {
        let p = p.try_borrow().ok()?;
        let c = p.as_ref().filter(|c| c.serves(root, dirs))?;
        Some(open_in(&c.fd, name, expect))
    });
    // Whatever failed in the kept directory is tried once more through a
    // fresh walk: the path may name another directory by now.
    if let Some(Ok(f)) = cached {
        return Ok(f);
    }
    let (dir, name) = open_parent_below(root, rel)?;
    let f = open_in(&dir, name, expect);
    PARENT.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            *p = Some(Parent {
                root: root.to_path_buf(),
                dirs: dirs.to_vec(),
                fd: dir,
                opened: Instant::now(),
            });
        }
    });
    f
}

/// The directory the calling thread opened last for [`open_checked`].
///
/// Why reusing it is as safe as walking again: the descriptor was reached
/// from the include root one `O_NOFOLLOW` component at a time, so it is a
/// real directory that was below the root then. Replacing that directory
/// (or one above it) by a symlink afterwards changes what the *path* names,
/// not what the descriptor refers to: the next file is opened in the same
/// directory inode, again with `O_NOFOLLOW`, and read only if it is the
/// inode the check saw. A directory moved elsewhere meanwhile could only
/// yield that same checked inode, which a walk a moment earlier would have
/// read too. A failure in it is retried through a fresh walk.
///
/// Bounds: it is reused for [`PARENT_REUSE`] after it was opened, then
/// walked to again; it is replaced by the next directory, and closed when
/// the thread ends (the check's hash threads and the push's session threads
/// end with their work).
struct Parent {
    root: PathBuf,
    dirs: Vec<u8>,
    fd: OwnedFd,
    opened: Instant,
}

/// How long a kept directory is reused before it is walked to again.
const PARENT_REUSE: Duration = Duration::from_secs(1);

impl Parent {
    fn serves(&self, root: &Path, dirs: &[u8]) -> bool {
        self.dirs == dirs && self.root == root && self.opened.elapsed() < PARENT_REUSE
    }
}

thread_local! {
    static PARENT: std::cell::RefCell<Option<Parent>> = const { std::cell::RefCell::new(None) };
}

/// `rel` without a leading `/`, split into its directories and last component.
fn split_rel(rel: &[u8]) -> (&[u8], &[u8]) {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

/// Opens `name` in `dir` without following a symlink, only if it is a
/// regular file with the expected inode.
fn open_in(dir: &OwnedFd, name: &[u8], expect: Expected) -> io::Result<File> {
    // O_NONBLOCK: should a fifo have been swapped in, do not hang on it (the
    // type check below then refuses it). O_NOCTTY: nor adopt a terminal.
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, rfs::Mode::empty()) {
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
pub(super) fn in_trusted_parent(path: &Path) -> io::Result<(OwnedFd, &[u8])> {
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
pub(super) fn open_parent_below<'a>(
    root: &'a Path,
    rel: &'a [u8],
) -> io::Result<(OwnedFd, &'a [u8])> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let (dir, name): (OwnedFd, &[u8]) = if rel.is_empty() {
        in_trusted_parent(root)?
    } else {
        let (dirs, name) = split_rel(rel);
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

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn pieces_joined_along_the_tree_give_blake3s_hash() {
        let data: Vec<u8> =
            (0..3_200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [1025, 2048, 2049, 5000, 65_536, 1_048_577, 3_200_000] {
            for most in [1024, 4096, 10_000, 1 << 20] {
                if most >= len {
                    continue;
                }
                let f = file_of(&data[..len as usize]);
                for threads in [2, 3] {
                    let got = parallel_hash(&f, len, threads, most).unwrap();
                    assert_eq!(
                        got,
                        Some(*blake3::hash(&data[..len as usize]).as_bytes()),
                        "len {len} most {most} threads {threads}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_file_longer_or_shorter_than_its_length_is_not_hashed_in_pieces() {
        let f = file_of(&[7u8; 10_000]);
        assert_eq!(parallel_hash(&f, 9_000, 2, 2048).unwrap(), None, "grew");
        assert_eq!(parallel_hash(&f, 12_000, 2, 2048).unwrap(), None, "shrank");
        let mut f = file_of(&[7u8; 10_000]);
        io::Seek::seek(&mut f, io::SeekFrom::Start(0)).unwrap();
        assert_eq!(hash_file(&mut f, 10_000).unwrap(), *blake3::hash(&[7u8; 10_000]).as_bytes());
    }
}
