//! `-T`, `-TT`, `-TI`: the in-sync test. Lists each peer's index for every
//! group both share and compares it with ours by version (content, type,
//! mode, owner), not by metadata alone: `L` only here, `R` only there, `X`
//! both but different. `-TT` fetches the peer's content and shows a unified
//! diff; `-TI` marks what differs here as dirty, so the next `-u` pushes it.

use std::collections::BTreeMap;
use std::io::Write;

use crate::engine::Node;
use crate::engine::remote::PeerError;
use crate::engine::wire::version;
use crate::index::Scope;
use crate::net::client::{self, ClientSettings};
use crate::proto::{Msg, Outcome};
use crate::types::{FileKind, Meta};

/// Largest content `-TT` fetches and diffs (either side); larger files are
/// listed with a note instead.
pub const MAX_DIFF_BYTES: u64 = 16 << 20;

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
    ) -> Result<InSyncReport, crate::engine::Error> {
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
        for g in &self.groups {
            for h in g.hosts.iter().filter(|h| **h != self.config.myname) {
                if !all_peers.contains(h) && (peers.is_empty() || peers.contains(h)) {
                    all_peers.push(h.clone());
                }
            }
        }
        all_peers.sort();
        let local = self.index.files(Scope::All)?;
        let roots = self.roots()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::engine::Error::Runtime)?;
        for peer in all_peers {
            let Some((target, groups)) =
                crate::engine::remote::shared_groups(&self.config, &peer, port)
            else {
                continue;
            };
            let r = rt.block_on(async {
                let mut s =
                    client::connect(&target, settings, &self.config.myname, &groups).await?;
                if s.accepted.is_empty() {
                    // Nothing to compare, and the peer has ended the session:
                    // say why, in words, instead of reporting everything in sync.
                    let why: Vec<String> = s
                        .refused
                        .iter()
                        .map(|(g, c)| crate::engine::remote::refusal(&self.config, g, *c))
                        .collect();
                    if why.is_empty() {
                        return Err(PeerError::NoGroup(
                            "the peer accepted none of our groups".into(),
                        ));
                    }
                    return Err(PeerError::NoGroup(why.join("; ")));
                }
                let remote = super::first_contact::list(&mut s).await?;
                Ok::<_, PeerError>((s, remote))
            });
            let (mut session, remote) = match r {
                Ok(x) => x,
                Err(e) => {
                    report.failed.push((peer, e.to_string()));
                    continue;
                }
            };
            let mut broken = None;
            'groups: for (group, theirs) in remote {
                let Some(ag) = self.groups.iter().find(|g| g.name == group) else {
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
                    let diff = match mine.get(path) {
                        Some(m) if diffs && kind == 'X' && m.kind == FileKind::File => {
                            let local = local_content(&roots, path, m);
                            let too_big = theirs.get(path).is_some_and(|t| t.size > MAX_DIFF_BYTES);
                            match rt.block_on(fetch_diff(
                                &mut session,
                                &group,
                                path,
                                &peer,
                                &self.config.myname,
                                local,
                                too_big,
                            )) {
                                Ok(d) => d,
                                Err(e) => {
                                    broken = Some(e);
                                    break 'groups;
                                }
                            }
                        }
                        _ => None,
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
            if let Some(e) = broken {
                // The session is out of step (or the peer misbehaved): drop it.
                report.failed.push((peer, e));
                continue;
            }
            // Only read, nothing changed there: an untidy end costs nothing
            // but is logged.
            let end = rt.block_on(async {
                session.conn.send(&Msg::Bye).await?;
                let wait = crate::engine::remote::action_wait(&self.config);
                crate::engine::remote::end_of_session(&mut session.conn, wait).await
            });
            if let Err(e) = end {
                tracing::debug!("peer {peer}: ending the in-sync test: {e}");
            }
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

/// Our content of `path` for a diff, read as the index knows it: opened
/// without following symlinks below its include root and only if it is still
/// the inode the last check saw (a symlink a local user swapped in must not
/// show a file only root may read). `Err` is a note shown instead of the diff.
fn local_content(roots: &[crate::scan::Root], path: &[u8], m: &Meta) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let Some(root) = roots.iter().find(|r| r.db == path || crate::index::is_below(path, &r.db))
    else {
        return Err("(not below an include root here)".into());
    };
    let expect = crate::scan::Expected { dev: None, ino: m.ino };
    let f = crate::scan::open_checked(&root.real, &path[root.db.len()..], expect)
        .map_err(|e| format!("(not diffed: {e}; run csync -c first)"))?;
    let mut out = Vec::new();
    f.take(MAX_DIFF_BYTES + 1).read_to_end(&mut out).map_err(|e| format!("(cannot read: {e})"))?;
    if out.len() as u64 > MAX_DIFF_BYTES {
        return Err(format!("(larger than {} MiB here: not diffed)", MAX_DIFF_BYTES >> 20));
    }
    Ok(out)
}

/// The peer's content of `path`, diffed against ours with `diff -u`
/// (peer first, as csync2 did: `--- peer:path` / `+++ me:path`). Content
/// beyond [`MAX_DIFF_BYTES`] is not fetched (`too_big`, by the peer's
/// listing) or, if the peer sends more anyway, ends the session with it.
///
/// # Errors
/// When the peer sends more than it may or the connection fails: the
/// session cannot go on.
async fn fetch_diff(
    s: &mut client::Session,
    group: &str,
    path: &[u8],
    peer: &str,
    me: &str,
    local: Result<Vec<u8>, String>,
    too_big: bool,
) -> Result<Option<Vec<u8>>, String> {
    let local = match local {
        Ok(l) if !too_big => l,
        Ok(_) => {
            let note = format!("(larger than {} MiB there: not diffed)\n", MAX_DIFF_BYTES >> 20);
            return Ok(Some(note.into_bytes()));
        }
        Err(note) => return Ok(Some(format!("{note}\n").into_bytes())),
    };
    let id = 1_000_000;
    s.conn
        .send(&Msg::Fetch { id, group: group.to_string(), path: path.to_vec() })
        .await
        .map_err(|e| e.to_string())?;
    let mut theirs = Vec::new();
    loop {
        match s.conn.recv().await.map_err(|e| e.to_string())? {
            Some(Msg::Data { bytes, .. }) => {
                if (theirs.len() + bytes.len()) as u64 > MAX_DIFF_BYTES {
                    return Err(format!(
                        "the peer sent more than {} MiB for a diff of {}",
                        MAX_DIFF_BYTES >> 20,
                        crate::paths::display(path)
                    ));
                }
                theirs.extend_from_slice(&bytes);
            }
            Some(Msg::DataEnd { .. }) => break,
            Some(Msg::Ack { outcome: Outcome::Failed { .. }, .. }) => return Ok(None),
            Some(other) => {
                return Err(format!("unexpected reply to Fetch: 0x{:02x}", other.type_byte()));
            }
            None => return Err("the peer closed the connection".into()),
        }
    }
    // Theirs in a private temporary file (0600), ours on stdin.
    let Ok(mut tmp) = tempfile::NamedTempFile::new() else { return Ok(None) };
    if tmp.write_all(&theirs).and_then(|()| tmp.flush()).is_err() {
        return Ok(None);
    }
    let shown = crate::paths::display(path);
    let Ok(mut child) = std::process::Command::new("diff")
        .arg("-u")
        .arg("--label")
        .arg(format!("{peer}:{shown}"))
        .arg("--label")
        .arg(format!("{me}:{shown}"))
        .arg(tmp.path())
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        return Ok(None);
    };
    let Some(mut stdin) = child.stdin.take() else { return Ok(None) };
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&local);
    });
    let out = child.wait_with_output();
    let _ = writer.join();
    Ok(out.ok().map(|o| o.stdout))
}
