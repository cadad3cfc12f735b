//! Binary encoding of [`Msg`]: big-endian integers, length-prefixed strings.
//!
//! Decoding distinguishes "need more bytes" (`Ok(None)`) from "this peer is
//! broken or hostile" (`Err`): the caller reads more in the first case and
//! drops the connection in the second. No input makes it panic or allocate
//! more than the frame it was given.

use super::msg::{CONTENT_NEEDED, Content, ErrorCode, GroupProof, Msg, Outcome, WireEntry};
use super::{MAGIC, MAX_BLOCKS, MAX_CHUNK, MAX_FRAME, MAX_GROUPS, MAX_MESSAGE, MAX_NAME, MAX_PATH};

/// Why bytes from a peer are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix exceeds [`MAX_FRAME`] (checked before reading it).
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// An empty frame (no type byte).
    #[error("empty frame")]
    Empty,
    /// A type byte this version does not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload does not parse as the type says.
    #[error("malformed {what}")]
    Malformed {
        /// Which part.
        what: &'static str,
    },
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame would exceed [`MAX_FRAME`].
    #[error("message of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    /// A field exceeds its limit (name, path, list length).
    #[error("{0} too long")]
    FieldTooLong(&'static str),
}

/// Appends `msg` as one frame to `out`.
///
/// # Errors
/// When a field or the whole frame exceeds its limit; `out` is then unchanged.
pub fn encode(msg: &Msg, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(msg.type_byte());
    let r = encode_body(msg, out);
    if let Err(e) = r {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(EncodeError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// `msg` as a fresh frame.
///
/// # Errors
/// As [`encode`].
pub fn encoded(msg: &Msg) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::new();
    encode(msg, &mut v)?;
    Ok(v)
}

fn encode_body(msg: &Msg, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match msg {
        Msg::Hello { min_version, max_version, node, capabilities, groups } => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&min_version.to_be_bytes());
            out.extend_from_slice(&max_version.to_be_bytes());
            put_str(out, node, MAX_NAME, "node name")?;
            out.extend_from_slice(&capabilities.to_be_bytes());
            put_proofs(out, groups)?;
        }
        Msg::Welcome { version, node, capabilities, groups, refused } => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&version.to_be_bytes());
            put_str(out, node, MAX_NAME, "node name")?;
            out.extend_from_slice(&capabilities.to_be_bytes());
            put_proofs(out, groups)?;
            if refused.len() > MAX_GROUPS {
                return Err(EncodeError::FieldTooLong("refused group list"));
            }
            out.extend_from_slice(&(refused.len() as u16).to_be_bytes());
            for (g, code) in refused {
                put_str(out, g, MAX_NAME, "group name")?;
                out.extend_from_slice(&(*code as u16).to_be_bytes());
            }
        }
        Msg::Error { code, message } => {
            out.extend_from_slice(&(*code as u16).to_be_bytes());
            let m = truncate_utf8(message, MAX_MESSAGE);
            put_str(out, m, MAX_MESSAGE, "message")?;
        }
        Msg::Ping { id } => out.extend_from_slice(&id.to_be_bytes()),
        Msg::Pong { id, time_ns } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&time_ns.to_be_bytes());
        }
        Msg::Data { stream, bytes } => {
            if bytes.len() > MAX_CHUNK {
                return Err(EncodeError::FieldTooLong("data chunk"));
            }
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        Msg::DataEnd { stream, hash } => {
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(hash);
        }
        Msg::Push { id, group, path, entry, base, force, content, parent_mtime } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_str(out, group, MAX_NAME, "group name")?;
            put_path(out, path)?;
            put_entry(out, entry)?;
            put_opt_hash(out, base);
            out.push(u8::from(*force));
            out.push(*content as u8);
            put_opt_i64(out, *parent_mtime);
        }
        Msg::Delete { id, group, path, base, force, parent_mtime } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_str(out, group, MAX_NAME, "group name")?;
            put_path(out, path)?;
            put_opt_hash(out, base);
            out.push(u8::from(*force));
            put_opt_i64(out, *parent_mtime);
        }
        Msg::Sig { id, group, path } | Msg::Fetch { id, group, path } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_str(out, group, MAX_NAME, "group name")?;
            put_path(out, path)?;
        }
        Msg::SigReply { id, block_size, size, blocks } => {
            if blocks.len() > MAX_BLOCKS {
                return Err(EncodeError::FieldTooLong("block list"));
            }
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&block_size.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&(blocks.len() as u32).to_be_bytes());
            for b in blocks {
                out.extend_from_slice(b);
            }
        }
        Msg::List { id, group } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_str(out, group, MAX_NAME, "group name")?;
        }
        Msg::ListEntry { id, path, entry } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_path(out, path)?;
            put_entry(out, entry)?;
        }
        Msg::ListEnd { id } => out.extend_from_slice(&id.to_be_bytes()),
        Msg::Ack { id, outcome } => {
            out.extend_from_slice(&id.to_be_bytes());
            match outcome {
                Outcome::Applied => out.push(0),
                Outcome::InSync => out.push(1),
                Outcome::Conflict(cur) => {
                    out.push(2);
                    match cur {
                        Some(e) => {
                            out.push(1);
                            put_entry(out, e)?;
                        }
                        None => out.push(0),
                    }
                }
                Outcome::ParentMissing => out.push(3),
                Outcome::NotEmpty => out.push(4),
                Outcome::ContentNeeded => {
                    out.push(5);
                    out.extend_from_slice(&(ErrorCode::Protocol as u16).to_be_bytes());
                    put_str(out, CONTENT_NEEDED, MAX_MESSAGE, "message")?;
                }
                Outcome::Failed { code, message } => {
                    out.push(5);
                    out.extend_from_slice(&(*code as u16).to_be_bytes());
                    put_str(out, truncate_utf8(message, MAX_MESSAGE), MAX_MESSAGE, "message")?;
                }
            }
        }
        Msg::Bye | Msg::ByeAck | Msg::Working => {}
        Msg::ActionResult { group, command, paths, ok, status, logfile } => {
            put_str(out, group, MAX_NAME, "group name")?;
            put_str(out, truncate_utf8(command, MAX_MESSAGE), MAX_MESSAGE, "command")?;
            out.extend_from_slice(&paths.to_be_bytes());
            out.push(u8::from(*ok));
            put_str(out, truncate_utf8(status, MAX_MESSAGE), MAX_MESSAGE, "status")?;
            match logfile {
                Some(l) => {
                    out.push(1);
                    put_path(out, l)?;
                }
                None => out.push(0),
            }
        }
        Msg::Yield { group, path, rule } => {
            put_str(out, group, MAX_NAME, "group name")?;
            put_path(out, path)?;
            put_str(out, rule, MAX_NAME, "rule")?;
        }
    }
    Ok(())
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize, what: &'static str) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError::FieldTooLong(what));
    }
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_path(out: &mut Vec<u8>, p: &[u8]) -> Result<(), EncodeError> {
    if p.len() > MAX_PATH {
        return Err(EncodeError::FieldTooLong("path"));
    }
    out.extend_from_slice(&(p.len() as u16).to_be_bytes());
    out.extend_from_slice(p);
    Ok(())
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.push(0),
    }
}

fn put_opt_hash(out: &mut Vec<u8>, h: &Option<[u8; 32]>) {
    match h {
        Some(h) => {
            out.push(1);
            out.extend_from_slice(h);
        }
        None => out.push(0),
    }
}

fn put_entry(out: &mut Vec<u8>, e: &WireEntry) -> Result<(), EncodeError> {
    out.push(e.kind);
    out.extend_from_slice(&e.mode.to_be_bytes());
    out.extend_from_slice(&e.uid.to_be_bytes());
    out.extend_from_slice(&e.gid.to_be_bytes());
    out.extend_from_slice(&e.size.to_be_bytes());
    out.extend_from_slice(&e.mtime_ns.to_be_bytes());
    out.extend_from_slice(&e.rdev.to_be_bytes());
    match &e.target {
        Some(t) => {
            out.push(1);
            put_path(out, t)?;
        }
        None => out.push(0),
    }
    put_opt_hash(out, &e.hash);
    match &e.origin {
        Some(o) => {
            out.push(1);
            put_str(out, o, MAX_NAME, "origin")?;
        }
        None => out.push(0),
    }
    Ok(())
}

fn put_proofs(out: &mut Vec<u8>, groups: &[GroupProof]) -> Result<(), EncodeError> {
    if groups.len() > MAX_GROUPS {
        return Err(EncodeError::FieldTooLong("group list"));
    }
    out.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    for p in groups {
        put_str(out, &p.group, MAX_NAME, "group name")?;
        out.extend_from_slice(&p.mac);
    }
    Ok(())
}

/// Decodes one frame from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, and
/// `Ok(Some((msg, consumed)))` otherwise.
///
/// # Errors
/// When the frame is too large, of an unknown type, or malformed. The length
/// is checked before anything is buffered, so a hostile peer announcing a
/// huge frame costs nothing.
pub fn decode(buf: &[u8]) -> Result<Option<(Msg, usize)>, DecodeError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let mut r = Reader { buf: &body[1..] };
    let msg = match body[0] {
        0x01 => {
            r.magic()?;
            Msg::Hello {
                min_version: r.u16("version")?,
                max_version: r.u16("version")?,
                node: r.str(MAX_NAME, "node name")?,
                capabilities: r.u64("capabilities")?,
                groups: r.proofs()?,
            }
        }
        0x02 => {
            r.magic()?;
            let version = r.u16("version")?;
            let node = r.str(MAX_NAME, "node name")?;
            let capabilities = r.u64("capabilities")?;
            let groups = r.proofs()?;
            let n = r.u16("refused count")? as usize;
            if n > MAX_GROUPS {
                return Err(DecodeError::Malformed { what: "refused count" });
            }
            let mut refused = Vec::with_capacity(n);
            for _ in 0..n {
                let g = r.str(MAX_NAME, "group name")?;
                refused.push((g, r.code()?));
            }
            Msg::Welcome { version, node, capabilities, groups, refused }
        }
        0x03 => Msg::Error { code: r.code()?, message: r.str(MAX_MESSAGE, "message")? },
        0x04 => Msg::Ping { id: r.u32("id")? },
        0x05 => Msg::Pong { id: r.u32("id")?, time_ns: r.u64("time")? as i64 },
        0x06 => Msg::Bye,
        0x07 => Msg::ByeAck,
        0x08 => Msg::Working,
        0x10 => {
            let stream = r.u32("stream")?;
            let n = r.u32("chunk length")? as usize;
            if n > MAX_CHUNK {
                return Err(DecodeError::Malformed { what: "chunk length" });
            }
            Msg::Data { stream, bytes: r.take(n, "chunk")?.to_vec() }
        }
        0x11 => Msg::DataEnd {
            stream: r.u32("stream")?,
            hash: r.take(32, "hash")?.try_into().expect("32 bytes"),
        },
        0x20 => Msg::Push {
            id: r.u32("id")?,
            group: r.str(MAX_NAME, "group name")?,
            path: r.path()?,
            entry: r.entry()?,
            base: r.opt_hash()?,
            force: r.flag("force")?,
            content: match r.u8("content")? {
                0 => Content::None,
                1 => Content::Whole,
                2 => Content::Delta,
                _ => return Err(DecodeError::Malformed { what: "content" }),
            },
            parent_mtime: r.opt_i64()?,
        },
        0x21 => Msg::Delete {
            id: r.u32("id")?,
            group: r.str(MAX_NAME, "group name")?,
            path: r.path()?,
            base: r.opt_hash()?,
            force: r.flag("force")?,
            parent_mtime: r.opt_i64()?,
        },
        0x22 => {
            Msg::Sig { id: r.u32("id")?, group: r.str(MAX_NAME, "group name")?, path: r.path()? }
        }
        0x23 => {
            let id = r.u32("id")?;
            let block_size = r.u32("block size")?;
            let size = r.u64("size")?;
            let n = r.u32("block count")? as usize;
            if n > MAX_BLOCKS {
                return Err(DecodeError::Malformed { what: "block count" });
            }
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                blocks.push(r.take(16, "block hash")?.try_into().expect("16 bytes"));
            }
            Msg::SigReply { id, block_size, size, blocks }
        }
        0x24 => Msg::List { id: r.u32("id")?, group: r.str(MAX_NAME, "group name")? },
        0x25 => Msg::ListEntry { id: r.u32("id")?, path: r.path()?, entry: r.entry()? },
        0x26 => Msg::ListEnd { id: r.u32("id")? },
        0x27 => {
            Msg::Fetch { id: r.u32("id")?, group: r.str(MAX_NAME, "group name")?, path: r.path()? }
        }
        0x28 => {
            let id = r.u32("id")?;
            let outcome = match r.u8("outcome")? {
                0 => Outcome::Applied,
                1 => Outcome::InSync,
                2 => Outcome::Conflict(if r.flag("entry flag")? { Some(r.entry()?) } else { None }),
                3 => Outcome::ParentMissing,
                4 => Outcome::NotEmpty,
                5 => match (r.code()?, r.str(MAX_MESSAGE, "message")?) {
                    (ErrorCode::Protocol, m) if m == CONTENT_NEEDED => Outcome::ContentNeeded,
                    (code, message) => Outcome::Failed { code, message },
                },
                _ => return Err(DecodeError::Malformed { what: "outcome" }),
            };
            Msg::Ack { id, outcome }
        }
        0x29 => Msg::ActionResult {
            group: r.str(MAX_NAME, "group name")?,
            command: r.str(MAX_MESSAGE, "command")?,
            paths: r.u32("path count")?,
            ok: r.flag("ok")?,
            status: r.str(MAX_MESSAGE, "status")?,
            // Absent in frames from builds before the field: no logfile known.
            logfile: if r.buf.is_empty() || !r.flag("logfile flag")? {
                None
            } else {
                Some(r.path()?)
            },
        },
        0x2a => Msg::Yield {
            group: r.str(MAX_NAME, "group name")?,
            path: r.path()?,
            rule: r.str(MAX_NAME, "rule")?,
        },
        t => return Err(DecodeError::UnknownType(t)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Malformed { what: "trailing bytes" });
    }
    Ok(Some((msg, 4 + len)))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed { what });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed { what }),
        }
    }

    fn path(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u16("path")? as usize;
        if n > MAX_PATH {
            return Err(DecodeError::Malformed { what: "path" });
        }
        Ok(self.take(n, "path")?.to_vec())
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        Ok(if self.flag("time flag")? { Some(self.u64("time")? as i64) } else { None })
    }

    fn opt_hash(&mut self) -> Result<Option<[u8; 32]>, DecodeError> {
        Ok(if self.flag("hash flag")? {
            Some(self.take(32, "hash")?.try_into().expect("32 bytes"))
        } else {
            None
        })
    }

    fn entry(&mut self) -> Result<WireEntry, DecodeError> {
        Ok(WireEntry {
            kind: self.u8("kind")?,
            mode: self.u32("mode")?,
            uid: self.u32("uid")?,
            gid: self.u32("gid")?,
            size: self.u64("size")?,
            mtime_ns: self.u64("mtime")? as i64,
            rdev: self.u64("rdev")?,
            target: if self.flag("target flag")? { Some(self.path()?) } else { None },
            hash: self.opt_hash()?,
            origin: if self.flag("origin flag")? {
                Some(self.str(MAX_NAME, "origin")?)
            } else {
                None
            },
        })
    }

    fn magic(&mut self) -> Result<(), DecodeError> {
        if self.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(DecodeError::Malformed { what: "magic" });
        }
        Ok(())
    }

    fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(what)? as usize;
        if n > max {
            return Err(DecodeError::Malformed { what });
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed { what })
    }

    fn code(&mut self) -> Result<ErrorCode, DecodeError> {
        ErrorCode::from_u16(self.u16("error code")?)
            .ok_or(DecodeError::Malformed { what: "error code" })
    }

    fn proofs(&mut self) -> Result<Vec<GroupProof>, DecodeError> {
        let n = self.u16("group count")? as usize;
        if n > MAX_GROUPS {
            return Err(DecodeError::Malformed { what: "group count" });
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let group = self.str(MAX_NAME, "group name")?;
            let mac = self.take(32, "group proof")?.try_into().expect("32 bytes");
            v.push(GroupProof { group, mac });
        }
        Ok(v)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
