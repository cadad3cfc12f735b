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

/// An entry's state as it travels: what the receiver must create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEntry {
    /// `types::FileKind` code.
    pub kind: u8,
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Device number (devices).
    pub rdev: u64,
    /// Symlink target (symlinks).
    pub target: Option<Vec<u8>>,
    /// BLAKE3 of the content (regular files).
    pub hash: Option<[u8; 32]>,
    /// The host whose change this version is (conflict rules by host order).
    pub origin: Option<String>,
}

/// How the content of a pushed regular file follows the `Push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Content {
    /// No content: not a regular file, or only metadata changed.
    None = 0,
    /// The whole file follows as `Data` frames and a `DataEnd`.
    Whole = 1,
    /// Delta operations against the receiver's current file follow as `Data`
    /// frames (see `delta`), then a `DataEnd` with the hash of the result.
    Delta = 2,
}

/// What happened to one request, as the receiver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied and durable (renamed into place, index updated).
    Applied,
    /// The receiver already had exactly this: nothing was changed.
    InSync,
    /// Changed on both sides since they last agreed; nothing was changed.
    /// Carries the receiver's current state (None: absent there).
    Conflict(Option<WireEntry>),
    /// A parent directory is missing on the receiver: send parents first.
    ParentMissing,
    /// A directory to delete or replace still holds entries there.
    NotEmpty,
    /// A metadata-only push, but the receiver's content differs: send the
    /// content. On the wire it is the `Failed` reply csync always sent for
    /// it ([`ErrorCode::Protocol`], message [`CONTENT_NEEDED`]), so older
    /// peers read and write it unchanged; in memory it is its own case.
    ContentNeeded,
    /// Refused or failed, with a typed reason and a hint for logs.
    Failed {
        /// Why.
        code: ErrorCode,
        /// Hint (never local paths of the receiver).
        message: String,
    },
}

/// The message of the `Failed` reply that stands for
/// [`Outcome::ContentNeeded`] on the wire.
pub const CONTENT_NEEDED: &str = "content needed";

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
    /// The end of a stream. After a `Push`, the content's hash as the request
    /// declared it: the receiver checks what it wrote (whole or rebuilt from
    /// a delta) against the entry's hash before the content may become
    /// visible, so a file that changed while it was sent is refused. After a
    /// `Fetch` reply, the hash of what was sent.
    DataEnd {
        /// The stream.
        stream: u32,
        /// BLAKE3 of the content (see above).
        hash: [u8; 32],
    },
    /// Create or replace an entry (client → server). For `Content::Whole` and
    /// `Content::Delta`, `Data` frames on stream `id` and a `DataEnd` follow
    /// at once, without waiting for the reply (pipelining).
    Push {
        /// Request id, echoed by the `Ack`.
        id: u32,
        /// The group the path belongs to (authorizes it on the receiver).
        group: String,
        /// DB-form path.
        path: Vec<u8>,
        /// The new state.
        entry: WireEntry,
        /// The version both sides last agreed on (None: never / absent).
        base: Option<[u8; 32]>,
        /// This node's version wins over a conflict (`-f`, or an auto-rule win).
        force: bool,
        /// What content follows.
        content: Content,
        /// The sender's mtime of the parent directory (ns), so directory
        /// mtimes converge although adding an entry changes them.
        parent_mtime: Option<i64>,
    },
    /// Delete an entry (client → server).
    Delete {
        /// Request id.
        id: u32,
        /// Group.
        group: String,
        /// DB-form path.
        path: Vec<u8>,
        /// The version both sides last agreed on.
        base: Option<[u8; 32]>,
        /// Wins over a conflict.
        force: bool,
        /// The sender's mtime of the parent directory (ns).
        parent_mtime: Option<i64>,
    },
    /// Ask for the block signature of the receiver's current file (for a delta).
    Sig {
        /// Request id.
        id: u32,
        /// Group.
        group: String,
        /// DB-form path.
        path: Vec<u8>,
    },
    /// Reply to `Sig`: one 16-byte BLAKE3 prefix per block; empty if no file.
    SigReply {
        /// The `Sig`'s id.
        id: u32,
        /// Block size in bytes.
        block_size: u32,
        /// Size of the receiver's file.
        size: u64,
        /// Block hashes, in order.
        blocks: Vec<[u8; 16]>,
    },
    /// List the receiver's index for a group (`-T`): `ListEntry`s, then `ListEnd`.
    List {
        /// Request id.
        id: u32,
        /// Group.
        group: String,
    },
    /// One entry of a listing.
    ListEntry {
        /// The `List`'s id.
        id: u32,
        /// DB-form path.
        path: Vec<u8>,
        /// Its state.
        entry: WireEntry,
    },
    /// End of a listing.
    ListEnd {
        /// The `List`'s id.
        id: u32,
    },
    /// Send me your current content of a path (`-TT`): `Data` frames on stream
    /// `id`, then `DataEnd`, or an `Ack` with a failure.
    Fetch {
        /// Request id.
        id: u32,
        /// Group.
        group: String,
        /// DB-form path.
        path: Vec<u8>,
    },
    /// The result of a `Push`, `Delete` or `Fetch`.
    Ack {
        /// The request's id.
        id: u32,
        /// What happened.
        outcome: Outcome,
    },
    /// Orderly end of the session; the peer answers `ByeAck` and both close.
    Bye,
    /// Reply to `Bye`: everything before it has been processed.
    ByeAck,
    /// Server → client after `Bye`, while the receiver waits for or runs its
    /// actions: still alive, keep waiting for the `ByeAck`.
    Working,
    /// Server → client after `Bye`: one action command the session's changes
    /// triggered, and how it ended.
    ActionResult {
        /// The group of the action.
        group: String,
        /// The command as configured (shortened to the message limit).
        command: String,
        /// How many paths it was given.
        paths: u32,
        /// Exit status 0.
        ok: bool,
        /// How it ended, for people (`exit status 1`, `… killed`).
        status: String,
        /// Where its output went on the receiver (raw path bytes); `None`:
        /// the receiver's own log. The pusher names it when it reports a
        /// failure, so an admin knows where to look on which host. Sent last
        /// and optional on decoding: frames from builds before it decode as
        /// `None`.
        logfile: Option<Vec<u8>>,
    },
    /// Client → server: the server's version of `path` won a conflict by the
    /// group's rule (`rule`, e.g. `younger`); the server pushes it to the
    /// client on its next run, forced. No reply: a later `Bye` is answered
    /// only after this was handled.
    Yield {
        /// Group.
        group: String,
        /// DB-form path.
        path: Vec<u8>,
        /// The rule that decided (shown in the loser's conflict record).
        rule: String,
    },
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
            Msg::Working => 0x08,
            Msg::Data { .. } => 0x10,
            Msg::DataEnd { .. } => 0x11,
            Msg::Push { .. } => 0x20,
            Msg::Delete { .. } => 0x21,
            Msg::Sig { .. } => 0x22,
            Msg::SigReply { .. } => 0x23,
            Msg::List { .. } => 0x24,
            Msg::ListEntry { .. } => 0x25,
            Msg::ListEnd { .. } => 0x26,
            Msg::Fetch { .. } => 0x27,
            Msg::Ack { .. } => 0x28,
            Msg::ActionResult { .. } => 0x29,
            Msg::Yield { .. } => 0x2a,
        }
    }
}
