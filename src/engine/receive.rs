//! The receiving side of a session: authorizes every path against this node's
//! own config, re-checks the local state, decides between apply, in-sync and
//! conflict, applies through [`crate::apply`], and records the result in the
//! index in the same step (so the next check sees no change and nothing echoes).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::wire::{from_wire, to_wire, version};
use crate::actions::{ActionTable, Gate};
use crate::apply::{self, FileWriter};
use crate::blockdelta;
use crate::config::{Config, GroupKey};
use crate::index::{Index, IndexedFile, OwnedMark, Received};
use crate::net::server::{Authority, Handler};
use crate::pattern::{GroupMatcher, Level};
use crate::proto::{Content, ErrorCode, Msg, Outcome, WireEntry};
use crate::types::{Base, Changes, FileKind, IgnoreFields, Meta};

/// The hint of a `Failed` reply asking the sender to send the content after all.
pub const CONTENT_NEEDED: &str = "content needed";

/// The daemon's service: group membership for the handshake, and a
/// [`Receiver`] per authenticated session.
pub struct Service {
    config: Arc<Config>,
    index_path: PathBuf,
    busy: Duration,
    actions: Arc<ActionTable>,
    gate: Arc<Gate>,
}

impl Service {
    /// A service over `config`, opening the index at `index_path` per session.
    ///
    /// # Errors
    /// When an action pattern does not compile.
    pub fn new(config: Arc<Config>, index_path: PathBuf, busy: Duration) -> Result<Self, String> {
        let actions = ActionTable::new(&config).map_err(|e| e.to_string())?;
        let owner = actions.owner().to_string();
        let gate = Gate::new(index_path.clone(), busy, owner, config.myname.clone());
        Ok(Service { config, index_path, busy, actions: Arc::new(actions), gate: Arc::new(gate) })
    }

    /// The gate all sessions share; the daemon runs what a killed
    /// predecessor left in the journal through it at start.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// A service over a re-read `config` (the listener's SIGHUP). It keeps
    /// this one's gate when the index is the same, so the action runs of
    /// sessions under the old and the new config never overlap.
    ///
    /// # Errors
    /// When an action pattern does not compile.
    pub fn renewed(
        &self,
        config: Arc<Config>,
        index_path: PathBuf,
        busy: Duration,
    ) -> Result<Self, String> {
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
        Ok(Box::new(Receiver::new(self.config.clone(), index, peer, groups, actions, gate)?))
    }
}

/// A group this session may write into.
struct Allowed {
    name: String,
    matcher: GroupMatcher,
    /// The sender is receive-only in this group: it may not push.
    sender_receive_only: bool,
    /// `(peer, myname)` this node pushes its own changes to (for re-check marks).
    push_to: Vec<(String, String)>,
    /// The group's walk roots (DB form), computed once per session.
    roots: Vec<String>,
    /// `backup-directory` and `backup-generations`, when backups are on.
    backup: Option<(PathBuf, u32)>,
    /// What a peer may create here (`allow-devices`, `allow-setid`, `owners`).
    policy: Policy,
    conflict_dir: PathBuf,
}

/// The receiver's say over what a peer may create in a group: device nodes
/// and setuid/setgid bits would turn "a write inside a root" into root on
/// this host, so they are off unless the group allows them; owners may be
/// limited to a range.
#[derive(Debug, Clone, Copy)]
struct Policy {
    allow_devices: bool,
    allow_setid: bool,
    owners: Option<(u32, u32)>,
}

impl Policy {
    /// Refuses (with why) what the group does not allow, and strips the
    /// setuid/setgid bits it does not allow (saying so).
    fn admit(&self, group: &str, new: &mut Meta) -> Result<Option<String>, String> {
        if matches!(new.kind, FileKind::CharDevice | FileKind::BlockDevice) && !self.allow_devices {
            return Err(format!(
                "device nodes from peers are refused in group '{group}' (allow them with 'allow-devices;')"
            ));
        }
        if let Some((lo, hi)) = self.owners
            && (!(lo..=hi).contains(&new.uid) || !(lo..=hi).contains(&new.gid))
        {
            return Err(format!(
                "owner {}:{} is outside the range {lo}-{hi} group '{group}' allows ('owners')",
                new.uid, new.gid
            ));
        }
        if new.mode & 0o6000 != 0 && !self.allow_setid && new.kind != FileKind::Dir {
            new.mode &= !0o6000;
            return Ok(Some(format!(
                "setuid/setgid bits stripped (group '{group}' does not say 'allow-setid;')"
            )));
        }
        Ok(None)
    }
}

/// What to do with the `Data` frames of a stream.
enum Stream {
    /// Write them into a new file (whole content).
    Whole(Box<Pending>, FileWriter),
    /// Rebuild from the current file plus delta ops.
    Delta(Box<Pending>, blockdelta::Decoder<std::fs::File, FileWriter>),
    /// Refused or conflicting: read and drop (the sender pipelined them).
    Discard,
}

/// An apply waiting for its content.
struct Pending {
    path: Vec<u8>,
    new_version: [u8; 32],
    /// The host whose change this is.
    origin: String,
    /// A regular file this replaces, to back up first: `(group, root, rel)`.
    replaces: Option<(usize, PathBuf, Vec<u8>)>,
    /// The entry's local path.
    real: PathBuf,
    /// Journalled actions this change owes (ready once it is recorded).
    actions: Vec<i64>,
    /// This node's own version loses a conflict to this change: the record
    /// (reason, where the loser was kept), written once the change is made.
    lost: Option<(String, Option<PathBuf>)>,
    /// Content bytes the entry's declared size still allows (whole-file
    /// streams): a sender may not grow a file beyond what it announced.
    allowed: u64,
}

/// Handles one authenticated session's requests.
pub struct Receiver {
    config: Arc<Config>,
    index: Index,
    peer: String,
    groups: Vec<Allowed>,
    ignore: IgnoreFields,
    opts: apply::Options,
    streams: HashMap<u32, Stream>,
    /// `(group, path, parent mtime)` of pushes whose content is still coming.
    parent_times: HashMap<u32, (String, Vec<u8>, Option<i64>)>,
    /// Applied entries not yet committed to the index (one commit per batch).
    pending: Vec<Received>,
    /// Their paths: a request for one of them commits the batch first.
    pending_paths: std::collections::HashSet<Vec<u8>>,
    /// Acks held back until the entries they confirm are committed.
    acks: Vec<Msg>,
    /// The node's actions.
    actions: Arc<ActionTable>,
    /// The daemon's gate: where this session's actions run, shared with
    /// the sessions that overlap it.
    gate: Arc<Gate>,
    /// Whether this session counts as a writer at the gate.
    entered: bool,
    /// Journal rows this session wrote.
    journalled: Vec<i64>,
    /// Rows journalled ahead for the requests of the current batch, by request
    /// id; taken when the change is made.
    ahead: HashMap<u32, Vec<i64>>,
    /// Rows journalled ahead for changes that were not made after all.
    stale: Vec<i64>,
    /// Real paths of every include root of every member group, outermost
    /// first: a path is always resolved from the outermost root holding it.
    roots_real: Vec<PathBuf>,
    /// Real paths of every include root of every member group, nested too.
    all_roots: Vec<PathBuf>,
    /// Files written and checked under their temporary names, waiting for
    /// the batch's durability point: `(request id, the apply, the file)`.
    staged: Vec<(u32, Box<Pending>, apply::Staged)>,
    /// Directories whose entries were deleted in this batch: fsynced once
    /// each before the deletes are confirmed.
    dirty_dirs: Vec<std::os::fd::OwnedFd>,
    /// Versions the sender pushed and this session answered with a
    /// conflict (`None`: a delete): what a `Yield` for that path is based on.
    answered: HashMap<Vec<u8>, Option<[u8; 32]>>,
    /// Pushes refused so far: the first [`LOGGED_REFUSALS`] are logged one
    /// by one, the rest as one count at the session's end (a peer must not
    /// be able to fill the log).
    refusals: u64,
}

/// Refused pushes of one session logged one by one.
pub const LOGGED_REFUSALS: u64 = 10;

/// Entries applied before the index is committed and the acks go out.
const BATCH: usize = 256;

impl Receiver {
    fn new(
        config: Arc<Config>,
        index: Index,
        peer: &str,
        groups: &[String],
        actions: Arc<ActionTable>,
        gate: Arc<Gate>,
    ) -> Result<Self, String> {
        let mut allowed = Vec::new();
        let index_dir = index.path().parent().map(Path::to_path_buf).unwrap_or_default();
        for g in config.my_groups().filter(|g| groups.contains(&g.name)) {
            let matcher = GroupMatcher::new(&g.rules).map_err(|(_, e)| e)?;
            let sender_receive_only = g.hosts.iter().any(|h| h.name == peer && h.receive_only);
            let me_receive_only = g.me(&config.myname).is_some_and(|h| h.receive_only);
            let push_to = if me_receive_only {
                Vec::new()
            } else {
                g.peers(&config.myname).map(|h| (h.name.clone(), config.myname.clone())).collect()
            };
            let conflict_dir = g
                .backup_directory
                .clone()
                .unwrap_or_else(|| index_dir.join(format!("{}.conflicts", config.myname)));
            let roots = matcher.walk_roots();
            let backup = g
                .backup_directory
                .clone()
                .filter(|_| g.backup_generations > 0)
                .map(|d| (d, g.backup_generations));
            let policy = Policy {
                allow_devices: g.allow_devices,
                allow_setid: g.allow_setid,
                owners: g.owner_range,
            };
            allowed.push(Allowed {
                policy,
                name: g.name.clone(),
                matcher,
                sender_receive_only,
                push_to,
                conflict_dir,
                roots,
                backup,
            });
        }
        let (roots_real, all_roots) = real_roots(&config)?;
        let ignore = IgnoreFields {
            uid: config.ignore.uid,
            gid: config.ignore.gid,
            mode: config.ignore.mode,
        };
        let opts = apply::Options {
            ignore_uid: ignore.uid,
            ignore_gid: ignore.gid,
            ignore_mode: ignore.mode,
        };
        Ok(Receiver {
            config,
            index,
            peer: peer.to_string(),
            groups: allowed,
            ignore,
            opts,
            streams: HashMap::new(),
            parent_times: HashMap::new(),
            pending: Vec::new(),
            pending_paths: Default::default(),
            acks: Vec::new(),
            actions,
            gate,
            entered: false,
            journalled: Vec::new(),
            ahead: HashMap::new(),
            stale: Vec::new(),
            roots_real,
            all_roots,
            refusals: 0,
            answered: HashMap::new(),
            staged: Vec::new(),
            dirty_dirs: Vec::new(),
        })
    }

    /// Authorizes `path` for `group` and finds where it lives: `(group index,
    /// real root, path below the root)`.
    fn resolve(
        &self,
        group: &str,
        path: &[u8],
    ) -> Result<(usize, PathBuf, Vec<u8>), (ErrorCode, String)> {
        let shown = crate::paths::display(path);
        let Some(gi) = self.groups.iter().position(|g| g.name == group) else {
            return Err((
                ErrorCode::UnknownGroup,
                format!("group '{}' is not open on this session", crate::paths::escape(group)),
            ));
        };
        let g = &self.groups[gi];
        if g.sender_receive_only {
            return Err((
                ErrorCode::ReceiveOnly,
                format!("{} is receive-only in group '{group}'", self.peer),
            ));
        }
        if g.matcher.level(path) != Level::Managed {
            return Err((
                ErrorCode::PathRefused,
                format!("{shown} is not managed by group '{group}' here"),
            ));
        }
        for root in &g.roots {
            let rb = root.as_bytes();
            let rel: &[u8] = if path == rb {
                b""
            } else if crate::index::is_below(path, rb) {
                let skip = if rb == b"/" { 1 } else { rb.len() + 1 };
                &path[skip..]
            } else {
                continue;
            };
            apply::check_rel(rel).map_err(|e| (ErrorCode::PathRefused, e.to_string()))?;
            let Some(real) = crate::paths::real_path(&self.config, path) else {
                return Err((ErrorCode::PathRefused, format!("{shown}: prefix not defined here")));
            };
            let Some((anchor, rel)) = self.place(&real) else {
                return Err((ErrorCode::PathRefused, format!("{shown}: no include root here")));
            };
            apply::check_rel(&rel).map_err(|e| (ErrorCode::PathRefused, e.to_string()))?;
            return Ok((gi, anchor, rel));
        }
        Err((
            ErrorCode::PathRefused,
            format!("{shown} is under no include root of group '{group}' here"),
        ))
    }

    /// Where a real path is written from: the directory holding the
    /// outermost include root that contains it (the *anchor*), and the path
    /// below that directory, starting with the root's own name. Every
    /// component of it is then opened without following symlinks, so a
    /// symlink pushed in place of an inner root (one group's root inside
    /// another group's tree) can never redirect a write.
    fn place(&self, real: &Path) -> Option<(PathBuf, Vec<u8>)> {
        let root = self.roots_real.iter().find(|r| real.starts_with(r))?;
        let anchor = root.parent().unwrap_or(Path::new("/"));
        let rel = real.strip_prefix(anchor).ok()?;
        Some((anchor.to_path_buf(), rel.as_os_str().as_bytes().to_vec()))
    }

    /// True when `anchor/rel` is an include root of any member group.
    fn is_root(&self, anchor: &Path, rel: &[u8]) -> bool {
        let real = real_of(anchor, rel);
        self.all_roots.contains(&real)
    }

    /// The entry's state on disk now, hashed when the index cannot vouch for
    /// the content, and what changed since this node's last check (the caller
    /// records that as a local change only if it refuses the push).
    fn current(
        &mut self,
        root: &Path,
        rel: &[u8],
        path: &[u8],
    ) -> Result<(Option<Meta>, Changes), apply::Error> {
        let Some(mut m) = apply::stat(root, rel)? else {
            let known = self.index.file(path).ok().flatten().is_some();
            return Ok((None, if known { Changes::DELETE } else { Changes::default() }));
        };
        let known = self.index.file(path).ok().flatten();
        if m.kind == FileKind::File {
            m.hash = match &known {
                Some(k) if k.kind == FileKind::File && !m.content_may_differ(k) => k.hash,
                _ => match apply::open_file(root, rel)? {
                    Some(mut f) => Some(hash_reader(&mut f).map_err(|e| apply::Error::Io {
                        what: format!("read {}", crate::paths::display(rel)),
                        source: e,
                    })?),
                    None => None,
                },
            };
        }
        let changed = match &known {
            None => Changes::NEW,
            Some(k) => crate::types::classify(k, &m, self.ignore),
        };
        Ok((Some(m), changed))
    }

    fn record_local(
        &mut self,
        gi: usize,
        path: &[u8],
        real: &Path,
        m: Option<&Meta>,
        changes: Changes,
    ) {
        let base = match self.index.file(path).ok().flatten() {
            Some(old) => Base::Version(version(&old, self.ignore)),
            None => Base::Absent,
        };
        let g = &self.groups[gi];
        let batch = crate::index::Batch {
            upserts: m
                .map(|m| IndexedFile { path: path.to_vec(), meta: m.clone() })
                .into_iter()
                .collect(),
            removals: if m.is_none() { vec![path.to_vec()] } else { vec![] },
            local: vec![path.to_vec()],
            actions: Vec::new(),
            marks: g
                .push_to
                .iter()
                .map(|(peer, me)| OwnedMark {
                    path: path.to_vec(),
                    peer: peer.clone(),
                    myname: me.clone(),
                    changes,
                    forced: false,
                    base,
                })
                .collect(),
        };
        if let Err(e) = self.index.apply(&batch) {
            warn!("recording local change of {}: {e}", crate::paths::display(path));
            return;
        }
        // A change made here, found by this re-check rather than by a check:
        // it owes its `do-local` actions all the same.
        let _ = self.journal(None, path, real, true);
    }

    /// Journals the actions a change of `path` owes, before it is made
    /// (`local`: a change made here, already on disk). Returns the rows;
    /// an error refuses the change, which must not land without its actions.
    fn journal(
        &mut self,
        req: Option<u32>,
        path: &[u8],
        real: &Path,
        local: bool,
    ) -> Result<Vec<i64>, Outcome> {
        if self.actions.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(ids) = req.and_then(|id| self.ahead.remove(&id)) {
            return Ok(ids);
        }
        let from = (!local).then_some(self.peer.as_str());
        let owed = self.actions.owed(path, real, from, local);
        if owed.is_empty() {
            return Ok(Vec::new());
        }
        match self.queue_owed(&owed) {
            Ok(ids) => Ok(ids),
            Err(e) => {
                warn!("journalling the actions of {}: {e}", crate::paths::display(path));
                Err(Outcome::Failed {
                    code: ErrorCode::Internal,
                    message: "cannot journal its actions".into(),
                })
            }
        }
    }

    /// Journals `owed` in one transaction, as this session's rows. The session
    /// enters the gate first: no run may start between its journal rows and
    /// its changes.
    fn queue_owed(&mut self, owed: &[crate::index::OwedAction]) -> crate::index::Result<Vec<i64>> {
        if !self.entered {
            self.gate.enter();
            self.entered = true;
        }
        let ids = self.index.add_owed(owed)?;
        self.journalled.extend_from_slice(&ids);
        Ok(ids)
    }

    /// Journals, in one transaction, the actions every `Push` and `Delete`
    /// of `batch` would owe if applied: one commit per batch instead of one
    /// per file. Rows of requests that end up not applied are dropped after.
    fn journal_ahead(&mut self, batch: &[Msg]) {
        let mut owed = Vec::new();
        let mut owners = Vec::new();
        for m in batch {
            let (id, group, path) = match m {
                Msg::Push { id, group, path, .. } | Msg::Delete { id, group, path, .. } => {
                    (*id, group, path)
                }
                _ => continue,
            };
            let Ok((_, root, rel)) = self.resolve(group, path) else { continue };
            let rows = self.actions.owed(path, &real_of(&root, &rel), Some(&self.peer), false);
            owners.extend(std::iter::repeat_n(id, rows.len()));
            owed.extend(rows);
        }
        if owed.is_empty() {
            return;
        }
        match self.queue_owed(&owed) {
            Ok(ids) => {
                for (id, row) in owners.into_iter().zip(ids) {
                    self.ahead.entry(id).or_default().push(row);
                }
            }
            // Each request journals its own rows then (or is refused).
            Err(e) => warn!("journalling actions ahead: {e}"),
        }
    }

    /// A request is answered: rows journalled ahead for it and not taken
    /// belong to a change that was not made.
    fn settle_ahead(&mut self, id: u32) {
        if let Some(ids) = self.ahead.remove(&id) {
            self.stale.extend(ids);
        }
    }

    /// Drops journal rows of a change that was not made after all.
    /// (Failures and unneeded rows collect in `stale`; this runs once per flush.)
    fn unjournal(&mut self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.index.remove_owed(ids) {
            // Kept for the next flush: dropped later, never run for a change
            // that was not made.
            warn!("dropping journalled actions: {e}");
            self.stale.extend_from_slice(ids);
            return;
        }
        let gone: std::collections::HashSet<i64> = ids.iter().copied().collect();
        self.journalled.retain(|i| !gone.contains(i));
    }

    /// `backup-generations`: before a peer's version replaces or deletes a
    /// regular file, its content is kept (owner, mode and mtime too) as
    /// `<backup-directory>/<path>.1`, the previous `.1` becoming `.2` and so
    /// on; the oldest beyond N goes. `<path>` is the DB form without a
    /// leading `/` (`%www%/a/f`, `etc/nginx/nginx.conf`).
    fn back_up(&mut self, p: &Pending) {
        if let Some((gi, root, rel)) = &p.replaces {
            self.back_up_file(*gi, root, rel, &p.path);
        }
    }

    fn back_up_file(&mut self, gi: usize, root: &Path, rel: &[u8], path: &[u8]) {
        let Some((dir, n)) = self.groups[gi].backup.clone() else { return };
        let stem =
            dir.join(std::ffi::OsStr::from_bytes_compat(path.strip_prefix(b"/").unwrap_or(path)));
        let generation = |k: u32| {
            let mut s = stem.clone().into_os_string();
            s.push(format!(".{k}"));
            PathBuf::from(s)
        };
        let _ = std::fs::remove_file(generation(n));
        for k in (1..n).rev() {
            let _ = std::fs::rename(generation(k), generation(k + 1));
        }
        if let Err(e) = apply::preserve(root, rel, &generation(1)) {
            warn!("backup of {}: {e}", crate::paths::display(path));
        }
    }

    /// Keeps the version about to be replaced after a conflict. Returns where.
    fn keep_loser(&mut self, gi: usize, root: &Path, rel: &[u8], path: &[u8]) -> Option<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut rel_store = path.strip_prefix(b"/").unwrap_or(path).to_vec();
        rel_store.extend_from_slice(format!(".conflict-{stamp}-{}", self.peer).as_bytes());
        let first =
            self.groups[gi].conflict_dir.join(std::ffi::OsStr::from_bytes_compat(&rel_store));
        // A second loser of the same path within the same second must not
        // replace the first one's copy.
        let mut dest = first.clone();
        for k in 2..1000 {
            if std::fs::symlink_metadata(&dest).is_err() {
                break;
            }
            let mut name = first.clone().into_os_string();
            name.push(format!(".{k}"));
            dest = PathBuf::from(name);
        }
        match apply::preserve(root, rel, &dest) {
            Ok(true) => Some(dest),
            Ok(false) => None,
            Err(e) => {
                warn!("keeping the losing version of {}: {e}", crate::paths::display(path));
                None
            }
        }
    }

    /// A forced push is about to replace (or delete) `cur`: when `cur` is
    /// this node's own version, keep it and say why it lost: the group's rule
    /// when the rule gives the peer's version the win (`lost: younger`), else
    /// a person's `csync -f` there. A version this node only received from
    /// another host (a bystander) is neither kept nor recorded: its maker
    /// keeps its own. Returns the record to write once the change is made.
    #[allow(clippy::too_many_arguments)]
    fn lose(
        &mut self,
        gi: usize,
        root: &Path,
        rel: &[u8],
        path: &[u8],
        cur: &Meta,
        new: Option<&Meta>,
        new_origin: &str,
    ) -> Option<(String, Option<PathBuf>)> {
        let my_origin = self.index.origin(path).ok().flatten();
        if my_origin.as_ref().is_some_and(|o| *o != self.config.myname) {
            return None;
        }
        let why = match self.rule_verdict(gi, cur, new, new_origin) {
            Some(rule) => format!("lost: {rule}"),
            None => format!("lost: forced by {} (csync -f)", self.peer),
        };
        let kept =
            if cur.kind == FileKind::File { self.keep_loser(gi, root, rel, path) } else { None };
        Some((why, kept))
    }

    /// The rule that makes the incoming version (`new`, `None`: a delete)
    /// win over ours, if the group's `auto` rule does.
    fn rule_verdict(
        &self,
        gi: usize,
        cur: &Meta,
        new: Option<&Meta>,
        new_origin: &str,
    ) -> Option<String> {
        let g = self.config.groups.iter().find(|g| g.name == self.groups[gi].name)?;
        let pos = |h: &str| g.hosts.iter().position(|x| x.name == h).unwrap_or(usize::MAX);
        let ro = |h: &str| g.hosts.iter().any(|x| x.name == h && x.receive_only);
        // A delete is dated 0 here, as the pusher dates a peer's delete when
        // it decides: the label names the rule the pusher applied.
        let them = super::conflict::Side {
            host: &self.peer,
            position: pos(new_origin),
            receive_only: ro(&self.peer),
            time_ns: new.map_or(0, |m| m.mtime_ns),
            size: new.map_or(-1, |m| m.size as i64),
        };
        let me = super::conflict::Side {
            host: &self.config.myname,
            position: pos(&self.config.myname),
            receive_only: ro(&self.config.myname),
            time_ns: cur.mtime_ns,
            size: cur.size as i64,
        };
        match super::conflict::decide(g.auto, them, me) {
            super::conflict::Decision::Win(why) => Some(why),
            _ => None,
        }
    }

    /// Writes a conflict record (a failure to do so is logged: the change
    /// itself stands).
    fn note_conflict(&mut self, path: &[u8], why: &str, kept: Option<&Path>) {
        if let Err(e) = self.index.record_conflict(
            path,
            &self.peer,
            &crate::index::Resolution::from_stored(why),
            kept,
        ) {
            warn!("recording the conflict on {}: {e}", crate::paths::display(path));
        }
    }

    /// The peer yields a conflict to our version (its rule said ours wins):
    /// mark ours, forced, for that peer, so our next run brings it there.
    fn yield_to_us(&mut self, group: &str, path: &[u8], rule: &str) {
        let Some(g) = self.groups.iter().find(|g| g.name == group) else { return };
        if g.matcher.level(path) != Level::Managed {
            return;
        }
        let Some((_, me)) = g.push_to.iter().find(|(p, _)| *p == self.peer) else { return };
        // The peer lacks it altogether: an ordinary push brings it (and meets
        // a conflict if the peer made one meanwhile). Otherwise our version
        // won by the rule: forced.
        let missing = rule == super::push::first_contact::MISSING;
        if missing && self.index.file(path).ok().flatten().is_none() {
            return;
        }
        // Not forced: based on the version the peer yielded with, our push is
        // a fast-forward there (its own version kept as the loser); should
        // it change that version again meanwhile, the rule decides anew.
        let base = if missing {
            Base::Absent
        } else {
            match self.answered.get(path) {
                Some(Some(v)) => Base::Version(*v),
                Some(None) => Base::Absent,
                None => return,
            }
        };
        let mark = crate::index::Mark {
            path,
            peer: &self.peer,
            myname: me,
            changes: Changes::MARKED,
            forced: false,
            base,
        };
        let shown = crate::paths::display(path);
        let marked =
            self.index.mark(&[mark]).and_then(|()| self.index.rebase_mark(path, &self.peer, base));
        match marked {
            Ok(()) if missing => {
                info!(peer = %self.peer, "{shown}: missing there; it goes there on our next run")
            }
            Ok(()) => {
                info!(peer = %self.peer, "{shown}: our version won ({rule}); it goes there on our next run")
            }
            Err(e) => warn!(peer = %self.peer, "{shown}: marking our winning version: {e}"),
        }
    }

    /// Logs a refused push: one by one up to [`LOGGED_REFUSALS`] per
    /// session, then only counted (the count is logged at the end).
    fn refused(&mut self, path: &[u8], why: &str) {
        self.refusals += 1;
        if self.refusals <= LOGGED_REFUSALS {
            warn!(peer = %self.peer, "refused push of {}: {why}", crate::paths::display(path));
        }
    }

    /// Our state of `path` as the wire shows it, with the host that made it.
    fn wire_with_origin(&self, path: &[u8], m: &Meta) -> WireEntry {
        let mut w = to_wire(m);
        w.origin = Some(
            self.index.origin(path).ok().flatten().unwrap_or_else(|| self.config.myname.clone()),
        );
        w
    }

    fn outcome_of(e: apply::Error) -> Outcome {
        match e {
            apply::Error::ParentMissing(_) => Outcome::ParentMissing,
            apply::Error::NotEmpty(_) => Outcome::NotEmpty,
            apply::Error::BadPath(m) => {
                Outcome::Failed { code: ErrorCode::PathRefused, message: m }
            }
            apply::Error::Symlink(m) => Outcome::Failed {
                code: ErrorCode::PathRefused,
                message: format!("{m}: a symlink or non-directory on the way; never followed"),
            },
            apply::Error::HashMismatch => Outcome::Failed {
                code: ErrorCode::Io,
                message: "content does not match its hash (changed during the transfer?)".into(),
            },
            apply::Error::Io { what, source } => {
                Outcome::Failed { code: ErrorCode::Io, message: format!("{what}: {source}") }
            }
        }
    }

    // The fields of one `Push` message, as they arrive.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: u32,
        group: &str,
        path: Vec<u8>,
        entry: WireEntry,
        base: Option<[u8; 32]>,
        force: bool,
        content: Content,
    ) -> Option<Outcome> {
        let (gi, root, rel) = match self.resolve(group, &path) {
            Ok(x) => x,
            Err((code, message)) => {
                self.refused(&path, &message);
                self.discard(id, content);
                return Some(Outcome::Failed { code, message });
            }
        };
        let Some(mut new) = from_wire(&entry) else {
            self.discard(id, content);
            return Some(Outcome::Failed {
                code: ErrorCode::Protocol,
                message: "unknown entry kind".into(),
            });
        };
        if new.kind == FileKind::File && new.hash.is_none() {
            self.discard(id, content);
            return Some(Outcome::Failed {
                code: ErrorCode::Protocol,
                message: "regular file without hash".into(),
            });
        }
        match self.groups[gi].policy.admit(group, &mut new) {
            Ok(None) => {}
            Ok(Some(note)) => {
                info!(peer = %self.peer, "{}: {note}", crate::paths::display(&path));
            }
            Err(why) => {
                self.discard(id, content);
                self.refused(&path, &why);
                return Some(Outcome::Failed { code: ErrorCode::PathRefused, message: why });
            }
        }
        // An outermost root's own directory may be missing on a fresh node
        // (`/root/.ssh` for `include /root/.ssh/authorized_keys;`).
        if !rel.contains(&b'/')
            && !rel.is_empty()
            && let Err(e) = apply::ensure_root(&root)
        {
            self.discard(id, content);
            return Some(Self::outcome_of(e));
        }
        let (cur, local_change) = match self.current(&root, &rel, &path) {
            Ok(c) => c,
            Err(e) => {
                self.discard(id, content);
                return Some(Self::outcome_of(e));
            }
        };
        if let Some(why) = self.root_refusal(&root, &rel, cur.as_ref(), Some(new.kind)) {
            self.discard(id, content);
            self.refused(&path, &why);
            return Some(Outcome::Failed { code: ErrorCode::PathRefused, message: why });
        }
        let new_v = version(&new, self.ignore);
        let cur_v = cur.as_ref().map(|c| version(c, self.ignore));
        let same = cur_v == Some(new_v);
        if !same && !force && base != cur_v {
            // Refused: our own change stands, and our next run must push it.
            if local_change.is_real() {
                self.record_local(gi, &path, &real_of(&root, &rel), cur.as_ref(), local_change);
            }
            self.discard(id, content);
            info!(peer = %self.peer, "conflict on {}: changed here too", crate::paths::display(&path));
            // The sender's version, should it yield: our push must then find
            // that version there to be a plain fast-forward.
            self.answered.insert(path.clone(), Some(new_v));
            return Some(Outcome::Conflict(cur.as_ref().map(|c| self.wire_with_origin(&path, c))));
        }
        // Our own version, which the sender never had, gives way: forced by a
        // person, or (a fast-forward from the version the sender yielded
        // with) because the rule let the sender's version win. Kept either way.
        let never_had = || self.index.peer_version(&path, &self.peer).ok().flatten() != Some(cur_v);
        let lost = match &cur {
            Some(c) if !same && ((force && base != cur_v) || (base == cur_v && never_had())) => {
                let origin = entry.origin.as_deref().unwrap_or(&self.peer).to_string();
                self.lose(gi, &root, &rel, &path, c, Some(&new), &origin)
            }
            _ => None,
        };
        let ae = apply::Entry {
            kind: new.kind,
            mode: new.mode,
            uid: new.uid,
            gid: new.gid,
            mtime_ns: new.mtime_ns,
            target: new.target.clone(),
            rdev: new.rdev,
        };
        let origin = entry.origin.clone().unwrap_or_else(|| self.peer.clone());
        let replaces = cur
            .as_ref()
            .filter(|c| c.kind == FileKind::File && !same)
            .map(|_| (gi, root.clone(), rel.clone()));
        let mut pending = Box::new(Pending {
            path: path.clone(),
            new_version: new_v,
            origin,
            replaces,
            real: real_of(&root, &rel),
            actions: Vec::new(),
            lost,
            allowed: new.size,
        });
        if same {
            // Identical already: no conflict, no content needed.
            self.discard(id, content);
            let cur = cur.expect("same implies present");
            if cur.mtime_ns == new.mtime_ns || new.kind == FileKind::Symlink {
                let f = IndexedFile { path: path.clone(), meta: cur };
                self.defer(Some(f), None, Some(new_v), None, Vec::new());
                return Some(Outcome::InSync);
            }
            let r = if new.kind == FileKind::File {
                apply::set_file_attrs(&root, &rel, &ae, &self.opts).map(|m| {
                    m.map(|mut m| {
                        m.hash = new.hash;
                        m
                    })
                })
            } else {
                apply::make(&root, &rel, &ae, &self.opts).map(Some)
            };
            return Some(self.finish(&pending, r));
        }
        if new.kind != FileKind::File {
            self.discard(id, content);
            pending.actions = match self.journal(Some(id), &path, &pending.real, false) {
                Ok(ids) => ids,
                Err(o) => return Some(o),
            };
            self.back_up(&pending);
            let r = apply::make(&root, &rel, &ae, &self.opts);
            return Some(self.finish(&pending, r.map(Some)));
        }
        match content {
            Content::None => {
                // Metadata only (mode, owner, mtime): fine when our content is already theirs.
                let content_same =
                    cur.as_ref().is_some_and(|c| c.kind == FileKind::File && c.hash == new.hash);
                if !content_same {
                    return Some(Outcome::Failed {
                        code: ErrorCode::Protocol,
                        message: CONTENT_NEEDED.into(),
                    });
                }
                pending.actions = match self.journal(Some(id), &path, &pending.real, false) {
                    Ok(ids) => ids,
                    Err(o) => return Some(o),
                };
                let r = apply::set_file_attrs(&root, &rel, &ae, &self.opts).map(|m| {
                    m.map(|mut m| {
                        m.hash = new.hash;
                        m
                    })
                });
                Some(self.finish(&pending, r))
            }
            Content::Whole => {
                let hash = new.hash.expect("checked above");
                match apply::begin_file(&root, &rel, &ae, hash, &self.opts) {
                    Ok(w) => {
                        self.streams.insert(id, Stream::Whole(pending, w));
                        None
                    }
                    Err(e) => {
                        self.streams.insert(id, Stream::Discard);
                        Some(Self::outcome_of(e))
                    }
                }
            }
            Content::Delta => {
                let hash = new.hash.expect("checked above");
                let base_file = match apply::open_file(&root, &rel) {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        self.streams.insert(id, Stream::Discard);
                        return Some(Outcome::Failed {
                            code: ErrorCode::Io,
                            message: "no base file for a delta".into(),
                        });
                    }
                    Err(e) => {
                        self.streams.insert(id, Stream::Discard);
                        return Some(Self::outcome_of(e));
                    }
                };
                // The block size of the signature this node sent: the same
                // rule on the same base file (a sender cannot choose it).
                let Some(bs) =
                    blockdelta::block_size_for(base_file.metadata().map_or(u64::MAX, |m| m.len()))
                else {
                    self.streams.insert(id, Stream::Discard);
                    return Some(Outcome::Failed {
                        code: ErrorCode::Io,
                        message: "base file too large for a delta".into(),
                    });
                };
                match apply::begin_file(&root, &rel, &ae, hash, &self.opts)
                    .map_err(Self::outcome_of)
                    .and_then(|w| {
                        blockdelta::Decoder::new(base_file, bs, entry.size, w).map_err(|e| {
                            Outcome::Failed { code: ErrorCode::Io, message: e.to_string() }
                        })
                    }) {
                    Ok(d) => {
                        self.streams.insert(id, Stream::Delta(pending, d));
                        None
                    }
                    Err(o) => {
                        self.streams.insert(id, Stream::Discard);
                        Some(o)
                    }
                }
            }
        }
    }

    /// After an applied change: give the parent directory the sender's mtime,
    /// when that directory is part of what the group manages here.
    fn after(&mut self, group: &str, path: &[u8], parent_mtime: Option<i64>, outcome: &Outcome) {
        let (Some(t), Outcome::Applied) = (parent_mtime, outcome) else { return };
        let Some((root, rel)) = self.parent_in_tree(group, path) else { return };
        if let Err(e) = apply::set_parent_mtime(&root, &rel, t) {
            warn!("setting the directory mtime for {}: {e}", crate::paths::display(path));
        }
    }

    /// Queues an applied entry for the next index commit.
    fn defer(
        &mut self,
        file: Option<IndexedFile>,
        removed: Option<Vec<u8>>,
        version: Option<[u8; 32]>,
        origin: Option<String>,
        actions: Vec<i64>,
    ) {
        let path =
            file.as_ref().map(|f| f.path.clone()).or_else(|| removed.clone()).unwrap_or_default();
        self.pending_paths.insert(path);
        let peer = self.peer.clone();
        self.pending.push(Received { file, removed, peer, version, origin, actions });
    }

    /// Commits the queued entries in one transaction, then sends the acks held
    /// back for them: an ack always means "durable, and recorded here".
    fn flush(&mut self, reply: &mut dyn FnMut(Msg)) {
        if !self.stale.is_empty() {
            let stale = std::mem::take(&mut self.stale);
            self.unjournal(&stale);
        }
        if !self.staged.is_empty() || !self.dirty_dirs.is_empty() {
            self.publish_staged();
            crash_point("batch-durable");
        }
        if !self.pending.is_empty() {
            if let Err(e) = self.index.record_received_batch(&self.pending) {
                warn!("recording received entries: {e}");
                // The files are in place all the same: their actions are owed
                // (a re-push will find them identical and owe nothing).
                let owed: Vec<i64> = self.pending.iter().flat_map(|r| r.actions.clone()).collect();
                if let Err(e) = self.index.mark_owed_ready(&owed) {
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
            self.pending_paths.clear();
        }
        for a in self.acks.drain(..) {
            reply(a);
        }
    }

    /// Sends an ack now, or holds it back while entries await their commit.
    fn ack(&mut self, id: u32, outcome: Outcome, reply: &mut dyn FnMut(Msg)) {
        let msg = Msg::Ack { id, outcome };
        if self.pending.is_empty() && self.acks.is_empty() {
            reply(msg);
        } else {
            self.acks.push(msg);
        }
    }

    /// Where `path` lives, if its parent directory is part of what the group
    /// manages here (only then does it take the sender's mtime; the
    /// directory holding an include root, `/etc` for `/etc/hosts`, is not).
    fn parent_in_tree(&self, group: &str, path: &[u8]) -> Option<(PathBuf, Vec<u8>)> {
        let (gi, root, rel) = self.resolve(group, path).ok()?;
        let slash = path.iter().rposition(|&b| b == b'/')?;
        let parent = &path[..slash];
        if parent.is_empty() || self.groups[gi].matcher.level(parent) != Level::Managed {
            return None;
        }
        Some((root, rel))
    }

    /// Why a change at an include root is refused, if it is: a root that is
    /// a directory here stays a directory (a peer turning it into a file,
    /// symlink or device would cut off, or redirect, everything other
    /// groups keep below it) and is never deleted. A root that is a file
    /// here changes like any other entry (`new == None`: a delete).
    fn root_refusal(
        &self,
        root: &Path,
        rel: &[u8],
        cur: Option<&Meta>,
        new: Option<FileKind>,
    ) -> Option<String> {
        if !self.is_root(root, rel) || cur.is_none_or(|c| c.kind != FileKind::Dir) {
            return None;
        }
        let shown = real_of(root, rel).display().to_string();
        match new {
            Some(FileKind::Dir) => None,
            Some(k) => Some(format!(
                "{shown} is an include root and a directory here; a peer may not replace it with {}",
                k.describe()
            )),
            None => {
                Some(format!("{shown} is an include root and a directory here; it is not deleted"))
            }
        }
    }

    fn discard(&mut self, id: u32, content: Content) {
        if content != Content::None {
            self.streams.insert(id, Stream::Discard);
        }
    }

    /// Records an applied entry (or reports why it failed).
    fn finish(&mut self, p: &Pending, r: Result<Option<Meta>, apply::Error>) -> Outcome {
        match r {
            Ok(Some(meta)) => {
                if let Some((why, kept)) = &p.lost {
                    self.note_conflict(&p.path, why, kept.as_deref());
                }
                let f = IndexedFile { path: p.path.clone(), meta };
                let (v, o) = (Some(p.new_version), Some(p.origin.clone()));
                self.defer(Some(f), None, v, o, p.actions.clone());
                Outcome::Applied
            }
            Ok(None) => {
                self.stale.extend_from_slice(&p.actions);
                Outcome::Failed {
                    code: ErrorCode::Io,
                    message: "the entry changed type while being applied".into(),
                }
            }
            Err(e) => {
                self.stale.extend_from_slice(&p.actions);
                Self::outcome_of(e)
            }
        }
    }

    fn data(&mut self, stream: u32, bytes: &[u8]) -> Option<Outcome> {
        let r = match self.streams.get_mut(&stream) {
            Some(Stream::Whole(p, _)) if bytes.len() as u64 > p.allowed => {
                // Refused before a byte of the excess is written; dropping
                // the writer removes its temporary.
                let path = crate::paths::display(&p.path);
                self.streams.insert(stream, Stream::Discard);
                warn!(peer = %self.peer, "{path}: content longer than its declared size; refused");
                return Some(Outcome::Failed {
                    code: ErrorCode::Protocol,
                    message: "content longer than its declared size; refused".into(),
                });
            }
            Some(Stream::Whole(p, w)) => {
                p.allowed -= bytes.len() as u64;
                w.write_all(bytes).map_err(|e| e.to_string())
            }
            Some(Stream::Delta(_, d)) => d.apply(bytes).map_err(|e| e.to_string()),
            Some(Stream::Discard) => return None,
            None => {
                return Some(Outcome::Failed {
                    code: ErrorCode::Protocol,
                    message: "data for an unknown stream".into(),
                });
            }
        };
        match r {
            Ok(()) => None,
            Err(message) => {
                self.streams.insert(stream, Stream::Discard);
                Some(Outcome::Failed { code: ErrorCode::Io, message })
            }
        }
    }

    fn data_end(&mut self, stream: u32) -> Option<Outcome> {
        match self.streams.remove(&stream)? {
            Stream::Discard => None,
            Stream::Whole(p, w) => self.stage(stream, p, w),
            Stream::Delta(p, d) => self.stage(stream, p, d.into_inner()),
        }
    }

    /// A file's content is complete: journal its actions, back up what it
    /// replaces, and stage it. It becomes durable and visible with the rest
    /// of the batch ([`Receiver::publish_staged`]), which also answers it.
    fn stage(&mut self, id: u32, mut p: Box<Pending>, w: FileWriter) -> Option<Outcome> {
        p.actions = match self.journal(Some(id), &p.path, &p.real, false) {
            Ok(ids) => ids,
            Err(o) => return Some(o),
        };
        self.back_up(&p);
        match w.stage() {
            Ok(st) => {
                self.pending_paths.insert(p.path.clone());
                self.staged.push((id, p, st));
                None
            }
            Err(e) => Some(self.finish(&p, Err(e))),
        }
    }

    /// The batch's durability point: every staged file is fsynced (in
    /// parallel: the file system commits them together), then renamed into
    /// place, then each directory touched is fsynced once. Only then are
    /// the entries recorded and confirmed, as before per file; the cost of a
    /// flush to disk is paid once per batch instead of twice per file.
    fn publish_staged(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        let synced = sync_all(&staged);
        let mut dirs = std::mem::take(&mut self.dirty_dirs);
        let mut done = Vec::with_capacity(staged.len());
        for ((id, p, st), ok) in staged.into_iter().zip(synced) {
            let r = ok.and_then(|()| st.publish()).map(|(meta, dir)| {
                dirs.push(dir);
                meta
            });
            done.push((id, p, r));
        }
        if let Err(e) = apply::sync_dirs(dirs) {
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
            for (_, _, r) in &mut done {
                if r.is_ok() {
                    *r = Err(apply::Error::Io {
                        what: "fsync of the directory".into(),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
        for (id, p, r) in done {
            let outcome = self.finish(&p, r.map(Some));
            self.acks.push(Msg::Ack { id, outcome });
        }
    }

    fn delete(
        &mut self,
        id: u32,
        group: &str,
        path: Vec<u8>,
        base: Option<[u8; 32]>,
        force: bool,
        parent_mtime: Option<i64>,
    ) -> Outcome {
        let (gi, root, rel) = match self.resolve(group, &path) {
            Ok(x) => x,
            Err((code, message)) => return Outcome::Failed { code, message },
        };
        let (cur, local_change) = match self.current(&root, &rel, &path) {
            Ok(c) => c,
            Err(apply::Error::ParentMissing(_)) => (None, Changes::default()),
            Err(e) => return Self::outcome_of(e),
        };
        if rel.is_empty() {
            return Outcome::Failed {
                code: ErrorCode::PathRefused,
                message: "refusing to delete /".into(),
            };
        }
        if let Some(why) = self.root_refusal(&root, &rel, cur.as_ref(), None) {
            return Outcome::Failed { code: ErrorCode::PathRefused, message: why };
        }
        let Some(cur) = cur else {
            self.defer(None, Some(path.clone()), None, None, Vec::new());
            return Outcome::InSync;
        };
        let cur_v = version(&cur, self.ignore);
        if !force && base != Some(cur_v) {
            if local_change.is_real() {
                self.record_local(gi, &path, &real_of(&root, &rel), Some(&cur), local_change);
            }
            self.answered.insert(path.clone(), None);
            return Outcome::Conflict(Some(self.wire_with_origin(&path, &cur)));
        }
        // As for a push: our own version the sender never had gives way
        // (forced, or after yielding a conflict), and is kept.
        let never_had =
            self.index.peer_version(&path, &self.peer).ok().flatten() != Some(Some(cur_v));
        let lost = if (force && base != Some(cur_v)) || (base == Some(cur_v) && never_had) {
            let peer = self.peer.clone();
            self.lose(gi, &root, &rel, &path, &cur, None, &peer)
        } else {
            None
        };
        let actions = match self.journal(Some(id), &path, &real_of(&root, &rel), false) {
            Ok(ids) => ids,
            Err(o) => return o,
        };
        if cur.kind == FileKind::File {
            self.back_up_file(gi, &root, &rel, &path);
        }
        match apply::delete_unsynced(&root, &rel, parent_mtime) {
            Ok(dir) => {
                // Durable with the batch, before the ack.
                self.dirty_dirs.extend(dir);
                if let Some((why, kept)) = &lost {
                    self.note_conflict(&path, why, kept.as_deref());
                }
                self.defer(None, Some(path.clone()), None, None, actions);
                Outcome::Applied
            }
            Err(e) => {
                self.stale.extend_from_slice(&actions);
                Self::outcome_of(e)
            }
        }
    }

    fn sig(&mut self, id: u32, group: &str, path: &[u8]) -> Msg {
        // No signature (no file, or one too large to describe): the sender
        // pushes the whole file.
        let empty =
            Msg::SigReply { id, block_size: blockdelta::BASE_BLOCK, size: 0, blocks: vec![] };
        let Ok((_, root, rel)) = self.resolve(group, path) else { return empty };
        let Ok(Some(mut f)) = apply::open_file(&root, &rel) else { return empty };
        let size = f.metadata().map_or(0, |m| m.len());
        let Some(bs) = blockdelta::block_size_for(size) else { return empty };
        match blockdelta::signature(&mut f, bs) {
            Ok((size, blocks)) => Msg::SigReply { id, block_size: bs, size, blocks },
            Err(_) => empty,
        }
    }

    fn list(&mut self, id: u32, group: &str, reply: &mut dyn FnMut(Msg)) {
        if let Some(g) = self.groups.iter().find(|g| g.name == group)
            && let Ok(files) = self.index.files(crate::index::Scope::All)
        {
            for f in files.into_iter().filter(|f| g.matcher.is_managed(&f.path)) {
                reply(Msg::ListEntry { id, path: f.path, entry: to_wire(&f.meta) });
            }
        }
        reply(Msg::ListEnd { id });
    }

    fn fetch(&mut self, id: u32, group: &str, path: &[u8], reply: &mut dyn FnMut(Msg)) {
        let file = match self.resolve(group, path) {
            Ok((_, root, rel)) => apply::open_file(&root, &rel),
            Err((code, message)) => {
                return reply(Msg::Ack { id, outcome: Outcome::Failed { code, message } });
            }
        };
        let mut f = match file {
            Ok(Some(f)) => f,
            Ok(None) => {
                return reply(Msg::Ack {
                    id,
                    outcome: Outcome::Failed {
                        code: ErrorCode::Io,
                        message: "no regular file there".into(),
                    },
                });
            }
            Err(e) => return reply(Msg::Ack { id, outcome: Self::outcome_of(e) }),
        };
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    reply(Msg::Data { stream: id, bytes: buf[..n].to_vec() });
                }
                Err(e) => {
                    return reply(Msg::Ack {
                        id,
                        outcome: Outcome::Failed { code: ErrorCode::Io, message: e.to_string() },
                    });
                }
            }
        }
        reply(Msg::DataEnd { stream: id, hash: *h.finalize().as_bytes() });
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

/// Fsyncs every staged file, in parallel (up to 16 at once): concurrent
/// fsyncs share the file system's journal commits, so a batch costs about
/// one flush to disk instead of one per file.
fn sync_all(staged: &[(u32, Box<Pending>, apply::Staged)]) -> Vec<Result<(), apply::Error>> {
    const THREADS: usize = 16;
    // Many files: one `syncfs` per file system writes them all back with a
    // single cache flush, where each fsync would flush on its own.
    const SYNCFS_FILES: usize = 32;
    if staged.len() >= SYNCFS_FILES && staged.iter().all(|(_, _, st)| st.syncfs_ok()) {
        let mut by_dev: HashMap<u64, Result<(), String>> = HashMap::new();
        let devs: Vec<Result<u64, String>> =
            staged.iter().map(|(_, _, st)| st.dev().map_err(|e| e.to_string())).collect();
        for ((_, _, st), dev) in staged.iter().zip(&devs) {
            if let Ok(d) = dev {
                by_dev.entry(*d).or_insert_with(|| st.sync_fs().map_err(|e| e.to_string()));
            }
        }
        return devs
            .into_iter()
            .map(|dev| {
                let r = dev.and_then(|d| by_dev.get(&d).cloned().unwrap_or(Ok(())));
                r.map_err(|e| apply::Error::Io {
                    what: "syncfs".into(),
                    source: std::io::Error::other(e),
                })
            })
            .collect();
    }
    if staged.len() <= 1 {
        return staged.iter().map(|(_, _, st)| st.sync()).collect();
    }
    let chunk = staged.len().div_ceil(THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = staged
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || part.iter().map(|(_, _, st)| st.sync()).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("fsync thread panicked")).collect()
    })
}

/// Real paths of the include roots of every member group: the outermost
/// ones only (shortest first), and all of them.
fn real_roots(config: &Config) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let mut all = Vec::new();
    for g in config.my_groups() {
        let m = GroupMatcher::new(&g.rules).map_err(|(_, e)| e)?;
        all.extend(
            m.walk_roots().iter().filter_map(|r| crate::paths::real_path(config, r.as_bytes())),
        );
    }
    all.sort_by_key(|p| p.as_os_str().len());
    let mut outer: Vec<PathBuf> = Vec::new();
    for r in &all {
        if !outer.iter().any(|o| r.starts_with(o)) {
            outer.push(r.clone());
        }
    }
    Ok((outer, all))
}

/// The local path of `rel` below `root`.
fn real_of(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes_compat(rel))
    }
}

fn hash_reader(r: &mut impl Read) -> std::io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(*h.finalize().as_bytes());
        }
        h.update(&buf[..n]);
    }
}

/// `OsStr` from raw bytes (Unix paths are bytes).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

impl Handler for Receiver {
    fn handle(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool {
        // Keep replies in order for requests that answer with data, and never
        // look at an entry whose new state is not committed yet.
        let touches_pending = match &msg {
            Msg::Push { path, .. } | Msg::Delete { path, .. } => self.pending_paths.contains(path),
            Msg::Data { .. } | Msg::DataEnd { .. } => false,
            _ => true,
        };
        if touches_pending {
            self.flush(reply);
        }
        let keep = self.dispatch(msg, reply);
        if self.pending.len() + self.staged.len() >= BATCH {
            self.flush(reply);
        }
        keep
    }

    fn prepare(&mut self, batch: &[Msg]) {
        if !self.actions.is_empty() {
            self.journal_ahead(batch);
        }
    }

    fn idle(&mut self, reply: &mut dyn FnMut(Msg)) {
        self.flush(reply);
    }

    fn end(&mut self, bye: bool, reply: &mut dyn FnMut(Msg)) {
        if self.refusals > LOGGED_REFUSALS {
            let more = self.refusals - LOGGED_REFUSALS;
            warn!(peer = %self.peer, "refused {} pushes in this session ({more} not logged above)", self.refusals);
        }
        // Streams the peer never finished: their changes were not made.
        let open: Vec<u32> = self.ahead.keys().copied().collect();
        for id in open {
            self.settle_ahead(id);
        }
        self.flush(reply);
        let orphans = self.has_orphans();
        if self.entered && self.journalled.is_empty() && !orphans {
            // Every row went stale (nothing changed): no run is owed.
            self.gate.exit();
            self.entered = false;
        }
        if !self.entered {
            // Nothing owed by this session; but a killed predecessor's
            // actions are run now (before the ByeAck: with `-i` this process
            // ends with the session and must not leave them half run).
            if !orphans {
                return;
            }
            self.gate.enter();
            self.entered = true;
        }
        self.entered = false;
        let ids = std::mem::take(&mut self.journalled);
        let mut tick = || {
            if bye {
                reply(Msg::Working);
            }
        };
        let ran = self.gate.leave(&ids, &mut tick);
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

impl Drop for Receiver {
    fn drop(&mut self) {
        // A session that ended without `end` (its worker panicked) must not
        // keep the others waiting for it at the gate.
        if self.entered {
            self.gate.exit();
        }
    }
}

impl Receiver {
    /// Journal rows whose process is gone (a daemon killed before it ran them).
    fn has_orphans(&self) -> bool {
        let mine = self.actions.owner();
        self.index.owed_actions().is_ok_and(|rows| {
            rows.iter()
                .any(|r| r.action.owner != mine && !crate::actions::owner_alive(&r.action.owner))
        })
    }
}

impl Receiver {
    fn dispatch(&mut self, msg: Msg, reply: &mut dyn FnMut(Msg)) -> bool {
        match msg {
            Msg::Ping { id } => reply(Msg::Pong {
                id,
                time_ns: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64),
            }),
            Msg::Push { id, group, path, entry, base, force, content, parent_mtime } => {
                if content != Content::None {
                    self.parent_times.insert(id, (group.clone(), path.clone(), parent_mtime));
                }
                match self.push(id, &group, path.clone(), entry, base, force, content) {
                    Some(outcome) => {
                        self.settle_ahead(id);
                        self.parent_times.remove(&id);
                        self.after(&group, &path, parent_mtime, &outcome);
                        self.ack(id, outcome, reply);
                    }
                    None => {
                        // Content follows: the writer gives the parent the
                        // sender's mtime at commit (no second walk for it).
                        if let Some(t) = parent_mtime
                            && self.parent_in_tree(&group, &path).is_some()
                        {
                            let set = match self.streams.get_mut(&id) {
                                Some(Stream::Whole(_, w)) => {
                                    w.set_parent_mtime(t);
                                    true
                                }
                                Some(Stream::Delta(_, d)) => {
                                    d.get_mut().set_parent_mtime(t);
                                    true
                                }
                                _ => false,
                            };
                            if set {
                                self.parent_times.remove(&id);
                            }
                        }
                    }
                }
            }
            Msg::Data { stream, bytes } => {
                if let Some(outcome) = self.data(stream, &bytes) {
                    self.ack(stream, outcome, reply);
                }
            }
            Msg::DataEnd { stream, .. } => {
                let outcome = self.data_end(stream);
                self.settle_ahead(stream);
                if let Some(outcome) = outcome {
                    if let Some((group, path, t)) = self.parent_times.remove(&stream) {
                        self.after(&group, &path, t, &outcome);
                    }
                    self.ack(stream, outcome, reply);
                }
            }
            Msg::Delete { id, group, path, base, force, parent_mtime } => {
                // The delete gives the parent the sender's mtime itself (one
                // walk to the directory instead of two).
                let t = parent_mtime.filter(|_| self.parent_in_tree(&group, &path).is_some());
                let outcome = self.delete(id, &group, path, base, force, t);
                self.settle_ahead(id);
                self.ack(id, outcome, reply);
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
