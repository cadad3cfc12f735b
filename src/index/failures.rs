//! Actions that failed and have not worked since (`action_failure`): kept
//! so that `csync --status` keeps saying so, on the node where the command
//! ran and on the node that pushed the change, until the same command runs
//! successfully there or someone acknowledges it.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rusqlite::params;

use super::{Index, Result, unix_now};

/// One run of an action command, as this node's runner saw it or as a peer
/// reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRun {
    /// The group whose action it is.
    pub group: String,
    /// The command as configured on the host that ran it.
    pub command: String,
    /// Where its output went there; `None`: that host's csync log.
    pub logfile: Option<PathBuf>,
    /// How many paths it was given.
    pub paths: u64,
    /// Exit status 0.
    pub ok: bool,
    /// How it ended, for people (`exit status 3`, `… killed`).
    pub status: String,
}

/// A failed action that has not run successfully since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionFailure {
    /// The node where it ran (this node, or the peer that reported it).
    pub host: String,
    /// The group whose action it is.
    pub group: String,
    /// The command as configured on `host`.
    pub command: String,
    /// Where its output went on `host`; `None`: that host's csync log.
    pub logfile: Option<PathBuf>,
    /// How the latest failed run ended.
    pub status: String,
    /// Paths the latest failed run was given.
    pub paths: u64,
    /// Failed runs since `first_at`.
    pub failures: u64,
    /// Unix seconds of the first failure since it last worked.
    pub first_at: i64,
    /// Unix seconds of the latest failure.
    pub last_at: i64,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionFailure> {
    let logfile: Option<Vec<u8>> = r.get(3)?;
    Ok(ActionFailure {
        host: r.get(0)?,
        group: r.get(1)?,
        command: r.get(2)?,
        logfile: logfile.map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b))),
        status: r.get(4)?,
        paths: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        failures: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        first_at: r.get(7)?,
        last_at: r.get(8)?,
    })
}

/// `runs` as one verdict per (group, command), in order of first appearance:
/// a command split into several runs (too many paths for one argv) failed if
/// any part failed, and was given the paths of all parts. Without this, a
/// failed first part followed by a good second one would clear the failure.
fn verdicts(runs: &[ActionRun]) -> Vec<ActionRun> {
    let mut out: Vec<ActionRun> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|v| v.group == r.group && v.command == r.command) {
            Some(v) => {
                v.paths += r.paths;
                if v.ok && !r.ok {
                    v.ok = false;
                    v.status.clone_from(&r.status);
                    v.logfile.clone_from(&r.logfile);
                }
            }
            None => out.push(r.clone()),
        }
    }
    out
}

impl Index {
    /// Records how action commands ran on `host`: a failure is added (or
    /// counted again, keyed by host, group and command), a success clears
    /// that key. One transaction.
    ///
    /// # Errors
    /// When SQLite fails; then nothing is recorded.
    pub fn record_action_runs(&mut self, host: &str, runs: &[ActionRun]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        self.write(|tx| {
            let mut fail = tx.prepare_cached(
                "INSERT INTO action_failure \
                 (host, grp, command, logfile, status, paths, failures, first_at, last_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7) \
                 ON CONFLICT (host, grp, command) DO UPDATE SET \
                 logfile = excluded.logfile, status = excluded.status, paths = excluded.paths, \
                 failures = failures + 1, last_at = excluded.last_at",
            )?;
            let mut clear = tx.prepare_cached(
                "DELETE FROM action_failure WHERE host = ?1 AND grp = ?2 AND command = ?3",
            )?;
            for v in verdicts(runs) {
                if v.ok {
                    clear.execute(params![host, v.group, v.command])?;
                } else {
                    fail.execute(params![
                        host,
                        v.group,
                        v.command,
                        v.logfile.as_ref().map(|p| p.as_os_str().as_bytes().to_vec()),
                        v.status,
                        i64::try_from(v.paths).unwrap_or(i64::MAX),
                        now
                    ])?;
                }
            }
            Ok(())
        })
    }

    /// Every recorded failure, by host, group and command.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn action_failures(&self) -> Result<Vec<ActionFailure>> {
        self.query_all(
            "SELECT host, grp, command, logfile, status, paths, failures, first_at, last_at \
             FROM action_failure ORDER BY host, grp, command",
            from_row,
        )
    }

    /// Forgets the recorded failures of `host` (all hosts: `None`), as
    /// acknowledged by hand; returns how many there were.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn clear_action_failures(&mut self, host: Option<&str>) -> Result<usize> {
        self.write(|tx| match host {
            Some(h) => tx.execute("DELETE FROM action_failure WHERE host = ?1", [h]),
            None => tx.execute("DELETE FROM action_failure", []),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, ok: bool, paths: u64) -> ActionRun {
        ActionRun {
            group: "web".into(),
            command: command.into(),
            logfile: Some(PathBuf::from("/var/log/a.log")),
            paths,
            ok,
            status: if ok { "exit status 0" } else { "exit status 1" }.into(),
        }
    }

    #[test]
    fn a_failure_is_counted_until_the_same_command_works() {
        let mut idx = Index::open_in_memory().unwrap();
        idx.record_action_runs("beta", &[run("reload", false, 2)]).unwrap();
        idx.record_action_runs("beta", &[run("reload", false, 3), run("other", true, 1)]).unwrap();
        idx.record_action_runs("gamma", &[run("reload", false, 1)]).unwrap();
        let f = idx.action_failures().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].host.as_str(), f[0].failures, f[0].paths), ("beta", 2, 3));
        assert_eq!(f[0].logfile, Some(PathBuf::from("/var/log/a.log")));
        assert_eq!(f[0].status, "exit status 1");
        assert!(f[0].first_at <= f[0].last_at);
        // A success on one host clears only that host's record.
        idx.record_action_runs("beta", &[run("reload", true, 1)]).unwrap();
        let f = idx.action_failures().unwrap();
        assert_eq!(f.iter().map(|x| x.host.as_str()).collect::<Vec<_>>(), vec!["gamma"]);
    }

    #[test]
    fn a_command_split_in_parts_fails_if_any_part_failed() {
        let mut idx = Index::open_in_memory().unwrap();
        idx.record_action_runs("a", &[run("c %%", false, 5), run("c %%", true, 7)]).unwrap();
        let f = idx.action_failures().unwrap();
        assert_eq!((f.len(), f[0].paths), (1, 12));
    }

    #[test]
    fn acknowledging_clears_one_host_or_all() {
        let mut idx = Index::open_in_memory().unwrap();
        for h in ["a", "b", "c"] {
            idx.record_action_runs(h, &[run("x", false, 1)]).unwrap();
        }
        assert_eq!(idx.clear_action_failures(Some("b")).unwrap(), 1);
        assert_eq!(idx.clear_action_failures(Some("nobody")).unwrap(), 0);
        assert_eq!(idx.clear_action_failures(None).unwrap(), 2);
        assert!(idx.action_failures().unwrap().is_empty());
    }
}
