//! First contact: a peer this node has never completed a sync with (a new
//! cluster, a host added to the config later, a peer whose index was
//! deleted, or every node after `csync -cIr`) is compared entry by entry
//! before the push. What both sides already hold identically is recorded as
//! agreed and costs nothing; everything else managed here is marked for that
//! peer, so the push brings it there or, where the peer holds a different
//! version, the group's `auto` rule settles it (never a blind overwrite).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::engine::Node;
use crate::engine::remote::{GroupKeys, PeerError};
use crate::engine::wire::{from_wire, version};
use crate::index::{Mark, Scope};
use crate::net::client::{self, ClientSettings, Target};
use crate::proto::Msg;
use crate::types::{Base, Changes, Meta};

/// A peer's index, per shared group: path → state.
pub type Listing = BTreeMap<String, BTreeMap<Vec<u8>, Meta>>;

/// The most entries a peer's listing may hold (per session): a hostile or
/// broken peer cannot make us buffer without bound.
pub const MAX_LIST_ENTRIES: usize = 2_000_000;
/// The most bytes of paths and link targets a peer's listing may hold.
pub const MAX_LIST_BYTES: usize = 256 << 20;

/// `(group, DB-form path)`.
type GroupPath = (String, Vec<u8>);

pub use crate::engine::remote::MISSING;

/// What first contact did.
#[derive(Debug, Default)]
pub struct FirstContact {
    /// Peers compared now, with the number of entries marked for them.
    pub compared: Vec<(String, usize)>,
    /// Peers that could not be listed, with why: not pushed to this run.
    pub failed: Vec<(String, String)>,
}

/// Lists every accepted group of a connected session.
///
/// # Errors
/// A sentence saying what went wrong.
pub async fn list(s: &mut client::Session) -> Result<Listing, PeerError> {
    let mut out = Listing::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for (i, g) in s.accepted.clone().iter().enumerate() {
        let id = i as u32 + 1;
        s.conn.send(&Msg::List { id, group: g.clone() }).await?;
        let entries = out.entry(g.clone()).or_default();
        loop {
            match s.conn.recv().await? {
                Some(Msg::ListEntry { path, entry, .. }) => {
                    count += 1;
                    bytes += path.len() + entry.target.as_ref().map_or(0, Vec::len);
                    if count > MAX_LIST_ENTRIES || bytes > MAX_LIST_BYTES {
                        return Err(PeerError::TooMuch(format!(
                            "the peer's listing exceeds {MAX_LIST_ENTRIES} entries or {} MiB; refused",
                            MAX_LIST_BYTES >> 20
                        )));
                    }
                    if let Some(m) = from_wire(&entry) {
                        entries.insert(path, m);
                    }
                }
                Some(Msg::ListEnd { .. }) => break,
                other => {
                    return Err(PeerError::Unexpected { to: "List", got: format!("{other:?}") });
                }
            }
        }
    }
    Ok(out)
}

impl Node {
    /// Peers of this node (those it pushes to, within `only` when not empty)
    /// that it has never completed a sync with.
    ///
    /// # Errors
    /// When the index fails.
    pub fn new_peers(&self, only: &[String]) -> Result<Vec<String>, crate::engine::Error> {
        let synced = self.index.synced_peers()?;
        let mut out: Vec<String> = Vec::new();
        for g in &self.groups {
            for (p, _) in &g.push_to {
                if !synced.contains(p) && !out.contains(p) && (only.is_empty() || only.contains(p))
                {
                    out.push(p.clone());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Lists each new peer (in parallel, one connection each) and marks what
    /// differs; identical entries are recorded as agreed.
    ///
    /// # Errors
    /// When the index fails.
    pub fn first_contact(
        &mut self,
        peers: &[String],
        settings: &ClientSettings,
        port: u16,
    ) -> Result<FirstContact, crate::engine::Error> {
        let mut report = FirstContact::default();
        let jobs: Vec<(Target, GroupKeys)> = peers
            .iter()
            .filter_map(|p| crate::engine::remote::shared_groups(&self.config, p, port))
            .collect();
        if jobs.is_empty() {
            return Ok(report);
        }
        let myname = self.config.myname.clone();
        let settings = Arc::new(settings.clone());
        let wait = crate::engine::remote::action_wait(&self.config);
        let listings: Vec<(String, Result<Listing, PeerError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(target, groups)| {
                    let (settings, myname) = (settings.clone(), myname.clone());
                    s.spawn(move || {
                        let peer = target.name.clone();
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                        let r = match rt {
                            Ok(rt) => rt.block_on(async {
                                let mut s =
                                    client::connect(&target, &settings, &myname, &groups).await?;
                                let l = list(&mut s).await?;
                                // Only read, nothing changed there: an untidy
                                // end costs nothing but is logged.
                                let end = async {
                                    s.conn.send(&Msg::Bye).await?;
                                    crate::engine::remote::end_of_session(&mut s.conn, wait).await
                                };
                                if let Err(e) = end.await {
                                    tracing::debug!("peer {peer}: ending the listing: {e}");
                                }
                                s.conn.shutdown().await;
                                Ok(l)
                            }),
                            Err(e) => Err(PeerError::Runtime(e)),
                        };
                        (peer, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("listing thread panicked")).collect()
        });
        let local = self.index.files(Scope::All)?;
        // What this node has, for every peer alike: its entries, and the
        // deletes not yet pushed (gone, not missing). Reconciling changes
        // neither (it marks and agrees on entries this node has).
        let mut have: HashSet<&[u8]> = local.iter().map(|f| f.path.as_slice()).collect();
        let deleted: Vec<Vec<u8>> = self.index.dirty_delete_paths()?;
        have.extend(deleted.iter().map(Vec::as_slice));
        let mut asks: Vec<(String, Vec<GroupPath>)> = Vec::new();
        for (peer, listing) in listings {
            match listing {
                Ok(l) => {
                    let n = self.reconcile(&peer, &l, &local)?;
                    let missing = self.missing_here(&peer, &l, &have);
                    if !missing.is_empty() {
                        asks.push((peer.clone(), missing));
                    }
                    report.compared.push((peer, n));
                }
                Err(e) => report.failed.push((peer, e.to_string())),
            }
        }
        // Entries a peer has and this node lacks: ask for them (a node whose
        // files went with its index gets them back from its peers' next run).
        for (peer, missing) in asks {
            let Some((target, groups)) =
                crate::engine::remote::shared_groups(&self.config, &peer, port)
            else {
                continue;
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let r = rt.map_err(PeerError::Runtime).and_then(|rt| {
                rt.block_on(async {
                    let mut s = client::connect(&target, &settings, &myname, &groups).await?;
                    for (group, path) in missing {
                        let rule = MISSING.to_string();
                        s.conn.queue(&Msg::Yield { group, path, rule })?;
                    }
                    s.conn.send(&Msg::Bye).await?;
                    crate::engine::remote::end_of_session(&mut s.conn, wait).await?;
                    s.conn.shutdown().await;
                    Ok::<(), PeerError>(())
                })
            });
            if let Err(e) = r {
                report.failed.push((peer, e.to_string()));
            }
        }
        Ok(report)
    }

    /// Entries of a peer's listing this node lacks (`have`: its entries and
    /// its unpushed deletes) and manages in the same group: `(group, path)`.
    fn missing_here(&self, peer: &str, listing: &Listing, have: &HashSet<&[u8]>) -> Vec<GroupPath> {
        let mut out = Vec::new();
        for ag in &self.groups {
            if !ag.push_to.iter().any(|(p, _)| p == peer) {
                continue;
            }
            let name = &ag.name;
            let Some(theirs) = listing.get(name) else { continue };
            for path in theirs.keys() {
                if !have.contains(path.as_slice()) && ag.matcher.is_managed(path) {
                    out.push((name.clone(), path.clone()));
                }
            }
        }
        out
    }

    /// Compares our index with a peer's listing: agreed entries are recorded
    /// as the peer's state; entries it lacks or holds differently are marked
    /// for it (the version it was last known to have, if any, stays the
    /// base, so a real conflict is still told from a fast-forward).
    fn reconcile(
        &mut self,
        peer: &str,
        listing: &Listing,
        local: &[crate::index::IndexedFile],
    ) -> Result<usize, crate::engine::Error> {
        let ignore = self.ignore_fields();
        let mut agreed: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
        // Borrowed, not copied: an empty peer lacks every entry.
        let mut marks: HashMap<&[u8], &str> = HashMap::new();
        for ag in &self.groups {
            let Some((_, me)) = ag.push_to.iter().find(|(p, _)| p == peer) else { continue };
            let name = &ag.name;
            // A group the peer did not accept is not listed: compare nothing.
            let Some(theirs) = listing.get(name) else { continue };
            for f in local.iter().filter(|f| ag.matcher.is_managed(&f.path)) {
                let mine = version(&f.meta, ignore);
                match theirs.get(&f.path) {
                    Some(t) if version(t, ignore) == mine => agreed.push((f.path.clone(), mine)),
                    _ => {
                        marks.entry(f.path.as_slice()).or_insert(me.as_str());
                    }
                }
            }
        }
        self.index.set_peer_versions(peer, &agreed)?;
        // The peer lacks (or differs on) every entry, all under one name of
        // ours: the usual first contact with an empty peer. One statement
        // marks them all, to the same effect as the marks one by one.
        let mut names = marks.values();
        if marks.len() == local.len()
            && let Some(me) = names.next()
            && names.all(|n| n == me)
        {
            let all = Mark {
                path: b"",
                peer,
                myname: me,
                changes: Changes::MARKED,
                forced: false,
                base: Base::Unknown,
            };
            self.index.mark_every_file(&all)?;
            return Ok(marks.len());
        }
        let marks: Vec<Mark<'_>> = marks
            .iter()
            .map(|(path, me)| Mark {
                path,
                peer,
                myname: me,
                changes: Changes::MARKED,
                forced: false,
                base: Base::Unknown,
            })
            .collect();
        self.index.mark(&marks)?;
        Ok(marks.len())
    }
}
