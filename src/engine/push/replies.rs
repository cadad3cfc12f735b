//! What a peer's answers mean: the per-path and per-peer report of a push,
//! and the rule for each reply (done, conflict won or lost by the group's
//! `auto` rule, parents missing, content needed after all, failed).

use super::plan::Item;
use crate::engine::conflict::{Decision, Side, decide};
use crate::engine::remote::RemoteAction;
use crate::engine::wire::{DELETED, from_wire, version};
use crate::index::{Pushed, Resolution};
use crate::proto::{ErrorCode, Outcome};
use crate::types::{Changes, FileKind, IgnoreFields};

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
    /// Per path, except the paths done (counted in `done`): 100,000 of
    /// those per peer are megabytes no reader lists.
    pub paths: Vec<(Vec<u8>, PathResult)>,
    /// Paths applied there or already identical.
    pub done: usize,
    /// Content bytes sent (whole files and delta literals).
    pub bytes: u64,
    /// The actions the peer ran for what it received from us.
    pub actions: Vec<RemoteAction>,
    /// Groups with entries to push that the peer refused (reported once each,
    /// not per path; their entries stay dirty).
    pub refused: Vec<(String, ErrorCode)>,
    /// Confirmed pushes, for the index.
    pub(super) pushed: Vec<Pushed>,
    /// Conflicts met, `(path, resolution)`, for the index.
    pub(super) conflicts: Vec<(Vec<u8>, Resolution)>,
    /// Conflicts the peer's version won by the rule: `(group, path, rule)`.
    /// The peer is told (`Yield`) and pushes its version on its next run.
    pub(super) yields: Vec<(String, Vec<u8>, String)>,
    /// What clearing our marks of those looks like, once the peer confirmed
    /// the session's end (and so its mark towards us).
    pub(super) yielded: Vec<Pushed>,
    /// Where confirmed pushes go as they come (the main thread records
    /// them); `None`: they stay in `pushed` until the session ends.
    pub(super) recorder: Option<std::sync::mpsc::Sender<super::feed::ToPlanner>>,
}

impl PeerReport {
    /// Hands the confirmed pushes to the recorder once there are enough.
    fn hand_over(&mut self) {
        if self.pushed.len() < super::feed::RECORD_EVERY {
            return;
        }
        if let Some(tx) = &self.recorder {
            let done = std::mem::take(&mut self.pushed);
            if let Err(back) = tx.send(super::feed::ToPlanner::Pushed(done)) {
                // Nobody records any more: they are recorded at the end.
                if let super::feed::ToPlanner::Pushed(done) = back.0 {
                    self.pushed = done;
                }
                self.recorder = None;
            }
        }
    }

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

    /// Turns the refused groups into the peer's error: one sentence per
    /// group, before any other error of that peer.
    pub fn explain_refusals(&mut self, config: &crate::config::Config) {
        if self.refused.is_empty() {
            return;
        }
        let mut text: Vec<String> = self
            .refused
            .iter()
            .map(|(g, c)| crate::engine::remote::refusal(config, g, *c))
            .collect();
        text.extend(self.error.take());
        self.error = Some(text.join("; "));
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

/// What to do with the receiver's answer for one item: record it in the
/// report, or queue the item (or its missing parents) in `retry`.
pub(super) fn on_outcome(
    mut it: Item,
    outcome: Outcome,
    ignore: IgnoreFields,
    report: &mut PeerReport,
    retry: &mut Vec<Item>,
) {
    crate::progress::done();
    match outcome {
        Outcome::Applied | Outcome::InSync => {
            if let Some(why) = it.won.take() {
                report.conflicts.push((it.path.clone(), Resolution::Won(why)));
            }
            report.pushed.push(Pushed {
                path: it.path.clone(),
                peer: report.peer.clone(),
                clear_gen: (!it.ancestor).then_some(it.generation),
                version: Some(it.local.as_ref().map(|m| version(m, ignore))),
            });
            if !it.ancestor {
                report.done += 1;
            }
            report.hand_over();
        }
        Outcome::Conflict(theirs) => {
            let their = theirs.as_ref().and_then(from_wire);
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
                // A delete there is dated as its maker dates it when it
                // pushes it (`wire::DELETED`); an undated one is 0.
                time_ns: their.as_ref().map_or_else(
                    || theirs.as_ref().filter(|w| w.kind == DELETED).map_or(0, |w| w.mtime_ns),
                    |m| m.mtime_ns,
                ),
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
                    report.conflicts.push((it.path.clone(), Resolution::Unresolved));
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
        Outcome::ContentNeeded if !it.need_content => {
            it.need_content = true;
            retry.push(it);
        }
        Outcome::ContentNeeded => report.paths.push((
            it.path,
            PathResult::Failed(format!(
                "{}: {}",
                ErrorCode::Protocol,
                crate::proto::CONTENT_NEEDED
            )),
        )),
        Outcome::Failed { code, message } => {
            // The peer's words are printed: escaped.
            let message = crate::paths::escape(&message);
            let why = if code == ErrorCode::Io { message } else { format!("{code}: {message}") };
            report.paths.push((it.path, PathResult::Failed(why)));
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
            shared: None,
            ..it.clone()
        });
        if p.first() == Some(&b'%') && !p.contains(&b'/') {
            break;
        }
    }
    out.reverse();
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::AutoMethod;
    use crate::types::Meta;

    /// An entry of `kind` with plain attributes (shared with the session's tests).
    pub(in crate::engine::push) fn meta(kind: FileKind, mtime_ns: i64) -> Meta {
        Meta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            mtime_ns,
            ino: 1,
            ctime_ns: 0,
            rdev: 0,
            target: None,
            hash: Some([1; 32]),
        }
    }

    /// A changed file below `/srv` made here, for `peer` (shared with the session's tests).
    pub(in crate::engine::push) fn item(rule: AutoMethod) -> Item {
        Item {
            path: b"/srv/a/b".to_vec(),
            group: "g".into(),
            generation: 5,
            forced: false,
            changes: Changes::CONTENT,
            local: Some(meta(FileKind::File, 100)),
            real: None,
            source: None,
            base: None,
            peer_has_old: true,
            marked_at_ns: 0,
            need_content: false,
            ancestor: false,
            rule,
            hosts: Arc::new(vec!["me".into(), "peer".into()]),
            origin: "me".into(),
            me_receive_only: false,
            peer_receive_only: false,
            root_len: 4,
            won: None,
            shared: None,
        }
    }

    fn report() -> PeerReport {
        PeerReport { peer: "peer".into(), ..PeerReport::default() }
    }

    fn their(mtime_ns: i64) -> Outcome {
        let mut w = crate::engine::wire::to_wire(&meta(FileKind::File, mtime_ns));
        w.origin = Some("peer".into());
        Outcome::Conflict(Some(w))
    }

    #[test]
    fn applied_clears_the_mark_and_records_a_won_conflict() {
        let (mut r, mut retry) = (report(), Vec::new());
        let mut it = item(AutoMethod::None);
        it.won = Some("younger".into());
        on_outcome(it, Outcome::Applied, IgnoreFields::default(), &mut r, &mut retry);
        assert_eq!((r.done, r.paths.len()), (1, 0));
        assert_eq!(r.pushed[0].clear_gen, Some(5));
        assert_eq!(r.conflicts, vec![(b"/srv/a/b".to_vec(), Resolution::Won("younger".into()))]);
        assert!(retry.is_empty());
    }

    #[test]
    fn a_conflict_is_won_lost_or_left_by_the_rule() {
        let ign = IgnoreFields::default();
        // Ours is younger: won, retried forced.
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::Younger), their(50), ign, &mut r, &mut retry);
        assert!(retry[0].forced && retry[0].won.is_some() && r.paths.is_empty());
        // Theirs is younger: lost, the peer is told to push.
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::Younger), their(500), ign, &mut r, &mut retry);
        assert!(retry.is_empty());
        assert!(matches!(r.paths[0].1, PathResult::Lost(_)));
        assert_eq!(r.yields.len(), 1);
        assert_eq!(r.yielded[0].clear_gen, Some(5));
        assert!(r.pushed.is_empty(), "cleared only once the session ends well");
        // `auto none`: left for a person.
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::None), their(500), ign, &mut r, &mut retry);
        assert_eq!(r.paths[0].1, PathResult::Unresolved);
        assert_eq!(r.conflicts[0].1, Resolution::Unresolved);
        assert_eq!(r.problems().count(), 1);
    }

    #[test]
    fn a_delete_there_is_dated_as_its_maker_dates_it() {
        let ign = IgnoreFields::default();
        let deleted = |at| Outcome::Conflict(Some(crate::engine::wire::deleted(at, "peer")));
        // Our edit (mtime 100) against the peer's delete marked at 500: lost.
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::Younger), deleted(500), ign, &mut r, &mut retry);
        assert!(retry.is_empty() && matches!(r.paths[0].1, PathResult::Lost(_)));
        assert_eq!(r.yielded[0].version, Some(None), "the peer holds no version");
        // Marked at 50: our edit is younger and wins.
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::Younger), deleted(50), ign, &mut r, &mut retry);
        assert!(retry[0].forced && r.paths.is_empty());
        // Undated (an older peer): 0, as before.
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::Older), Outcome::Conflict(None), ign, &mut r, &mut retry);
        assert!(matches!(r.paths[0].1, PathResult::Lost(_)));
    }

    #[test]
    fn content_needed_is_retried_once_with_content() {
        let ign = IgnoreFields::default();
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(item(AutoMethod::None), Outcome::ContentNeeded, ign, &mut r, &mut retry);
        assert!(retry[0].need_content && r.paths.is_empty());
        let again = retry.pop().unwrap();
        on_outcome(again, Outcome::ContentNeeded, ign, &mut r, &mut retry);
        assert!(retry.is_empty());
        assert_eq!(
            r.paths[0].1,
            PathResult::Failed("protocol error: content needed".into()),
            "{:?}",
            r.paths
        );
    }

    #[test]
    fn a_peers_failure_is_escaped_and_io_errors_are_bare() {
        let ign = IgnoreFields::default();
        let (mut r, mut retry) = (report(), Vec::new());
        let bad = Outcome::Failed { code: ErrorCode::Io, message: "disk\nfull".into() };
        on_outcome(item(AutoMethod::None), bad, ign, &mut r, &mut retry);
        assert_eq!(r.paths[0].1, PathResult::Failed("disk\\nfull".into()));
    }

    #[test]
    fn missing_parents_are_sent_from_the_include_root_down_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("srv");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/b"), "x").unwrap();
        let mut it = item(AutoMethod::None);
        it.real = Some(root.join("a/b"));
        let (mut r, mut retry) = (report(), Vec::new());
        on_outcome(it, Outcome::ParentMissing, IgnoreFields::default(), &mut r, &mut retry);
        let paths: Vec<&[u8]> = retry.iter().map(|i| i.path.as_slice()).collect();
        // From the include root down, never above it (`/` is no group's).
        assert_eq!(paths, [b"/srv".as_slice(), b"/srv/a", b"/srv/a/b"]);
        assert!(retry[0].ancestor && retry[0].forced);
        // A parent that itself lacks its parent there: failed, not looped.
        let parent = retry.remove(0);
        on_outcome(parent, Outcome::ParentMissing, IgnoreFields::default(), &mut r, &mut retry);
        assert!(matches!(r.paths[0].1, PathResult::Failed(_)));
        assert_eq!(retry.len(), 2);
    }

    #[test]
    fn refusals_come_first_in_the_peer_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr";
        std::fs::write(dir.path().join("k"), key).unwrap();
        let opts = crate::config::LoadOptions {
            myname: "me".into(),
            sysdir: dir.path().to_path_buf(),
            active_groups: None,
        };
        let c = crate::config::load_str(
            "t.cfg",
            "group g { host me peer; key k; include /srv; }",
            &opts,
        )
        .unwrap();
        let mut r = report();
        r.error = Some("later".into());
        r.refused.push(("g".into(), ErrorCode::NotAHost));
        r.explain_refusals(&c);
        let e = r.error.unwrap();
        assert!(e.starts_with("group 'g': its config does not list this node (me)"), "{e}");
        assert!(e.ends_with("; later"), "{e}");
    }
}
