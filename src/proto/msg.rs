//! The messages of protocol version 1.

use std::fmt;

/// A proof that the sender holds a group's key, bound to this TLS session.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupProof {
    /// Group name.
    pub group: String,
    /// Keyed BLAKE3 over the session's TLS exporter value (see `net::auth`).
    pub mac: [u8; 32],
}

impl fmt::Debug for GroupProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A MAC is not a secret, but it is noise in logs.
        write!(f, "GroupProof({})", self.group)
    }
}

/// Why a peer refuses something. A closed set: peers act on the code, and the
/// text that may travel with it is only a hint for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// No common protocol version.
    Version = 1,
    /// The first frame was not a csync `Hello`, or a frame made no sense.
    Protocol = 2,
    /// A frame exceeded the size limit.
    FrameTooLarge = 3,
    /// The peer's certificate is not valid for the name it claims.
    Identity = 4,
    /// The claimed node is not a host of the group (on the receiver's config).
    NotAHost = 5,
    /// The group key proof did not verify.
    BadKey = 6,
    /// The receiver is not a member of that group.
    UnknownGroup = 7,
    /// The sender is receive-only in the group: it may not push.
    ReceiveOnly = 8,
    /// A path was refused (outside the receiver's config, `..`, absolute, …).
    PathRefused = 9,
    /// The receiver also changed the entry: a conflict.
    Conflict = 10,
    /// A filesystem error on the receiver.
    Io = 11,
    /// Nothing arrived within the idle timeout.
    Timeout = 12,
    /// The receiver is shutting down.
    ShuttingDown = 13,
    /// A request came before the handshake finished.
    NotAuthenticated = 14,
    /// Anything else (a bug on the sender's side of this error).
    Internal = 15,
}

impl ErrorCode {
    /// Decodes a wire value.
    pub fn from_u16(v: u16) -> Option<Self> {
        use ErrorCode::*;
        Some(match v {
            1 => Version,
            2 => Protocol,
            3 => FrameTooLarge,
            4 => Identity,
            5 => NotAHost,
            6 => BadKey,
            7 => UnknownGroup,
            8 => ReceiveOnly,
            9 => PathRefused,
            10 => Conflict,
            11 => Io,
            12 => Timeout,
            13 => ShuttingDown,
            14 => NotAuthenticated,
            15 => Internal,
            _ => return None,
        })
    }

    /// What the code means, for people.
    pub fn describe(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Version => "no common protocol version",
            Protocol => "protocol error",
            FrameTooLarge => "frame too large",
            Identity => "certificate does not match the claimed host name",
            NotAHost => "not a host of the group",
            BadKey => "wrong group key",
            UnknownGroup => "not a member of the group",
            ReceiveOnly => "receive-only host may not push",
            PathRefused => "path refused",
            Conflict => "conflict: changed on both sides",
            Io => "I/O error",
            Timeout => "idle timeout",
            ShuttingDown => "shutting down",
            NotAuthenticated => "handshake not finished",
            Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Client → server, first frame: who I am, what I speak, which groups I
    /// speak for (with key proofs).
    Hello {
        /// Lowest version the client speaks.
        min_version: u16,
        /// Highest version the client speaks.
        max_version: u16,
        /// The client's node name (must match its certificate).
        node: String,
        /// Capability bits (none defined in version 1).
        capabilities: u64,
        /// One proof per group the client wants to use.
        groups: Vec<GroupProof>,
    },
    /// Server → client, first frame: the chosen version, the server's own
    /// proofs for the groups it accepted, and the ones it refused.
    Welcome {
        /// The version both will speak.
        version: u16,
        /// The server's node name.
        node: String,
        /// Capability bits (none defined in version 1).
        capabilities: u64,
        /// The server's proofs for the accepted groups.
        groups: Vec<GroupProof>,
        /// Groups refused, and why.
        refused: Vec<(String, ErrorCode)>,
    },
    /// A fatal error: the sender closes the connection after it.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A short hint for logs (never secrets, never local paths).
        message: String,
    },
    /// Liveness and clock check.
    Ping {
        /// Echoed in the reply.
        id: u32,
    },
    /// Reply to `Ping`.
    Pong {
        /// The ping's id.
        id: u32,
        /// The server's clock, ns since the epoch (for skew warnings).
        time_ns: i64,
    },
    /// A piece of streamed content (a file's bytes), at most [`super::MAX_CHUNK`].
    /// Streams are numbered by the request that opened them, so several can
    /// be in flight on one connection.
    Data {
        /// The stream (the id of the request it belongs to).
        stream: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The end of a stream, with the BLAKE3 of everything sent on it: the
    /// receiver checks it before the content may become visible.
    DataEnd {
        /// The stream.
        stream: u32,
        /// BLAKE3 of the whole stream.
        hash: [u8; 32],
    },
    /// Orderly end of the session; the peer answers `ByeAck` and both close.
    Bye,
    /// Reply to `Bye`: everything before it has been processed.
    ByeAck,
}

impl Msg {
    /// The frame type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Msg::Hello { .. } => 0x01,
            Msg::Welcome { .. } => 0x02,
            Msg::Error { .. } => 0x03,
            Msg::Ping { .. } => 0x04,
            Msg::Pong { .. } => 0x05,
            Msg::Bye => 0x06,
            Msg::ByeAck => 0x07,
            Msg::Data { .. } => 0x10,
            Msg::DataEnd { .. } => 0x11,
        }
    }
}
