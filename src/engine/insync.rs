//! `-T`, `-TT`, `-TI`: the in-sync test. Lists each peer's index for every
//! group both share and compares it with ours by version (content, type,
//! mode, owner), not by metadata alone: `L` only here, `R` only there, `X`
//! both but different. `-TT` fetches the peer's content and shows a unified
//! diff; `-TI` marks what differs here as dirty, so the next `-u` pushes it.

use std::collections::BTreeMap;
use std::io::Write;

use super::Node;
use super::wire::{from_wire, version};
use crate::index::Scope;
use crate::net::client::{self, ClientSettings};
use crate::proto::{Msg, Outcome};
use crate::types::{FileKind, Meta};

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `L`, `R` or `X`.
    pub kind: char,
    /// The peer.
    pub peer: String,
    /// The group it was found in.
    pub group: String,
    /// DB-form path.
    pub path: Vec<u8>,
    /// A unified diff (`-TT`, regular files that differ).
    pub diff: Option<Vec<u8>>,
}

/// What the test found.
#[derive(Debug, Default)]
pub struct InSyncReport {
    /// Differences, by peer then path.
    pub differences: Vec<Difference>,
    /// Peers that could not be tested, with why.
    pub failed: Vec<(String, String)>,
}

impl Node {
    /// Runs the in-sync test against `peers` (all peers when empty), limited
    /// to `scope`.
    ///
    /// # Errors
    /// When the index fails.
    pub fn in_sync_test(
        &mut self,
        settings: &ClientSettings,
        port: u16,
        peers: &[String],
        scope: Scope<'_>,
        diffs: bool,
        mark: bool,
    ) -> Result<InSyncReport, super::Error> {
        let mut report = InSyncReport::default();
        let ignore = self.ignore_fields();
        let mut all_peers: Vec<String> = Vec::new();
        for g in &self.groups {
            for (p, _) in &g.push_to {
                if !all_peers.contains(p) && (peers.is_empty() || peers.contains(p)) {
                    all_peers.push(p.clone());
                }
            }
        }
        // Receive-only nodes push nothing, but may still test.
        for g in self.config.my_groups() {
            for h in g.peers(&self.config.myname) {
                if !all_peers.contains(&h.name) && (peers.is_empty() || peers.contains(&h.name)) {
                    all_peers.push(h.name.clone());
                }
            }
        }
        all_peers.sort();
        let local = self.index.files(Scope::All)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| super::Error::Runtime(e.to_string()))?;
        for peer in all_peers {
            let Some((target, groups)) = super::remote::shared_groups(&self.config, &peer, port)
            else {
                continue;
            };
            let r = rt.block_on(async {
                let mut s = client::connect(&target, settings, &self.config.myname, &groups)
                    .await
                    .map_err(|e| e.to_string())?;
                if s.accepted.is_empty() {
                    // Nothing to compare, and the peer has ended the session:
                    // say why, in words, instead of reporting everything in sync.
                    let why: Vec<String> = s
                        .refused
                        .iter()
                        .map(|(g, c)| super::remote::refusal(&self.config, g, *c))
                        .collect();
                    if why.is_empty() {
                        return Err("the peer accepted none of our groups".into());
                    }
                    return Err(why.join("; "));
                }
                let mut remote: BTreeMap<String, BTreeMap<Vec<u8>, Meta>> = BTreeMap::new();
                for (i, g) in s.accepted.clone().iter().enumerate() {
                    let id = i as u32 + 1;
                    s.conn
                        .send(&Msg::List { id, group: g.clone() })
                        .await
                        .map_err(|e| e.to_string())?;
                    let entries = remote.entry(g.clone()).or_default();
                    loop {
                        match s.conn.recv().await.map_err(|e| e.to_string())? {
                            Some(Msg::ListEntry { path, entry, .. }) => {
                                if let Some(m) = from_wire(&entry) {
                                    entries.insert(path, m);
                                }
                            }
                            Some(Msg::ListEnd { .. }) => break,
                            other => return Err(format!("unexpected reply to List: {other:?}")),
                        }
                    }
                }
                Ok::<_, String>((s, remote))
            });
            let (mut session, remote) = match r {
                Ok(x) => x,
                Err(e) => {
                    report.failed.push((peer, e));
                    continue;
                }
            };
            for (group, theirs) in remote {
                let Some(ag) = self.groups.iter().find(|g| self.group(g).name == group) else {
                    continue;
                };
                let mine: BTreeMap<Vec<u8>, &Meta> = local
                    .iter()
                    .filter(|f| ag.matcher.is_managed(&f.path) && scope.contains(&f.path))
                    .map(|f| (f.path.clone(), &f.meta))
                    .collect();
                let mut paths: Vec<&Vec<u8>> = mine.keys().chain(theirs.keys()).collect();
                paths.sort();
                paths.dedup();
                for path in paths {
                    if !scope.contains(path) {
                        continue;
                    }
                    let kind = match (mine.get(path), theirs.get(path)) {
                        (Some(_), None) => 'L',
                        (None, Some(_)) => 'R',
                        (Some(a), Some(b)) if version(a, ignore) != version(b, ignore) => 'X',
                        _ => continue,
                    };
                    let diff = if diffs
                        && kind == 'X'
                        && mine.get(path).is_some_and(|m| m.kind == FileKind::File)
                    {
                        let real = crate::paths::real_path(&self.config, path);
                        rt.block_on(fetch_diff(
                            &mut session,
                            &group,
                            path,
                            &peer,
                            &self.config.myname,
                            real,
                        ))
                    } else {
                        None
                    };
                    report.differences.push(Difference {
                        kind,
                        peer: peer.clone(),
                        group: group.clone(),
                        path: path.clone(),
                        diff,
                    });
                }
            }
            rt.block_on(async {
                let _ = session.conn.send(&Msg::Bye).await;
                let _ = super::remote::end_of_session(&mut session.conn).await;
            });
        }
        if mark {
            let differ = report
                .differences
                .iter()
                .filter(|d| d.kind != 'R')
                .map(|d| d.path.clone())
                .collect();
            self.mark_by_hand(differ, false)?;
        }
        Ok(report)
    }
}

/// The peer's content of `path`, diffed against ours with `diff -u`
/// (peer first, as csync2 did: `--- peer:path` / `+++ me:path`).
async fn fetch_diff(
    s: &mut client::Session,
    group: &str,
    path: &[u8],
    peer: &str,
    me: &str,
    local: Option<std::path::PathBuf>,
) -> Option<Vec<u8>> {
    let id = 1_000_000;
    s.conn.send(&Msg::Fetch { id, group: group.to_string(), path: path.to_vec() }).await.ok()?;
    let mut theirs = Vec::new();
    loop {
        match s.conn.recv().await.ok()?? {
            Msg::Data { bytes, .. } => theirs.extend_from_slice(&bytes),
            Msg::DataEnd { .. } => break,
            Msg::Ack { outcome: Outcome::Failed { .. }, .. } => return None,
            _ => return None,
        }
    }
    let local = local?;
    let shown = crate::paths::display(path);
    let mut child = std::process::Command::new("diff")
        .arg("-u")
        .arg("--label")
        .arg(format!("{peer}:{shown}"))
        .arg("--label")
        .arg(format!("{me}:{shown}"))
        .arg("-")
        .arg(&local)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&theirs);
    });
    let out = child.wait_with_output().ok()?;
    let _ = writer.join();
    Some(out.stdout)
}
