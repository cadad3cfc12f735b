//! The apply batch: what a session has applied but not yet confirmed.
//! Files are staged under temporary names, made durable together, published
//! (renamed into place), recorded in the index in one transaction, and only
//! then acknowledged: an ack always means "durable, and recorded here".

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tracing::warn;

use crate::apply;
use crate::index::{Index, IndexedFile, OwnedMark, Received};
use crate::proto::{ErrorCode, Msg, Outcome};
use crate::types::Meta;

/// Entries applied before the index is committed and the acks go out.
pub(super) const BATCH: usize = 256;

/// A published (or failed) staged file: `(request id, what the caller
/// staged with it, the entry as now on disk)`.
pub(super) type Published<P> = (u32, P, Result<Meta, apply::Error>);

/// A delete run at the batch's durability point: `(request id, what the
/// caller kept with it, whether it was made)`.
pub(super) type Removed<D> = (u32, D, Result<(), apply::Error>);

/// One session's batch; `P` is what the caller keeps with a staged file
/// until it is published, `D` with a delete until it is run.
pub(super) struct Batch<P, D = ()> {
    /// The sender, as recorded with every entry.
    peer: String,
    /// Applied entries not yet committed to the index (one commit per batch).
    pending: Vec<Received>,
    /// Their paths, and those of staged files: a request for one of them
    /// commits the batch first.
    paths: HashSet<Vec<u8>>,
    /// Acks held back until the entries they confirm are committed.
    acks: Vec<Msg>,
    /// Files written and checked under their temporary names, waiting for
    /// the batch's durability point.
    staged: Vec<(u32, P, apply::Staged)>,
    /// Directories whose entries were deleted in this batch: given their
    /// mtime and fsynced once each before the deletes are confirmed.
    dirty_dirs: Vec<apply::Touched>,
    /// Deletes walked to, run at the durability point: the files together
    /// (each unlink may wait for the device to discard its blocks), then
    /// the directories, in order.
    deletions: Vec<(u32, D, apply::Deletion)>,
    /// Starts the staged files' write-back while more are written.
    writeback: super::writeback::Writeback,
}

impl<P, D> Batch<P, D> {
    /// An empty batch of a session with `peer`.
    pub(super) fn new(peer: &str) -> Self {
        Batch {
            peer: peer.to_string(),
            pending: Vec::new(),
            paths: HashSet::new(),
            acks: Vec::new(),
            staged: Vec::new(),
            dirty_dirs: Vec::new(),
            deletions: Vec::new(),
            writeback: Default::default(),
        }
    }

    /// Entries waiting: the batch is committed when they reach [`BATCH`].
    pub(super) fn len(&self) -> usize {
        self.pending.len() + self.staged.len() + self.deletions.len()
    }

    /// True when `path` is in the batch (its new state is not committed yet).
    pub(super) fn touches(&self, path: &[u8]) -> bool {
        self.paths.contains(path)
    }

    /// Queues an applied entry for the next index commit.
    pub(super) fn defer(
        &mut self,
        file: Option<IndexedFile>,
        removed: Option<Vec<u8>>,
        version: Option<[u8; 32]>,
        origin: Option<String>,
        actions: Vec<i64>,
    ) {
        let path =
            file.as_ref().map(|f| f.path.clone()).or_else(|| removed.clone()).unwrap_or_default();
        self.paths.insert(path);
        let peer = self.peer.clone();
        let forward = Vec::new();
        self.pending.push(Received { file, removed, peer, version, origin, actions, forward });
    }

    /// Marks for other peers, recorded with the entry queued last.
    pub(super) fn forward(&mut self, marks: Vec<OwnedMark>) {
        if let Some(r) = self.pending.last_mut() {
            r.forward.extend(marks);
        }
    }

    /// A file of `path` is written under its temporary name: it becomes
    /// durable and visible at [`Batch::publish`].
    pub(super) fn stage(&mut self, id: u32, path: &[u8], keep: P, file: apply::Staged) {
        self.paths.insert(path.to_vec());
        // Not at the batch's end: its durability point follows at once.
        let n = self.staged.len() + 1;
        if n.is_multiple_of(super::writeback::KICK_EVERY) && n < BATCH {
            self.writeback.kick(&**file.dir());
        }
        self.staged.push((id, keep, file));
    }

    /// A delete of `path` to run at [`Batch::publish`].
    pub(super) fn delete_later(&mut self, id: u32, path: &[u8], keep: D, d: apply::Deletion) {
        self.paths.insert(path.to_vec());
        self.deletions.push((id, keep, d));
    }

    /// True when deletes wait to be run.
    pub(super) fn deleting(&self) -> bool {
        !self.deletions.is_empty()
    }

    /// A change left `dir` to be fsynced before it is confirmed.
    pub(super) fn dirty_dir(&mut self, dir: Option<apply::Touched>) {
        self.dirty_dirs.extend(dir);
    }

    /// True when staged files or deletes await their durability point.
    pub(super) fn unpublished(&self) -> bool {
        !self.staged.is_empty() || !self.dirty_dirs.is_empty() || !self.deletions.is_empty()
    }

    /// Sends an ack now, or holds it back while entries await their commit.
    pub(super) fn ack(&mut self, id: u32, outcome: Outcome, reply: &mut dyn FnMut(Msg)) {
        let msg = Msg::Ack { id, outcome };
        if self.pending.is_empty() && self.acks.is_empty() {
            reply(msg);
        } else {
            self.acks.push(msg);
        }
    }

    /// Holds an ack back until the next commit, whatever is pending.
    pub(super) fn hold(&mut self, id: u32, outcome: Outcome) {
        self.acks.push(Msg::Ack { id, outcome });
    }

    /// The batch's durability point: every staged file is fsynced (in
    /// parallel: the file system commits them together), then renamed into
    /// place, then each directory touched is fsynced once. Returns the
    /// staged files, each with its entry on disk or why it failed; the
    /// caller records them and [`Batch::hold`]s their acks. The cost of a
    /// flush to disk is paid once per batch instead of twice per file.
    pub(super) fn publish(&mut self) -> (Vec<Published<P>>, Vec<Removed<D>>) {
        let staged = std::mem::take(&mut self.staged);
        let synced = sync_all(staged.iter().map(|(_, _, st)| st).collect());
        let mut dirs = std::mem::take(&mut self.dirty_dirs);
        let mut done = Vec::with_capacity(staged.len());
        for ((id, p, st), ok) in staged.into_iter().zip(synced) {
            let r = ok.and_then(|()| st.publish()).map(|(meta, touched)| {
                dirs.push(touched);
                meta
            });
            done.push((id, p, r));
        }
        let deletions = std::mem::take(&mut self.deletions);
        let results = remove_all(deletions.iter().map(|(_, _, d)| d).collect());
        let mut removed = Vec::with_capacity(deletions.len());
        for ((id, k, _), r) in deletions.into_iter().zip(results) {
            removed.push((id, k, r.map(|t| dirs.extend(t))));
        }
        if let Err(e) = apply::finish_dirs(dirs) {
            // The renames and deletes may not survive a crash: confirm none
            // of them (the deletes' acks are already held).
            warn!("making a batch's directories durable: {e}");
            for a in &mut self.acks {
                if let Msg::Ack { outcome, .. } = a
                    && matches!(outcome, Outcome::Applied)
                {
                    *outcome = Outcome::Failed {
                        code: ErrorCode::Io,
                        message: format!("fsync of the directory: {e}"),
                    };
                }
            }
            let failed = || apply::Error::Io {
                what: "fsync of the directory".into(),
                source: std::io::Error::other(e.to_string()),
            };
            for (_, _, r) in &mut done {
                if r.is_ok() {
                    *r = Err(failed());
                }
            }
            for (_, _, r) in &mut removed {
                if r.is_ok() {
                    *r = Err(failed());
                }
            }
        }
        (done, removed)
    }

    /// Commits the queued entries in one transaction, then sends the acks
    /// held back for them. When the commit fails, the entries' owed actions
    /// are marked ready on their own (the files are in place all the same)
    /// and their acks say the index failed.
    pub(super) fn commit(&mut self, index: &mut Index, reply: &mut dyn FnMut(Msg)) {
        if !self.pending.is_empty() {
            if let Err(e) = index.record_received_batch(&self.pending) {
                warn!("recording received entries: {e}");
                // The files are in place all the same: their actions are owed
                // (a re-push will find them identical and owe nothing).
                let owed: Vec<i64> = self.pending.iter().flat_map(|r| r.actions.clone()).collect();
                if let Err(e) = index.mark_owed_ready(&owed) {
                    warn!("actions stay journalled for the next start: {e}");
                }
                for a in &mut self.acks {
                    if let Msg::Ack { outcome, .. } = a
                        && matches!(outcome, Outcome::Applied | Outcome::InSync)
                    {
                        *outcome = Outcome::Failed {
                            code: ErrorCode::Internal,
                            message: format!("index: {e}"),
                        };
                    }
                }
            }
            self.pending.clear();
            self.paths.clear();
        }
        for a in self.acks.drain(..) {
            reply(a);
        }
    }
}

/// Runs a batch's deletes: the files' in parallel (up to 16 at once; with
/// `-o discard` each unlink waits for the device), then the directories'
/// one by one in the order asked (deepest first, after their entries).
fn remove_all(dels: Vec<&apply::Deletion>) -> Vec<Result<Option<apply::Touched>, apply::Error>> {
    const THREADS: usize = 16;
    let files: Vec<(usize, &apply::Deletion)> =
        dels.iter().copied().enumerate().filter(|(_, d)| d.is_file()).collect();
    let mut out: Vec<Option<Result<Option<apply::Touched>, apply::Error>>> =
        dels.iter().map(|_| None).collect();
    if files.len() > 1 {
        let chunk = files.len().div_ceil(THREADS);
        let done: Vec<(usize, Result<Option<apply::Touched>, apply::Error>)> =
            std::thread::scope(|s| {
                let handles: Vec<_> = files
                    .chunks(chunk)
                    .map(|part| {
                        s.spawn(move || part.iter().map(|(i, d)| (*i, d.run())).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("unlink thread panicked"))
                    .collect()
            });
        for (i, r) in done {
            out[i] = Some(r);
        }
    }
    dels.iter().zip(out).map(|(d, r)| r.unwrap_or_else(|| d.run())).collect()
}

/// Fsyncs every staged file, in parallel (up to 16 at once): concurrent
/// fsyncs share the file system's journal commits, so a batch costs about
/// one flush to disk instead of one per file.
fn sync_all(staged: Vec<&apply::Staged>) -> Vec<Result<(), apply::Error>> {
    const THREADS: usize = 16;
    // Many files: one `syncfs` per file system writes them all back with a
    // single cache flush, where each fsync would flush on its own.
    const SYNCFS_FILES: usize = 32;
    if staged.len() >= SYNCFS_FILES {
        // The file system of each directory (each file's), looked at once
        // per directory, not once per file: `None` when `syncfs` may not
        // stand for an fsync there.
        let mut fs_of: HashMap<*const OwnedFd, Option<u64>> = HashMap::new();
        let devs: Vec<Option<u64>> = staged
            .iter()
            .map(|st| {
                let dir = st.dir();
                *fs_of.entry(Arc::as_ptr(dir)).or_insert_with(|| {
                    if apply::syncfs_is_reliable(&**dir) {
                        rustix::fs::fstat(&**dir).ok().map(|s| s.st_dev)
                    } else {
                        None
                    }
                })
            })
            .collect();
        if devs.iter().all(Option::is_some) {
            let mut by_dev: HashMap<u64, Result<(), String>> = HashMap::new();
            for (st, dev) in staged.iter().zip(&devs) {
                let d = dev.expect("checked");
                by_dev
                    .entry(d)
                    .or_insert_with(|| rustix::fs::syncfs(&**st.dir()).map_err(|e| e.to_string()));
            }
            return devs
                .into_iter()
                .map(|dev| {
                    let r = dev.and_then(|d| by_dev.get(&d).cloned()).unwrap_or(Ok(()));
                    r.map_err(|e| apply::Error::Io {
                        what: "syncfs".into(),
                        source: std::io::Error::other(e),
                    })
                })
                .collect();
        }
    }
    if staged.len() <= 1 {
        return staged.iter().map(|st| st.sync()).collect();
    }
    let chunk = staged.len().div_ceil(THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = staged
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|st| st.sync()).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("fsync thread panicked")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::receive::tests::meta;
    use crate::types::FileKind;
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    fn staged(root: &Path, name: &str, body: &[u8]) -> apply::Staged {
        let e = apply::Entry {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1_700_000_000_000_000_000,
            target: None,
            rdev: 0,
        };
        let hash = *blake3::hash(body).as_bytes();
        let mut w = apply::begin_file(
            root,
            name.as_bytes(),
            &e,
            hash,
            &apply::Options { uid: true, gid: true, mode: false },
        )
        .unwrap();
        w.write_all(body).unwrap();
        w.stage().unwrap()
    }

    #[test]
    fn acks_wait_for_the_commit_that_records_their_entries() {
        let t = tempfile::tempdir().unwrap();
        let mut index = Index::open(&t.path().join("i.db"), Duration::from_secs(5)).unwrap();
        let mut b: Batch<()> = Batch::new("b");
        let mut sent = Vec::new();
        // Nothing pending: an ack goes out at once.
        b.ack(1, Outcome::InSync, &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1);
        let m = Meta { hash: Some([1; 32]), ..meta(FileKind::File) };
        let f = IndexedFile { path: b"/srv/f".to_vec(), meta: m.clone() };
        b.defer(Some(f), None, Some([7; 32]), Some("b".into()), Vec::new());
        assert!(b.touches(b"/srv/f") && !b.touches(b"/srv/g"));
        assert_eq!(b.len(), 1);
        b.ack(2, Outcome::Applied, &mut |m| sent.push(m));
        b.ack(3, Outcome::Conflict(None), &mut |m| sent.push(m));
        assert_eq!(sent.len(), 1, "held back until the commit");
        assert_eq!(index.file(b"/srv/f").unwrap(), None);
        b.commit(&mut index, &mut |m| sent.push(m));
        assert_eq!(index.file(b"/srv/f").unwrap(), Some(m));
        assert_eq!(index.origin(b"/srv/f").unwrap().as_deref(), Some("b"));
        let ids: Vec<u32> = sent
            .iter()
            .map(|m| match m {
                Msg::Ack { id, .. } => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(!b.touches(b"/srv/f") && b.len() == 0);
    }

    #[test]
    fn staged_files_appear_only_when_published() {
        let t = tempfile::tempdir().unwrap();
        let mut b: Batch<&str> = Batch::new("b");
        b.stage(4, b"/srv/a", "a", staged(t.path(), "a", b"alpha"));
        b.stage(5, b"/srv/b", "b", staged(t.path(), "b", b"beta"));
        assert!(b.unpublished() && b.touches(b"/srv/a"));
        assert!(!t.path().join("a").exists(), "not visible before the durability point");
        let (done, _) = b.publish();
        assert!(!b.unpublished());
        let got: Vec<(u32, &str, u64)> =
            done.into_iter().map(|(id, k, r)| (id, k, r.unwrap().size)).collect();
        assert_eq!(got, vec![(4, "a", 5), (5, "b", 4)]);
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"beta");
    }

    #[test]
    fn deletes_run_at_the_durability_point_files_together_then_directories() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["d", "d/e", "full"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        for f in ["d/a", "d/b", "d/e/c", "full/keep"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let mut dirs = apply::Dirs::new();
        let mut b: Batch<(), &str> = Batch::new("b");
        let deepest_first = [
            ("d/e/c", FileKind::File),
            ("d/e", FileKind::Dir),
            ("d/a", FileKind::File),
            ("d/b", FileKind::File),
            ("d", FileKind::Dir),
            ("full", FileKind::Dir),
        ];
        for (i, (rel, kind)) in deepest_first.iter().enumerate() {
            let d = dirs.prepare_delete(root, rel.as_bytes(), None, Some(*kind)).unwrap().unwrap();
            b.delete_later(i as u32, rel.as_bytes(), rel, d);
        }
        assert!(b.unpublished() && b.touches(b"d/a"));
        assert!(root.join("d/a").exists(), "nothing removed before the durability point");
        let (published, removed) = b.publish();
        assert!(published.is_empty());
        let got: Vec<(&str, bool)> = removed.iter().map(|(_, k, r)| (*k, r.is_ok())).collect();
        let want = [("d/e/c", true), ("d/e", true), ("d/a", true), ("d/b", true), ("d", true)];
        assert_eq!(&got[..5], &want);
        assert!(matches!(removed[5], (5, "full", Err(apply::Error::NotEmpty(_)))), "{removed:?}");
        assert!(!root.join("d").exists() && root.join("full/keep").exists());
    }

    #[test]
    fn many_files_are_made_durable_together() {
        let t = tempfile::tempdir().unwrap();
        let files: Vec<apply::Staged> = (0..40)
            .map(|i| staged(t.path(), &format!("f{i}"), format!("{i}").as_bytes()))
            .collect();
        let r = sync_all(files.iter().collect());
        assert_eq!(r.len(), 40);
        assert!(r.iter().all(Result::is_ok));
        let one = sync_all(files.iter().take(1).collect());
        assert!(one.len() == 1 && one[0].is_ok());
    }
}
