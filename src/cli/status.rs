//! `--status` and `--prometheus`: what a node owes its peers, the conflicts it
//! met, the actions that failed, and when its certificate expires; for a
//! person, as JSON, or for node_exporter's textfile collector.

use std::path::Path;

use serde_json::json;

use super::output::emit;
use super::{Exit, fail};
use crate::engine::Node;
use crate::engine::status::PeerState;
use crate::paths::display;

/// How `--status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for a person.
    Text,
    /// One JSON object (doc/json-schema.md).
    Json,
    /// Prometheus text exposition format, for node_exporter's textfile collector.
    Prometheus,
}

/// `--status`: per peer, how much is pending and since when, when it last
/// took a push and whether the last one failed; then every conflict met, how
/// it ended, and where the losing version was kept; then every action that
/// failed (here, or on a peer we pushed to) and has not worked since; and
/// when this node's certificate expires (a warning 30 days ahead). Exit 0
/// when nothing is pending, no conflict is unresolved, no failed action
/// remains and no push failed, else 1 (Prometheus: 0 once written).
pub fn status(node: &Node, format: Format, sysdir: &Path) -> Exit {
    let st = match node.status() {
        Ok(s) => s,
        Err(e) => return fail!("{e}"),
    };
    let now = super::json::now();
    let me = &st.node;
    let (conflicts, failed) = (&st.conflicts, &st.failed_actions);
    let cert = super::json::certificate(sysdir);
    let (pending, unreachable, clear) = (st.pending(), st.unreachable(), st.is_clear());
    let open_conflicts = conflicts.iter().filter(|c| c.open).count();
    let text = match format {
        Format::Json => {
            let rows: Vec<_> = conflicts
                .iter()
                .map(|c| {
                    let (open, c) = (c.open, &c.row);
                    json!({
                        "path": String::from_utf8_lossy(&c.path),
                        "peer": c.peer,
                        "detected_at": c.detected_at,
                        "resolution": c.resolution.to_string(),
                        "kept": c.kept.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                        "open": open,
                        "acknowledged": c.acked,
                    })
                })
                .collect();
            let peer_rows: Vec<_> = st
                .peers
                .iter()
                .map(|s| {
                    json!({
                        "peer": s.peer,
                        "pending": s.pending,
                        "pending_forced": s.forced,
                        "oldest_mark": s.oldest_mark,
                        "last_ok_at": s.last_ok_at,
                        "last_failed_at": s.last_failed_at,
                        "last_error": s.last_error,
                        "open_conflicts": s.open_conflicts,
                    })
                })
                .collect();
            let failed: Vec<_> = failed
                .iter()
                .map(|f| {
                    json!({
                        "host": f.host,
                        "group": f.group,
                        "command": f.command,
                        "logfile": f.logfile.as_ref().map(|l| l.display().to_string()),
                        "status": f.status,
                        "paths": f.paths,
                        "failures": f.failures,
                        "first_failed_at": f.first_at,
                        "last_failed_at": f.last_at,
                    })
                })
                .collect();
            let all = json!({
                "node": me,
                "ok": clear,
                "peers": peer_rows,
                "conflicts": rows,
                "failed_actions": failed,
                "certificate": cert,
            });
            format!("{all}\n")
        }
        Format::Prometheus => prometheus(me, &st.peers, open_conflicts, failed, &cert, now),
        Format::Text => {
            let mut s = format!("node {me}\n");
            if pending == 0 && unreachable == 0 {
                s.push_str("nothing pending\n");
            }
            for st in &st.peers {
                let p = &st.peer;
                if st.pending > 0 {
                    let forced = if st.forced > 0 {
                        format!(" ({} forced)", st.forced)
                    } else {
                        String::new()
                    };
                    let oldest = st.oldest_mark.unwrap_or(now);
                    // How far behind the peer is: what it last took, not only what waits.
                    let last =
                        st.last_ok_at.map_or("never pushed to successfully".to_string(), |at| {
                            format!("last successful push at {}", utc_text(at))
                        });
                    s.push_str(&format!(
                        "peer {p}: {} entries pending{forced}, oldest {} s ago; {last}\n",
                        st.pending,
                        (now - oldest).max(0)
                    ));
                }
                if let Some(at) = st.last_failed_at {
                    let why = st.last_error.as_deref().unwrap_or("");
                    s.push_str(&format!("peer {p}: last push failed at {}: {why}\n", utc_text(at)));
                }
            }
            for c in conflicts.iter().filter(|c| !c.row.acked) {
                let (open, c) = (c.open, &c.row);
                let open = if open { " [unresolved]" } else { "" };
                let kept = c
                    .kept
                    .as_ref()
                    .map_or(String::new(), |k| format!("; loser kept at {}", display(k)));
                s.push_str(&format!(
                    "conflict {} with {}: {}{open}{kept}\n",
                    display(&c.path),
                    c.peer,
                    c.resolution
                ));
            }
            for f in failed {
                s.push_str(&failed_action_line(f));
            }
            if !failed.is_empty() {
                s.push_str(
                    "(listed until the command succeeds there; after fixing by hand: csync --ack-failed [HOST])\n",
                );
            }
            if let Some(w) = super::json::expiry_warning(&cert) {
                eprintln!("csync: {w}");
            }
            s
        }
    };
    let exit = emit(&text);
    if exit != Exit::Ok || format == Format::Prometheus || clear { exit } else { Exit::Error }
}

/// `--prometheus`: one gauge per fact, labelled by node (and peer), with
/// HELP and TYPE lines, as node_exporter's textfile collector reads them.
fn prometheus(
    me: &str,
    peers: &[PeerState],
    open_conflicts: usize,
    failed: &[crate::index::ActionFailure],
    cert: &serde_json::Value,
    now: i64,
) -> String {
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let node = esc(me);
    let mut s = String::new();
    let mut metric = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        s.push_str(&format!("# HELP csync_{name} {help}\n# TYPE csync_{name} gauge\n"));
        for (labels, v) in rows {
            s.push_str(&format!("csync_{name}{{node=\"{node}\"{labels}}} {v}\n"));
        }
    };
    let per_peer = |f: &dyn Fn(&PeerState) -> Option<f64>| -> Vec<(String, f64)> {
        peers
            .iter()
            .filter_map(|st| f(st).map(|v| (format!(",peer=\"{}\"", esc(&st.peer)), v)))
            .collect()
    };
    metric(
        "pending_entries",
        "Entries dirty towards the peer (not yet pushed).",
        per_peer(&|st| Some(st.pending as f64)),
    );
    metric(
        "oldest_pending_seconds",
        "Age of the oldest dirty mark towards the peer.",
        per_peer(&|st| Some(st.oldest_mark.map_or(0, |o| (now - o).max(0)) as f64)),
    );
    metric(
        "last_success_timestamp_seconds",
        "When a push last reached the peer (0: never).",
        per_peer(&|st| Some(st.last_ok_at.unwrap_or(0) as f64)),
    );
    metric(
        "peer_up",
        "1 unless the last push to the peer failed.",
        per_peer(&|st| Some(if st.last_failed_at.is_some() { 0.0 } else { 1.0 })),
    );
    metric(
        "open_conflicts",
        "Conflicts nobody settled or acknowledged.",
        vec![(String::new(), open_conflicts as f64)],
    );
    metric(
        "failed_actions",
        "Actions that failed and have not succeeded since.",
        vec![(String::new(), failed.len() as f64)],
    );
    if let Some(at) = cert["not_after"].as_i64() {
        metric(
            "certificate_expiry_timestamp_seconds",
            "When this node's certificate stops being valid.",
            vec![(String::new(), at as f64)],
        );
    }
    s
}

/// One `--status` line for a failed action: where, what, how, since when, and
/// where its output is (the host's logfile, or its csync log).
fn failed_action_line(f: &crate::index::ActionFailure) -> String {
    let times = if f.failures == 1 { "once".to_string() } else { format!("{} times", f.failures) };
    let log = f.logfile.as_ref().map_or("csync's log".to_string(), |l| l.display().to_string());
    format!(
        "failed action on {}: '{}' (group {}), {}, since {}, {times}; see {log} on {}\n",
        f.host,
        f.command,
        f.group,
        f.status,
        utc_text(f.first_at),
        f.host
    )
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (no time zone database needed;
/// UTC is what cluster nodes in several zones agree on).
fn utc_text(secs: i64) -> String {
    let rem = secs.rem_euclid(86_400);
    let day = crate::net::tls::date(secs);
    format!("{day} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(1_795_939_802), "2026-11-29 08:10:02 UTC");
        assert_eq!(utc_text(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn a_failed_action_line_names_host_command_and_log() {
        let mut f = crate::index::ActionFailure {
            host: "beta".into(),
            group: "web".into(),
            command: "nginx -t && nginx -s reload".into(),
            logfile: Some("/var/log/csync-nginx.log".into()),
            status: "exit status 1".into(),
            paths: 1,
            failures: 3,
            first_at: 1_795_939_802,
            last_at: 1_795_940_000,
        };
        assert_eq!(
            failed_action_line(&f),
            "failed action on beta: 'nginx -t && nginx -s reload' (group web), exit status 1, \
             since 2026-11-29 08:10:02 UTC, 3 times; see /var/log/csync-nginx.log on beta\n"
        );
        f.logfile = None;
        f.failures = 1;
        assert!(failed_action_line(&f).ends_with(", once; see csync's log on beta\n"));
    }
}
