//! `-u`: push every dirty entry to its peer. All peers at once (one thread and
//! one connection each); requests pipelined on each connection (the writer
//! never waits for replies); large files as block deltas when the peer has an
//! older version. A dirty mark is cleared only after the peer confirmed a
//! durable apply, and only if no newer mark arrived meanwhile.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Node;
use super::conflict::{Decision, Side, decide};
use super::wire::{to_wire, version};
use crate::blockdelta;
use crate::config::AutoMethod;
use crate::index::Pushed;
use crate::net::client::{self, ClientSettings, Target};
use crate::net::conn::Conn;
use crate::proto::{Content, ErrorCode, Msg, Outcome};
use crate::types::{Changes, FileKind, IgnoreFields, Meta};

/// What to push.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    /// Only these peers (`-P`); empty: all.
    pub peers: Vec<String>,
    /// Only these DB paths (and with the flag, what lies below them).
    pub paths: Vec<(Vec<u8>, bool)>,
    /// `-d`: say what would be pushed, connect nowhere, change nothing.
    pub dry_run: bool,
}

/// One entry to push to one peer.
#[derive(Debug, Clone)]
struct Item {
    path: Vec<u8>,
    group: String,
    generation: i64,
    forced: bool,
    changes: Changes,
    /// The local state; `None`: deleted here.
    local: Option<Meta>,
    /// Real path of the local entry (for content).
    real: Option<PathBuf>,
    /// The include root it lies under (real path) and the rest of its path:
    /// content is read only through `scan::open_checked` from there.
    source: Option<(PathBuf, Vec<u8>)>,
    /// What the peer was last known to have.
    base: Option<[u8; 32]>,
    /// Whether a peer state is known at all (a delta needs an older version there).
    peer_has_old: bool,
    /// When the delete was seen (for younger/older against a deletion).
    marked_at_ns: i64,
    /// The peer said it needs the content after all.
    need_content: bool,
    /// Pushed only to create a missing parent: no dirty row to clear.
    ancestor: bool,
    /// Conflict rule inputs: the rule, the group's host order, who made our
    /// version, and whether each side is receive-only.
    rule: AutoMethod,
    hosts: Arc<Vec<String>>,
    origin: String,
    me_receive_only: bool,
    peer_receive_only: bool,
    /// Length of the DB form of the include root holding the path: missing
    /// parents are sent down from there, never the directories above a
    /// root (`/etc` for `/etc/hosts`), which no group manages.
    root_len: usize,
    /// This push is a conflict's winner by the rule (recorded once applied).
    won: Option<String>,
}

/// How one path ended with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathResult {
    /// Applied there, or already identical.
    Done,
    /// A conflict this node lost under the group's rule (the winner's version
    /// reaches us from its side).
    Lost(String),
    /// A conflict left for a person (`auto none`).
    Unresolved,
    /// Failed, with why.
    Failed(String),
}

/// What happened with one peer.
#[derive(Debug, Default)]
pub struct PeerReport {
    /// The peer.
    pub peer: String,
    /// The peer could not be used at all.
    pub error: Option<String>,
    /// Per path.
    pub paths: Vec<(Vec<u8>, PathResult)>,
    /// Content bytes sent (whole files and delta literals).
    pub bytes: u64,
    /// The actions the peer ran for what it received from us.
    pub actions: Vec<RemoteAction>,
    /// Groups with entries to push that the peer refused (reported once each,
    /// not per path; their entries stay dirty).
    pub refused: Vec<(String, ErrorCode)>,
    /// Confirmed pushes, for the index.
    pushed: Vec<Pushed>,
    /// Conflicts met, `(path, resolution)`, for the index.
    conflicts: Vec<(Vec<u8>, String)>,
    /// Conflicts the peer's version won by the rule: `(group, path, rule)`.
    /// The peer is told (`Yield`) and pushes its version on its next run.
    yields: Vec<(String, Vec<u8>, String)>,
    /// What clearing our marks of those looks like, once the peer confirmed
    /// the session's end (and so its mark towards us).
    yielded: Vec<Pushed>,
}

/// An action a peer ran for the changes it received, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAction {
    /// The group of the action.
    pub group: String,
    /// The command, as the peer's config has it.
    pub command: String,
    /// How many paths it was given.
    pub paths: u32,
    /// Exit status 0.
    pub ok: bool,
    /// How it ended.
    pub status: String,
    /// Where its output went on the peer; `None`: the peer's own log.
    pub logfile: Option<std::path::PathBuf>,
}

impl RemoteAction {
    /// As the index records it.
    fn to_run(&self) -> crate::index::ActionRun {
        crate::index::ActionRun {
            group: self.group.clone(),
            command: self.command.clone(),
            logfile: self.logfile.clone(),
            paths: u64::from(self.paths),
            ok: self.ok,
            status: self.status.clone(),
        }
    }
}

/// What an update did.
#[derive(Debug, Default)]
pub struct UpdateReport {
    /// Per peer, in name order.
    pub peers: Vec<PeerReport>,
    /// Entries held back by the mass-delete guard: `(root, count)`.
    pub guarded: Vec<(Vec<u8>, usize)>,
    /// Dry run lines.
    pub planned: Vec<String>,
}

impl UpdateReport {
    /// True when nothing failed, no conflict is unresolved, nothing was held back.
    pub fn is_clean(&self) -> bool {
        self.guarded.is_empty()
            && self.peers.iter().all(|p| {
                p.error.is_none()
                    && p.actions.iter().all(|a| a.ok)
                    && p.paths
                        .iter()
                        .all(|(_, r)| matches!(r, PathResult::Done | PathResult::Lost(_)))
            })
    }
}

impl Node {
    /// Pushes what is dirty. Per-peer and per-path problems are in the report;
    /// only an index failure is an error.
    ///
    /// # Errors
    /// When the index fails.
    pub fn update(
        &mut self,
        opts: &UpdateOptions,
        settings: &ClientSettings,
        port: u16,
    ) -> Result<UpdateReport, super::Error> {
        let mut report = UpdateReport::default();
        let ignore = IgnoreFields {
            uid: self.config.ignore.uid,
            gid: self.config.ignore.gid,
            mode: self.config.ignore.mode,
        };
        // Peers never synced with are compared first (PRODUCT 4.2); one that
        // cannot be listed is reported once and not pushed to this run.
        let fresh = if opts.dry_run { Vec::new() } else { self.new_peers(&opts.peers)? };
        let contact = self.first_contact(&fresh, settings, port)?;
        for (peer, e) in &contact.failed {
            report.peers.push(PeerReport {
                peer: peer.clone(),
                error: Some(e.clone()),
                ..PeerReport::default()
            });
        }
        let unreachable: Vec<&String> = contact.failed.iter().map(|(p, _)| p).collect();
        let rows = self.index.dirty()?;
        let guard = self.mass_delete_guard(&rows, &mut report)?;
        // Thousands of marks: one ordered pass over the index beats one
        // query per mark; a handful: the queries, not a read of everything.
        let pre = if rows.len() > PRELOAD_ABOVE {
            Some(Preloaded {
                files: self
                    .index
                    .files(crate::index::Scope::All)?
                    .into_iter()
                    .map(|f| (f.path, f.meta))
                    .collect(),
                origins: self.index.origins()?.into_iter().collect(),
            })
        } else {
            None
        };
        let roots = self.roots()?;
        let mut per_peer: HashMap<String, Vec<Item>> = HashMap::new();
        for row in rows {
            if !opts.peers.is_empty() && !opts.peers.contains(&row.peer) {
                continue;
            }
            if unreachable.contains(&&row.peer) {
                continue;
            }
            if !opts.paths.is_empty()
                && !opts.paths.iter().any(|(p, rec)| {
                    row.path == *p || (*rec && crate::index::is_below(&row.path, p))
                })
            {
                continue;
            }
            if guard
                .iter()
                .any(|g| !row.forced && (row.path == *g || crate::index::is_below(&row.path, g)))
            {
                continue;
            }
            let Some(item) = self.plan_item(&row, &roots, ignore, &pre)? else { continue };
            per_peer.entry(row.peer.clone()).or_default().push(item);
        }
        let mut peers: Vec<(String, Vec<Item>)> = per_peer.into_iter().collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, items) in &mut peers {
            // Deletes first, deepest first; then everything else, parents first.
            items.sort_by(|a, b| match (a.local.is_none(), b.local.is_none()) {
                (true, true) => b.path.cmp(&a.path),
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                (false, false) => a.path.cmp(&b.path),
            });
        }
        if opts.dry_run {
            for (peer, items) in &peers {
                for it in items {
                    let what = if it.local.is_none() { "delete" } else { "push" };
                    let force = if it.forced { " (forced)" } else { "" };
                    report.planned.push(format!(
                        "would {what} {} to {peer}{force} [{}]",
                        crate::paths::display(&it.path),
                        it.changes
                    ));
                }
            }
            return Ok(report);
        }
        let myname = self.config.myname.clone();
        let wait = super::remote::action_wait(&self.config);
        let jobs: Vec<(Target, super::remote::GroupKeys, Vec<Item>)> = peers
            .into_iter()
            .filter_map(|(peer, items)| {
                let (target, groups) = super::remote::shared_groups(&self.config, &peer, port)?;
                Some((target, groups, items))
            })
            .collect();
        let settings = Arc::new(settings.clone());
        let results: Vec<PeerReport> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(target, groups, items)| {
                    let settings = settings.clone();
                    let myname = myname.clone();
                    s.spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                        let peer = target.name.clone();
                        match rt {
                            Ok(rt) => rt.block_on(push_peer(
                                &target, &settings, &myname, &groups, items, ignore, wait,
                            )),
                            Err(e) => PeerReport {
                                peer,
                                error: Some(e.to_string()),
                                ..PeerReport::default()
                            },
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("peer thread panicked")).collect()
        });
        for mut r in results {
            super::remote::explain_refusals(&self.config, &mut r);
            self.record(&r)?;
            report.peers.push(r);
        }
        for r in &report.peers {
            self.index.record_contact(&r.peer, r.error.as_deref().map_or(Ok(()), Err))?;
        }
        // Under -G only some groups were compared: the peer stays new for
        // the others.
        let all_groups = self.groups.len() == self.config.my_groups().count();
        for (peer, _) in contact.compared.iter().filter(|_| all_groups) {
            if !report.peers.iter().any(|r| r.peer == *peer && r.error.is_some()) {
                self.index.set_peer_synced(peer)?;
            }
        }
        Ok(report)
    }

    /// Roots that are missing or empty here while deletes under them are
    /// queued: an unmounted disk must not empty every peer.
    fn mass_delete_guard(
        &self,
        rows: &[crate::index::DirtyRow],
        report: &mut UpdateReport,
    ) -> Result<Vec<Vec<u8>>, super::Error> {
        let mut out = Vec::new();
        for root in self.roots()? {
            let deletes = rows
                .iter()
                .filter(|r| !r.forced && r.changes.contains(Changes::DELETE))
                .filter(|r| r.path == root.db || crate::index::is_below(&r.path, &root.db))
                .count();
            if deletes == 0 {
                continue;
            }
            // A root that was a single file (`include /etc/hosts;`) and is
            // gone was deleted: only deletes below a root can be the mass
            // delete of an unmounted disk.
            let below = rows.iter().any(|r| {
                !r.forced
                    && r.changes.contains(Changes::DELETE)
                    && crate::index::is_below(&r.path, &root.db)
            });
            if !below {
                continue;
            }
            // Missing, empty, or no longer a directory (a symlink to where
            // the tree was moved, a file): whatever is below it here is gone
            // in one stroke, not file by file. Never followed.
            let gone = match std::fs::symlink_metadata(&root.real) {
                Ok(md) if md.is_dir() => {
                    std::fs::read_dir(&root.real).map_or(true, |mut it| it.next().is_none())
                }
                _ => true,
            };
            if gone {
                report.guarded.push((root.db.clone(), deletes));
                out.push(root.db);
            }
        }
        Ok(out)
    }

    fn plan_item(
        &self,
        row: &crate::index::DirtyRow,
        roots: &[crate::scan::Root],
        ignore: IgnoreFields,
        pre: &Option<Preloaded>,
    ) -> Result<Option<Item>, super::Error> {
        // The group that links this path to this peer (first in file order).
        let Some(ag) = self.groups.iter().find(|g| {
            g.matcher.is_managed(&row.path) && g.push_to.iter().any(|(p, _)| *p == row.peer)
        }) else {
            return Ok(None);
        };
        let group = self.group(ag);
        let local = match &pre {
            Some(p) => p.files.get(&row.path).cloned(),
            None => self.index.file(&row.path)?,
        };
        let real = crate::paths::real_path(&self.config, &row.path);
        let source = roots
            .iter()
            .find(|r| row.path == r.db || crate::index::is_below(&row.path, &r.db))
            .map(|r| (r.real.clone(), row.path[r.db.len()..].to_vec()));
        // What the peer should have if it changed nothing: the version before
        // our change; for a mark made by hand, what it was last known to have.
        let base = match row.base {
            crate::types::Base::Version(v) => Some(v),
            crate::types::Base::Absent => None,
            crate::types::Base::Unknown => self.index.peer_version(&row.path, &row.peer)?.flatten(),
        };
        let ro = |h: &str| group.hosts.iter().any(|x| x.name == h && x.receive_only);
        let origin = match &pre {
            Some(p) => p.origins.get(&row.path).cloned(),
            None => self.index.origin(&row.path)?,
        }
        .unwrap_or_else(|| self.config.myname.clone());
        let root_len = ag
            .matcher
            .walk_roots()
            .iter()
            .map(|r| r.as_bytes())
            .filter(|r| row.path == *r || crate::index::is_below(&row.path, r))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        let _ = ignore;
        Ok(Some(Item {
            path: row.path.clone(),
            group: group.name.clone(),
            generation: row.generation,
            forced: row.forced,
            changes: row.changes,
            local,
            real,
            source,
            base,
            peer_has_old: base.is_some(),
            marked_at_ns: row.marked_at * 1_000_000_000,
            need_content: false,
            ancestor: false,
            rule: group.auto,
            hosts: Arc::new(group.hosts.iter().map(|h| h.name.clone()).collect()),
            origin,
            me_receive_only: ro(&self.config.myname),
            peer_receive_only: ro(&row.peer),
            root_len,
            won: None,
        }))
    }

    /// Stores what a peer confirmed: marks cleared, peer states, conflicts.
    fn record(&mut self, r: &PeerReport) -> Result<(), super::Error> {
        self.index.record_pushed(&r.pushed)?;
        for (path, resolution) in &r.conflicts {
            self.index.record_conflict(path, &r.peer, resolution, None)?;
        }
        // Failed actions stay in `--status` here until the peer reports the
        // same command working in a later session (or they are acknowledged).
        let runs: Vec<_> = r.actions.iter().map(RemoteAction::to_run).collect();
        self.index.record_action_runs(&r.peer, &runs)?;
        Ok(())
    }
}

/// Dirty marks above which planning reads the index in one pass.
const PRELOAD_ABOVE: usize = 512;

/// The index read in one pass, for planning many marks.
struct Preloaded {
    files: HashMap<Vec<u8>, crate::types::Meta>,
    origins: HashMap<Vec<u8>, String>,
}

async fn push_peer(
    target: &Target,
    settings: &ClientSettings,
    myname: &str,
    groups: &[(String, Vec<u8>)],
    items: Vec<Item>,
    ignore: IgnoreFields,
    wait: std::time::Duration,
) -> PeerReport {
    let mut report = PeerReport { peer: target.name.clone(), ..PeerReport::default() };
    let session = match client::connect(target, settings, myname, groups).await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let (usable, refused): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|it| session.accepted.contains(&it.group));
    for r in session.refused.iter().filter(|(g, _)| refused.iter().any(|it| it.group == *g)) {
        report.refused.push(r.clone());
    }
    if session.accepted.is_empty() {
        // The peer ends a session in which it accepted no group: no Bye.
        return report;
    }
    let (mut rd, mut wr) = session.conn.split();
    let mut queue = usable;
    let mut next_id = 1u32;
    for _pass in 0..4 {
        if queue.is_empty() {
            break;
        }
        let (small, big): (Vec<Item>, Vec<Item>) =
            queue.into_iter().partition(|it| !wants_delta(it));
        let mut retry = Vec::new();
        if let Err(e) =
            pipeline(&mut rd, &mut wr, small, &mut next_id, ignore, &mut report, &mut retry).await
        {
            report.error = Some(e);
            break;
        }
        for it in big {
            if let Err(e) =
                push_delta(&mut rd, &mut wr, it, &mut next_id, ignore, &mut report, &mut retry)
                    .await
            {
                report.error = Some(e);
                break;
            }
        }
        if report.error.is_some() {
            break;
        }
        queue = retry;
    }
    if report.error.is_none() {
        for (group, path, rule) in std::mem::take(&mut report.yields) {
            if let Err(e) = wr.queue(&Msg::Yield { group, path, rule }) {
                report.error = Some(e.to_string());
            }
        }
        let _ = wr.send(&Msg::Bye).await;
        // The peer runs its actions before the ByeAck, telling us how they went.
        match super::remote::end_of_session(&mut rd, wait).await {
            Ok(actions) => {
                report.actions = actions;
                // The peer has handled our `Yield`s: its marks towards us
                // now carry those paths, ours can go.
                let yielded = std::mem::take(&mut report.yielded);
                report.pushed.extend(yielded);
            }
            Err(why) => {
                // Every change was confirmed; what is unknown is whether the
                // peer's actions ran (its journal re-runs them later).
                report.error = Some(format!(
                    "the session did not end cleanly after the last change ({why}); \
                     the peer runs any actions it owes on its next run"
                ));
            }
        }
    }
    wr.shutdown().await;
    report
}

fn wants_delta(it: &Item) -> bool {
    it.peer_has_old
        && !it.forced
        && it
            .local
            .as_ref()
            .is_some_and(|m| m.kind == FileKind::File && m.size >= blockdelta::DELTA_MIN)
        && it.changes.contains(Changes::CONTENT)
}

/// An entry as it travels, saying which host made this version.
fn with_origin(m: &Meta, it: &Item) -> crate::proto::WireEntry {
    let mut w = to_wire(m);
    w.origin = Some(it.origin.clone());
    w
}

/// The mtime of the local directory holding the item (the receiver gives its
/// copy of that directory the same time after applying the item).
fn parent_mtime(it: &Item) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    let parent = it.real.as_ref()?.parent()?;
    let md = std::fs::symlink_metadata(parent).ok()?;
    md.is_dir().then(|| md.mtime() * 1_000_000_000 + md.mtime_nsec())
}

/// The request for an item (the content, if any, follows separately).
fn request(it: &Item, id: u32, ignore: IgnoreFields) -> (Msg, Content) {
    match &it.local {
        None => (
            Msg::Delete {
                id,
                group: it.group.clone(),
                path: it.path.clone(),
                base: it.base,
                force: it.forced,
                parent_mtime: parent_mtime(it),
            },
            Content::None,
        ),
        Some(m) => {
            let content = if m.kind != FileKind::File {
                Content::None
            } else {
                let meta_only =
                    Changes::NEW.0 | Changes::CONTENT.0 | Changes::TYPE.0 | Changes::MARKED.0;
                if it.changes.0 & meta_only == 0
                    && !it.need_content
                    && !it.forced
                    && it.peer_has_old
                {
                    Content::None
                } else {
                    Content::Whole
                }
            };
            let _ = ignore;
            (
                Msg::Push {
                    id,
                    group: it.group.clone(),
                    path: it.path.clone(),
                    entry: with_origin(m, it),
                    base: it.base,
                    force: it.forced,
                    content,
                    parent_mtime: parent_mtime(it),
                },
                content,
            )
        }
    }
}

/// Opens an item's content: without following symlinks below its include
/// root, and only if it is still the inode the check hashed. Whatever a local
/// user put at the path since (a symlink to a file only root may read, another
/// file) is never sent; the path fails this run and the next check sees it.
fn open_content(it: &Item) -> Result<std::fs::File, String> {
    let (Some((root, rel)), Some(m)) = (&it.source, &it.local) else {
        return Err("not below an include root here; not sent".into());
    };
    let expect = crate::scan::Expected { dev: None, ino: m.ino };
    crate::scan::open_checked(root, rel, expect).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "vanished since it was checked; not sent, checked again on the next run".into()
        } else {
            e.to_string()
        }
    })
}

/// Streams a file's content on stream `id`: `Data` frames, then `DataEnd`
/// with the hash of what was actually read. Returns the bytes sent.
///
/// At most `size` bytes (the size the request declared) are read: a file that
/// grew since the check would only be refused by the receiver, and what was
/// checked is what is sent (the next check sees the growth).
async fn send_file<W: AsyncWrite + Unpin>(
    wr: &mut Conn<W>,
    id: u32,
    f: std::fs::File,
    size: u64,
) -> Result<u64, String> {
    let mut h = blake3::Hasher::new();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut f = f.take(size);
    // A read error still ends the stream: the peer then rejects it by hash
    // and the mark stays for the next run.
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        h.update(&buf[..n]);
        wr.send_data(id, &buf[..n]).await.map_err(|e| e.to_string())?;
        sent += n as u64;
    }
    wr.queue(&Msg::DataEnd { stream: id, hash: *h.finalize().as_bytes() })
        .map_err(|e| e.to_string())?;
    Ok(sent)
}

/// Sends every item without waiting for replies, while a second future reads
/// the replies as they come.
#[allow(clippy::too_many_arguments)]
async fn pipeline<R, W>(
    rd: &mut Conn<R>,
    wr: &mut Conn<W>,
    items: Vec<Item>,
    next_id: &mut u32,
    ignore: IgnoreFields,
    report: &mut PeerReport,
    retry: &mut Vec<Item>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if items.is_empty() {
        return Ok(());
    }
    // With each item, why it was not sent (its content could not be opened
    // safely): no request went out, so no reply will come.
    let (reg_tx, mut reg_rx) =
        tokio::sync::mpsc::unbounded_channel::<(u32, Item, Option<String>)>();
    let first = *next_id;
    *next_id += items.len() as u32;
    let writer = async move {
        let mut bytes = 0u64;
        for (k, it) in items.into_iter().enumerate() {
            let id = first + k as u32;
            let (msg, content) = request(&it, id, ignore);
            let file = if content == Content::Whole {
                match open_content(&it) {
                    Ok(f) => Some(f),
                    Err(why) => {
                        let _ = reg_tx.send((id, it, Some(why)));
                        continue;
                    }
                }
            } else {
                None
            };
            wr.queue(&msg).map_err(|e| e.to_string())?;
            if let Some(f) = file {
                let size = it.local.as_ref().map_or(0, |m| m.size);
                bytes += send_file(wr, id, f, size).await?;
            }
            let _ = reg_tx.send((id, it, None));
        }
        drop(reg_tx);
        wr.flush().await.map_err(|e| e.to_string())?;
        Ok::<u64, String>(bytes)
    };
    let reader = async {
        let mut inflight: HashMap<u32, Item> = HashMap::new();
        let mut open = true;
        loop {
            if inflight.is_empty() && !open {
                return Ok::<(), String>(());
            }
            tokio::select! {
                biased;
                reg = reg_rx.recv(), if open => match reg {
                    Some((id, it, None)) => { inflight.insert(id, it); }
                    Some((_, it, Some(why))) => report.paths.push((it.path, PathResult::Failed(why))),
                    None => open = false,
                },
                m = rd.recv(), if !inflight.is_empty() => match m {
                    Ok(Some(Msg::Ack { id, outcome })) => {
                        let Some(it) = inflight.remove(&id) else {
                            return Err(format!("reply for an unknown request {id}"));
                        };
                        on_outcome(it, outcome, ignore, report, retry);
                    }
                    Ok(Some(Msg::Error { code, message })) => {
                        return Err(format!("{code} ({})", crate::paths::escape(&message)));
                    }
                    Ok(Some(other)) => return Err(format!("unexpected reply 0x{:02x}", other.type_byte())),
                    Ok(None) => return Err("the peer closed the connection".into()),
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
    };
    let (w, r) = tokio::join!(writer, reader);
    report.bytes += w?;
    r
}

/// A large file the peer has an older version of: ask for its block
/// signature, then send only the blocks that differ.
#[allow(clippy::too_many_arguments)]
async fn push_delta<R, W>(
    rd: &mut Conn<R>,
    wr: &mut Conn<W>,
    mut it: Item,
    next_id: &mut u32,
    ignore: IgnoreFields,
    report: &mut PeerReport,
    retry: &mut Vec<Item>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let id = *next_id;
    *next_id += 1;
    wr.send(&Msg::Sig { id, group: it.group.clone(), path: it.path.clone() })
        .await
        .map_err(|e| e.to_string())?;
    let (block_size, size, blocks) = match rd.recv().await.map_err(|e| e.to_string())? {
        Some(Msg::SigReply { id: rid, block_size, size, blocks }) if rid == id => {
            // A signature the delta rules do not allow (a buggy or hostile
            // peer: a block size that would make the encoder allocate or loop
            // without bound, a block count that does not match the size) is
            // treated as no signature: the whole file goes instead.
            match blockdelta::check_signature(block_size, size, blocks.len()) {
                Ok(()) => (block_size, size, blocks),
                Err(why) => {
                    tracing::warn!(
                        "peer {}: invalid delta signature for {} ({why}); pushing the whole file",
                        report.peer,
                        crate::paths::display(&it.path)
                    );
                    (block_size, size, Vec::new())
                }
            }
        }
        other => return Err(format!("expected a signature, got {other:?}")),
    };
    let file = open_content(&it).ok();
    let (Some(file), false) = (file, blocks.is_empty()) else {
        // Nothing to diff against: whole file after all.
        it.need_content = true;
        it.peer_has_old = false;
        return pipeline(rd, wr, vec![it], next_id, ignore, report, retry).await;
    };
    let id = *next_id;
    *next_id += 1;
    let Some(m) = &it.local else { return Ok(()) };
    wr.queue(&Msg::Push {
        id,
        group: it.group.clone(),
        path: it.path.clone(),
        entry: with_origin(m, &it),
        base: it.base,
        force: it.forced,
        content: Content::Delta,
        parent_mtime: parent_mtime(&it),
    })
    .map_err(|e| e.to_string())?;
    let src = std::io::BufReader::with_capacity(1 << 20, file);
    let mut enc =
        blockdelta::Encoder::new(src, block_size, size, blocks).map_err(|e| e.to_string())?;
    loop {
        match enc.next_chunk() {
            Ok(Some(chunk)) => wr.send_data(id, &chunk).await.map_err(|e| e.to_string())?,
            Ok(None) => break,
            Err(e) => return Err(format!("reading {}: {e}", crate::paths::display(&it.path))),
        }
    }
    report.bytes += enc.literal_bytes;
    wr.send(&Msg::DataEnd { stream: id, hash: enc.source_hash() })
        .await
        .map_err(|e| e.to_string())?;
    match rd.recv().await.map_err(|e| e.to_string())? {
        Some(Msg::Ack { id: rid, outcome }) if rid == id => {
            on_outcome(it, outcome, ignore, report, retry);
            Ok(())
        }
        other => Err(format!("expected an ack, got {other:?}")),
    }
}

/// What to do with the receiver's answer for one item.
fn on_outcome(
    mut it: Item,
    outcome: Outcome,
    ignore: IgnoreFields,
    report: &mut PeerReport,
    retry: &mut Vec<Item>,
) {
    match outcome {
        Outcome::Applied | Outcome::InSync => {
            if let Some(why) = it.won.take() {
                report.conflicts.push((it.path.clone(), format!("won: {why}")));
            }
            report.pushed.push(Pushed {
                path: it.path.clone(),
                peer: report.peer.clone(),
                clear_gen: (!it.ancestor).then_some(it.generation),
                version: Some(it.local.as_ref().map(|m| version(m, ignore))),
            });
            if !it.ancestor {
                report.paths.push((it.path, PathResult::Done));
            }
        }
        Outcome::Conflict(theirs) => {
            let their = theirs.as_ref().and_then(super::wire::from_wire);
            let their_origin = theirs
                .as_ref()
                .and_then(|w| w.origin.clone())
                .unwrap_or_else(|| report.peer.clone());
            let pos = |h: &str| it.hosts.iter().position(|x| x == h).unwrap_or(usize::MAX);
            let me = Side {
                host: "",
                position: pos(&it.origin),
                receive_only: it.me_receive_only,
                time_ns: it.local.as_ref().map_or(it.marked_at_ns, |m| m.mtime_ns),
                size: it.local.as_ref().map_or(-1, |m| m.size as i64),
            };
            let peer = Side {
                host: &report.peer,
                position: pos(&their_origin),
                receive_only: it.peer_receive_only,
                time_ns: their.as_ref().map_or(0, |m| m.mtime_ns),
                size: their.as_ref().map_or(-1, |m| m.size as i64),
            };
            match decide(it.rule, me, peer) {
                Decision::Win(why) => {
                    it.forced = true;
                    it.won = Some(why);
                    retry.push(it);
                }
                Decision::Lose(why) => {
                    // Nothing is written here yet: the peer pushes its version
                    // (forced) on its next run, and this node records the
                    // conflict when that write happens.
                    report.yields.push((it.group.clone(), it.path.clone(), why.clone()));
                    report.yielded.push(Pushed {
                        path: it.path.clone(),
                        peer: report.peer.clone(),
                        clear_gen: Some(it.generation),
                        version: Some(their.as_ref().map(|m| version(m, ignore))),
                    });
                    report.paths.push((it.path, PathResult::Lost(why)));
                }
                Decision::Unresolved => {
                    report.conflicts.push((it.path.clone(), "unresolved".into()));
                    report.paths.push((it.path, PathResult::Unresolved));
                }
            }
        }
        Outcome::ParentMissing => {
            if it.ancestor || retry.iter().any(|r| r.path == it.path) {
                report.paths.push((
                    it.path,
                    PathResult::Failed("a parent directory is missing on the peer".into()),
                ));
                return;
            }
            for a in ancestors(&it) {
                if !retry.iter().any(|r| r.path == a.path) {
                    retry.push(a);
                }
            }
            retry.push(it);
        }
        Outcome::NotEmpty => report.paths.push((
            it.path,
            PathResult::Failed(
                "the directory still holds files there that are not managed; left in place".into(),
            ),
        )),
        Outcome::Failed { code, message } => {
            if message == super::receive::CONTENT_NEEDED && !it.need_content {
                it.need_content = true;
                retry.push(it);
            } else {
                // The peer's words are printed: escaped.
                let message = crate::paths::escape(&message);
                let why =
                    if code == ErrorCode::Io { message } else { format!("{code}: {message}") };
                report.paths.push((it.path, PathResult::Failed(why)));
            }
        }
    }
}

/// Directories above an item (up to, not including, `/` or the prefix), as
/// items that create them with their local metadata, parents first.
fn ancestors(it: &Item) -> Vec<Item> {
    let mut out = Vec::new();
    let (Some(real), path) = (&it.real, &it.path) else { return out };
    let mut p = path.clone();
    let mut r = real.clone();
    while let Some(slash) = p.iter().rposition(|&b| b == b'/') {
        if slash == 0 {
            break;
        }
        if slash < it.root_len {
            break;
        }
        p.truncate(slash);
        if !r.pop() {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&r) else { break };
        let meta = crate::scan::meta_of(&md);
        if meta.kind != FileKind::Dir {
            break;
        }
        out.push(Item {
            path: p.clone(),
            local: Some(meta),
            real: Some(r.clone()),
            base: None,
            peer_has_old: false,
            forced: true,
            ancestor: true,
            need_content: false,
            generation: 0,
            changes: Changes::NEW,
            won: None,
            ..it.clone()
        });
        if p.first() == Some(&b'%') && !p.contains(&b'/') {
            break;
        }
    }
    out.reverse();
    out
}

impl PeerReport {
    /// Paths that failed or were left unresolved.
    pub fn problems(&self) -> impl Iterator<Item = (&[u8], String)> {
        self.paths.iter().filter_map(|(p, r)| match r {
            PathResult::Failed(why) => Some((p.as_slice(), why.clone())),
            PathResult::Unresolved => Some((
                p.as_slice(),
                "conflict: changed on both sides; keep one with 'csync -f PATH' on the node whose version should win".into(),
            )),
            _ => None,
        })
    }
}
