//! The csync wire protocol, sans I/O: messages, their binary encoding, and a
//! frame decoder that never panics on hostile input.
//!
//! A frame is `u32 length (big-endian) | u8 type | payload`, the length
//! counting type and payload. Frames are bounded ([`MAX_FRAME`]), paths too
//! ([`MAX_PATH`]). The first frame each way is [`Msg::Hello`] / [`Msg::Welcome`],
//! carrying a magic and a version range so nodes of different releases can tell
//! what they both speak. Requests may be pipelined: every request carries an
//! id that its reply echoes. Errors between peers are typed codes; human text
//! is only a hint for logs.
//!
//! This module knows nothing of sockets, TLS, tokio, the index or the config.

mod codec;
mod msg;

pub use codec::{DecodeError, EncodeError, decode, encode, encoded};
pub use msg::{CONTENT_NEEDED, Content, ErrorCode, GroupProof, Msg, Outcome, WireEntry};

/// Protocol magic at the start of `Hello`: lets a peer tell a csync node from
/// anything else that speaks TLS on the port.
pub const MAGIC: [u8; 6] = *b"CSYNC\x00";

/// The oldest protocol version this build speaks.
pub const VERSION_MIN: u16 = 1;
/// The newest protocol version this build speaks.
pub const VERSION_MAX: u16 = 1;

/// Largest frame accepted or sent (type + payload): 1 MiB of data plus headers.
pub const MAX_FRAME: usize = (1 << 20) + 64 * 1024;

/// Largest piece of streamed content in one `Data` frame.
pub const MAX_CHUNK: usize = 1 << 20;

/// Longest DB-form path accepted on the wire (Linux's PATH_MAX is 4096; a
/// `%prefix%` form may be a little longer).
pub const MAX_PATH: usize = 8192;

/// Most blocks in one `SigReply` (16 bytes each: fits a frame).
pub const MAX_BLOCKS: usize = 60_000;

/// Most group proofs in one `Hello`/`Welcome`.
pub const MAX_GROUPS: usize = 256;

/// Longest name (node, group) accepted on the wire.
pub const MAX_NAME: usize = 255;

/// Longest error message accepted on the wire.
pub const MAX_MESSAGE: usize = 4096;
