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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_entry() -> WireEntry {
        WireEntry {
            kind: 3,
            mode: 0o777,
            uid: 1000,
            gid: 100,
            size: 0,
            mtime_ns: -5,
            rdev: 0,
            target: Some(b"../x".to_vec()),
            hash: None,
            origin: Some("n2".into()),
        }
    }

    fn samples() -> Vec<Msg> {
        vec![
            Msg::Hello {
                min_version: 1,
                max_version: 3,
                node: "n1".into(),
                capabilities: 5,
                groups: vec![GroupProof { group: "web".into(), mac: [9; 32] }],
            },
            Msg::Welcome {
                version: 1,
                node: "n2".into(),
                capabilities: 0,
                groups: vec![],
                refused: vec![("db".into(), ErrorCode::BadKey)],
            },
            Msg::Error { code: ErrorCode::NotAHost, message: "n9 is not a host of web".into() },
            Msg::Ping { id: 7 },
            Msg::Pong { id: 7, time_ns: -3 },
            Msg::Data { stream: 3, bytes: b"hello".to_vec() },
            Msg::Data { stream: 4, bytes: vec![] },
            Msg::DataEnd { stream: 3, hash: [7; 32] },
            Msg::Push {
                id: 9,
                group: "web".into(),
                path: b"%www%/a b/\xff".to_vec(),
                entry: sample_entry(),
                base: Some([1; 32]),
                force: true,
                content: Content::Delta,
                parent_mtime: Some(-7),
            },
            Msg::Delete {
                id: 10,
                group: "web".into(),
                path: b"/etc/x".to_vec(),
                base: None,
                force: false,
                parent_mtime: None,
            },
            Msg::Sig { id: 11, group: "g".into(), path: b"%p%/big".to_vec() },
            Msg::SigReply { id: 11, block_size: 65536, size: 200, blocks: vec![[3; 16], [4; 16]] },
            Msg::List { id: 12, group: "g".into() },
            Msg::ListEntry { id: 12, path: b"%p%/l".to_vec(), entry: sample_entry() },
            Msg::ListEnd { id: 12 },
            Msg::Fetch { id: 13, group: "g".into(), path: b"%p%/f".to_vec() },
            Msg::Working,
            Msg::Yield { group: "g".into(), path: b"%p%/f".to_vec(), rule: "younger".into() },
            Msg::ActionResult {
                group: "web".into(),
                command: "nginx -s reload".into(),
                paths: 3,
                ok: false,
                status: "exit status 1".into(),
                logfile: Some(b"/var/log/csync-nginx.log".to_vec()),
            },
            Msg::ActionResult {
                group: "web".into(),
                command: "nginx -s reload".into(),
                paths: 1,
                ok: true,
                status: "exit status 0".into(),
                logfile: None,
            },
            Msg::Ack { id: 9, outcome: Outcome::Applied },
            Msg::Ack { id: 9, outcome: Outcome::Conflict(Some(sample_entry())) },
            Msg::Ack { id: 9, outcome: Outcome::Conflict(None) },
            Msg::Ack { id: 9, outcome: Outcome::ParentMissing },
            Msg::Ack {
                id: 9,
                outcome: Outcome::Failed { code: ErrorCode::PathRefused, message: "..".into() },
            },
            Msg::Bye,
            Msg::ByeAck,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let f = encoded(&m).unwrap();
            assert_eq!(decode(&f).unwrap(), Some((m.clone(), f.len())), "{m:?}");
        }
    }

    #[test]
    fn content_needed_travels_as_the_failed_reply_it_always_was() {
        let typed = encoded(&Msg::Ack { id: 3, outcome: Outcome::ContentNeeded }).unwrap();
        let old = Msg::Ack {
            id: 3,
            outcome: Outcome::Failed { code: ErrorCode::Protocol, message: CONTENT_NEEDED.into() },
        };
        assert_eq!(typed, encoded(&old).unwrap(), "same bytes as before");
        let (back, _) = decode(&typed).unwrap().unwrap();
        assert_eq!(back, Msg::Ack { id: 3, outcome: Outcome::ContentNeeded });
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for m in samples() {
            let f = encoded(&m).unwrap();
            for cut in 0..f.len() {
                assert_eq!(decode(&f[..cut]).unwrap(), None, "{m:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn an_action_result_without_the_logfile_field_decodes_as_none() {
        // The frame an older build sends: everything up to the status.
        let m = Msg::ActionResult {
            group: "web".into(),
            command: "nginx -s reload".into(),
            paths: 2,
            ok: false,
            status: "exit status 1".into(),
            logfile: None,
        };
        let mut f = encoded(&m).unwrap();
        f.pop(); // the logfile flag
        let len = u32::try_from(f.len() - 4).unwrap();
        f[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&f).unwrap(), Some((m, f.len())));
    }

    #[test]
    fn huge_length_is_refused_before_buffering() {
        let mut f = vec![0xff, 0xff, 0xff, 0xff, 0x01];
        f.extend_from_slice(&MAGIC);
        assert!(matches!(decode(&f), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn wrong_magic_unknown_type_and_trailing_bytes_are_malformed() {
        let mut f = encoded(&samples()[0]).unwrap();
        f[5] = b'X';
        assert_eq!(decode(&f), Err(DecodeError::Malformed { what: "magic" }));
        assert_eq!(decode(&[0, 0, 0, 1, 0xee]), Err(DecodeError::UnknownType(0xee)));
        assert_eq!(
            decode(&[0, 0, 0, 2, 0x06, 0]),
            Err(DecodeError::Malformed { what: "trailing bytes" })
        );
        assert_eq!(decode(&[0, 0, 0, 0]), Err(DecodeError::Empty));
    }

    #[test]
    fn a_full_size_chunk_fits_a_frame() {
        let m = Msg::Data { stream: 1, bytes: vec![0xab; MAX_CHUNK] };
        let f = encoded(&m).unwrap();
        assert_eq!(decode(&f).unwrap(), Some((m, f.len())));
        assert!(encoded(&Msg::Data { stream: 1, bytes: vec![0; MAX_CHUNK + 1] }).is_err());
    }

    #[test]
    fn oversized_fields_are_refused_when_encoding() {
        let m = Msg::Hello {
            min_version: 1,
            max_version: 1,
            node: "x".repeat(MAX_NAME + 1),
            capabilities: 0,
            groups: vec![],
        };
        let mut out = vec![1, 2, 3];
        assert!(encode(&m, &mut out).is_err());
        assert_eq!(out, [1, 2, 3], "output untouched on error");
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9.\\-]{0,40}"
    }

    fn arb_code() -> impl Strategy<Value = ErrorCode> {
        (1u16..=15).prop_map(|v| ErrorCode::from_u16(v).unwrap())
    }

    fn arb_proof() -> impl Strategy<Value = GroupProof> {
        (arb_name(), any::<[u8; 32]>()).prop_map(|(group, mac)| GroupProof { group, mac })
    }

    fn arb_entry() -> impl Strategy<Value = WireEntry> {
        (
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            any::<u64>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
            (any::<Option<[u8; 32]>>(), prop::option::of(arb_name())),
        )
            .prop_map(
                |(kind, mode, uid, gid, size, mtime_ns, rdev, target, (hash, origin))| WireEntry {
                    kind,
                    mode,
                    uid,
                    gid,
                    size,
                    mtime_ns,
                    rdev,
                    target,
                    hash,
                    origin,
                },
            )
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        prop_oneof![arb_basic(), arb_sync()]
    }

    fn arb_sync() -> impl Strategy<Value = Msg> {
        let outcome = prop_oneof![
            Just(Outcome::Applied),
            Just(Outcome::InSync),
            prop::option::of(arb_entry()).prop_map(Outcome::Conflict),
            Just(Outcome::ParentMissing),
            Just(Outcome::NotEmpty),
            (arb_code(), ".{0,50}").prop_map(|(code, message)| Outcome::Failed { code, message }),
        ];
        let path = || prop::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            (
                any::<u32>(),
                arb_name(),
                path(),
                arb_entry(),
                any::<Option<[u8; 32]>>(),
                any::<bool>(),
                0u8..3
            )
                .prop_map(|(id, group, path, entry, base, force, c)| Msg::Push {
                    id,
                    group,
                    path,
                    entry,
                    base,
                    force,
                    content: [Content::None, Content::Whole, Content::Delta][c as usize],
                    parent_mtime: Some(id as i64 - 5),
                }),
            (any::<u32>(), arb_name(), path(), any::<Option<[u8; 32]>>(), any::<bool>()).prop_map(
                |(id, group, path, base, force)| Msg::Delete {
                    id,
                    group,
                    path,
                    base,
                    force,
                    parent_mtime: None
                }
            ),
            (any::<u32>(), path(), arb_entry()).prop_map(|(id, path, entry)| Msg::ListEntry {
                id,
                path,
                entry
            }),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                prop::collection::vec(any::<[u8; 16]>(), 0..50)
            )
                .prop_map(|(id, block_size, size, blocks)| Msg::SigReply {
                    id,
                    block_size,
                    size,
                    blocks
                }),
            (any::<u32>(), outcome).prop_map(|(id, outcome)| Msg::Ack { id, outcome }),
        ]
    }

    fn arb_basic() -> impl Strategy<Value = Msg> {
        prop_oneof![
            (
                any::<u16>(),
                any::<u16>(),
                arb_name(),
                any::<u64>(),
                prop::collection::vec(arb_proof(), 0..5)
            )
                .prop_map(|(a, b, node, capabilities, groups)| Msg::Hello {
                    min_version: a,
                    max_version: b,
                    node,
                    capabilities,
                    groups
                }),
            (
                any::<u16>(),
                arb_name(),
                any::<u64>(),
                prop::collection::vec(arb_proof(), 0..5),
                prop::collection::vec((arb_name(), arb_code()), 0..5)
            )
                .prop_map(|(version, node, capabilities, groups, refused)| {
                    Msg::Welcome { version, node, capabilities, groups, refused }
                }),
            (arb_code(), ".{0,100}").prop_map(|(code, message)| Msg::Error { code, message }),
            any::<u32>().prop_map(|id| Msg::Ping { id }),
            (any::<u32>(), any::<i64>()).prop_map(|(id, time_ns)| Msg::Pong { id, time_ns }),
            (any::<u32>(), prop::collection::vec(any::<u8>(), 0..2000))
                .prop_map(|(stream, bytes)| Msg::Data { stream, bytes }),
            (any::<u32>(), any::<[u8; 32]>())
                .prop_map(|(stream, hash)| Msg::DataEnd { stream, hash }),
            Just(Msg::Bye),
            Just(Msg::ByeAck),
            Just(Msg::Working),
            (
                arb_name(),
                ".{0,100}",
                any::<u32>(),
                any::<bool>(),
                ".{0,50}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..100))
            )
                .prop_map(|(group, command, paths, ok, status, logfile)| {
                    Msg::ActionResult { group, command, paths, ok, status, logfile }
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_msg()) {
            let f = encoded(&m).unwrap();
            prop_assert_eq!(decode(&f).unwrap(), Some((m, f.len())));
        }

        #[test]
        fn truncated_input_is_incomplete(m in arb_msg(), cut in any::<prop::sample::Index>()) {
            let f = encoded(&m).unwrap();
            let cut = cut.index(f.len());
            prop_assert_eq!(decode(&f[..cut]).unwrap(), None);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn garbage_after_a_valid_header_never_panics(t in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            f.push(t);
            f.extend_from_slice(&body);
            let _ = decode(&f);
        }

        #[test]
        fn two_frames_back_to_back_decode_in_order(a in arb_msg(), b in arb_msg()) {
            let mut f = encoded(&a).unwrap();
            let first = f.len();
            encode(&b, &mut f).unwrap();
            let (m1, n1) = decode(&f).unwrap().unwrap();
            prop_assert_eq!(n1, first);
            prop_assert_eq!(m1, a);
            let (m2, _) = decode(&f[n1..]).unwrap().unwrap();
            prop_assert_eq!(m2, b);
        }
    }
}
