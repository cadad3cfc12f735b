//! Small files read once for all the peers of a run.
//!
//! Sessions push to their peers in parallel, in the same order when the
//! planner feeds them all from one read of the index (the common case: an
//! initial sync, or a change that every peer needs). Each session used to
//! open, `fstat`, read and close every file on its own: at 8 peers that was
//! 8 opens of each file, most of the client's system time. Now the planner
//! hands the items of one path to several peers with one [`Slot`]; the first
//! session to send it reads the file (through `scan::open_checked`, like
//! any other read) and leaves the bytes in the slot for the others.
//!
//! Bounds: only files up to [`UP_TO`] bytes are shared, and
//! all slots of the process together hold at most [`BUDGET`] bytes; past
//! it, a session reads the file itself, as before. The bytes go when the
//! last item holding the slot is dropped (each session lets go of it once it
//! has queued the content).
//!
//! The bytes are what the first reader read. Every receiver checks them
//! against the hash the check declared, so a file that changed since the
//! check is refused by all of them alike, and its mark stays. They are
//! reused for at most [`FRESH_FOR`] after that read: a session further
//! behind reads the file again, so a file removed or replaced since is not
//! sent to it from memory (its read then fails as it did before sharing).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Files up to this size are shared (the session's small-file size: such a
/// file goes out in one frame).
pub(super) const UP_TO: u64 = 64 * 1024;

/// How long after its read kept content is sent to another peer.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(2);

/// Bytes that all slots together may hold.
pub(super) const BUDGET: usize = 8 << 20;

/// Bytes held by slots now (all runs of this process).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// One path's content, shared by the items of several peers.
#[derive(Debug, Default)]
pub(super) struct Slot(Mutex<Option<Arc<Held>>>);

/// Content read for a session; counted against [`BUDGET`] while it lives if
/// it was kept in a slot.
#[derive(Debug)]
pub(super) struct Held {
    bytes: Vec<u8>,
    counted: usize,
    read_at: Instant,
}

impl Held {
    /// The content.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

impl Slot {
    /// A new, empty slot for the items of one path.
    pub(super) fn new() -> Arc<Slot> {
        Arc::new(Slot::default())
    }

    /// The content for one session: another session's copy if one is kept,
    /// else what `read` returns, kept for the others when some still hold
    /// the slot and the budget allows. `read` runs under the slot's lock, so
    /// sessions reaching the same file at the same moment read it once
    /// (sessions run on threads of their own; a small file's read is short).
    ///
    /// # Errors
    /// `read`'s error; nothing is kept then, and the next session tries
    /// itself.
    pub(super) fn content(
        self: &Arc<Self>,
        read: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Held>, String> {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kept.as_ref() {
            Some(h) if h.read_at.elapsed() < FRESH_FOR => return Ok(h.clone()),
            // Too old to send from memory: read again (and keep that).
            Some(_) => *kept = None,
            None => {}
        }
        let bytes = read()?;
        let len = bytes.len();
        // Kept only if another item still holds the slot (ours is one) and
        // the budget has room.
        let keep = Arc::strong_count(self) > 1
            && HELD
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                    (h + len <= BUDGET).then_some(h + len)
                })
                .is_ok();
        let held =
            Arc::new(Held { bytes, counted: if keep { len } else { 0 }, read_at: Instant::now() });
        if keep {
            *kept = Some(held.clone());
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_session_reads_and_the_others_reuse_until_the_last_lets_go() {
        let a = Slot::new();
        let b = a.clone();
        let mut reads = 0;
        let first = a
            .content(|| {
                reads += 1;
                Ok(b"content".to_vec())
            })
            .unwrap();
        let second = b.content(|| panic!("read again")).unwrap();
        assert_eq!(reads, 1);
        assert_eq!(second.bytes(), b"content");
        assert_eq!(first.bytes(), b"content");
        drop((a, first, second));
        // The last holder still finds it; dropping it frees the bytes.
        assert_eq!(b.content(|| panic!("read again")).unwrap().bytes(), b"content");
    }

    #[test]
    fn a_lone_holder_or_a_failed_read_keeps_nothing() {
        let a = Slot::new();
        let got = a.content(|| Ok(vec![1; 100])).unwrap();
        assert!(a.0.lock().unwrap().is_none(), "nobody else needs it");
        assert_eq!(got.counted, 0);
        let b = a.clone();
        assert_eq!(a.content(|| Err("gone".into())).unwrap_err(), "gone");
        assert_eq!(b.content(|| Ok(vec![2; 3])).unwrap().bytes(), [2, 2, 2]);
    }

    #[test]
    fn past_the_budget_each_session_reads_its_own() {
        let big = Slot::new();
        let _other = big.clone();
        let held_big = big.content(|| Ok(vec![0; BUDGET + 1])).unwrap();
        assert!(big.0.lock().unwrap().is_none(), "over the budget: not kept");
        assert_eq!(held_big.counted, 0);
        assert_eq!(big.content(|| Ok(vec![1; 2])).unwrap().bytes(), [1, 1], "read again");
    }

    #[test]
    fn content_read_too_long_ago_is_read_again() {
        let a = Slot::new();
        let _b = a.clone();
        a.content(|| Ok(b"old".to_vec())).unwrap();
        if let Some(h) = a.0.lock().unwrap().as_mut() {
            Arc::get_mut(h).expect("only the slot holds it").read_at -= FRESH_FOR;
        }
        assert_eq!(a.content(|| Ok(b"new".to_vec())).unwrap().bytes(), b"new");
        assert_eq!(a.content(|| panic!("fresh again")).unwrap().bytes(), b"new");
    }
}
