//! Block deltas for large files: the receiver describes its current file as
//! fixed-size blocks (a 16-byte BLAKE3 prefix each), the sender sends only
//! the blocks that differ, and the receiver rebuilds the new file from its own
//! blocks plus the literals. The result is verified against the full BLAKE3
//! of the new content before it may become visible (`apply::FileWriter`).
//!
//! Fixed blocks suit what csync moves (config files, bundles, images edited
//! in place); an insertion that shifts everything degrades to a full copy,
//! never to a wrong result. Memory is O(block) on the sender (at most
//! [`MAX_BLOCK`]) and O(1 MiB) on the receiver.
//!
//! Op stream (the payload of `Data` frames; each frame holds whole ops):
//! `0x01 u32 first u32 count` copy blocks from the receiver's file;
//! `0x02 u32 len bytes` literal bytes (a block larger than a frame goes as
//! several literal ops).
//!
//! Everything a peer says about a delta is checked before it is used: the
//! sender checks the signature ([`check_signature`]) and falls back to a
//! whole-file push when it is invalid; the receiver's [`Decoder`] refuses
//! copies outside its own file and output beyond the declared size. Offsets
//! are 64-bit throughout; block indices fit 32 bits because a signature holds
//! at most [`MAX_BLOCKS`] of them.

use std::io::{self, Read, Seek, SeekFrom, Write};

pub use crate::proto::MAX_BLOCKS;

/// Files at least this big go as a delta when the peer has an older version.
pub const DELTA_MIN: u64 = 4 << 20;

/// Largest op-stream chunk the encoder produces (fits a `Data` frame).
pub const CHUNK: usize = crate::proto::MAX_CHUNK;

/// Smallest block size accepted in a signature. [`block_size_for`] never
/// picks less than [`BASE_BLOCK`]; tiny blocks would only multiply the
/// per-block work and op overhead a peer can make the sender spend.
pub const MIN_BLOCK: u32 = 4 << 10;

/// The block size of files up to `TARGET_BLOCKS` × 64 KiB (≈ 3.2 GB), and
/// what an empty signature names.
pub const BASE_BLOCK: u32 = 64 << 10;

/// Largest block size either side accepts. The sender holds one block in
/// memory, so this is what a delta costs it per peer; with [`MAX_BLOCKS`]
/// blocks it bounds the largest file that can go as a delta
/// ([`MAX_DELTA_SIZE`]).
pub const MAX_BLOCK: u32 = 8 << 20;

/// Largest base file a signature can describe: [`MAX_BLOCKS`] blocks of
/// [`MAX_BLOCK`] bytes (≈ 469 GiB). Larger files are pushed whole.
pub const MAX_DELTA_SIZE: u64 = MAX_BLOCKS as u64 * MAX_BLOCK as u64;

/// Block count [`block_size_for`] aims below, with room under
/// [`MAX_BLOCKS`] for a file that grows between its `stat` and its signature.
const TARGET_BLOCKS: u64 = 50_000;

const OP_COPY: u8 = 1;
const OP_LITERAL: u8 = 2;

/// Block size for a file of `size` bytes, or `None` when the file is too large
/// for a signature (over [`MAX_DELTA_SIZE`]): then it goes whole.
///
/// 64 KiB, doubled until the file has at most 50,000 blocks, capped at
/// [`MAX_BLOCK`]. The bound on the block count (not, say, a square-root rule)
/// is what matters: the signature travels in one frame of at most
/// [`MAX_BLOCKS`] hashes. The receiver uses this function both for the
/// signature it sends and for the decoder of the delta that follows, always
/// on its own base file's size, so both sides agree on the block size.
pub fn block_size_for(size: u64) -> Option<u32> {
    let mut bs = u64::from(BASE_BLOCK);
    while size.div_ceil(bs) > TARGET_BLOCKS && bs < u64::from(MAX_BLOCK) {
        bs *= 2;
    }
    (size.div_ceil(bs) <= MAX_BLOCKS as u64).then_some(bs as u32)
}

/// Checks a peer's signature before the sender acts on it: the block size
/// within [`MIN_BLOCK`]..=[`MAX_BLOCK`], at most [`MAX_BLOCKS`] blocks, and
/// exactly as many blocks as `size` has at that block size.
///
/// # Errors
/// What is wrong, for the log; the caller pushes the whole file instead.
pub fn check_signature(block_size: u32, size: u64, blocks: usize) -> Result<(), String> {
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(format!("block size {block_size} outside {MIN_BLOCK}..={MAX_BLOCK}"));
    }
    if blocks > MAX_BLOCKS {
        return Err(format!("{blocks} blocks (at most {MAX_BLOCKS})"));
    }
    let want = size.div_ceil(u64::from(block_size));
    if blocks as u64 != want {
        return Err(format!(
            "{blocks} blocks for {size} bytes in blocks of {block_size} (expected {want})"
        ));
    }
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad delta: {what}"))
}

fn block_hash(b: &[u8]) -> [u8; 16] {
    blake3::hash(b).as_bytes()[..16].try_into().expect("16 bytes")
}

/// Reads up to `buf.len()` bytes, short only at end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The block signature of `r`: its size and one hash per block.
///
/// # Errors
/// When reading fails, when `block_size` is outside
/// [`MIN_BLOCK`]..=[`MAX_BLOCK`], or when `r` has more than [`MAX_BLOCKS`]
/// blocks (it grew since its size was taken; the caller then sends no
/// signature, and the file goes whole).
pub fn signature(r: &mut impl Read, block_size: u32) -> io::Result<(u64, Vec<[u8; 16]>)> {
    signature_at_most(r, block_size, MAX_BLOCKS)
}

/// [`signature`] with the block limit as a parameter (tests use a small one).
fn signature_at_most(
    r: &mut impl Read,
    block_size: u32,
    max_blocks: usize,
) -> io::Result<(u64, Vec<[u8; 16]>)> {
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(bad("block size out of range"));
    }
    let mut buf = vec![0u8; block_size as usize];
    let mut blocks = Vec::new();
    let mut size = 0u64;
    loop {
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            break;
        }
        if blocks.len() == max_blocks {
            return Err(bad("too many blocks for a signature"));
        }
        size += n as u64;
        blocks.push(block_hash(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    Ok((size, blocks))
}

/// The hash of every block of `f` at `block_size` (as [`signature`] makes
/// them), at most `max_blocks` of them, read with positioned reads (the
/// file's offset is left alone).
///
/// # Errors
/// When reading fails or `block_size` is out of range.
pub fn block_hashes(
    f: &std::fs::File,
    block_size: u32,
    max_blocks: usize,
) -> io::Result<Vec<[u8; 16]>> {
    use std::os::unix::fs::FileExt;
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(bad("block size out of range"));
    }
    let mut buf = vec![0u8; block_size as usize];
    let mut blocks = Vec::new();
    let mut at = 0u64;
    while blocks.len() < max_blocks {
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], at + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        blocks.push(block_hash(&buf[..n]));
        at += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(blocks)
}

/// Produces the op stream for the sender's file against the receiver's
/// signature, one chunk at a time.
pub struct Encoder<R> {
    src: R,
    theirs: Vec<[u8; 16]>,
    /// Index of the next block read from `src` (64-bit: `src` may have far
    /// more blocks than the signature).
    index: u64,
    /// The current block; `buf[lit_at..lit_end]` is literal still to send.
    buf: Vec<u8>,
    lit_at: usize,
    lit_end: usize,
    eof: bool,
    /// Bytes of literal data produced (what a delta saves is the rest).
    pub literal_bytes: u64,
    /// The hashes of the source's blocks, when known beforehand
    /// ([`Encoder::with_ours`]): a block whose hash matches the receiver's
    /// is then sent as a copy without being read.
    ours: Option<std::sync::Arc<Vec<[u8; 16]>>>,
    /// Blocks were skipped: the source must seek to `index` before reading.
    skipped: bool,
}

impl<R: Read + Seek> Encoder<R> {
    /// Starts encoding `src` against the receiver's signature
    /// `(block_size, size, theirs)`, checked first ([`check_signature`]), so
    /// that no peer can make the sender allocate or loop beyond its bounds.
    ///
    /// # Errors
    /// `InvalidData` when the signature is invalid.
    pub fn new(src: R, block_size: u32, size: u64, theirs: Vec<[u8; 16]>) -> io::Result<Self> {
        check_signature(block_size, size, theirs.len()).map_err(|e| bad(&e))?;
        Ok(Encoder {
            src,
            theirs,
            index: 0,
            buf: vec![0; block_size as usize],
            lit_at: 0,
            lit_end: 0,
            eof: false,
            literal_bytes: 0,
            ours: None,
            skipped: false,
        })
    }

    /// As [`Encoder::new`], with the hashes of the source's blocks at this
    /// block size computed beforehand ([`block_hashes`]; a sender pushing
    /// one file to several peers computes them once): only the blocks that
    /// differ from the receiver's are read. Should the source change after
    /// the hashes were taken, the result is wrong and fails the receiver's
    /// check of the whole file's hash, like any change during a transfer.
    ///
    /// # Errors
    /// `InvalidData` when the signature is invalid.
    pub fn with_ours(
        src: R,
        block_size: u32,
        size: u64,
        theirs: Vec<[u8; 16]>,
        ours: std::sync::Arc<Vec<[u8; 16]>>,
    ) -> io::Result<Self> {
        let mut e = Encoder::new(src, block_size, size, theirs)?;
        e.ours = Some(ours);
        // The source may not be at its start.
        e.skipped = true;
        Ok(e)
    }

    /// The next chunk of ops (at most [`CHUNK`] bytes, never empty), or
    /// `None` when the source is exhausted.
    ///
    /// # Errors
    /// When reading the source fails.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(64 * 1024);
        // A pending run of matching blocks, merged into one copy op.
        let mut run: Option<(u32, u32)> = None;
        loop {
            if self.lit_at < self.lit_end {
                if let Some((first, count)) = run.take() {
                    push_copy(&mut out, first, count);
                }
                // Each pass sends at least one byte: the chunk is flushed
                // only once it has no room for a literal header and a byte.
                let room = CHUNK.saturating_sub(out.len() + 5);
                if room == 0 {
                    break;
                }
                let take = room.min(self.lit_end - self.lit_at);
                out.push(OP_LITERAL);
                out.extend_from_slice(&(take as u32).to_be_bytes());
                out.extend_from_slice(&self.buf[self.lit_at..self.lit_at + take]);
                self.lit_at += take;
                self.literal_bytes += take as u64;
                continue;
            }
            // Room for two copy ops (a run broken by this block, and the
            // final one) and a literal header with a byte.
            if self.eof || out.len() + 9 + 9 + 6 > CHUNK {
                break;
            }
            if let Some(ours) = &self.ours {
                let known = usize::try_from(self.index)
                    .ok()
                    .and_then(|i| Some((ours.get(i)?, self.theirs.get(i)?)));
                if let Some((o, t)) = known
                    && o == t
                {
                    // Indices below `theirs.len()` fit a u32.
                    let i = self.index as u32;
                    self.index += 1;
                    self.skipped = true;
                    run = match run {
                        Some((first, count))
                            if u64::from(first) + u64::from(count) == u64::from(i) =>
                        {
                            Some((first, count + 1))
                        }
                        Some((first, count)) => {
                            push_copy(&mut out, first, count);
                            Some((i, 1))
                        }
                        None => Some((i, 1)),
                    };
                    continue;
                }
                if self.skipped {
                    self.src.seek(SeekFrom::Start(self.index * self.buf.len() as u64))?;
                    self.skipped = false;
                }
            }
            let n = read_full(&mut self.src, &mut self.buf)?;
            if n < self.buf.len() {
                self.eof = true;
            }
            if n == 0 {
                break;
            }
            let block = &self.buf[..n];
            let i = self.index;
            self.index += 1;
            // Indices below `theirs.len()` (at most MAX_BLOCKS) fit a u32.
            let same = usize::try_from(i)
                .ok()
                .and_then(|i| self.theirs.get(i))
                .is_some_and(|h| *h == block_hash(block));
            if same {
                let i = i as u32;
                run = match run {
                    Some((first, count)) if u64::from(first) + u64::from(count) == u64::from(i) => {
                        Some((first, count + 1))
                    }
                    Some((first, count)) => {
                        push_copy(&mut out, first, count);
                        Some((i, 1))
                    }
                    None => Some((i, 1)),
                };
            } else {
                self.lit_at = 0;
                self.lit_end = n;
            }
        }
        if let Some((first, count)) = run {
            push_copy(&mut out, first, count);
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

fn push_copy(out: &mut Vec<u8>, first: u32, count: u32) {
    out.push(OP_COPY);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
}

/// Rebuilds the new file from the receiver's old one and an op stream.
pub struct Decoder<B, W> {
    base: B,
    base_size: u64,
    base_blocks: u64,
    block_size: u64,
    /// The size the sender declared for the new file; never exceeded.
    declared: u64,
    written: u64,
    out: W,
    buf: Vec<u8>,
}

impl<B: Read + Seek, W: Write> Decoder<B, W> {
    /// Starts rebuilding into `out` a file of `declared_size` bytes, copying
    /// blocks of `block_size` from `base`.
    ///
    /// # Errors
    /// When the base's size cannot be read or `block_size` is outside
    /// [`MIN_BLOCK`]..=[`MAX_BLOCK`].
    pub fn new(mut base: B, block_size: u32, declared_size: u64, out: W) -> io::Result<Self> {
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
            return Err(bad("block size out of range"));
        }
        let block_size = u64::from(block_size);
        let base_size = base.seek(SeekFrom::End(0))?;
        Ok(Decoder {
            base,
            base_size,
            base_blocks: base_size.div_ceil(block_size),
            block_size,
            declared: declared_size,
            written: 0,
            out,
            buf: Vec::new(),
        })
    }

    /// Applies one chunk of ops. A malformed op, a copy outside the base
    /// file's blocks or output beyond the declared size is an error (a
    /// hostile peer can waste its own transfer, never read past the base nor
    /// make the receiver write more than it announced).
    ///
    /// # Errors
    /// On malformed ops or I/O failure.
    pub fn apply(&mut self, mut ops: &[u8]) -> io::Result<()> {
        while let Some((&op, rest)) = ops.split_first() {
            match op {
                OP_COPY if rest.len() >= 8 => {
                    let first = u64::from(u32::from_be_bytes(rest[..4].try_into().expect("4")));
                    let count = u64::from(u32::from_be_bytes(rest[4..8].try_into().expect("4")));
                    ops = &rest[8..];
                    // Both below 2^32 and block_size below 2^24: no overflow.
                    if count == 0 || first + count > self.base_blocks {
                        return Err(bad("copy beyond the base file"));
                    }
                    let start = first * self.block_size;
                    let end = ((first + count) * self.block_size).min(self.base_size);
                    self.reserve(end - start)?;
                    self.base.seek(SeekFrom::Start(start))?;
                    let mut left = end - start;
                    self.buf.resize(self.block_size.min(1 << 20) as usize, 0);
                    while left > 0 {
                        let want = left.min(self.buf.len() as u64) as usize;
                        let n = read_full(&mut self.base, &mut self.buf[..want])?;
                        if n == 0 {
                            return Err(bad("base file shrank"));
                        }
                        self.out.write_all(&self.buf[..n])?;
                        left -= n as u64;
                    }
                }
                OP_LITERAL if rest.len() >= 4 => {
                    let len = u32::from_be_bytes(rest[..4].try_into().expect("4")) as usize;
                    let rest = &rest[4..];
                    if rest.len() < len {
                        return Err(bad("literal longer than its chunk"));
                    }
                    self.reserve(len as u64)?;
                    self.out.write_all(&rest[..len])?;
                    ops = &rest[len..];
                }
                _ => return Err(bad("unknown or truncated op")),
            }
        }
        Ok(())
    }

    /// Counts `n` more output bytes, refusing to go past the declared size.
    fn reserve(&mut self, n: u64) -> io::Result<()> {
        if n > self.declared - self.written {
            return Err(bad("more data than the declared size"));
        }
        self.written += n;
        Ok(())
    }

    /// Bytes produced so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The output writer, in place.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The output writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn roundtrip(old: &[u8], new: &[u8], bs: u32) -> (Vec<u8>, u64) {
        let (size, sig) = signature(&mut Cursor::new(old), bs).unwrap();
        let mut enc = Encoder::new(Cursor::new(new), bs, size, sig).unwrap();
        let mut dec =
            Decoder::new(Cursor::new(old.to_vec()), bs, new.len() as u64, Vec::new()).unwrap();
        while let Some(chunk) = enc.next_chunk().unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            dec.apply(&chunk).unwrap();
        }
        assert_eq!(dec.written(), new.len() as u64);
        (dec.into_inner(), enc.literal_bytes)
    }

    /// The same round trip with the sender's block hashes known beforehand.
    fn roundtrip_with_ours(old: &[u8], new: &[u8], bs: u32) -> (Vec<u8>, u64) {
        use std::io::Write;
        let (size, sig) = signature(&mut Cursor::new(old), bs).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(new).unwrap();
        let ours = std::sync::Arc::new(block_hashes(&f, bs, MAX_BLOCKS).unwrap());
        assert_eq!(ours.len(), new.len().div_ceil(bs as usize));
        // The file's offset is at its end: the encoder must not rely on it.
        let mut enc = Encoder::with_ours(f, bs, size, sig, ours).unwrap();
        let mut dec =
            Decoder::new(Cursor::new(old.to_vec()), bs, new.len() as u64, Vec::new()).unwrap();
        while let Some(chunk) = enc.next_chunk().unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
            dec.apply(&chunk).unwrap();
        }
        (dec.into_inner(), enc.literal_bytes)
    }

    #[test]
    fn known_block_hashes_give_the_same_delta_without_reading_matching_blocks() {
        let bs = MIN_BLOCK;
        let b = bs as usize;
        let old = data(10 * b + 100, 1);
        let cases: Vec<Vec<u8>> = vec![
            old.clone(),
            // One block changed in the middle, one at the start.
            [&old[..4 * b], &data(b, 9)[..], &old[5 * b..]].concat(),
            [&data(b, 7)[..], &old[b..]].concat(),
            // Grown, shrunk (partial last block), and nothing in common.
            [&old[..], &data(3 * b + 5, 3)[..]].concat(),
            old[..6 * b + 17].to_vec(),
            data(4 * b, 200),
            Vec::new(),
        ];
        for new in cases {
            let (out, lit) = roundtrip_with_ours(&old, &new, bs);
            assert!(out == new, "content differs for a new file of {} bytes", new.len());
            assert_eq!(lit, roundtrip(&old, &new, bs).1, "same literals as the plain encoder");
        }
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
    }

    #[test]
    fn unchanged_sends_no_literals() {
        let a = data(1_000_000, 1);
        let (out, lit) = roundtrip(&a, &a, 4096);
        assert_eq!(out, a);
        assert_eq!(lit, 0);
    }

    #[test]
    fn in_place_change_sends_about_the_changed_blocks() {
        let a = data(2_000_000, 1);
        let mut b = a.clone();
        for x in &mut b[500_000..600_000] {
            *x ^= 0xff;
        }
        let (out, lit) = roundtrip(&a, &b, 4096);
        assert_eq!(out, b);
        assert!(lit <= 100_000 + 2 * 4096, "{lit}");
    }

    #[test]
    fn growth_shrink_and_empty_are_exact() {
        let a = data(100_000, 1);
        let mut longer = a.clone();
        longer.extend_from_slice(&data(12_345, 9));
        assert_eq!(roundtrip(&a, &longer, 4096).0, longer);
        assert_eq!(roundtrip(&a, &a[..50_001], 4096).0, &a[..50_001]);
        assert_eq!(roundtrip(&a, b"", 4096).0, b"");
        assert_eq!(roundtrip(b"", &a, 4096).0, a);
        let shifted: Vec<u8> = std::iter::once(7u8).chain(a.iter().copied()).collect();
        assert_eq!(roundtrip(&a, &shifted, 4096).0, shifted);
    }

    /// Blocks larger than a chunk (what files over ~26 GB use) go as several
    /// literal ops; the encoder used to return empty chunks for ever here.
    #[test]
    fn blocks_larger_than_a_chunk_terminate_and_are_exact() {
        let bs = 3 << 20;
        let a = data(7 << 20, 1);
        let mut b = a.clone();
        b[(3 << 20) + 5] ^= 1; // the second block differs
        b.extend_from_slice(&data(100_000, 3));
        let (out, lit) = roundtrip(&a, &b, bs);
        assert_eq!(out, b);
        assert_eq!(lit, (3 << 20) + ((1 << 20) + 100_000));
        let (out, _) = roundtrip(b"", &b, bs);
        assert_eq!(out, b);
    }

    #[test]
    fn hostile_signatures_are_refused_before_any_allocation() {
        // Huge, zero, too small block sizes.
        for bs in [u32::MAX, MAX_BLOCK + 1, 1 << 30, 0, 1, MIN_BLOCK - 1] {
            assert!(check_signature(bs, 1, 1).is_err(), "{bs}");
            assert!(Encoder::new(io::empty(), bs, 1, vec![[0; 16]]).is_err(), "{bs}");
        }
        // Too many blocks, even if consistent with the size.
        let n = MAX_BLOCKS + 1;
        let size = n as u64 * u64::from(MIN_BLOCK);
        assert!(check_signature(MIN_BLOCK, size, n).is_err());
        assert!(Encoder::new(io::empty(), MIN_BLOCK, size, vec![[0; 16]; n]).is_err());
        // A block count that does not match the size.
        assert!(check_signature(4096, 10_000, 2).is_err());
        assert!(check_signature(4096, 10_000, 4).is_err());
        assert!(check_signature(4096, 0, 1).is_err());
        assert!(check_signature(4096, u64::MAX, MAX_BLOCKS).is_err());
        // Valid ones pass.
        check_signature(4096, 10_000, 3).unwrap();
        check_signature(4096, 0, 0).unwrap();
        check_signature(MAX_BLOCK, MAX_DELTA_SIZE, MAX_BLOCKS).unwrap();
    }

    #[test]
    fn hostile_ops_are_refused() {
        let base = data(10_000, 1); // 3 blocks of 4096
        let dec = || Decoder::new(Cursor::new(base.clone()), 4096, 1 << 20, Vec::new()).unwrap();
        let copy = |first: u32, count: u32| {
            let mut v = vec![OP_COPY];
            v.extend_from_slice(&first.to_be_bytes());
            v.extend_from_slice(&count.to_be_bytes());
            v
        };
        assert!(dec().apply(&copy(9, 1)).is_err(), "block out of range");
        assert!(dec().apply(&copy(3, 1)).is_err(), "block just past the end");
        assert!(dec().apply(&copy(2, 2)).is_err(), "run past the end");
        assert!(dec().apply(&copy(1, 0)).is_err(), "empty copy");
        assert!(dec().apply(&copy(u32::MAX, u32::MAX)).is_err(), "overflowing range");
        dec().apply(&copy(0, 3)).unwrap();
        assert!(dec().apply(&[OP_LITERAL, 0, 0, 1, 0, 1]).is_err(), "literal past its chunk");
        assert!(dec().apply(&[OP_LITERAL, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(dec().apply(&[9]).is_err(), "unknown op");
        assert!(dec().apply(&[OP_COPY, 0]).is_err(), "truncated copy");
        assert!(dec().apply(&[OP_LITERAL, 0, 0]).is_err(), "truncated literal");
    }

    #[test]
    fn output_beyond_the_declared_size_is_refused() {
        let base = data(10_000, 1);
        let mut dec = Decoder::new(Cursor::new(base.clone()), 4096, 5000, Vec::new()).unwrap();
        // One block (4096) fits; a second copy would make 8192 > 5000.
        dec.apply(&[OP_COPY, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        assert!(dec.apply(&[OP_COPY, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        let mut dec = Decoder::new(Cursor::new(base.clone()), 4096, 3, Vec::new()).unwrap();
        dec.apply(&[OP_LITERAL, 0, 0, 0, 3, 1, 2, 3]).unwrap();
        assert!(dec.apply(&[OP_LITERAL, 0, 0, 0, 1, 4]).is_err());
        assert_eq!(dec.into_inner(), [1, 2, 3]);
        // Repeated copies of the whole base cannot grow the output either.
        let mut dec = Decoder::new(Cursor::new(base), 4096, 20_000, Vec::new()).unwrap();
        dec.apply(&[OP_COPY, 0, 0, 0, 0, 0, 0, 0, 3]).unwrap();
        dec.apply(&[OP_COPY, 0, 0, 0, 0, 0, 0, 0, 3]).unwrap();
        assert!(dec.apply(&[OP_COPY, 0, 0, 0, 0, 0, 0, 0, 3]).is_err());
    }

    #[test]
    fn decoder_refuses_block_sizes_out_of_range() {
        for bs in [0, 1, MIN_BLOCK - 1, MAX_BLOCK + 1, u32::MAX] {
            assert!(Decoder::new(Cursor::new(vec![0u8; 10]), bs, 10, Vec::new()).is_err());
        }
    }

    #[test]
    fn signature_refuses_too_many_blocks() {
        let a = data(5 * 4096, 1);
        assert!(signature_at_most(&mut Cursor::new(&a), 4096, 4).is_err());
        assert_eq!(signature_at_most(&mut Cursor::new(&a), 4096, 5).unwrap().1.len(), 5);
        assert!(signature(&mut Cursor::new(&a), MAX_BLOCK + 1).is_err());
    }

    /// The sizes a real file can have, up to far beyond what a delta can
    /// describe: the chosen block size is always one both sides accept and
    /// the block count fits one signature frame (no need to write 26 GB).
    #[test]
    fn block_sizes_are_bounded_for_very_large_files() {
        assert_eq!(block_size_for(0), Some(BASE_BLOCK));
        assert_eq!(block_size_for(1 << 20), Some(64 * 1024));
        assert_eq!(block_size_for(3_000_000_000), Some(64 * 1024));
        let mut sizes = vec![200u64 << 20, 3_276_800_001, 10 << 30, 26 << 30, 27 << 30, 100 << 30];
        sizes.extend([(400u64 << 30), MAX_DELTA_SIZE - 1, MAX_DELTA_SIZE]);
        for size in sizes {
            let bs = block_size_for(size).unwrap_or_else(|| panic!("{size}"));
            assert!((BASE_BLOCK..=MAX_BLOCK).contains(&bs) && bs.is_power_of_two(), "{size}");
            let blocks = size.div_ceil(u64::from(bs));
            assert!(blocks <= MAX_BLOCKS as u64, "{size}: {blocks}");
            check_signature(bs, size, blocks as usize).unwrap();
            // The whole signature fits one frame.
            let frame = crate::proto::encoded(&crate::proto::Msg::SigReply {
                id: 1,
                block_size: bs,
                size,
                blocks: vec![[0; 16]; blocks as usize],
            });
            assert!(frame.is_ok(), "{size}");
        }
        for size in [MAX_DELTA_SIZE + 1, 1 << 40, u64::MAX] {
            assert_eq!(block_size_for(size), None, "{size}");
        }
    }
}
