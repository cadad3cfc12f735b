//! What the listing and inspection modes print: `-L`, `-M`, `--check-config`,
//! `--explain`. Tab-separated for scripts (csync2's shapes), or JSON.

use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use super::{Exit, fail};
use crate::config::{Config, RuleKind};
use crate::engine::Node;
use crate::engine::status::PeerState;
use crate::index::Scope;
use crate::paths::display;
use crate::pattern::Level;
use crate::policy::{GroupPolicy, level_of};
use crate::types::{FileKind, Meta};

/// One-line state of an entry for `-L` (csync2 printed its "checktxt" here).
pub fn state_text(m: &Meta) -> String {
    let mut s =
        format!("v1:type={}:mode={:04o}:uid={}:gid={}", m.kind.name(), m.mode, m.uid, m.gid);
    match m.kind {
        FileKind::File => {
            s.push_str(&format!(":size={}:mtime={}", m.size, fmt_ns(m.mtime_ns)));
            if let Some(h) = &m.hash {
                s.push_str(":hash=");
                s.push_str(&hex(h));
            }
        }
        FileKind::Symlink => {
            s.push_str(&format!(":target={}", display(m.target.as_deref().unwrap_or_default())))
        }
        FileKind::CharDevice | FileKind::BlockDevice => {
            s.push_str(&format!(":dev={}:{}", rustix::fs::major(m.rdev), rustix::fs::minor(m.rdev)))
        }
        FileKind::Dir | FileKind::Fifo | FileKind::Socket => {
            s.push_str(&format!(":mtime={}", fmt_ns(m.mtime_ns)))
        }
    }
    s
}

fn fmt_ns(ns: i64) -> String {
    format!("{}.{:09}", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes to stdout; a closed pipe (`csync -L | head`) is not an error.
fn emit(text: &str) -> Exit {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => fail!("stdout: {e}"),
    }
}

/// `-L`: every indexed entry some member group still manages.
pub fn list(node: &Node, json: bool) -> Exit {
    let files = match node.index.files(Scope::All) {
        Ok(f) => f,
        Err(e) => return fail!("{e}"),
    };
    let files: Vec<_> = files.into_iter().filter(|f| node.is_managed(&f.path)).collect();
    let text = if json {
        let rows: Vec<_> = files
            .iter()
            .map(|f| {
                let m = &f.meta;
                json!({
                    "path": String::from_utf8_lossy(&f.path),
                    "type": m.kind.name(),
                    "mode": m.mode,
                    "uid": m.uid,
                    "gid": m.gid,
                    "size": m.size,
                    "mtime_ns": m.mtime_ns,
                    "target": m.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                    "rdev": m.rdev,
                    "hash": m.hash.as_ref().map(|h| hex(h)),
                })
            })
            .collect();
        format!("{}\n", serde_json::Value::Array(rows))
    } else {
        files.iter().map(|f| format!("{}\t{}\n", state_text(&f.meta), display(&f.path))).collect()
    };
    let exit = emit(&text);
    if exit == Exit::Ok && files.is_empty() { Exit::Nothing } else { exit }
}

/// `-M`: `force|chary<TAB>myname<TAB>peer<TAB>path` per dirty row.
pub fn list_dirty(node: &Node, json: bool) -> Exit {
    let rows = match node.index.dirty() {
        Ok(r) => r,
        Err(e) => return fail!("{e}"),
    };
    let text = if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|d| {
                json!({
                    "path": String::from_utf8_lossy(&d.path),
                    "peer": d.peer,
                    "myname": d.myname,
                    "forced": d.forced,
                    "changes": d.changes.to_string().split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                    "marked_at": d.marked_at,
                })
            })
            .collect();
        format!("{}\n", serde_json::Value::Array(rows))
    } else {
        rows.iter()
            .map(|d| {
                let f = if d.forced { "force" } else { "chary" };
                format!("{f}\t{}\t{}\t{}\n", d.myname, d.peer, display(&d.path))
            })
            .collect()
    };
    let exit = emit(&text);
    if exit == Exit::Ok && rows.is_empty() { Exit::Nothing } else { exit }
}

/// `--check-config --json`: the same as the text summary, as one object;
/// `findings` are the identity and key-file problems `--check-config` found.
pub fn config_json(c: &Config, findings: &[(bool, String)]) -> serde_json::Value {
    let groups: Vec<_> = c
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            // A group whose patterns do not compile shows no roots (its error
            // is reported by the config check).
            let roots: Vec<_> = if g.is_member {
                GroupPolicy::compile(c, i)
                    .map(|p| {
                        p.matcher
                            .walk_roots()
                            .into_iter()
                            .map(|root| {
                                let real = crate::paths::real_path(c, root.as_bytes())
                                    .map(|p| p.display().to_string());
                                json!({"pattern": root, "path": real})
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            json!({
                "name": g.name,
                "member": g.is_member,
                "hosts": g.hosts.iter().map(|h| json!({
                    "name": h.name,
                    "address": h.addr,
                    "receive_only": h.receive_only,
                    "me": h.name == c.myname,
                })).collect::<Vec<_>>(),
                "key": g.key_file.display().to_string(),
                "auto": g.auto.as_str(),
                "rules": g.rules.iter().map(|r| json!({
                    "kind": match r.kind {
                        RuleKind::Include => "include",
                        RuleKind::Exclude => "exclude",
                        RuleKind::Compare => "compare",
                    },
                    "pattern": r.pattern,
                })).collect::<Vec<_>>(),
                "roots": roots,
                "actions": g.actions.iter().map(|a| json!({
                    "patterns": a.patterns,
                    "exec": a.exec,
                    "logfile": a.logfile.as_ref().map(|l| l.display().to_string()),
                    "timeout_s": a.timeout_s(),
                    "do_local": a.do_local,
                    "do_local_only": a.do_local_only,
                })).collect::<Vec<_>>(),
                "allow_devices": g.allow_devices,
                "allow_setid": g.allow_setid,
                "owners": g.owner_range.map(|(lo, hi)| json!([lo, hi])),
                "backup": g.backup_directory.as_ref().map(|b| json!({
                    "directory": b.display().to_string(),
                    "generations": g.backup_generations,
                })),
            })
        })
        .collect();
    let mut ignore = Vec::new();
    if c.ignore.uid {
        ignore.push("uid");
    }
    if c.ignore.gid {
        ignore.push("gid");
    }
    if c.ignore.mode {
        ignore.push("mod");
    }
    json!({
        "config": c.source.display().to_string(),
        "node": c.myname,
        "prefixes": c.prefixes.iter().map(|p| json!({
            "name": p.name,
            "path": p.local.as_ref().map(|l| l.display().to_string()),
        })).collect::<Vec<_>>(),
        "ignore": ignore,
        "groups": groups,
        "findings": findings.iter().map(|(error, m)| json!({
            "severity": if *error { "error" } else { "warning" },
            "message": m,
        })).collect::<Vec<_>>(),
        "warnings": c.warnings.iter().map(|w| w.to_string().trim_end().to_string()).collect::<Vec<_>>(),
    })
}

/// Prints `v` as one line of JSON.
pub fn emit_json(v: &serde_json::Value) -> Exit {
    emit(&format!("{v}\n"))
}

/// `--check-config`: what the config resolved to, for this node.
pub fn config_summary(c: &Config) -> Exit {
    // A group whose patterns do not compile shows no roots (its error is
    // reported by the config check).
    let policies: Vec<GroupPolicy> = (0..c.groups.len())
        .filter(|&i| c.groups[i].is_member)
        .filter_map(|i| GroupPolicy::compile(c, i).ok())
        .collect();
    let mut s = String::new();
    s.push_str(&format!("config {}\nnode {}\n", c.source.display(), c.myname));
    for p in &c.prefixes {
        let local =
            p.local.as_ref().map_or("(not defined here)".to_string(), |l| l.display().to_string());
        s.push_str(&format!("prefix %{}% = {local}\n", p.name));
    }
    if c.ignore.uid || c.ignore.gid || c.ignore.mode {
        let mut w = Vec::new();
        if c.ignore.uid {
            w.push("uid");
        }
        if c.ignore.gid {
            w.push("gid");
        }
        if c.ignore.mode {
            w.push("mod");
        }
        s.push_str(&format!("ignore {}\n", w.join(" ")));
    }
    for g in &c.groups {
        let member = if g.is_member { "member" } else { "not a member" };
        s.push_str(&format!("group {} ({member})\n", g.name));
        let hosts: Vec<String> = g
            .hosts
            .iter()
            .map(|h| {
                let mut t = h.name.clone();
                if let Some(a) = &h.addr {
                    t.push('@');
                    t.push_str(a);
                }
                if h.name == c.myname {
                    t.push('*');
                }
                if h.receive_only { format!("({t})") } else { t }
            })
            .collect();
        s.push_str(&format!("  hosts   {}\n", hosts.join(" ")));
        s.push_str(&format!("  key     {}\n", g.key_file.display()));
        s.push_str(&format!("  auto    {}\n", g.auto.as_str()));
        for r in &g.rules {
            let kind = match r.kind {
                RuleKind::Include => "include",
                RuleKind::Exclude => "exclude",
                RuleKind::Compare => "compare",
            };
            s.push_str(&format!("  {kind:<7} {}\n", r.pattern));
        }
        if g.is_member
            && let Some(p) = policies.iter().find(|p| p.name == g.name)
        {
            for root in &p.roots {
                let real = crate::paths::real_path(c, root.as_bytes())
                    .map_or("(prefix not defined here)".to_string(), |p| p.display().to_string());
                if real == *root {
                    s.push_str(&format!("  root    {root}\n"));
                } else {
                    s.push_str(&format!("  root    {root} = {real}\n"));
                }
            }
        }
        for a in &g.actions {
            let pats = if a.patterns.is_empty() {
                "(all files)".to_string()
            } else {
                a.patterns.join(" ")
            };
            s.push_str(&format!("  action  pattern {pats}\n"));
            for e in &a.exec {
                s.push_str(&format!("          exec \"{e}\"\n"));
            }
            match &a.logfile {
                Some(l) => s.push_str(&format!("          logfile {}\n", l.display())),
                None => s.push_str("          logfile (csync's log)\n"),
            }
            s.push_str(&format!("          timeout {} s\n", a.timeout_s()));
            if a.do_local_only {
                s.push_str("          do-local-only\n");
            } else if a.do_local {
                s.push_str("          do-local\n");
            }
        }
        // What peers may make this node create (allow-devices, allow-setid, owners).
        let devices = if g.allow_devices { "devices allowed" } else { "devices refused" };
        let setid = if g.allow_setid { "setuid/setgid kept" } else { "setuid/setgid stripped" };
        let owners =
            g.owner_range.map_or("any owner".to_string(), |(lo, hi)| format!("owners {lo}-{hi}"));
        s.push_str(&format!("  policy  {devices}, {setid}, {owners}\n"));
        if let Some(b) = &g.backup_directory {
            s.push_str(&format!(
                "  backup  {} ({} generations)\n",
                b.display(),
                g.backup_generations
            ));
        }
    }
    emit(&s)
}

/// `--explain PATH`: per member group, whether PATH is managed and which
/// pattern decided it.
pub fn explain(c: &Config, arg: &Path, as_json: bool) -> Exit {
    let real = crate::paths::absolute(arg);
    let mut forms = crate::paths::db_forms(c, &real);
    // Show the form some group cares about (a `%prefix%` one, usually); when
    // none does, the first is as good as any to explain why.
    let policies = match GroupPolicy::members(c) {
        Ok(p) => p,
        Err(e) => return fail!("group {}: {}", e.group, e.message),
    };
    let relevant: Vec<Vec<u8>> =
        forms.iter().filter(|f| level_of(&policies, f) != Level::Ignore).cloned().collect();
    if relevant.is_empty() {
        forms.truncate(1);
    } else {
        forms = relevant;
    }
    let mut s = String::new();
    let mut rows = Vec::new();
    let mut any = false;
    for p in &policies {
        let (g, m) = (&c.groups[p.index], &p.matcher);
        for db in &forms {
            let v = m.explain(db);
            let level = m.level(db);
            let verdict = match level {
                Level::Managed => "managed",
                Level::StepInto => "walked through (an ancestor of an include), not synced",
                Level::Ignore => "not managed",
            };
            any |= level == Level::Managed;
            s.push_str(&format!("group {}: {} is {verdict}\n", g.name, display(db)));
            let rule = |i: Option<usize>, default: &str| match i {
                Some(i) => {
                    let r = &g.rules[i];
                    let kind = if r.kind == RuleKind::Exclude { "exclude" } else { "include" };
                    format!("{kind} {} ({})", r.pattern, r.span)
                }
                None => default.to_string(),
            };
            s.push_str(&format!(
                "  path rule:     {}\n",
                rule(v.path_rule, "none matched (path patterns exclude by default)")
            ));
            s.push_str(&format!(
                "  basename rule: {}\n",
                rule(v.base_rule, "none matched (basename patterns include by default)")
            ));
            let plain = |i: Option<usize>| {
                i.map(|i| {
                    let r = &g.rules[i];
                    let kind = if r.kind == RuleKind::Exclude { "exclude" } else { "include" };
                    format!("{kind} {} ({})", r.pattern, r.span)
                })
            };
            rows.push(json!({
                "group": g.name,
                "path": String::from_utf8_lossy(db),
                "verdict": match level {
                    Level::Managed => "managed",
                    Level::StepInto => "walked",
                    Level::Ignore => "ignored",
                },
                "path_rule": plain(v.path_rule),
                "basename_rule": plain(v.base_rule),
            }));
        }
    }
    if s.is_empty() {
        s.push_str("this node is a member of no group\n");
    }
    let exit = if as_json {
        emit_json(&json!({
            "path": real.display().to_string(),
            "managed": any,
            "groups": rows,
        }))
    } else {
        emit(&s)
    };
    if exit == Exit::Ok && !any { Exit::Nothing } else { exit }
}

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
                    s.push_str(&format!(
                        "peer {p}: {} entries pending{forced}, oldest {} s ago\n",
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
