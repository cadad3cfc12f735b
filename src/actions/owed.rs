//! What changes owe, and running it: [`ActionTable`] says which commands a
//! change owes (recorded in the index's owed list before the change is
//! made); [`run_owed`] runs what is owed once per run.
//!
//! "Once per run": every distinct command (with its logfile and timeout) runs
//! once with all the paths owed to it, and owed rows are removed only after
//! their command ended, so a crash re-runs it on the next run.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::Error;
use super::command::{self, Compiled, Job, JobResult};
use crate::config::Config;
use crate::index::{ActionRun, Index, OwedAction};
use crate::pattern::GroupMatcher;
use crate::policy::GroupPolicy;

/// Paths named in one log line; the rest are counted.
const LOG_PATHS: usize = 32;

/// The actions of this node's groups, ready to match changes.
#[derive(Debug, Clone)]
pub struct ActionTable {
    groups: Vec<(String, GroupMatcher, Vec<Compiled>)>,
    owner: String,
}

impl ActionTable {
    /// Compiles the actions of every member group that has some; the
    /// groups' path matchers come compiled with their `policies`.
    ///
    /// # Errors
    /// When an action's pattern does not compile.
    pub fn new(config: &Config, policies: &[GroupPolicy]) -> Result<Self, Error> {
        let mut groups = Vec::new();
        for p in policies {
            let g = &config.groups[p.index];
            if g.actions.is_empty() {
                continue;
            }
            let mut compiled = Vec::new();
            for a in &g.actions {
                compiled.push(Compiled::new(a).map_err(|(i, message)| {
                    Error::Pattern(crate::policy::PatternError {
                        group: g.name.clone(),
                        pattern: a.patterns.get(i).cloned().unwrap_or_default(),
                        message,
                    })
                })?);
            }
            groups.push((g.name.clone(), p.matcher.clone(), compiled));
        }
        Ok(ActionTable { groups, owner: command::owner_token() })
    }

    /// This process, as the owner of what it records as owed.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// True when no group has an action: nothing is ever owed.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The commands a real change of `path` (DB form; `real` on this disk)
    /// owes: made here (`from: None`) or received from a peer. csync2's
    /// rule: every member group managing the path, every action whose
    /// pattern matches, each `exec` once.
    pub fn owed(
        &self,
        path: &[u8],
        real: &Path,
        from: Option<&str>,
        ready: bool,
    ) -> Vec<OwedAction> {
        let mut out: Vec<OwedAction> = Vec::new();
        for (group, matcher, actions) in &self.groups {
            if !matcher.is_managed(path) {
                continue;
            }
            for a in actions.iter().filter(|a| a.applies(path, from.is_none())) {
                for command in &a.exec {
                    let dup = out.iter().any(|q| {
                        q.command == *command
                            && q.logfile == a.logfile
                            && q.timeout_s == a.timeout_s
                    });
                    if !dup {
                        out.push(OwedAction {
                            command: command.clone(),
                            logfile: a.logfile.clone(),
                            timeout_s: a.timeout_s,
                            group: group.clone(),
                            path: path.to_vec(),
                            real: real.to_path_buf(),
                            peer: from.map(str::to_string),
                            owner: self.owner.clone(),
                            ready,
                        });
                    }
                }
            }
        }
        out
    }
}

/// One command that ran.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The group of the action (of its first row).
    pub group: String,
    /// The command as configured.
    pub command: String,
    /// The paths it was given.
    pub paths: Vec<PathBuf>,
    /// Where its output went: the action's `logfile`, or `None` when that
    /// is csync's log (none configured, or it could not be opened).
    pub logfile: Option<PathBuf>,
    /// The owed rows it settled.
    pub ids: Vec<i64>,
    /// How it went.
    pub result: JobResult,
}

impl Ran {
    /// As the index records it (and as a peer reports it).
    pub fn to_run(&self) -> ActionRun {
        ActionRun {
            group: self.group.clone(),
            command: self.command.clone(),
            logfile: self.logfile.clone(),
            paths: self.paths.len() as u64,
            ok: self.result.status.ok(),
            status: self.result.status.to_string(),
        }
    }
}

/// Where the lock that serializes action runs lives: next to the index.
pub fn lock_path(index: &Path) -> PathBuf {
    let mut p = index.as_os_str().to_owned();
    p.push(".actions.lock");
    PathBuf::from(p)
}

/// Runs what this process owes (rows of `owner` that are ready) and what dead
/// processes left behind: each distinct command once with all its paths, in
/// order of its first row; serialized with every other runner on this index.
/// How each command ended is recorded as this node's (`host`): a failure
/// stays in `--status` until the same command succeeds here.
/// `tick` runs about every [`command::TICK`] while waiting.
///
/// # Errors
/// When the index or the lock file fails (per-command failures are in the results).
pub fn run_owed(
    index: &mut Index,
    owner: &str,
    host: &str,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Ran>, Error> {
    let _lock = command::RunLock::acquire(&lock_path(index.path()), tick)
        .map_err(|e| Error::Lock(format!("{}: {e}", lock_path(index.path()).display())))?;
    let rows = index.owed_actions()?;
    let mut jobs: Vec<(Job, String, Vec<i64>)> = Vec::new();
    // Paths already given to each job (thousands of files may match).
    let mut given: Vec<HashSet<PathBuf>> = Vec::new();
    for r in rows {
        let a = &r.action;
        let mine = a.owner == owner;
        if (mine && !a.ready) || (!mine && command::owner_alive(&a.owner)) {
            continue;
        }
        if !mine
            && let Some(token) = &r.running
            && command::kill_leftover(token)
        {
            // Its process died, the command did not: it is run again below,
            // and must not finish (or misbehave) next to its second run.
            info!("killed action '{}' left running by a process that died", a.command);
        }
        let timeout = Duration::from_secs(u64::from(a.timeout_s.max(1)));
        let at = jobs.iter().position(|(j, _, _)| {
            j.command == a.command && j.logfile == a.logfile && j.timeout == timeout
        });
        let i = at.unwrap_or_else(|| {
            let job = Job {
                command: a.command.clone(),
                logfile: a.logfile.clone(),
                timeout,
                paths: Vec::new(),
            };
            jobs.push((job, a.group.clone(), Vec::new()));
            given.push(HashSet::new());
            jobs.len() - 1
        });
        let (job, _, ids) = &mut jobs[i];
        if given[i].insert(a.real.clone()) {
            if command::uses_paths(&job.command) && planted_symlink(index, &a.path, &a.real) {
                warn!(
                    "action '{}': not passing {}: it is a symlink here but was not received \
                     or checked as one",
                    job.command,
                    crate::paths::display(a.real.as_os_str().as_encoded_bytes())
                );
            } else {
                job.paths.push(a.real.clone());
            }
        }
        ids.push(r.id);
    }
    let mut ran = Vec::new();
    for (job, group, ids) in jobs {
        let mut not_started = false;
        let first = ran.len();
        for part in split_for_argv(job) {
            let mut started = |token: &str| {
                if let Err(e) = index.mark_owed_running(&ids, token) {
                    warn!("recording the running action '{}': {e}", part.command);
                }
            };
            let result = command::execute(&part, &mut started, tick);
            log_result(&group, &part, &result);
            not_started |= matches!(result.status, command::Status::NotStarted(_));
            // Output that could not go to the logfile went to csync's log.
            let logfile = if result.logfile_error.is_some() { None } else { part.logfile };
            let (command, paths) = (part.command, part.paths);
            let group = group.clone();
            ran.push(Ran { group, command, paths, logfile, ids: ids.clone(), result });
        }
        // Recorded before the owed rows go: a crash in between runs the
        // command again, which records its outcome then. A failure to record
        // is no reason to run the command again.
        let runs: Vec<ActionRun> = ran[first..].iter().map(Ran::to_run).collect();
        if let Err(e) = index.record_action_runs(host, &runs) {
            warn!("recording how action '{}' ended: {e}", runs[0].command);
        }
        // Only now: a crash while it ran runs it again next time. A command
        // that could not even start stays owed (and is reported each run).
        if !not_started {
            index.remove_owed(&ids)?;
        }
    }
    Ok(ran)
}

/// True when `real` is a symlink now while the index records something else
/// at `path` (DB form): someone planted it after the change was received or
/// checked. A command given it as an argument (`chown -R %%`, `cp %% …`)
/// would act on whatever it points to, so it is left out. Costs one `lstat`
/// per path given to a command with `%%`.
fn planted_symlink(index: &Index, path: &[u8], real: &Path) -> bool {
    let Ok(md) = std::fs::symlink_metadata(real) else { return false };
    if !md.file_type().is_symlink() {
        return false;
    }
    !matches!(index.file(path), Ok(Some(m)) if m.kind == crate::types::FileKind::Symlink)
}

/// Bytes of paths one command may be given: well under Linux's 2 MiB for
/// arguments and environment together.
const ARGV_BUDGET: usize = 512 * 1024;

/// `job` as runs whose paths fit in [`ARGV_BUDGET`] (one run unless tens of
/// thousands of paths changed, like `xargs`); a command without `%%` runs
/// once whatever the number of paths.
fn split_for_argv(job: Job) -> Vec<Job> {
    let total: usize = job.paths.iter().map(|p| p.as_os_str().len() + 1).sum();
    if total <= ARGV_BUDGET || !command::uses_paths(&job.command) {
        return vec![job];
    }
    let empty = job.clone_without_paths();
    let mut parts: Vec<Job> = Vec::new();
    let mut size = ARGV_BUDGET;
    for p in job.paths {
        let n = p.as_os_str().len() + 1;
        if size + n > ARGV_BUDGET {
            parts.push(empty.clone());
            size = 0;
        }
        size += n;
        parts.last_mut().expect("pushed above").paths.push(p);
    }
    parts
}

fn log_result(group: &str, job: &Job, r: &JobResult) {
    let mut paths = String::new();
    for p in job.paths.iter().take(LOG_PATHS) {
        let _ = write!(paths, " {}", p.display());
    }
    if job.paths.len() > LOG_PATHS {
        let _ = write!(paths, " (and {} more)", job.paths.len() - LOG_PATHS);
    }
    if let Some(e) = &r.logfile_error {
        warn!("action '{}' (group {group}): {e}; its output goes to this log", job.command);
    }
    for line in String::from_utf8_lossy(&r.output).lines() {
        info!("action '{}': {line}", job.command);
    }
    let ms = r.elapsed.as_secs_f64() * 1e3;
    if r.status.ok() {
        info!(
            "action '{}' (group {group}) ran for{paths}: {} in {ms:.0} ms",
            job.command, r.status
        );
    } else {
        // The caller reports the failure its own way (stderr, warning, peer).
        info!(
            "action '{}' (group {group}) failed for{paths}: {} after {ms:.0} ms",
            job.command, r.status
        );
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Records one owed command for `real` (shared with the gate's tests).
    pub(in crate::actions) fn owe(
        idx: &mut Index,
        owner: &str,
        cmd: &str,
        real: &str,
        ready: bool,
    ) -> i64 {
        let a = OwedAction {
            command: cmd.into(),
            logfile: None,
            timeout_s: 20,
            group: "g".into(),
            path: real.as_bytes().to_vec(),
            real: real.into(),
            peer: None,
            owner: owner.into(),
            ready,
        };
        idx.add_owed(&[a]).unwrap()[0]
    }

    #[test]
    fn each_command_once_with_all_its_paths_and_orphans_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("i.db"), Duration::from_secs(5)).unwrap();
        let me = command::owner_token();
        let out = dir.path().join("out");
        let cmd = format!("echo run %% >> {}", out.display());
        owe(&mut idx, &me, &cmd, "/a", true);
        owe(&mut idx, &me, &cmd, "/b", true);
        owe(&mut idx, "999999999:1", &cmd, "/c", true); // a dead process's
        owe(&mut idx, &me, &cmd, "/a", true); // the same path twice
        let waiting = owe(&mut idx, &me, &cmd, "/d", false); // still being applied
        let ran = run_owed(&mut idx, &me, "n", &mut || {}).unwrap();
        assert_eq!(ran.len(), 1);
        assert!(ran[0].result.status.ok());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "run /a /b /c\n");
        let left: Vec<i64> = idx.owed_actions().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, vec![waiting]);
        // Nothing owed: nothing runs.
        idx.remove_owed(&[waiting]).unwrap();
        assert!(run_owed(&mut idx, &me, "n", &mut || {}).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "run /a /b /c\n");
    }

    #[test]
    fn a_failed_command_is_recorded_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("i.db"), Duration::from_secs(5)).unwrap();
        let me = command::owner_token();
        let flag = dir.path().join("fixed");
        let cmd = format!("test -e {}", flag.display());
        for _ in 0..2 {
            owe(&mut idx, &me, &cmd, "/a", true);
            let ran = run_owed(&mut idx, &me, "n", &mut || {}).unwrap();
            assert!(!ran[0].result.status.ok());
        }
        let f = idx.action_failures().unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].host.as_str(), f[0].command.as_str()), ("n", cmd.as_str()));
        assert_eq!((f[0].failures, f[0].status.as_str()), (2, "exit status 1"));
        std::fs::write(&flag, "").unwrap();
        owe(&mut idx, &me, &cmd, "/a", true);
        assert!(run_owed(&mut idx, &me, "n", &mut || {}).unwrap()[0].result.status.ok());
        assert!(idx.action_failures().unwrap().is_empty());
    }

    #[test]
    fn tens_of_thousands_of_paths_are_split_only_when_the_command_takes_them() {
        let paths: Vec<PathBuf> = (0..40_000)
            .map(|i| PathBuf::from(format!("/srv/www/htdocs/page-{i:06}.html")))
            .collect();
        let job = |command: &str| Job {
            command: command.into(),
            logfile: None,
            timeout: Duration::from_secs(5),
            paths: paths.clone(),
        };
        assert_eq!(split_for_argv(job("systemctl reload php-fpm")).len(), 1);
        let parts = split_for_argv(job("test $# -gt 1000 || exit 1; : %%"));
        assert!(parts.len() > 1);
        let back: Vec<PathBuf> = parts.iter().flat_map(|p| p.paths.clone()).collect();
        assert_eq!(back, paths);
        for p in &parts {
            let size: usize = p.paths.iter().map(|x| x.as_os_str().len() + 1).sum();
            assert!(size <= ARGV_BUDGET);
            let r = command::execute(p, &mut |_| {}, &mut || {});
            assert!(r.status.ok(), "{:?}", r.status);
        }
        // Without '%%' no path is passed, however many there are.
        let r = command::execute(&job("test $# -eq 0"), &mut |_| {}, &mut || {});
        assert!(r.status.ok(), "{:?}", r.status);
    }

    #[test]
    fn a_symlink_planted_after_the_change_is_not_passed() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("i.db"), Duration::from_secs(5)).unwrap();
        let me = command::owner_token();
        let out = dir.path().join("out");
        let cmd = format!("echo run %% >> {}", out.display());
        let at = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        // Received as a symlink: the index says so.
        std::os::unix::fs::symlink("/etc", at("link")).unwrap();
        let meta = crate::scan::meta_of(&std::fs::symlink_metadata(at("link")).unwrap());
        let row = crate::index::IndexedFile { path: at("link").into_bytes(), meta };
        idx.apply(&crate::index::Batch { upserts: vec![row], ..Default::default() }).unwrap();
        // Received as a file, then swapped for a symlink by someone here.
        std::os::unix::fs::symlink("/etc/shadow", at("planted")).unwrap();
        std::fs::write(at("plain"), b"x").unwrap();
        for p in ["link", "planted", "plain", "gone"] {
            owe(&mut idx, &me, &cmd, &at(p), true);
        }
        let ran = run_owed(&mut idx, &me, "n1", &mut || {}).unwrap();
        assert!(ran[0].result.status.ok());
        let want = format!("run {} {} {}\n", at("link"), at("plain"), at("gone"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
        // Without '%%' nothing is passed anyway: the command still runs.
        let plain = format!("echo plain $# >> {}", out.display());
        owe(&mut idx, &me, &plain, &at("planted"), true);
        let ran = run_owed(&mut idx, &me, "n1", &mut || {}).unwrap();
        assert_eq!(ran.len(), 1);
    }
}
