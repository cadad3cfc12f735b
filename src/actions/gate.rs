//! The listener's [`Gate`]: overlapping sessions share one action run.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use super::Error;
use super::command;
use super::owed::{Ran, run_owed};
use crate::index::Index;

/// How long a daemon session that has finished waits for others still
/// receiving before it runs the actions anyway (a big upload from one peer
/// must not hold back another peer's `nginx -s reload` for minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Makes a daemon's overlapping sessions share their action runs: a session
/// that recorded owed actions waits, at its end, until no other session is
/// still applying changes (or [`MAX_WAIT`] passed), and then one run covers
/// them all. Runs never overlap.
#[derive(Debug)]
pub struct Gate {
    index_path: PathBuf,
    busy: Duration,
    owner: String,
    host: String,
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Sessions that recorded owed actions and have not ended.
    writers: usize,
    running: bool,
    /// Runs started and finished so far (runs are numbered from 1).
    started: u64,
    done: u64,
    /// Recent runs, for the sessions that wait on them.
    history: VecDeque<(u64, Arc<Vec<Ran>>)>,
}

impl Gate {
    /// A gate for the index at `index_path`, running as `owner` on the node
    /// named `host` (whose failed actions it records).
    pub fn new(index_path: PathBuf, busy: Duration, owner: String, host: String) -> Gate {
        Gate { index_path, busy, owner, host, state: Mutex::default(), cv: Condvar::new() }
    }

    /// A session is about to record its first owed action.
    pub fn enter(&self) {
        self.state.lock().expect("gate poisoned").writers += 1;
    }

    /// A session that [`Gate::enter`]ed ends owing nothing (or died).
    pub fn exit(&self) {
        let mut st = self.state.lock().expect("gate poisoned");
        st.writers = st.writers.saturating_sub(1);
        self.cv.notify_all();
    }

    /// A session that [`Gate::enter`]ed has ended (its changes recorded):
    /// returns once a run that started after this point has finished, with
    /// the commands that covered its owed rows `ids`. `tick` runs about
    /// every [`command::TICK`] meanwhile.
    pub fn leave(&self, ids: &[i64], tick: &mut dyn FnMut()) -> Vec<Ran> {
        let mut st = self.state.lock().expect("gate poisoned");
        st.writers = st.writers.saturating_sub(1);
        let ticket = st.started;
        let since = Instant::now();
        loop {
            if st.done > ticket {
                let mine: HashSet<i64> = ids.iter().copied().collect();
                let mut out = Vec::new();
                for (_, runs) in &st.history {
                    let touching = runs.iter().filter(|r| r.ids.iter().any(|i| mine.contains(i)));
                    out.extend(touching.cloned());
                }
                return out;
            }
            if !st.running && (st.writers == 0 || since.elapsed() >= MAX_WAIT) {
                st.running = true;
                st.started += 1;
                let n = st.started;
                drop(st);
                // A panic in a run must not leave `running` set for ever.
                let run = std::panic::AssertUnwindSafe(|| self.run(tick));
                let ran = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                    warn!("running actions panicked; what is owed stays journalled");
                    Vec::new()
                });
                st = self.state.lock().expect("gate poisoned");
                st.running = false;
                st.done = n;
                st.history.push_back((n, Arc::new(ran)));
                while st.history.len() > 64 {
                    st.history.pop_front();
                }
                self.cv.notify_all();
                continue;
            }
            let (g, _) = self.cv.wait_timeout(st, command::TICK).expect("gate poisoned");
            drop(g);
            tick();
            st = self.state.lock().expect("gate poisoned");
        }
    }

    /// Runs what is owed now (at daemon start: what a killed daemon left),
    /// in turn with the sessions.
    pub fn run_now(&self) {
        // Results are logged by the run; nobody waits for them here.
        self.enter();
        self.leave(&[], &mut || {});
    }

    fn run(&self, tick: &mut dyn FnMut()) -> Vec<Ran> {
        let r = Index::open(&self.index_path, self.busy)
            .map_err(Error::from)
            .and_then(|mut idx| run_owed(&mut idx, &self.owner, &self.host, tick));
        let ran = r.unwrap_or_else(|e| {
            warn!("running actions: {e}");
            Vec::new()
        });
        for f in ran.iter().filter(|r| !r.result.status.ok()) {
            warn!("action '{}' (group {}) failed: {}", f.command, f.group, f.result.status);
        }
        ran
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::owed::tests::owe;

    #[test]
    fn gate_runs_once_after_the_last_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.db");
        let mut idx = Index::open(&db, Duration::from_secs(5)).unwrap();
        let me = command::owner_token();
        let out = dir.path().join("out");
        let cmd = format!("echo run %% >> {}", out.display());
        let gate = Arc::new(Gate::new(db.clone(), Duration::from_secs(5), me.clone(), "n".into()));
        gate.enter();
        gate.enter();
        let a = owe(&mut idx, &me, &cmd, "/a", true);
        let g2 = gate.clone();
        let first = std::thread::spawn(move || g2.leave(&[a], &mut || {}));
        // The first session waits for the second, which is still applying.
        let b = owe(&mut idx, &me, &cmd, "/b", true);
        let ran = gate.leave(&[b], &mut || {});
        let ran_first = first.join().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "run /a /b\n");
        assert_eq!(ran.len(), 1);
        assert_eq!(ran_first.len(), 1);
        assert_eq!(ran_first[0].ids, ran[0].ids);
    }
}
