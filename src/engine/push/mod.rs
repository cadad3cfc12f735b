//! `-u`: push every dirty entry to its peer. All peers at once (one thread and
//! one connection each); requests pipelined on each connection (the writer
//! never waits for replies); large files as block deltas when the peer has an
//! older version. A dirty mark is cleared only after the peer confirmed a
//! durable apply, and only if no newer mark arrived meanwhile.
//!
//! - [`plan`]: pure: dirty rows → per-peer items, the mass-delete guard.
//! - [`feed`]: the plan streamed to each session a chunk at a time.
//! - [`session`]: one peer's session (send, retry, `Yield`, `Bye`).
//! - [`replies`]: what each reply means; the per-path and per-peer report.
//! - [`first_contact`]: peers never synced with are compared before the push.
//! - [`insync`]: `-T`, the in-sync test, which lists peers the same way.
//!
//! Arrows point down only: this module → `plan`, `session` → `replies` →
//! `engine::{remote, conflict, wire}`; `remote` knows nothing of the push.

mod feed;
pub mod first_contact;
pub mod insync;
mod plan;
pub mod replies;
mod session;
mod shared;

use std::sync::Arc;

use super::Node;
pub use crate::engine::remote::RemoteAction;
use crate::net::client::ClientSettings;
pub use replies::{PathResult, PeerReport, UpdateReport};
pub use session::SessionError;

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
    ) -> Result<UpdateReport, crate::engine::Error> {
        let mut report = UpdateReport::default();
        let ignore = self.config.ignore;
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
        let unreachable: Vec<String> = contact.failed.iter().map(|(p, _)| p.clone()).collect();
        let roots = self.roots()?;
        // The guard only counts unforced deletes: only those are read whole.
        report.guarded = plan::guarded_roots(&self.index.dirty_deletes()?, &roots, plan::root_gone);
        let guarded: Vec<Vec<u8>> = report.guarded.iter().map(|(r, _)| r.clone()).collect();
        let filter = plan::Filter {
            peers: &opts.peers,
            paths: &opts.paths,
            unreachable: &unreachable,
            guarded: &guarded,
        };
        if opts.dry_run {
            let rows = self.index.dirty()?;
            let lookup = plan::IndexLookup {
                index: &self.index,
                pre: if rows.len() > plan::PRELOAD_ABOVE {
                    Some(plan::Preloaded::read(&self.index)?)
                } else {
                    None
                },
            };
            let peers = plan::plan(&rows, &filter, &self.config, &self.groups, &roots, &lookup)?;
            report.planned = plan::describe(&peers);
            return Ok(report);
        }
        let planner =
            feed::Planner { filter, config: &self.config, groups: &self.groups, roots: &roots };
        let mut peers = Vec::new();
        for (peer, count) in self.index.dirty_peers()? {
            if (!opts.peers.is_empty() && !opts.peers.contains(&peer))
                || unreachable.contains(&peer)
            {
                continue;
            }
            if let Some((target, groups)) =
                crate::engine::remote::shared_groups(&self.config, &peer, port)
            {
                peers.push((target, groups, count));
            }
        }
        let names = peers.iter().map(|(t, _, _)| t.name.clone()).collect();
        // Each peer's first chunk is planned here: a peer with nothing to
        // push (every row filtered out) gets no session, as before.
        let (mut feeder, firsts) = feed::Feeder::start(planner, &self.index, names)?;
        let keep: Vec<bool> = firsts.iter().map(Option::is_some).collect();
        let jobs: Vec<_> = peers
            .into_iter()
            .zip(firsts)
            .filter_map(|((target, groups, count), first)| Some((target, groups, count, first?)))
            .collect();
        let myname = self.config.myname.clone();
        let wait = crate::engine::remote::action_wait(&self.config);
        let settings = Arc::new(settings.clone());
        let (demand_tx, demand_rx) = std::sync::mpsc::channel::<feed::ToPlanner>();
        let (results, planned): (Vec<PeerReport>, Result<(), crate::index::Error>) =
            std::thread::scope(|s| {
                let mut txs = Vec::new();
                let handles: Vec<_> = jobs
                    .into_iter()
                    .enumerate()
                    .map(|(slot, (target, groups, count, first))| {
                        let (feed, tx) = feed::Feed::new(slot, demand_tx.clone());
                        // Cannot fail: the feed is alive.
                        let _ = tx.send(first);
                        txs.push(tx);
                        let settings = settings.clone();
                        let myname = myname.clone();
                        s.spawn(move || {
                            let rt =
                                tokio::runtime::Builder::new_current_thread().enable_all().build();
                            let peer = target.name.clone();
                            crate::progress::start(&peer, count);
                            match rt {
                                Ok(rt) => {
                                    let mut r = rt.block_on(session::push_peer(
                                        &target, &settings, &myname, &groups, feed, ignore, wait,
                                    ));
                                    // The planner's loop ends once every
                                    // session let go of its sender.
                                    r.recorder = None;
                                    r
                                }
                                Err(e) => PeerReport {
                                    peer,
                                    error: Some(e.to_string()),
                                    ..PeerReport::default()
                                },
                            }
                        })
                    })
                    .collect();
                drop(demand_tx);
                feeder.keep(&keep, txs);
                // A session took a chunk: plan its next one. The loop ends
                // when every session has ended (their demand senders gone).
                let mut planned = Ok(());
                let index = &mut self.index;
                while let Ok(msg) = demand_rx.recv() {
                    let slot = match msg {
                        feed::ToPlanner::Demand(slot) => slot,
                        feed::ToPlanner::Pushed(mut done) => {
                            // Every confirmation already waiting goes in the
                            // same transaction: peers' rows share pages, and
                            // one commit per peer rewrote each page per peer.
                            let mut demands = Vec::new();
                            while let Ok(more) = demand_rx.try_recv() {
                                match more {
                                    feed::ToPlanner::Pushed(more) => done.extend(more),
                                    feed::ToPlanner::Demand(slot) => demands.push(slot),
                                }
                            }
                            for slot in demands {
                                if let Err(e) = feeder.serve(index, slot) {
                                    planned = Err(e);
                                    feeder.stop();
                                }
                            }
                            if planned.is_ok()
                                && let Err(e) = index.record_pushed(&done)
                            {
                                planned = Err(e);
                                feeder.stop();
                            }
                            continue;
                        }
                    };
                    if let Err(e) = feeder.serve(index, slot) {
                        planned = Err(e);
                        feeder.stop();
                    }
                }
                let results =
                    handles.into_iter().map(|h| h.join().expect("peer thread panicked")).collect();
                (results, planned)
            });
        planned?;
        for mut r in results {
            r.explain_refusals(&self.config);
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

    /// Stores what a peer confirmed: marks cleared, peer states, conflicts.
    fn record(&mut self, r: &PeerReport) -> Result<(), crate::engine::Error> {
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
