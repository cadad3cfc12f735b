//! `-x`, `-c`, `-u`: builds the [`RunRequest`] from the arguments, performs
//! it with [`Node::run`], and prints what each phase did.

use std::path::Path;

use super::args::Args;
use super::{Exit, client_settings, fail, report_scan_problems, worst};
use crate::engine::push::{PathResult, UpdateReport};
use crate::engine::{CheckOptions, CheckReport, Node, PushRequest, RunOutcome, RunRequest};
use crate::paths;

/// Performs a run with the phases asked for (`check`, `push`, then the
/// actions owed) and reports it.
pub(super) fn sync_run(
    node: &mut Node,
    args: &Args,
    sysdir: &Path,
    check: bool,
    push: bool,
) -> Exit {
    let mut req = RunRequest { check: None, push: None, actions: true };
    if check {
        req.check = Some(CheckOptions {
            paths: args.paths.clone(),
            recursive: args.recursive || args.paths.is_empty(),
            init: args.init,
        });
    }
    if push {
        let client = match client_settings(args, sysdir) {
            Ok(s) => Some(s),
            // A dry run connects nowhere: it plans without an identity.
            Err(_) if args.dry_run => None,
            Err(no_identity) => {
                // The check and the owed actions still run; the marks wait
                // for a working identity.
                let outcome = node.run_with(&req, args.verbose > 0 || args.json);
                return print_outcome(&outcome, args, &node.config.myname, Some(no_identity));
            }
        };
        req.push = Some(PushRequest {
            peers: args.peers.iter().map(|p| p.to_lowercase()).collect(),
            paths: args.paths.clone(),
            recursive: args.recursive,
            dry_run: args.dry_run,
            client,
            port: args.port.unwrap_or(crate::net::DEFAULT_PORT),
        });
    }
    // On a terminal, a long push shows its progress (erased when done).
    let display = super::progress::Display::start(args.json || args.dry_run);
    // Only -v and --json show the changed paths: otherwise they are counted.
    let outcome = node.run_with(&req, args.verbose > 0 || args.json);
    drop(display);
    print_outcome(&outcome, args, &node.config.myname, None)
}

/// Runs only the actions owed here (after `-T`, `-m`, `-f`).
pub(super) fn actions_only(node: &mut Node, args: &Args) -> Exit {
    let req = RunRequest { check: None, push: None, actions: !args.dry_run };
    let outcome = node.run(&req);
    let exit = print_actions(&outcome, args.verbose);
    // -T printed its own document; -m and -f report their actions.
    if args.json && args.test == 0 {
        return worst(exit, json_run(&outcome, &node.config.myname, exit));
    }
    exit
}

/// Prints a run's JSON document (stdout holds nothing else with --json).
fn json_run(outcome: &RunOutcome, host: &str, exit: Exit) -> Exit {
    super::output::emit_json(&super::json::run(outcome, host, exit))
}

/// Prints a run's outcome phase by phase (and with --json its document);
/// the exit status of the run, made an error by `failed` (no identity).
fn print_outcome(outcome: &RunOutcome, args: &Args, host: &str, failed: Option<Exit>) -> Exit {
    let check = match &outcome.check {
        None => Exit::Ok,
        Some(Ok(report)) => print_check(report, args.verbose),
        Some(Err(e)) => fail!("{e}"),
    };
    let push = match &outcome.push {
        None => Exit::Ok,
        Some(Ok(p)) => {
            // With a check, unmanaged arguments were reported already.
            if outcome.check.is_none() {
                for a in &p.ignored_args {
                    eprintln!("csync: {}: not managed by any group; ignored", a.display());
                }
            }
            match &p.report {
                _ if p.nothing_managed => Exit::Error,
                Some(r) => print_update(r, if args.dry_run { 0 } else { args.verbose }, args.json),
                None => Exit::Ok,
            }
        }
        Some(Err(e)) => fail!("{e}"),
    };
    let run = if check == Exit::Ok { push } else { Exit::Error };
    let exit = worst(run, print_actions(outcome, args.verbose));
    let exit = failed.map_or(exit, |f| worst(f, exit));
    if args.json {
        return worst(exit, json_run(outcome, host, exit));
    }
    exit
}

fn print_check(report: &CheckReport, verbose: u8) -> Exit {
    if verbose > 0 {
        for (p, c) in &report.changed {
            eprintln!("csync: {c}\t{}", paths::display(p));
        }
        eprintln!(
            "csync: checked {} entries: {} changed, {} dirty marks",
            report.seen, report.changed_count, report.marks
        );
        if verbose > 1 {
            for (phase, dt) in &report.timings {
                eprintln!("csync: {phase}: {:.1} ms", dt.as_secs_f64() * 1000.0);
            }
        }
    }
    if report_scan_problems(report) { Exit::Ok } else { Exit::Error }
}

/// The end of a run: the actions its own changes owed here (`do-local`), and
/// any a crashed run left behind.
fn print_actions(outcome: &RunOutcome, verbose: u8) -> Exit {
    let ran = match &outcome.actions {
        Ok(r) => r,
        Err(e) => return fail!("{e}"),
    };
    let mut exit = Exit::Ok;
    for r in ran {
        let n = r.paths.len();
        if r.result.status.ok() {
            if verbose > 0 {
                eprintln!(
                    "csync: action '{}' (group {}) ran for {n} paths: {} in {:.0} ms",
                    r.command,
                    r.group,
                    r.result.status,
                    r.result.elapsed.as_secs_f64() * 1e3
                );
            }
        } else {
            exit = fail!(
                "action '{}' (group {}) for {n} paths: {}",
                r.command,
                r.group,
                r.result.status
            );
        }
    }
    exit
}

fn print_update(report: &UpdateReport, verbose: u8, json: bool) -> Exit {
    // With --json the plan is in the document: stdout holds nothing else.
    for line in report.planned.iter().filter(|_| !json) {
        println!("{line}");
    }
    for (root, n) in &report.guarded {
        eprintln!(
            "csync: include root {} is missing, empty or no longer a directory here: {n} deletes held back (force them with: csync -f -r PATH)",
            paths::display(root)
        );
    }
    for p in &report.peers {
        if let Some(e) = &p.error {
            eprintln!("csync: peer {}: {e}", p.peer);
        }
        for (path, why) in p.problems() {
            eprintln!("csync: peer {}: {}: {why}", p.peer, paths::display(path));
        }
        for a in &p.actions {
            if !a.ok {
                eprintln!(
                    "csync: peer {}: action '{}' (group {}) for {} paths: {}",
                    p.peer, a.command, a.group, a.paths, a.status
                );
            } else if verbose > 0 {
                eprintln!(
                    "csync: peer {}: action '{}' (group {}) ran for {} paths: {}",
                    p.peer, a.command, a.group, a.paths, a.status
                );
            }
        }
        if verbose > 0 {
            let done = p.done;
            for (path, r) in &p.paths {
                if let PathResult::Lost(why) = r {
                    eprintln!(
                        "csync: peer {}: {}: conflict lost ({why}); its version will come from there",
                        p.peer,
                        paths::display(path)
                    );
                }
            }
            eprintln!(
                "csync: peer {}: {done} entries in sync, {} bytes of content sent",
                p.peer, p.bytes
            );
        }
    }
    if report.is_clean() { Exit::Ok } else { Exit::Error }
}
