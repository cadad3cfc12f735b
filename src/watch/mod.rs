//! Watch mode (`csync --watch`, `csync -ii --watch`): inotify on this node's
//! include roots, each burst of changes turned into one run (check only
//! the paths that moved, push to every peer, actions once), with the safety
//! nets a missed event needs: a full check after a queue overflow or a
//! failed watch, a periodic full check anyway, and pushes retried with
//! backoff while a peer is down.
//!
//! Idle, the thread blocks in `poll(2)` on the inotify descriptor with the
//! next timer as timeout: nothing runs when nothing changes.

pub mod debounce;
pub mod events;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::actions::Gate;
use crate::engine::push::PathResult;
use crate::engine::{CheckOptions, Node, PushRequest, RunOutcome, RunRequest};
use debounce::{Burst, Touch};
use events::{Seen, Watcher};

/// Default quiet period before a burst runs.
pub const DEFAULT_DELAY_MS: u64 = 100;
/// Default period of the full check that runs anyway.
pub const DEFAULT_FULL_CHECK_SECS: u64 = 3600;
/// Full checks while the watch limit is exhausted (not everything is watched).
const LIMITED_FULL_CHECK: Duration = Duration::from_secs(60);
/// First retry of a push that left dirty marks (a peer down); doubles.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between two retries.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// How the watcher runs.
#[derive(Clone)]
pub struct Options {
    /// Quiet period that ends a burst.
    pub delay: Duration,
    /// Longest a burst waits after its first event, however busy.
    pub max_delay: Duration,
    /// A full check runs this often anyway.
    pub full_every: Duration,
    /// Where and how to push (the same as `-x`'s).
    pub push: PushRequest,
    /// The listener's action gate (`-ii --watch`): this node's actions then
    /// run in turn with the receiving sessions', once for both.
    pub gate: Option<Arc<Gate>>,
}

impl Options {
    /// Options with a quiet period of `delay` (the cap is ten of them, at
    /// least one second) and a full check every `full_every`.
    pub fn new(delay: Duration, full_every: Duration, push: PushRequest) -> Options {
        Options {
            delay,
            max_delay: (delay * 10).max(Duration::from_secs(1)),
            full_every,
            push,
            gate: None,
        }
    }
}

/// Wakes the watcher from another thread: the listener, after each
/// connection, since a session may have left dirty marks here (a conflict
/// this node won is pushed "on our next run") with no file event to say so.
#[derive(Debug)]
pub struct Wake {
    tx: UnixStream,
}

impl Wake {
    /// A waker and the socket the watcher waits on.
    ///
    /// # Errors
    /// When the socket pair cannot be made.
    pub fn pair() -> std::io::Result<(Arc<Wake>, UnixStream)> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((Arc::new(Wake { tx }), rx))
    }

    /// Wakes the watcher (never blocks: a full buffer is already a wake-up).
    pub fn wake(&self) {
        let _ = (&self.tx).write(&[1]);
    }
}

/// Empties the wake-up socket; true when something was in it.
fn drain(rx: &UnixStream) -> bool {
    let mut buf = [0u8; 256];
    let mut any = false;
    while let Ok(n) = (&*rx).read(&mut buf) {
        if n == 0 {
            break;
        }
        any = true;
    }
    any
}

/// What the next run covers.
enum Scope {
    Full,
    Paths(debounce::Batch),
    PushOnly,
}

/// Watches `node`'s include roots and runs until the process ends;
/// `woken` is the listener's [`Wake`] socket (`-ii --watch`).
///
/// # Errors
/// When inotify cannot be set up at all, or the roots cannot be resolved.
pub fn run(mut node: Node, opts: &Options, woken: Option<UnixStream>) -> Result<(), String> {
    let roots = node.roots().map_err(|e| e.to_string())?;
    let mut watcher = Watcher::new(roots).map_err(|e| format!("inotify: {e}"))?;
    let mut seen = Vec::new();
    let t = Instant::now();
    {
        let level = |p: &[u8]| node.level(p);
        watcher.watch_roots(&level, &mut seen);
    }
    info!(
        "watch: {} directories watched under {} roots in {:.0} ms",
        watcher.watches(),
        watcher.roots().count(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut burst = Burst::new(opts.delay, opts.max_delay);
    let mut full_every = opts.full_every;
    // Watches first, then a full check: nothing changed meanwhile is missed.
    let mut full_due = Instant::now();
    let mut retry: Option<(Instant, Duration)> = None;
    loop {
        let now = Instant::now();
        for s in seen.drain(..) {
            match s {
                Seen::Path(p, touch) => {
                    let stamp = if touch == Touch::Tree { None } else { debounce::stamp(&p) };
                    burst.note(p, touch, stamp, now);
                }
                Seen::Receiving => burst.note_receiving(now),
                Seen::Rescan(root) => {
                    match &root {
                        Some(r) => info!("watch: checking {} in full", r.display()),
                        None => info!("watch: checking every root in full"),
                    }
                    match root {
                        Some(r) => burst.note(r, Touch::Tree, None, now),
                        None => full_due = now,
                    }
                }
                Seen::Limit { missing } => {
                    report_limit(watcher.watches(), missing);
                    full_every = full_every.min(LIMITED_FULL_CHECK);
                }
            }
        }
        let scope = if full_due <= now {
            burst.clear();
            full_due = now + full_every;
            Some(Scope::Full)
        } else if burst.deadline().is_some_and(|d| d <= now) {
            let batch = burst.take(now, debounce::stamp);
            (!batch.paths.is_empty() || !batch.trees.is_empty()).then_some(Scope::Paths(batch))
        } else if retry.is_some_and(|(at, _)| at <= now) && burst.is_empty() {
            // (With paths waiting, the burst's own run pushes: a push-only
            // run would send the marks of paths still moving as they were.)
            Some(Scope::PushOnly)
        } else {
            None
        };
        if let Some(scope) = scope {
            let retrying = matches!(scope, Scope::PushOnly);
            // Events that arrive while the run checks: their paths are being
            // written again (e.g. truncated by the next rewrite) and must not
            // be pushed as the check read them. They stay in `seen` for the
            // next burst.
            let mut fresh = |node: &Node| -> Vec<PathBuf> {
                let level = |p: &[u8]| node.level(p);
                if let Err(e) = watcher.read(&level, &mut seen) {
                    warn!("watch: inotify: {e}");
                }
                seen.iter()
                    .filter_map(|s| match s {
                        Seen::Path(p, t) if *t != Touch::Tree => Some(p.clone()),
                        _ => None,
                    })
                    .collect()
            };
            let After { pending, recheck } = perform(&mut node, opts, scope, &mut fresh);
            let now = Instant::now();
            for p in recheck {
                let stamp = debounce::stamp(&p);
                burst.note(p, Touch::Changed, stamp, now);
            }
            // Only retries that achieved nothing back off further.
            retry = match (pending, retry) {
                (false, _) => None,
                (true, Some((_, wait))) if retrying => {
                    let wait = (wait * 2).min(RETRY_MAX);
                    Some((Instant::now() + wait, wait))
                }
                (true, _) => Some((Instant::now() + RETRY_FIRST, RETRY_FIRST)),
            };
            // Whatever the run took, events that came meanwhile are read now.
            let level = |p: &[u8]| node.level(p);
            watcher.read(&level, &mut seen).map_err(|e| format!("inotify: {e}"))?;
            continue;
        }
        let retry_at = retry.filter(|_| burst.is_empty()).map(|(at, _)| at);
        let next = [Some(full_due), burst.deadline(), retry_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(full_due);
        wait(&watcher, woken.as_ref(), next.saturating_duration_since(Instant::now()));
        if let Some(rx) = &woken
            && drain(rx)
            && retry.is_none()
            && node.index.dirty().is_ok_and(|d| !d.is_empty())
        {
            // Marks a session left: pushed shortly (sessions come in groups).
            retry = Some((Instant::now() + opts.delay, RETRY_FIRST));
        }
        let level = |p: &[u8]| node.level(p);
        watcher.read(&level, &mut seen).map_err(|e| format!("inotify: {e}"))?;
    }
}

/// Blocks until the inotify descriptor (or the wake-up socket) is readable
/// or `timeout` passed.
fn wait(watcher: &Watcher, woken: Option<&UnixStream>, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let fd = watcher.fd();
    let mut fds = vec![PollFd::new(&fd, PollFlags::IN)];
    if let Some(rx) = woken {
        fds.push(PollFd::new(rx, PollFlags::IN));
    }
    let ts = Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let _ = poll(&mut fds, Some(&ts));
}

/// Logs the watch limit running out, with what to do about it.
fn report_limit(watched: usize, missing: usize) {
    warn!("{}", limit_message(events::max_user_watches(), watched, missing));
}

/// The message for [`report_limit`]: the limit now, the directories left
/// unwatched, and a `sysctl` line with enough room (the limit is per user,
/// other programs use it too: the current limit plus what is missing,
/// doubled, rounded up to a power of two).
fn limit_message(max: Option<usize>, watched: usize, missing: usize) -> String {
    let need = watched + missing;
    let suggest = max.map_or(need * 2, |m| (m + missing).max(need) * 2).next_power_of_two();
    format!(
        "watch: the inotify watch limit (fs.inotify.max_user_watches = {}) ran out: {missing} of {need} directories are not watched; \
         falling back to a full check every {} s until csync is restarted with a higher limit: sysctl fs.inotify.max_user_watches={suggest}",
        max.map_or("?".into(), |m| m.to_string()),
        LIMITED_FULL_CHECK.as_secs()
    )
}

/// What a run leaves to do.
struct After {
    /// Dirty marks remain that time may clear (a peer down): retry.
    pending: bool,
    /// Paths a peer could not take because they changed since the check:
    /// the engine leaves them to "the next check", which here is only a
    /// check of the paths that moved, so they go back into the burst.
    recheck: Vec<PathBuf>,
}

/// One run; says what is left to do.
fn perform(
    node: &mut Node,
    opts: &Options,
    scope: Scope,
    fresh: &mut dyn FnMut(&Node) -> Vec<PathBuf>,
) -> After {
    let t = Instant::now();
    let (what, check) = match scope {
        Scope::Full => (
            "full check".to_string(),
            Some(CheckOptions { paths: Vec::new(), recursive: true, init: false }),
        ),
        Scope::PushOnly => ("retry".to_string(), None),
        Scope::Paths(mut batch) => {
            // What a tree covers is checked once, by the outermost tree.
            batch.trees.sort();
            let mut trees: Vec<PathBuf> = Vec::new();
            for t in std::mem::take(&mut batch.trees) {
                if !trees.iter().any(|o| t.starts_with(o)) {
                    trees.push(t);
                }
            }
            batch.paths.retain(|p| !trees.iter().any(|t| p.starts_with(t)));
            batch.trees = trees;
            let n = batch.paths.len() + batch.trees.len();
            let what = format!("{n} paths");
            if batch.trees.is_empty() {
                (what, Some(CheckOptions { paths: batch.paths, recursive: false, init: false }))
            } else {
                // Directories whose own attributes changed are not walked.
                let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) = batch
                    .paths
                    .into_iter()
                    .partition(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
                if !dirs.is_empty() {
                    let o = CheckOptions { paths: dirs, recursive: false, init: false };
                    if let Err(e) = node.check(&o) {
                        warn!("watch: check: {e}");
                    }
                }
                let mut paths = batch.trees;
                paths.extend(files);
                (what, Some(CheckOptions { paths, recursive: true, init: false }))
            }
        }
    };
    let targeted = what != "full check" && what != "retry";
    // The check first: a file written to while it was being read must not
    // be pushed as it was then (half-written); its close brings it again.
    let checked = node.run(&RunRequest { check, push: None, actions: false });
    let mut moved = match (&checked.check, targeted) {
        (Some(Ok(r)), true) => moved_since_check(node, r),
        _ => Vec::new(),
    };
    if let Some(Ok(r)) = &checked.check {
        // A file truncated for its next rewrite before the check read it
        // looks whole and still (0 bytes): only its event says otherwise.
        let touched: std::collections::HashSet<PathBuf> = fresh(node).into_iter().collect();
        if !touched.is_empty() {
            for (db, _) in &r.changed {
                if let Some(real) = crate::paths::real_path(&node.config, db)
                    && touched.contains(&real)
                    && !moved.contains(&real)
                {
                    moved.push(real);
                }
            }
        }
    }
    let mut push = opts.push.clone();
    let mut recheck: Vec<PathBuf> = Vec::new();
    if !moved.is_empty() {
        // Push only what held still; the rest of what is dirty goes with
        // the next run (the moved files' own events bring one soon).
        let changed = checked.check.as_ref().and_then(|c| c.as_ref().ok());
        push.paths = changed
            .map(|r| {
                r.changed
                    .iter()
                    .filter_map(|(db, _)| crate::paths::real_path(&node.config, db))
                    .filter(|p| !moved.contains(p))
                    .collect()
            })
            .unwrap_or_default();
        recheck.extend(moved.iter().cloned());
    }
    let mut outcome = if moved.is_empty() || !push.paths.is_empty() {
        node.run(&RunRequest { check: None, push: Some(push), actions: opts.gate.is_none() })
    } else {
        node.run(&RunRequest { check: None, push: None, actions: opts.gate.is_none() })
    };
    outcome.check = checked.check;
    let changed = log_outcome(&outcome, &what, t.elapsed());
    if changed > 0
        && let Some(gate) = &opts.gate
    {
        // In turn with the sessions receiving here: one run covers both.
        gate.run_now();
    }
    // A peer down, paths that failed there, marks a conflict left for "our
    // next run": try again later. Deletes held back by the empty-root guard
    // wait for a person, not for time.
    let (failed, guarded) = match &outcome.push {
        Some(Ok(p)) => p.report.as_ref().map_or((false, 0), |r| {
            let mut failed = false;
            for p in &r.peers {
                failed |= p.error.is_some();
                for (path, res) in &p.paths {
                    if matches!(res, PathResult::Failed(_)) {
                        failed = true;
                        if let Some(real) = crate::paths::real_path(&node.config, path)
                            && !recheck.contains(&real)
                        {
                            recheck.push(real);
                        }
                    }
                }
            }
            (failed, r.guarded.iter().map(|(_, n)| n).sum::<usize>())
        }),
        Some(Err(_)) => (true, 0),
        None => (false, 0),
    };
    let pending =
        failed || !moved.is_empty() || node.index.dirty().is_ok_and(|d| d.len() > guarded);
    After { pending, recheck }
}

/// Most changed entries a burst's check looks at again before pushing.
const RESTAT_MAX: usize = 10_000;

/// Real paths of the files `report` found changed that are no longer what
/// the check recorded (size, mtime or inode moved, or gone, or back): they
/// were being written while the check read them.
fn moved_since_check(node: &Node, report: &crate::engine::CheckReport) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    if report.changed.len() > RESTAT_MAX {
        return out;
    }
    for (db, _) in &report.changed {
        let Some(real) = crate::paths::real_path(&node.config, db) else { continue };
        let now = std::fs::symlink_metadata(&real).ok();
        let scope = crate::index::Scope::Path { path: db, recursive: false };
        let recorded = node.index.files(scope).ok().and_then(|v| v.into_iter().next());
        let moved = match (&now, &recorded) {
            (None, None) => false,
            (Some(m), Some(f)) => {
                m.is_file()
                    && (m.size() != f.meta.size
                        || m.ino() != f.meta.ino
                        || m.mtime() * 1_000_000_000 + m.mtime_nsec() != f.meta.mtime_ns)
            }
            _ => true,
        };
        if moved {
            out.push(real);
        }
    }
    out
}

/// Logs what a run did; returns the number of changed paths the check found.
fn log_outcome(outcome: &RunOutcome, what: &str, took: Duration) -> usize {
    let mut changed = 0;
    match &outcome.check {
        Some(Ok(r)) => {
            changed = r.changed.len();
            for e in &r.errors {
                warn!("watch: {}: {}", e.path.display(), e.message);
            }
        }
        Some(Err(e)) => warn!("watch: check: {e}"),
        None => {}
    }
    let mut pushed = 0;
    match &outcome.push {
        Some(Ok(p)) => {
            if let Some(r) = &p.report {
                for (root, n) in &r.guarded {
                    warn!(
                        "watch: include root {} is missing, empty or no longer a directory here: {n} deletes held back (force them with: csync -f -r PATH)",
                        crate::paths::display(root)
                    );
                }
                for peer in &r.peers {
                    if let Some(e) = &peer.error {
                        warn!("watch: peer {}: {e}", peer.peer);
                    }
                    for (path, why) in peer.problems() {
                        warn!("watch: peer {}: {}: {why}", peer.peer, crate::paths::display(path));
                    }
                    pushed += peer.done + peer.paths.len();
                }
            }
        }
        Some(Err(e)) => warn!("watch: push: {e}"),
        None => {}
    }
    if let Err(e) = &outcome.actions {
        warn!("watch: actions: {e}");
    }
    if changed == 0 && pushed == 0 {
        tracing::debug!("watch: {what}: nothing changed, in {:.0} ms", took.as_secs_f64() * 1e3);
    } else {
        info!(
            "watch: {what}: {changed} changed, {pushed} entries pushed, in {:.0} ms",
            took.as_secs_f64() * 1e3
        );
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_message_names_the_numbers_and_the_sysctl() {
        let m = limit_message(Some(8192), 8000, 1500);
        assert!(m.contains("max_user_watches = 8192"), "{m}");
        assert!(m.contains("1500 of 9500 directories"), "{m}");
        assert!(m.contains("sysctl fs.inotify.max_user_watches=32768"), "{m}");
        assert!(m.contains("every 60 s"), "{m}");
    }
}
