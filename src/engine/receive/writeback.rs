//! Starting a batch's write-back early, so that its durability point finds
//! most of it done.
//!
//! A batch's files become durable together at its end: one `syncfs` writes
//! back everything the batch wrote, and the session waits for it before it
//! renames, records and confirms anything. On this machine's ext4 that wait
//! was about 0.4 s per 10,000 small files received, during which the
//! session wrote nothing. Now, every [`KICK_EVERY`] files staged (three
//! times in a batch of 256), a thread of the session calls `syncfs` in the
//! background while the session goes on writing: by the durability point
//! most of the batch is on the disk. At most one such `syncfs` runs per
//! session, and a kick while it runs is dropped (that one covers it). A
//! push of fewer files than that never kicks.
//!
//! Measured (ext4, 10,000 files to 2 peers, alternating with the build
//! before): 1.59–1.63 s against 1.76–2.09 s; tmpfs unchanged.
//!
//! Nothing here is a guarantee. The durability point still makes its own
//! `syncfs` (or `fsync`s) and reports their errors; this one's result is
//! ignored. It runs on a descriptor of its own (a fresh open of the
//! directory), because `syncfs` reports a write-back error once per open
//! file: through the batch's own descriptor it could swallow an error that
//! the durability point must see.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Files staged between two early write-backs.
pub(super) const KICK_EVERY: usize = 64;

/// A session's background write-back: one thread, started at the first
/// kick, ended when the session drops this.
#[derive(Default)]
pub(super) struct Writeback {
    tx: Option<SyncSender<OwnedFd>>,
    /// The thread could not be started: stop trying.
    off: bool,
}

impl Writeback {
    /// Starts writing back the file system of `dir` in the background,
    /// unless a write-back is already running (it will cover this too) or
    /// `syncfs` does not stand for an fsync there.
    pub(super) fn kick(&mut self, dir: impl AsFd) {
        if self.off || !crate::apply::syncfs_is_reliable(&dir) {
            return;
        }
        let Ok(own) = rustix::fs::openat(
            &dir,
            ".",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) else {
            return;
        };
        if self.tx.is_none() {
            let (tx, rx) = sync_channel::<OwnedFd>(1);
            let started =
                std::thread::Builder::new().name("csync-writeback".into()).spawn(move || {
                    while let Ok(fd) = rx.recv() {
                        let _ = rustix::fs::syncfs(&fd);
                    }
                });
            if started.is_err() {
                self.off = true;
                return;
            }
            self.tx = Some(tx);
        }
        if let Some(tx) = &self.tx {
            match tx.try_send(own) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => self.tx = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_start_one_thread_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let fd =
            rustix::fs::open(dir.path(), rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())
                .unwrap();
        let mut w = Writeback::default();
        for _ in 0..100 {
            w.kick(&fd);
        }
        // Where syncfs stands for an fsync (ext4, tmpfs, ...) the thread runs;
        // elsewhere nothing was started. Either way the session goes on.
        assert_eq!(w.tx.is_some(), crate::apply::syncfs_is_reliable(&fd));
        drop(w);
    }
}
