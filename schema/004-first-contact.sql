-- 004: first contact with a peer, and conflict records that mean what they say.

-- Peers this node has completed a sync with. A peer without a row (a new
-- cluster, a host added to the config later, a peer whose index was deleted)
-- is compared entry by entry on the next push: identical entries are
-- recorded as agreed, the rest pushed or settled by the group's rule.
-- The same row remembers how the last push to the peer went, for --status.
CREATE TABLE peer_sync (
    peer      TEXT PRIMARY KEY,  -- the peer's host name
    synced_at INTEGER,           -- unix seconds of the first completed sync; NULL: not yet
    ok_at     INTEGER,           -- unix seconds of the last push that reached the peer
    failed_at INTEGER,           -- unix seconds of the last push that could not
    error     TEXT               -- why that one failed
) STRICT, WITHOUT ROWID;

-- A person has seen the conflict (`csync --ack-conflicts`): no longer open.
ALTER TABLE conflict ADD COLUMN acked INTEGER NOT NULL DEFAULT 0;

-- Records the previous release wrote before a write that then never happened
-- (a receiver refusing a single-file root): they named no kept copy.
DELETE FROM conflict
 WHERE resolution IN ('lost: overwritten by a forced push', 'lost: deleted by a forced push')
   AND kept IS NULL;
