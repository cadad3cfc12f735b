-- 001: the index of managed files, dirty marks, and what peers were last known to have.

-- The last seen state of every managed entry on this node.
CREATE TABLE file (
    path     BLOB PRIMARY KEY,  -- DB form ('%prefix%/rel' or absolute), raw bytes
    kind     INTEGER NOT NULL,  -- types::FileKind: 1 reg, 2 dir, 3 lnk, 4 fifo, 5 chr, 6 blk, 7 sock
    mode     INTEGER NOT NULL,  -- st_mode & 07777
    uid      INTEGER NOT NULL,  -- numeric owner
    gid      INTEGER NOT NULL,  -- numeric group
    size     INTEGER NOT NULL,  -- bytes (regular files), else 0
    mtime_ns INTEGER NOT NULL,  -- modification time, ns since the epoch
    ino      INTEGER NOT NULL,  -- inode number (change hint only; stored as signed 64-bit)
    ctime_ns INTEGER NOT NULL,  -- status change time, ns (change hint only)
    rdev     INTEGER NOT NULL,  -- device number for chr/blk, else 0
    target   BLOB,              -- symlink target; NULL for other kinds
    hash     BLOB               -- 32-byte BLAKE3 of the content; NULL for non-regular files
) STRICT, WITHOUT ROWID;

-- One row per (entry, peer) still to be pushed to that peer.
CREATE TABLE dirty (
    path      BLOB NOT NULL,              -- DB form, as in file.path (may be absent from file: a delete)
    peer      TEXT NOT NULL,              -- the peer's host name
    myname    TEXT NOT NULL,              -- this node's name in the group that links it to the peer
    forced    INTEGER NOT NULL DEFAULT 0, -- 1: this node's version wins over a conflict (-f)
    changes   INTEGER NOT NULL,           -- types::Changes bits accumulated since the last push
    marked_at INTEGER NOT NULL,           -- unix seconds of the first mark since the last push
    PRIMARY KEY (path, peer)
) STRICT, WITHOUT ROWID;

-- Per-peer work lists are read by peer, in path order.
CREATE INDEX dirty_by_peer ON dirty (peer, path);

-- What each peer was last known to have for an entry, as agreed at the last push or
-- receive. Conflict detection compares against it: "changed on both sides since".
CREATE TABLE peer_state (
    path    BLOB NOT NULL,  -- DB form
    peer    TEXT NOT NULL,  -- the peer's host name
    version BLOB,           -- fingerprint of the agreed state; NULL = the entry was absent there
    PRIMARY KEY (path, peer)
) STRICT, WITHOUT ROWID;
