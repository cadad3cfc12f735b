//! Turns a stream of inotify events into bursts: one run per burst, after a
//! short quiet period (or a longer cap when events never stop), holding back
//! files that are still being written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a file written to (`IN_MODIFY`) but not closed yet waits for its
/// close before it is checked anyway: a log that stays open must still be
/// pushed, a file being copied should not be pushed half-done.
pub const WRITE_GRACE: Duration = Duration::from_secs(2);

/// A file written to without pause (a log kept open) is checked anyway
/// after this long: what it holds then is pushed, the rest next time.
pub const WRITE_CAP: Duration = Duration::from_secs(30);

/// While a peer's transfer is landing here (its temporaries come and go),
/// the burst waits up to this long for it to end, so files renamed into
/// place but not yet recorded in the index are not mistaken for local
/// changes (and echoed back).
pub const RECEIVE_CAP: Duration = Duration::from_secs(10);

/// What one event says about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Written to; the writer may still have it open (`IN_MODIFY`).
    Writing,
    /// A writer closed it (`IN_CLOSE_WRITE`).
    Closed,
    /// Created, deleted, renamed, attributes changed.
    Changed,
    /// A directory appeared or went away: check everything below it.
    Tree,
}

/// Size and mtime (ns): what moves while a file is being written.
pub type Stamp = Option<(u64, i64)>;

/// Reads a path's [`Stamp`] (without following a symlink).
pub fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

#[derive(Debug, Clone)]
struct Pending {
    tree: bool,
    /// Written to since the last close.
    writing: bool,
    /// When it was last written to.
    modified: Instant,
    /// When its current run of writes began.
    writing_since: Instant,
    /// What it looked like at its last event.
    stamp: Stamp,
}

/// The paths of one run: `tree` ones are checked with everything below them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Paths checked by themselves.
    pub paths: Vec<PathBuf>,
    /// Directories that appeared or went away: checked recursively.
    pub trees: Vec<PathBuf>,
}

/// The burst being collected.
#[derive(Debug)]
pub struct Burst {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Instant,
    receiving: Option<Instant>,
    paths: BTreeMap<PathBuf, Pending>,
}

impl Burst {
    /// A burst runs once `quiet` passed without events, or `max` after its
    /// first event.
    pub fn new(quiet: Duration, max: Duration) -> Burst {
        Burst {
            quiet,
            max: max.max(quiet),
            first: None,
            last: Instant::now(),
            receiving: None,
            paths: BTreeMap::new(),
        }
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Forgets everything waiting (a full check covers it).
    pub fn clear(&mut self) {
        self.paths.clear();
        self.first = None;
        self.receiving = None;
    }

    /// Records an event on `path`; `stamp` is what the path looks like now.
    pub fn note(&mut self, path: PathBuf, touch: Touch, stamp: Stamp, now: Instant) {
        self.first.get_or_insert(now);
        self.last = now;
        let p = self.paths.entry(path).or_insert(Pending {
            tree: false,
            writing: false,
            modified: now,
            writing_since: now,
            stamp,
        });
        p.stamp = stamp;
        match touch {
            Touch::Writing => {
                if !p.writing {
                    p.writing = true;
                    p.writing_since = now;
                }
                p.modified = now;
            }
            Touch::Closed => p.writing = false,
            Touch::Changed => {}
            Touch::Tree => p.tree = true,
        }
    }

    /// A peer's transfer is writing here (its temporaries moved).
    pub fn note_receiving(&mut self, now: Instant) {
        self.receiving = Some(now);
        if !self.paths.is_empty() {
            self.last = now;
        }
    }

    /// When the burst should run; `None` when nothing waits.
    pub fn deadline(&self) -> Option<Instant> {
        let first = self.first?;
        if self.paths.is_empty() {
            return None;
        }
        let quiet = self.last + self.quiet;
        let cap = if self.receiving.is_some_and(|r| r + self.quiet > self.last) {
            first + RECEIVE_CAP
        } else {
            first + self.max
        };
        Some(quiet.min(cap))
    }

    /// The paths ready to be checked at `now`, if the burst is due. Files
    /// still moving (written and not closed, or whose size or mtime changed
    /// since their last event, read again through `restat`) stay for the
    /// next burst.
    pub fn take(&mut self, now: Instant, restat: impl Fn(&std::path::Path) -> Stamp) -> Batch {
        let mut out = Batch::default();
        if self.deadline().is_none_or(|d| d > now) {
            return out;
        }
        let mut keep = BTreeMap::new();
        let mut trees = Vec::new();
        for (path, mut p) in std::mem::take(&mut self.paths) {
            if p.tree {
                trees.push((path, p));
                continue;
            }
            let capped = now.duration_since(p.writing_since) >= WRITE_CAP;
            if p.writing && now.duration_since(p.modified) < WRITE_GRACE && !capped {
                keep.insert(path, p);
                continue;
            }
            let s = restat(&path);
            if s != p.stamp && !capped {
                p.stamp = s;
                keep.insert(path, p);
                continue;
            }
            out.paths.push(path);
        }
        // A directory's check would read the files in it that still wait.
        for (path, p) in trees {
            let waiting = keep.keys().any(|k: &PathBuf| k.starts_with(&path));
            let capped = now.duration_since(p.writing_since) >= WRITE_CAP;
            if waiting && !capped {
                keep.insert(path, p);
            } else {
                out.trees.push(path);
            }
        }
        self.paths = keep;
        self.receiving = None;
        self.first = if self.paths.is_empty() { None } else { Some(now) };
        self.last = now;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_millis(100);
    const M: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_runs_after_the_quiet_period_once() {
        let t0 = Instant::now();
        let mut b = Burst::new(Q, M);
        assert_eq!(b.deadline(), None);
        for i in 0..10 {
            b.note(format!("/r/f{i}").into(), Touch::Closed, None, t0);
        }
        assert_eq!(b.deadline(), Some(t0 + Q));
        assert_eq!(b.take(t0 + Q / 2, |_| None), Batch::default());
        let batch = b.take(t0 + Q, |_| None);
        assert_eq!(batch.paths.len(), 10);
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn endless_events_still_run_at_the_cap() {
        let t0 = Instant::now();
        let mut b = Burst::new(Q, M);
        let mut t = t0;
        while t < t0 + 2 * M {
            b.note("/r/f".into(), Touch::Closed, None, t);
            t += Q / 2;
        }
        assert_eq!(b.deadline(), Some(t0 + M));
    }

    #[test]
    fn files_still_written_wait_and_trees_go() {
        let t0 = Instant::now();
        let mut b = Burst::new(Q, M);
        b.note("/r/open".into(), Touch::Writing, Some((1, 1)), t0);
        b.note("/r/moving".into(), Touch::Closed, Some((1, 1)), t0);
        b.note("/r/done".into(), Touch::Closed, Some((5, 5)), t0);
        b.note("/r/dir".into(), Touch::Tree, None, t0);
        b.note("/r/new".into(), Touch::Tree, None, t0);
        b.note("/r/new/open".into(), Touch::Writing, Some((1, 1)), t0);
        let restat = |p: &std::path::Path| {
            if p.ends_with("moving") { Some((2, 2)) } else { Some((5, 5)) }
        };
        let batch = b.take(t0 + Q, restat);
        assert_eq!(batch.paths, vec![PathBuf::from("/r/done")]);
        assert_eq!(batch.trees, vec![PathBuf::from("/r/dir")], "/r/new waits for its file");
        // The moving file goes once it stopped moving; the open one after
        // its close (or the grace).
        let batch = b.take(t0 + 2 * Q, restat);
        assert_eq!(batch.paths, vec![PathBuf::from("/r/moving")]);
        b.note("/r/open".into(), Touch::Closed, Some((5, 5)), t0 + 2 * Q);
        let batch = b.take(t0 + 3 * Q, restat);
        assert_eq!(batch.paths, vec![PathBuf::from("/r/open")]);
    }

    #[test]
    fn a_file_written_without_pause_is_checked_after_the_cap() {
        let t0 = Instant::now();
        let mut b = Burst::new(Q, M);
        let mut t = t0;
        let mut taken = None;
        while t < t0 + 2 * WRITE_CAP {
            b.note("/r/log".into(), Touch::Writing, Some((1, 1)), t);
            if !b.take(t + Q, |_| Some((2, 2))).paths.is_empty() {
                taken = Some(t);
                break;
            }
            t += Duration::from_millis(500);
        }
        let at = taken.expect("the log was never checked");
        assert!(at >= t0 + WRITE_CAP - Q && at <= t0 + WRITE_CAP + Duration::from_secs(1));
    }

    #[test]
    fn a_transfer_landing_here_extends_the_cap() {
        let t0 = Instant::now();
        let mut b = Burst::new(Q, M);
        b.note("/r/d".into(), Touch::Tree, None, t0);
        let mut t = t0;
        while t < t0 + 3 * M {
            b.note_receiving(t);
            t += Q / 2;
        }
        assert!(b.deadline().unwrap() > t0 + 2 * M);
    }
}
