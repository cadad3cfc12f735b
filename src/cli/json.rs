//! `--json`: one JSON document on stdout per run, in the shapes documented in
//! `doc/json-schema.md` (a test validates every output against it). A run
//! with several phases (`-x` is a check, a push and the actions owed) is one
//! document, never a stream of fragments.

use std::path::Path;

use serde_json::{Value, json};

use super::Exit;
use crate::engine::RunOutcome;
use crate::engine::push::{PathResult, UpdateReport};

/// `-x`, `-c`, `-u`, `-m`, `-f` with `--json`: one document for the whole
/// run, a part per phase that ran, `errors` for phases that failed as a
/// whole, and the run's outcome (`exit` is the exit status).
pub fn run(outcome: &RunOutcome, host: &str, exit: Exit) -> Value {
    let mut doc = serde_json::Map::new();
    let mut errors = Vec::new();
    match &outcome.check {
        Some(Ok(r)) => {
            doc.insert("check".into(), check_report(r));
        }
        Some(Err(e)) => errors.push(e.to_string()),
        None => {}
    }
    match &outcome.push {
        Some(Ok(p)) => {
            if let Some(r) = &p.report {
                doc.insert("update".into(), update_report(r));
            }
        }
        Some(Err(e)) => errors.push(e.to_string()),
        None => {}
    }
    match &outcome.actions {
        Ok(ran) => {
            doc.insert("actions".into(), actions_ran(host, ran));
        }
        Err(e) => errors.push(e.to_string()),
    }
    doc.insert("errors".into(), json!(errors));
    doc.insert("ok".into(), Value::Bool(exit != Exit::Error));
    doc.insert("exit".into(), json!(exit as u8));
    Value::Object(doc)
}

/// A path for JSON: exact text (JSON escapes what a terminal must not see);
/// only bytes that are not UTF-8 become U+FFFD, as in `-L --json`.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `-c`'s part: what the check found.
fn check_report(r: &crate::engine::CheckReport) -> Value {
    json!({
        "seen": r.seen,
        "marks": r.marks,
        "changed": r.changed.iter().map(|(p, c)| json!({
            "path": text(p),
            "changes": c.to_string().split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "errors": r.errors.iter().map(|e| json!({
            "path": e.path.display().to_string(),
            "error": e.message,
        })).collect::<Vec<_>>(),
        "ignored": r.ignored_args.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    })
}

/// `-u`'s part: per peer, what was pushed and what failed.
fn update_report(r: &UpdateReport) -> Value {
    let peers: Vec<Value> = r
        .peers
        .iter()
        .map(|p| {
            let count = |f: fn(&PathResult) -> bool| p.paths.iter().filter(|(_, r)| f(r)).count();
            json!({
                "peer": p.peer,
                "error": p.error,
                "in_sync": p.done,
                "lost": count(|r| matches!(r, PathResult::Lost(_))),
                "unresolved": count(|r| *r == PathResult::Unresolved),
                "failed": count(|r| matches!(r, PathResult::Failed(_))),
                "bytes": p.bytes,
                "problems": p.problems().map(|(path, why)| json!({"path": text(path), "error": why})).collect::<Vec<_>>(),
                "refused_groups": p.refused.iter().map(|(g, code)| json!({"group": g, "error": code.to_string()})).collect::<Vec<_>>(),
                "actions": p.actions.iter().map(|a| json!({
                    "host": p.peer,
                    "group": a.group,
                    "command": a.command,
                    "paths": a.paths,
                    "ok": a.ok,
                    "status": a.status,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "peers": peers,
        "held_back": r.guarded.iter().map(|(root, n)| json!({"root": text(root), "deletes": n})).collect::<Vec<_>>(),
        "planned": r.planned,
    })
}

/// The actions run here at the end of a run.
fn actions_ran(host: &str, ran: &[crate::actions::Ran]) -> Value {
    ran.iter()
        .map(|r| {
            json!({
                "host": host,
                "group": r.group,
                "command": r.command,
                "paths": r.paths.len(),
                "ok": r.result.status.ok(),
                "status": r.result.status.to_string(),
            })
        })
        .collect()
}

/// `-T --json`.
pub fn in_sync(r: &crate::engine::push::insync::InSyncReport) -> Value {
    json!({
        "differences": r.differences.iter().map(|d| json!({
            "kind": d.kind.to_string(),
            "peer": d.peer,
            "group": d.group,
            "path": text(&d.path),
            "diff": d.diff.as_ref().map(|x| String::from_utf8_lossy(x).into_owned()),
        })).collect::<Vec<_>>(),
        "failed": r.failed.iter().map(|(p, why)| json!({"peer": p, "error": why})).collect::<Vec<_>>(),
        "in_sync": r.differences.is_empty() && r.failed.is_empty(),
    })
}

/// `--ping PEER --json` (`certificate`: this node's, see [`certificate`]).
pub fn ping(
    peer: &str,
    r: Result<&crate::engine::remote::PingReport, String>,
    refusal: impl Fn(&str, crate::proto::ErrorCode) -> String,
    certificate: Value,
) -> Value {
    match r {
        Ok(r) => {
            let mut groups: Vec<Value> =
                r.accepted.iter().map(|g| json!({"group": g, "ok": true, "error": null})).collect();
            groups.extend(
                r.refused
                    .iter()
                    .map(|(g, c)| json!({"group": g, "ok": false, "error": refusal(g, *c)})),
            );
            json!({
                "peer": peer,
                "ok": r.refused.is_empty() && !r.accepted.is_empty(),
                "error": null,
                "address": r.remote.to_string(),
                "protocol": r.version,
                "verified_name": r.peer,
                "groups": groups,
                "setup_ms": r.setup.as_secs_f64() * 1e3,
                "rtt_ms": r.rtt.as_secs_f64() * 1e3,
                "clock_offset_s": r.offset_ns as f64 / 1e9,
                "certificate": certificate,
            })
        }
        Err(e) => json!({
            "peer": peer,
            "ok": false,
            "error": e,
            "address": null,
            "protocol": null,
            "verified_name": null,
            "groups": [],
            "setup_ms": null,
            "rtt_ms": null,
            "clock_offset_s": null,
            "certificate": certificate,
        }),
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// This node's certificate: when it stops being valid. `Err` says why it
/// could not be read.
pub fn not_after(sysdir: &Path) -> Result<i64, String> {
    let file = sysdir.join("csync2_ssl_cert.pem");
    let pem = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{}: not a PEM certificate: {e}", file.display()))?;
    let cert = pem.parse_x509().map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Certificate expiry as `--status` and `--ping` report it.
pub fn certificate(sysdir: &Path) -> Value {
    let file = sysdir.join("csync2_ssl_cert.pem").display().to_string();
    match not_after(sysdir) {
        Ok(at) => {
            let days = (at - now()).div_euclid(86_400);
            json!({
                "file": file,
                "not_after": at,
                "days_left": days,
                "expires_soon": days < crate::net::identity::EXPIRY_WARNING_DAYS as i64,
                "error": null,
            })
        }
        Err(e) => json!({
            "file": file, "not_after": null, "days_left": null, "expires_soon": false, "error": e,
        }),
    }
}

/// The warning line for an expiring certificate, or `None`.
pub fn expiry_warning(cert: &Value) -> Option<String> {
    let days = cert["days_left"].as_i64()?;
    if !cert["expires_soon"].as_bool().unwrap_or(false) {
        return None;
    }
    let when = crate::net::tls::date(cert["not_after"].as_i64()?);
    let file = cert["file"].as_str().unwrap_or("the certificate");
    Some(if days < 0 {
        format!("warning: this node's certificate {file} expired on {when}; renew it")
    } else {
        format!(
            "warning: this node's certificate {file} expires on {when} (in {days} days); renew it"
        )
    })
}
