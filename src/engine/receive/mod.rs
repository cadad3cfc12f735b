//! The receiving side of a session: authorizes every path against this node's
//! own config, re-checks the local state, decides between apply, in-sync and
//! conflict, applies through [`crate::apply`], and records the result in the
//! index in the same step (so the next check sees no change and nothing echoes).
//!
//! [`Receiver`] holds one session's state, split by what owns it:
//!
//! - `session`: which groups and paths this peer may touch, and what it may
//!   create there (fixed when the session opens); `roots`: where a path is
//!   written from, and which include roots stay directories.
//! - `batch`: applied entries on their way to being durable, published,
//!   recorded in the index and acknowledged.
//! - `owed`: the rows of owed actions this session records, and its place at
//!   the listener's action gate.
//! - `keep`: backups and the copies of versions that lose a conflict.
//!
//! The requests themselves: `push` (with its content streams), `delete`,
//! `local` (this node's state, re-checked; yields), `requests` (read-only).

mod batch;
mod delete;
mod keep;
mod local;
mod owed;
mod push;
mod requests;
mod roots;
mod session;
mod writeback;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::actions::{ActionTable, Gate};
use crate::apply;
use crate::config::{Config, GroupKey};
use crate::index::Index;
use crate::net::server::{Authority, Handler};
use crate::policy::GroupPolicy;
use crate::proto::{ErrorCode, Msg, Outcome};

use batch::{BATCH, Batch};
use owed::Owed;
use push::{Pending, Stream};
use session::Session;

pub use session::LOGGED_REFUSALS;

/// Why the listener's service could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A group's patterns do not compile.
    #[error(transparent)]
    Pattern(#[from] crate::policy::PatternError),
    /// An action's patterns do not compile.
    #[error(transparent)]
    Actions(#[from] crate::actions::Error),
}

/// The daemon's service: group membership for the handshake, and a
/// [`Receiver`] per authenticated session.
pub struct Service {
    config: Arc<Config>,
    /// The member groups, compiled once per load and shared by every session.
    policies: Arc<Vec<GroupPolicy>>,
    index_path: PathBuf,
    busy: Duration,
    actions: Arc<ActionTable>,
    gate: Arc<Gate>,
}

impl Service {
    /// A service over `config`, opening the index at `index_path` per session.
    ///
    /// # Errors
    /// When a group's or an action's patterns do not compile.
    pub fn new(
        config: Arc<Config>,
        index_path: PathBuf,
        busy: Duration,
    ) -> Result<Self, ServiceError> {
        let policies = GroupPolicy::members(&config)?;
        let actions = ActionTable::new(&config, &policies)?;
        let owner = actions.owner().to_string();
        let gate = Gate::new(index_path.clone(), busy, owner, config.myname.clone());
        Ok(Service {
            config,
            policies: Arc::new(policies),
            index_path,
            busy,
            actions: Arc::new(actions),
            gate: Arc::new(gate),
        })
    }

    /// The gate all sessions share; the daemon runs what a killed
    /// predecessor left owed through it at start.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// A service over a re-read `config` (the listener's SIGHUP). It keeps
    /// this one's gate when the index is the same, so the action runs of
    /// sessions under the old and the new config never overlap.
    ///
    /// # Errors
    /// When a group's or an action's patterns do not compile.
    pub fn renewed(
        &self,
        config: Arc<Config>,
        index_path: PathBuf,
        busy: Duration,
    ) -> Result<Self, ServiceError> {
        let mut s = Service::new(config, index_path, busy)?;
        if s.index_path == self.index_path {
            s.gate = self.gate.clone();
        }
        Ok(s)
    }
}

impl Authority for Service {
    fn node_name(&self) -> &str {
        &self.config.myname
    }

    fn group_key(&self, group: &str, peer: &str) -> Result<Vec<u8>, ErrorCode> {
        let Some(g) = self.config.my_groups().find(|g| g.name == group) else {
            return Err(ErrorCode::UnknownGroup);
        };
        if peer == self.config.myname || !g.hosts.iter().any(|h| h.name == peer) {
            return Err(ErrorCode::NotAHost);
        }
        g.key.as_ref().map(|GroupKey(k)| k.as_bytes().to_vec()).ok_or(ErrorCode::UnknownGroup)
    }

    fn open_session(&self, peer: &str, groups: &[String]) -> Result<Box<dyn Handler>, String> {
        let index = Index::open(&self.index_path, self.busy).map_err(|e| e.to_string())?;
        let (actions, gate) = (self.actions.clone(), self.gate.clone());
        let config = self.config.clone();
        Ok(Box::new(Receiver::new(config, &self.policies, index, peer, groups, actions, gate)))
    }
}

/// Handles one authenticated session's requests.
pub struct Receiver {
    /// What this peer may do here.
    session: Session,
    index: Index,
    /// The actions this session's changes owe.
    owed: Owed,
    /// Applied entries on their way to being confirmed.
    batch: Batch<Box<Pending>, Box<delete::Removal>>,
    streams: HashMap<u32, Stream>,
    /// The directories this batch writes into, opened once for the batch
    /// (see [`apply::dirs`] for why that is as safe as a walk per step).
    dirs: apply::Dirs,
    /// Index rows of the paths of the request batch being handled, read
    /// together before it (each taken by its request's look-up).
    known: HashMap<Vec<u8>, Option<crate::types::Meta>>,
    /// What the peer was last known to have at the paths of the request
    /// batch's deletes and updates, read with `known`.
    peer_versions: HashMap<Vec<u8>, crate::index::PeerVersion>,
    /// Versions the sender pushed and this session answered with a
    /// conflict (`None`: a delete): what a `Yield` for that path is based on.
    answered: HashMap<Vec<u8>, Option<[u8; 32]>>,
}

impl Receiver {
    fn new(
        config: Arc<Config>,
        policies: &[GroupPolicy],
        index: Index,
        peer: &str,
        groups: &[String],
        actions: Arc<ActionTable>,
        gate: Arc<Gate>,
    ) -> Self {
        let index_dir = index.path().parent().map(Path::to_path_buf).unwrap_or_default();
        let session = Session::open(config, policies, &index_dir, peer, groups);
        Receiver {
            session,
            index,
            owed: Owed::new(actions, gate, peer),
            batch: Batch::new(peer),
            streams: HashMap::new(),
            dirs: apply::Dirs::new(),
            known: HashMap::new(),
            peer_versions: HashMap::new(),
            answered: HashMap::new(),
        }
    }

    /// Commits the batch: drops the owed rows of changes not made, makes
    /// the staged files and deletes durable and visible, records everything
    /// in one transaction, then sends the acks held back for them: an ack
    /// always means "durable, and recorded here".
    fn flush(&mut self, reply: &mut dyn FnMut(Msg)) {
        self.owed.drop_stale(&mut self.index);
        if self.batch.unpublished() {
            let (published, removed) = self.batch.publish();
            for (id, p, r) in published {
                let outcome = self.finish(&p, r.map(Some));
                self.batch.hold(id, outcome);
            }
            for (id, d, r) in removed {
                let outcome = self.deleted(*d, r);
                self.batch.hold(id, outcome);
            }
            crash_point("batch-durable");
        }
        // The next batch walks to its directories afresh, and reads what
        // this commit changes again.
        self.dirs.clear();
        self.known.clear();
        self.peer_versions.clear();
        self.batch.commit(&mut self.index, reply);
    }

    /// After an applied change: give the parent directory the sender's mtime,
    /// when that directory is part of what the group manages here.
    fn after(&mut self, group: &str, path: &[u8], parent_mtime: Option<i64>, outcome: &Outcome) {
        let (Some(t), Outcome::Applied) = (parent_mtime, outcome) else { return };
        let Some((root, rel)) = self.session.parent_in_tree(group, path) else { return };
        if let Err(e) = self.dirs.set_parent_mtime(&root, &rel, t) {
            warn!("setting the directory mtime for {}: {e}", crate::paths::display(path));
        }
    }
}

/// For the crash tests: with `CSYNC_CRASH_AT=<point>` in the environment the
/// process dies abruptly at that point (as a `kill -9` or a power cut would
/// leave it), so a test can check what the next run makes of that state.
fn crash_point(point: &str) {
    if std::env::var_os("CSYNC_CRASH_AT").is_some_and(|v| v == point) {
        std::process::abort();
    }
}

impl Handler for Receiver {
    fn handle(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool {
        // Keep replies in order for requests that answer with data, and never
        // look at an entry whose new state is not committed yet.
        let touches_pending = match &msg {
            // A push after deletes still to run could need them done (a
            // directory's entries deleted, then a symlink in its place).
            Msg::Push { path, .. } => self.batch.touches(path) || self.batch.deleting(),
            Msg::Delete { path, .. } => self.batch.touches(path),
            Msg::Data { .. } | Msg::DataEnd { .. } => false,
            _ => true,
        };
        if touches_pending {
            self.flush(reply);
        }
        let keep = self.dispatch(msg, reply);
        if self.batch.len() >= BATCH {
            self.flush(reply);
        }
        keep
    }

    fn prepare(&mut self, batch: &[Msg]) {
        // The index rows every push and delete of the batch looks up, in
        // one read transaction instead of a lock and unlock per request.
        // (What the peer has matters to deletes and updates, not to new
        // files: those are not asked about.)
        self.known.clear();
        self.peer_versions.clear();
        let (mut paths, mut versions): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        for m in batch {
            match m {
                Msg::Push { path, base, .. } => {
                    paths.push(path);
                    if base.is_some() {
                        versions.push(path);
                    }
                }
                Msg::Delete { path, .. } => {
                    paths.push(path);
                    versions.push(path);
                }
                _ => {}
            }
        }
        if paths.len() > 1
            && let Ok(rows) = self.index.look_up(&paths, &self.session.peer, &versions)
        {
            self.known.extend(rows.files);
            self.peer_versions.extend(rows.versions);
        }
        if self.owed.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        for m in batch {
            let (id, group, path) = match m {
                Msg::Push { id, group, path, .. } | Msg::Delete { id, group, path, .. } => {
                    (*id, group, path)
                }
                _ => continue,
            };
            let Ok((_, root, rel)) = self.session.resolve(group, path) else { continue };
            changes.push((id, path.as_slice(), roots::real_of(&root, &rel)));
        }
        self.owed.record_ahead(&mut self.index, &changes);
    }

    fn idle(&mut self, reply: &mut dyn FnMut(Msg)) {
        self.flush(reply);
    }

    fn end(&mut self, bye: bool, reply: &mut dyn FnMut(Msg)) {
        self.session.log_refusal_count();
        // Streams the peer never finished: their changes were not made.
        self.owed.settle_all();
        self.flush(reply);
        let mut tick = || {
            if bye {
                reply(Msg::Working);
            }
        };
        let ran = self.owed.run_at_end(&self.index, &mut tick);
        if bye {
            for r in ran {
                reply(Msg::ActionResult {
                    group: r.group,
                    command: r.command,
                    paths: u32::try_from(r.paths.len()).unwrap_or(u32::MAX),
                    ok: r.result.status.ok(),
                    status: r.result.status.to_string(),
                    logfile: r.logfile.map(|l| l.into_os_string().into_encoded_bytes()),
                });
            }
        }
    }
}

impl Receiver {
    /// Answers one request (`false`: the session must end).
    fn dispatch(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool {
        match msg {
            Msg::Ping { id } => reply(Msg::Pong {
                id,
                time_ns: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64),
            }),
            Msg::Push { id, group, path, entry, base, force, content, parent_mtime } => {
                // The sender's mtime for the parent, when the parent is
                // managed here: a streamed file gives it to the parent when
                // it is published (no second walk for it).
                let t =
                    parent_mtime.filter(|_| self.session.parent_in_tree(&group, &path).is_some());
                if let Some(outcome) =
                    self.push(id, &group, path.clone(), entry, base, force, content, t)
                {
                    self.owed.settle(id);
                    self.after(&group, &path, t, &outcome);
                    self.batch.ack(id, outcome, reply);
                }
            }
            Msg::Data { stream, bytes } => {
                if let Some(outcome) = self.data(stream, &bytes) {
                    self.batch.ack(stream, outcome, reply);
                }
            }
            Msg::DataEnd { stream, .. } => {
                let outcome = self.data_end(stream);
                self.owed.settle(stream);
                if let Some(outcome) = outcome {
                    self.batch.ack(stream, outcome, reply);
                }
            }
            Msg::Delete { id, group, path, base, force, parent_mtime } => {
                // The delete gives the parent the sender's mtime itself (one
                // walk to the directory instead of two).
                let t =
                    parent_mtime.filter(|_| self.session.parent_in_tree(&group, &path).is_some());
                let outcome = self.delete(id, &group, path, base, force, t);
                self.owed.settle(id);
                // `None`: run and answered at the batch's durability point.
                if let Some(outcome) = outcome {
                    self.batch.ack(id, outcome, reply);
                }
            }
            Msg::Sig { id, group, path } => reply(self.sig(id, &group, &path)),
            Msg::List { id, group } => self.list(id, &group, reply),
            Msg::Fetch { id, group, path } => self.fetch(id, &group, &path, reply),
            Msg::Yield { group, path, rule } => self.yield_to_us(&group, &path, &rule),
            other => {
                reply(Msg::Error {
                    code: ErrorCode::Protocol,
                    message: format!("unexpected message type 0x{:02x}", other.type_byte()),
                });
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    //! Helpers the tests of every part share, and the session as a whole.

    use super::*;
    use crate::proto::{Content, WireEntry};
    use crate::types::{FileKind, Meta};

    /// A config loaded for node `a`, with the key file `k` in `dir`.
    pub(super) fn config_for(dir: &Path, text: &str) -> Config {
        crate::config::load_for_test(dir, text)
    }

    /// An entry of `kind` with plain attributes.
    pub(super) fn meta(kind: FileKind) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size: 0,
            mtime_ns: 1_700_000_000_000_000_000,
            ino: 0,
            ctime_ns: 0,
            rdev: 0,
            target: None,
            hash: None,
        }
    }

    /// Node `a` receiving from `b`: group `g` manages `srv` (and its
    /// `extra`), with a real index and real actions.
    pub(super) struct Node {
        /// Holds the node's files until the test ends.
        pub(super) dir: tempfile::TempDir,
        pub(super) srv: PathBuf,
        pub(super) rx: Receiver,
    }

    impl Node {
        pub(super) fn new(extra: &str) -> Node {
            let dir = tempfile::tempdir().unwrap();
            let srv = dir.path().join("srv");
            std::fs::create_dir_all(&srv).unwrap();
            let text = format!("group g {{ host a b; key k; include {}; {extra} }}", srv.display());
            let config = Arc::new(config_for(dir.path(), &text));
            let db = dir.path().join("i.db");
            let service = Service::new(config, db, Duration::from_secs(5)).unwrap();
            let index = Index::open(&service.index_path, service.busy).unwrap();
            let (actions, gate) = (service.actions.clone(), service.gate.clone());
            let (config, policies) = (service.config.clone(), service.policies.clone());
            let rx = Receiver::new(config, &policies, index, "b", &["g".into()], actions, gate);
            Node { dir, srv, rx }
        }

        /// The DB form of `name` below `srv`.
        pub(super) fn path(&self, name: &str) -> Vec<u8> {
            self.srv.join(name).into_os_string().into_encoded_bytes()
        }

        /// Hands `msgs` to the receiver as one batch, lets it go idle, and
        /// returns every reply.
        pub(super) fn send(&mut self, msgs: Vec<Msg>) -> Vec<Msg> {
            let mut out = Vec::new();
            self.rx.prepare(&msgs);
            for m in msgs {
                assert!(self.rx.handle(m, &mut |r| out.push(r)));
            }
            self.rx.idle(&mut |r| out.push(r));
            out
        }
    }

    /// A regular file with `body`, as a sender announces it.
    pub(super) fn file_entry(body: &[u8]) -> WireEntry {
        WireEntry {
            kind: FileKind::File.code(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: body.len() as u64,
            mtime_ns: 1_700_000_000_000_000_000,
            rdev: 0,
            target: None,
            hash: Some(*blake3::hash(body).as_bytes()),
            origin: Some("b".into()),
        }
    }

    /// A new file pushed whole: the `Push`, one `Data` and the `DataEnd`.
    /// A `Push` of `entry` at `path` in group `g`.
    pub(super) fn push_msg(
        id: u32,
        path: &[u8],
        entry: WireEntry,
        base: Option<[u8; 32]>,
        content: Content,
    ) -> Msg {
        Msg::Push {
            id,
            group: "g".into(),
            path: path.to_vec(),
            entry,
            base,
            force: false,
            content,
            parent_mtime: None,
        }
    }

    pub(super) fn push_whole(id: u32, path: &[u8], body: &[u8]) -> Vec<Msg> {
        vec![
            push_msg(id, path, file_entry(body), None, Content::Whole),
            Msg::Data { stream: id, bytes: body.to_vec() },
            Msg::DataEnd { stream: id, hash: *blake3::hash(body).as_bytes() },
        ]
    }

    #[test]
    fn a_pushed_file_is_acknowledged_once_durable_and_recorded() {
        let mut n = Node::new("");
        let p = n.path("f");
        let mut early = Vec::new();
        for m in push_whole(1, &p, b"hello") {
            n.rx.handle(m, &mut |r| early.push(r));
        }
        assert!(early.is_empty(), "no ack before the batch is committed: {early:?}");
        assert!(!n.srv.join("f").exists());
        let mut acks = Vec::new();
        n.rx.idle(&mut |r| acks.push(r));
        assert_eq!(acks, vec![Msg::Ack { id: 1, outcome: Outcome::Applied }]);
        assert_eq!(std::fs::read(n.srv.join("f")).unwrap(), b"hello");
        let row = n.rx.index.file(&p).unwrap().unwrap();
        assert_eq!(row.hash, Some(*blake3::hash(b"hello").as_bytes()));
        assert_eq!(n.rx.index.origin(&p).unwrap().as_deref(), Some("b"));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_batch_never_redirects_a_write() {
        let mut n = Node::new("");
        std::fs::create_dir(n.srv.join("d")).unwrap();
        let outside = n.dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let mut out = Vec::new();
        let handle = |n: &mut Node, msgs: Vec<Msg>, out: &mut Vec<Msg>| {
            n.rx.prepare(&msgs);
            for m in msgs {
                assert!(n.rx.handle(m, &mut |r| out.push(r)));
            }
        };
        let (one, two, three) = (n.path("d/one"), n.path("d/two"), n.path("d/three"));
        handle(&mut n, push_whole(1, &one, b"one"), &mut out);
        // Mid-batch (the directory is kept open for it), a local user moves
        // `d` away and puts a symlink to a directory outside in its place.
        let moved = n.dir.path().join("moved");
        std::fs::rename(n.srv.join("d"), &moved).unwrap();
        std::os::unix::fs::symlink(&outside, n.srv.join("d")).unwrap();
        handle(&mut n, push_whole(2, &two, b"two"), &mut out);
        n.rx.idle(&mut |r| out.push(r));
        assert_eq!(out.len(), 2, "{out:?}");
        // Written where the safe walk led (the directory that was moved,
        // as a write racing a walk would be), never through the symlink.
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(std::fs::read(moved.join("two")).unwrap(), b"two");
        // The next batch walks afresh and meets the symlink: refused.
        let replies = n.send(push_whole(3, &three, b"three"));
        assert!(
            matches!(
                &replies[..],
                [Msg::Ack { id: 3, outcome: Outcome::Failed { code: ErrorCode::PathRefused, .. } }]
            ),
            "{replies:?}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn an_unexpected_message_ends_the_session() {
        let mut n = Node::new("");
        let mut out = Vec::new();
        let keep = n.rx.handle(Msg::Pong { id: 1, time_ns: 0 }, &mut |r| out.push(r));
        assert!(!keep);
        assert!(matches!(&out[..], [Msg::Error { code: ErrorCode::Protocol, .. }]), "{out:?}");
    }

    #[test]
    fn the_session_end_runs_the_actions_its_changes_owe() {
        let n0 = tempfile::tempdir().unwrap();
        let out = n0.path().join("ran");
        let action = format!("action {{ pattern *; exec \"echo %% >> {}\"; }}", out.display());
        let mut n = Node::new(&action);
        let p = n.path("f");
        let acks = n.send(push_whole(1, &p, b"x"));
        assert_eq!(acks, vec![Msg::Ack { id: 1, outcome: Outcome::Applied }]);
        let mut replies = Vec::new();
        n.rx.end(true, &mut |r| replies.push(r));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{}\n", n.srv.join("f").display())
        );
        let results: Vec<_> =
            replies.iter().filter(|m| matches!(m, Msg::ActionResult { ok: true, .. })).collect();
        assert_eq!(results.len(), 1, "{replies:?}");
        assert!(n.rx.index.owed_actions().unwrap().is_empty());
    }
}
