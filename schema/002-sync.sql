-- 002: what the sync engine needs: a generation per dirty mark, and conflicts.

-- Bumped by every new mark of (path, peer). A push clears the row only if the
-- generation is still the one it sent, so a change made during the push is
-- never forgotten.
ALTER TABLE dirty ADD COLUMN gen INTEGER NOT NULL DEFAULT 1;

-- Conflicts met by this node, as sender or receiver, and how they ended.
CREATE TABLE conflict (
    path        BLOB NOT NULL,     -- DB form
    peer        TEXT NOT NULL,     -- the other side
    detected_at INTEGER NOT NULL,  -- unix seconds
    resolution  TEXT NOT NULL,     -- 'unresolved', or how it was settled ('won: younger', 'lost: younger', 'forced', …)
    kept        BLOB,              -- absolute path where the losing version was kept here; NULL if not here
    PRIMARY KEY (path, peer, detected_at)
) STRICT;

-- The version this node had before the first local change not yet pushed to
-- the peer: what the peer should still have if it changed nothing itself.
-- NULL: unknown (a mark by hand); empty: the entry did not exist; else the
-- 32-byte version.
ALTER TABLE dirty ADD COLUMN base BLOB;

-- Which node made the current version of an entry, when it was received
-- (no row: this node made it). `auto left/right` and ties compare the hosts
-- that made the two versions, not the two nodes that happen to meet.
CREATE TABLE origin (
    path BLOB PRIMARY KEY,  -- DB form
    node TEXT NOT NULL      -- the host whose change this version is
) STRICT, WITHOUT ROWID;
