-- 003: the action journal. A row is written before the change it is for
-- becomes visible, and deleted only after its command has run, so a crash in
-- between runs the command on the next run instead of never.

CREATE TABLE action_queue (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of queueing, never reused; commands
                                                  -- run in order of their first row
    command   TEXT NOT NULL,        -- the exec string as configured ('%%' not yet expanded)
    logfile   BLOB,                 -- where output is appended; NULL: the node's log
    timeout_s INTEGER NOT NULL,     -- seconds before the command is killed
    grp       TEXT NOT NULL,        -- the group whose action this is (for messages)
    path      BLOB NOT NULL,        -- DB form of the changed entry
    real      BLOB NOT NULL,        -- its local path: what '%%' expands to
    peer      TEXT,                 -- the node the change came from; NULL: changed here
    owner     TEXT NOT NULL,        -- the process that runs it: 'pid:starttime' (see action::owner_token)
    ready     INTEGER NOT NULL,     -- 1: the change is made; 0: being applied (its owner waits for it;
                                    --    an orphaned row runs anyway: the change may have landed)
    running   TEXT,                 -- the command's shell while it runs, 'pid:starttime' (it leads
                                    --    its process group); NULL: not started. A run that finds
                                    --    the owner dead and this still going kills it and starts over
    queued_at INTEGER NOT NULL      -- unix seconds
) STRICT;
