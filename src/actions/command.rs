//! Running `action` commands safely.
//!
//! csync2 spliced the changed file names into the `sh -c` text, unquoted, so a
//! file named `x; reboot` ran `reboot` on every peer. Here the names are
//! arguments: every `%%` in the command becomes `"$@"` (see [`crate::rewrite`]),
//! and the paths are passed after `sh -c SCRIPT csync-action`. The shell never
//! parses a file name.
//!
//! A command runs in its own process group with stdin from `/dev/null` and its
//! output appended to the `logfile` (or captured for the node's log), and the
//! whole group is killed when it outlives its timeout.
//!
//! This module knows nothing of the index: the owed list ([`super::owed`]) records what is owed,
//! groups it into [`Job`]s and calls [`execute`].

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::Action;
use crate::pattern::ActionMatcher;

/// How long a command gets between SIGTERM and SIGKILL after its timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How often a waiting caller's `tick` runs (keep-alives to a waiting peer).
pub const TICK: Duration = Duration::from_millis(500);

/// Set in every action's environment: a csync started by an action leaves
/// its own actions to a later run instead of waiting for the lock its parent
/// action holds.
pub const IN_ACTION: &str = "CSYNC_IN_ACTION";

/// Captured output kept for the node's log when there is no `logfile`.
const MAX_CAPTURE: u64 = 64 * 1024;

/// One `action { … }` block, ready to match paths.
#[derive(Debug, Clone)]
pub struct Compiled {
    matcher: ActionMatcher,
    /// `exec` commands in file order.
    pub exec: Vec<String>,
    /// `logfile`.
    pub logfile: Option<PathBuf>,
    /// Seconds before a command is killed.
    pub timeout_s: u32,
    do_local: bool,
    do_local_only: bool,
}

impl Compiled {
    /// Compiles an action's patterns.
    ///
    /// # Errors
    /// `(pattern index, message)` when a pattern does not compile (the config
    /// check reports those first).
    pub fn new(a: &Action) -> Result<Self, (usize, String)> {
        Ok(Compiled {
            matcher: ActionMatcher::new(&a.patterns)?,
            exec: a.exec.clone(),
            logfile: a.logfile.clone(),
            timeout_s: a.timeout_s(),
            do_local: a.do_local,
            do_local_only: a.do_local_only,
        })
    }

    /// csync2's trigger rule: a change made here (`local`) triggers only
    /// `do-local`/`do-local-only` actions; a received one every action but
    /// `do-local-only` ones. Then the pattern decides (DB-form `path`).
    pub fn applies(&self, path: &[u8], local: bool) -> bool {
        let side = if local { self.do_local } else { !self.do_local_only };
        side && self.matcher.matches(path)
    }
}

/// True when `command` takes the changed paths (it has a `%%` to rewrite).
pub fn uses_paths(command: &str) -> bool {
    crate::rewrite::expand_paths(command).map_or(true, |s| s != command)
}

/// One command to run once, for all the paths that triggered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The `exec` string as configured.
    pub command: String,
    /// Where output goes; `None`: captured for the node's log.
    pub logfile: Option<PathBuf>,
    /// Killed after this.
    pub timeout: Duration,
    /// The changed paths, each once, in order of change.
    pub paths: Vec<PathBuf>,
}

impl Job {
    /// The same command, logfile and timeout, with no paths yet.
    pub fn clone_without_paths(&self) -> Job {
        Job {
            command: self.command.clone(),
            logfile: self.logfile.clone(),
            timeout: self.timeout,
            paths: Vec::new(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal (not ours) ended it.
    Signalled(i32),
    /// It outlived its timeout and was killed.
    TimedOut(Duration),
    /// It could not be started.
    NotStarted(String),
}

impl Status {
    /// Exit status 0.
    pub fn ok(&self) -> bool {
        *self == Status::Exited(0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(c) => write!(f, "exit status {c}"),
            Status::Signalled(s) => write!(f, "killed by signal {s}"),
            Status::TimedOut(t) => {
                write!(f, "still running after the {} s timeout: killed", t.as_secs())
            }
            Status::NotStarted(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// What running a [`Job`] gave.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// How it ended.
    pub status: Status,
    /// Wall time.
    pub elapsed: Duration,
    /// Its output, when there was no usable `logfile` (at most the last 64 KiB).
    pub output: Vec<u8>,
    /// The `logfile` could not be opened (the output was captured instead).
    pub logfile_error: Option<String>,
}

/// Runs `job` to its end or its timeout, calling `tick` about every
/// [`TICK`] while it waits (the daemon keeps the waiting peer's connection
/// alive with it). `started` learns the command's process token (see
/// [`process_token`]) as soon as it runs: its process group, to kill if this
/// process dies and a later run finds it still going.
pub fn execute(job: &Job, started: &mut dyn FnMut(&str), tick: &mut dyn FnMut()) -> JobResult {
    let start = Instant::now();
    let mut logfile_error = None;
    let log = match &job.logfile {
        Some(p) => match open_log(p) {
            Ok(f) => Some(f),
            Err(e) => {
                logfile_error = Some(format!("logfile {}: {e}", p.display()));
                None
            }
        },
        None => None,
    };
    let capture = if log.is_none() { tempfile::tempfile().ok() } else { None };
    let out = log.as_ref().or(capture.as_ref());
    let (stdout, stderr) = match out.map(|f| (f.try_clone(), f.try_clone())) {
        Some((Ok(a), Ok(b))) => (Stdio::from(a), Stdio::from(b)),
        _ => (Stdio::null(), Stdio::null()),
    };
    let script = match crate::rewrite::expand_paths(&job.command) {
        Ok(s) => s,
        Err(e) => {
            let status = Status::NotStarted(e);
            return JobResult {
                status,
                elapsed: start.elapsed(),
                output: Vec::new(),
                logfile_error,
            };
        }
    };
    // A command without '%%' gets no arguments (thousands of paths could
    // exceed the kernel's argument limit for nothing).
    let paths: &[PathBuf] = if script == job.command { &[] } else { &job.paths };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg("csync-action")
        .args(paths)
        .env(IN_ACTION, "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .current_dir("/")
        // Its own group: a timeout kills what it started too.
        .process_group(0);
    let status = match cmd.spawn() {
        Err(e) => Status::NotStarted(e.to_string()),
        Ok(child) => {
            started(&process_token(child.id()));
            wait(child, job.timeout, tick)
        }
    };
    let output = capture.map(read_tail).unwrap_or_default();
    JobResult { status, elapsed: start.elapsed(), output, logfile_error }
}

fn open_log(p: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().append(true).create(true).open(p)
}

fn read_tail(mut f: File) -> Vec<u8> {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX_CAPTURE)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    buf
}

fn wait(mut child: std::process::Child, timeout: Duration, tick: &mut dyn FnMut()) -> Status {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // `Child::wait` has no timeout: a thread waits, this one keeps time.
    let waiter = std::thread::Builder::new().name("csync-action".into()).spawn(move || {
        let _ = tx.send(child.wait());
    });
    if waiter.is_err() {
        return Status::NotStarted("cannot start a waiting thread".into());
    }
    let start = Instant::now();
    let mut signalled: Option<(rustix::process::Signal, Instant)> = None;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Ok(st)) => {
                if signalled.is_some() {
                    return Status::TimedOut(timeout);
                }
                return match (st.code(), st.signal()) {
                    (Some(c), _) => Status::Exited(c),
                    (None, Some(s)) => Status::Signalled(s),
                    (None, None) => Status::Exited(-1),
                };
            }
            Ok(Err(e)) => return Status::NotStarted(e.to_string()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Status::NotStarted("lost track of the process".into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        tick();
        let group = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw);
        match signalled {
            None if start.elapsed() >= timeout => {
                if let Some(g) = group {
                    let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
                }
                signalled = Some((rustix::process::Signal::TERM, Instant::now()));
            }
            Some((s, at)) if s == rustix::process::Signal::TERM && at.elapsed() >= KILL_GRACE => {
                if let Some(g) = group {
                    let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
                }
                signalled = Some((rustix::process::Signal::KILL, Instant::now()));
            }
            _ => {}
        }
    }
}

/// The process an owed action belongs to: `pid:starttime`. The start
/// time tells a live owner from a dead one whose pid was reused.
pub fn owner_token() -> String {
    process_token(std::process::id())
}

/// `pid:starttime` of any process (see [`owner_token`]).
pub fn process_token(pid: u32) -> String {
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

/// Kills the process group led by the process behind `token` if that very
/// process still runs: a command left running by a process that died, about
/// to be run again. Returns whether it was there.
pub fn kill_leftover(token: &str) -> bool {
    if !owner_alive(token) {
        return false;
    }
    let pid = token.split_once(':').and_then(|(p, _)| p.parse::<i32>().ok());
    match pid.and_then(rustix::process::Pid::from_raw) {
        Some(g) => rustix::process::kill_process_group(g, rustix::process::Signal::KILL).is_ok(),
        None => false,
    }
}

/// True when the process behind `token` still runs (its actions are its own
/// business); false when it is gone, or dead and not yet reaped, and its
/// owed actions are orphans.
pub fn owner_alive(token: &str) -> bool {
    let Some((pid, t)) = token.split_once(':') else { return false };
    let (Ok(pid), Ok(t)) = (pid.parse::<u32>(), t.parse::<u64>()) else { return false };
    proc_stat(pid).is_some_and(|(state, start)| start == t && !matches!(state.as_str(), "Z" | "X"))
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks.
fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// The state letter and start time of a process, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.to_string();
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// An exclusive lock held while actions run: commands never run concurrently
/// with themselves, whichever process (daemon, `csync -x`) runs them.
#[derive(Debug)]
pub struct RunLock(#[allow(dead_code)] File);

impl RunLock {
    /// Takes the lock on `path` (created if needed), calling `tick` about every
    /// [`TICK`] while another process holds it.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn acquire(path: &Path, tick: &mut dyn FnMut()) -> std::io::Result<RunLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        let step = Duration::from_millis(50);
        let mut since_tick = Duration::ZERO;
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(RunLock(f)),
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            std::thread::sleep(step);
            since_tick += step;
            if since_tick >= TICK {
                since_tick = Duration::ZERO;
                tick();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_rules() {
        let mk = |do_local, do_local_only| {
            Compiled::new(&Action {
                patterns: vec!["/etc/nginx/*".into()],
                exec: vec!["true".into()],
                do_local,
                do_local_only,
                ..Action::default()
            })
            .unwrap()
        };
        let plain = mk(false, false);
        assert!(plain.applies(b"/etc/nginx/nginx.conf", false));
        assert!(!plain.applies(b"/etc/nginx/nginx.conf", true));
        assert!(!plain.applies(b"/etc/hosts", false));
        let local = mk(true, false);
        assert!(local.applies(b"/etc/nginx/a", false) && local.applies(b"/etc/nginx/a", true));
        let only = mk(true, true);
        assert!(!only.applies(b"/etc/nginx/a", false) && only.applies(b"/etc/nginx/a", true));
    }

    fn job(command: &str, timeout: Duration, logfile: Option<PathBuf>) -> Job {
        Job { command: command.into(), logfile, timeout, paths: vec!["/a b".into(), "/c".into()] }
    }

    #[test]
    fn output_goes_to_the_logfile_and_status_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "before\n").unwrap();
        let r = execute(
            &job(
                "echo out %%; echo err >&2; read x; exit 3",
                Duration::from_secs(20),
                Some(log.clone()),
            ),
            &mut |_| {},
            &mut || {},
        );
        assert_eq!(r.status, Status::Exited(3));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "before\nout /a b /c\nerr\n");
        assert!(r.output.is_empty());
    }

    #[test]
    fn without_logfile_the_output_is_captured() {
        let r = execute(&job("echo %%", Duration::from_secs(20), None), &mut |_| {}, &mut || {});
        assert!(r.status.ok());
        assert_eq!(r.output, b"/a b /c\n");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("late");
        let cmd = format!("sleep 30; touch {}", flag.display());
        let mut ticks = 0;
        let r = execute(&job(&cmd, Duration::from_secs(1), None), &mut |_| {}, &mut || ticks += 1);
        assert_eq!(r.status, Status::TimedOut(Duration::from_secs(1)));
        assert!(r.elapsed < Duration::from_secs(20), "{:?}", r.elapsed);
        assert!(ticks >= 1);
        assert!(!flag.exists());
    }

    #[test]
    fn a_command_ignoring_sigterm_is_killed() {
        let r = execute(
            &job("trap '' TERM; sleep 30", Duration::from_secs(1), None),
            &mut |_| {},
            &mut || {},
        );
        assert_eq!(r.status, Status::TimedOut(Duration::from_secs(1)));
    }

    #[test]
    fn a_leftover_command_is_killed_by_its_token() {
        let mut token = String::new();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            execute(
                &job("sleep 30", Duration::from_secs(60), None),
                &mut |t| tx.send(t.to_string()).unwrap(),
                &mut || {},
            )
        });
        token.push_str(&rx.recv_timeout(Duration::from_secs(20)).unwrap());
        assert!(owner_alive(&token));
        assert!(kill_leftover(&token));
        let r = t.join().unwrap();
        assert_eq!(r.status, Status::Signalled(9));
        assert!(!kill_leftover(&token), "gone: nothing to kill");
    }

    #[test]
    fn owners() {
        assert!(owner_alive(&owner_token()));
        assert!(!owner_alive("999999999:1"));
        assert!(!owner_alive(&format!("{}:1", std::process::id())));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn run_lock_is_exclusive_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = RunLock::acquire(&p, &mut || {}).unwrap();
        let (tx, rx) = mpsc::channel();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let mut ticks = 0;
            let _l = RunLock::acquire(&p2, &mut || {
                ticks += 1;
                let _ = tx.send(ticks);
            })
            .unwrap();
        });
        // The second taker is waiting (it ticks) while the first holds the lock.
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), 1);
        drop(held);
        t.join().unwrap();
    }
}
