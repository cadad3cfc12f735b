//! What the listing and inspection modes print: `-L`, `-M`, `--check-config`,
//! `--explain`. Tab-separated for scripts (csync2's shapes), or JSON.

use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use super::{Exit, fail};
use crate::config::{Config, RuleKind};
use crate::engine::Node;
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
pub(super) fn emit(text: &str) -> Exit {
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
