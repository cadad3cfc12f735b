//! Transfer progress counters, per peer, for the terminal display of
//! `csync -x`/`-u` (`cli::progress` draws them).
//!
//! The update engine pushes to each peer from its own thread, so the peer a
//! count belongs to is a thread-local set when that thread starts: the
//! engine's hooks are one-line calls ([`sent`], [`done`]) that need no peer
//! argument threaded through. Until [`enable`] is called every hook is a
//! no-op (one relaxed atomic load), so runs without a terminal pay nothing.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static ENABLED: AtomicBool = AtomicBool::new(false);
static PEERS: Mutex<Vec<(String, Arc<Counters>)>> = Mutex::new(Vec::new());

thread_local! {
    static CURRENT: RefCell<Option<Arc<Counters>>> = const { RefCell::new(None) };
}

/// One peer's counts so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries to push.
    pub planned: AtomicU64,
    /// Entries the peer confirmed.
    pub done: AtomicU64,
    /// Content bytes sent (whole files and delta chunks).
    pub bytes: AtomicU64,
}

/// Turns counting on for this process (the terminal display does).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Starts counting for `peer` on this thread, with `planned` entries to push.
pub fn start(peer: &str, planned: usize) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let c = Arc::new(Counters::default());
    c.planned.store(planned as u64, Ordering::Relaxed);
    if let Ok(mut p) = PEERS.lock() {
        p.push((peer.to_string(), c.clone()));
    }
    CURRENT.with(|cur| *cur.borrow_mut() = Some(c));
}

/// `n` content bytes went to this thread's peer.
pub fn sent(n: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        CURRENT.with(|c| {
            if let Some(c) = c.borrow().as_ref() {
                c.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
}

/// This thread's peer confirmed one entry.
pub fn done() {
    if ENABLED.load(Ordering::Relaxed) {
        CURRENT.with(|c| {
            if let Some(c) = c.borrow().as_ref() {
                c.done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Every peer counted so far, in start order: `(peer, planned, done, bytes)`.
pub fn snapshot() -> Vec<(String, u64, u64, u64)> {
    PEERS
        .lock()
        .map(|p| {
            p.iter()
                .map(|(n, c)| {
                    (
                        n.clone(),
                        c.planned.load(Ordering::Relaxed),
                        c.done.load(Ordering::Relaxed),
                        c.bytes.load(Ordering::Relaxed),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
