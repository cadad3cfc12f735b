//! Block deltas for large files: the receiver describes its current file as
//! fixed-size blocks (a 16-byte BLAKE3 prefix each), the sender sends only
//! the blocks that differ, and the receiver rebuilds the new file from its own
//! blocks plus the literals. The result is verified against the full BLAKE3
//! of the new content before it may become visible (`apply::FileWriter`).
//!
//! Fixed blocks suit what csync moves (config files, bundles, images edited
//! in place); an insertion that shifts everything degrades to a full copy,
//! never to a wrong result. Memory is O(block) on both sides.
//!
//! Op stream (the payload of `Data` frames; each frame holds whole ops):
//! `0x01 u32 first u32 count` copy blocks from the receiver's file;
//! `0x02 u32 len bytes` literal bytes.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Files at least this big go as a delta when the peer has an older version.
pub const DELTA_MIN: u64 = 4 << 20;

/// Largest op-stream chunk the encoder produces (fits a `Data` frame).
pub const CHUNK: usize = crate::proto::MAX_CHUNK;

const OP_COPY: u8 = 1;
const OP_LITERAL: u8 = 2;

/// Block size for a file of `size` bytes: 64 KiB, doubled until the block
/// list fits comfortably in one frame.
pub fn block_size_for(size: u64) -> u32 {
    let mut bs: u64 = 64 * 1024;
    while size / bs > 50_000 {
        bs *= 2;
    }
    bs as u32
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
/// When reading fails.
pub fn signature(r: &mut impl Read, block_size: u32) -> io::Result<(u64, Vec<[u8; 16]>)> {
    let mut buf = vec![0u8; block_size as usize];
    let mut blocks = Vec::new();
    let mut size = 0u64;
    loop {
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        blocks.push(block_hash(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    Ok((size, blocks))
}

/// Produces the op stream for the sender's file against the receiver's
/// signature, one chunk at a time.
pub struct Encoder<R> {
    src: R,
    block_size: usize,
    theirs: Vec<[u8; 16]>,
    index: u32,
    buf: Vec<u8>,
    done: bool,
    /// Bytes of literal data produced (what a delta saves is the rest).
    pub literal_bytes: u64,
    /// Full BLAKE3 of the source as read.
    hasher: blake3::Hasher,
}

impl<R: Read> Encoder<R> {
    /// Starts encoding `src` against `(block_size, theirs)`.
    pub fn new(src: R, block_size: u32, theirs: Vec<[u8; 16]>) -> Self {
        Encoder {
            src,
            block_size: block_size as usize,
            theirs,
            index: 0,
            buf: vec![0; block_size as usize],
            done: false,
            literal_bytes: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The next chunk of ops, or `None` when the source is exhausted.
    ///
    /// # Errors
    /// When reading the source fails.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(64 * 1024);
        // A pending run of matching blocks, merged into one copy op.
        let mut run: Option<(u32, u32)> = None;
        loop {
            if out.len() + 9 + self.block_size + 5 > CHUNK {
                break;
            }
            let n = read_full(&mut self.src, &mut self.buf)?;
            if n == 0 {
                self.done = true;
                break;
            }
            let block = &self.buf[..n];
            self.hasher.update(block);
            let i = self.index;
            self.index += 1;
            let same = self.theirs.get(i as usize).is_some_and(|h| *h == block_hash(block));
            if same {
                run = match run {
                    Some((first, count)) if first + count == i => Some((first, count + 1)),
                    Some((first, count)) => {
                        push_copy(&mut out, first, count);
                        Some((i, 1))
                    }
                    None => Some((i, 1)),
                };
            } else {
                if let Some((first, count)) = run.take() {
                    push_copy(&mut out, first, count);
                }
                out.push(OP_LITERAL);
                out.extend_from_slice(&(n as u32).to_be_bytes());
                out.extend_from_slice(block);
                self.literal_bytes += n as u64;
            }
            if n < self.block_size {
                self.done = true;
                break;
            }
        }
        if let Some((first, count)) = run {
            push_copy(&mut out, first, count);
        }
        if out.is_empty() && self.done { Ok(None) } else { Ok(Some(out)) }
    }

    /// BLAKE3 of everything read from the source so far (the whole file once
    /// `next_chunk` returned `None`).
    pub fn source_hash(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
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
    block_size: u64,
    out: W,
    buf: Vec<u8>,
}

impl<B: Read + Seek, W: Write> Decoder<B, W> {
    /// Starts rebuilding into `out`, copying blocks from `base`.
    ///
    /// # Errors
    /// When the base's size cannot be read.
    pub fn new(mut base: B, block_size: u32, out: W) -> io::Result<Self> {
        let base_size = base.seek(SeekFrom::End(0))?;
        Ok(Decoder { base, base_size, block_size: u64::from(block_size), out, buf: Vec::new() })
    }

    /// Applies one chunk of ops. A malformed or out-of-range op is an error
    /// (a hostile peer can waste its own transfer, never read past the base).
    ///
    /// # Errors
    /// On malformed ops or I/O failure.
    pub fn apply(&mut self, mut ops: &[u8]) -> io::Result<()> {
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad delta: {what}"));
        while let Some((&op, rest)) = ops.split_first() {
            match op {
                OP_COPY if rest.len() >= 8 => {
                    let first = u64::from(u32::from_be_bytes(rest[..4].try_into().expect("4")));
                    let count = u64::from(u32::from_be_bytes(rest[4..8].try_into().expect("4")));
                    ops = &rest[8..];
                    let start = first * self.block_size;
                    let end = ((first + count) * self.block_size).min(self.base_size);
                    if count == 0 || start >= self.base_size {
                        return Err(bad("copy beyond the base file"));
                    }
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
                    self.out.write_all(&rest[..len])?;
                    ops = &rest[len..];
                }
                _ => return Err(bad("unknown or truncated op")),
            }
        }
        Ok(())
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
        let (_, sig) = signature(&mut Cursor::new(old), bs).unwrap();
        let mut enc = Encoder::new(Cursor::new(new), bs, sig);
        let mut dec = Decoder::new(Cursor::new(old.to_vec()), bs, Vec::new()).unwrap();
        while let Some(chunk) = enc.next_chunk().unwrap() {
            assert!(chunk.len() <= CHUNK);
            dec.apply(&chunk).unwrap();
        }
        assert_eq!(enc.source_hash(), *blake3::hash(new).as_bytes());
        (dec.into_inner(), enc.literal_bytes)
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

    #[test]
    fn hostile_ops_are_refused() {
        let base = data(10_000, 1);
        let mut dec = Decoder::new(Cursor::new(base), 4096, Vec::new()).unwrap();
        assert!(dec.apply(&[OP_COPY, 0, 0, 0, 9, 0, 0, 0, 1]).is_err());
        assert!(dec.apply(&[OP_LITERAL, 0, 0, 1, 0, 1]).is_err());
        assert!(dec.apply(&[9]).is_err());
        assert!(dec.apply(&[OP_COPY, 0]).is_err());
    }

    #[test]
    fn block_sizes_keep_signatures_in_a_frame() {
        assert_eq!(block_size_for(1 << 20), 64 * 1024);
        for size in [200u64 << 20, 10 << 30, 1 << 40] {
            let bs = u64::from(block_size_for(size));
            assert!(size / bs <= 50_000, "{size}");
        }
    }
}
