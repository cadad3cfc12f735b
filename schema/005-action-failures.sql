-- 005: actions that failed and have not run successfully since. A failure
-- must stay visible (`csync --status`, exit 1) until the command works again
-- or someone acknowledges it, on the node where it ran and on the node whose
-- push triggered it; a line in a log that nobody reads is not enough.

CREATE TABLE action_failure (
    host      TEXT NOT NULL,     -- the node where the command ran: this node, or the peer that reported it
    grp       TEXT NOT NULL,     -- the group whose action it is
    command   TEXT NOT NULL,     -- the exec string as configured on that host ('%%' not expanded)
    logfile   BLOB,              -- where its output went on that host; NULL: that host's csync log
    status    TEXT NOT NULL,     -- how the last failed run ended ('exit status 3', '… killed', 'could not start: …')
    paths     INTEGER NOT NULL,  -- how many paths the last failed run was given
    failures  INTEGER NOT NULL,  -- failed runs since first_at (at least 1)
    first_at  INTEGER NOT NULL,  -- unix seconds of the first failure since it last worked
    last_at   INTEGER NOT NULL,  -- unix seconds of the latest failure
    PRIMARY KEY (host, grp, command)
) STRICT, WITHOUT ROWID;
