//! Modes that talk to peers without a run: `--ping` and `-T`; and the client
//! settings every connecting mode uses.

use std::io::Write;
use std::path::Path;

use super::args::Args;
use super::{Exit, fail, identity_error, json, output, secs};
use crate::config::Config;
use crate::engine::Node;
use crate::paths;

pub(super) fn ping(args: &Args, config: &Config, sysdir: &Path) -> Exit {
    let peer = args.ping.as_deref().expect("mode says --ping was given").to_lowercase();
    let settings = match client_settings(args, sysdir) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let port = args.port.unwrap_or(crate::net::DEFAULT_PORT);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail!("cannot start the runtime: {e}"),
    };
    let result = rt.block_on(crate::engine::remote::ping(config, &settings, &peer, port));
    let cert = json::certificate(sysdir);
    if let Some(w) = json::expiry_warning(&cert) {
        eprintln!("csync: {w}");
    }
    if args.json {
        let refusal = |g: &str, c| crate::engine::remote::refusal(config, g, c);
        let doc = match &result {
            Ok(r) => json::ping(&peer, Ok(r), refusal, cert),
            Err(e) => json::ping(&peer, Err(e.to_string()), refusal, cert),
        };
        let ok = doc["ok"].as_bool() == Some(true);
        let exit = output::emit_json(&doc);
        return if ok { exit } else { Exit::Error };
    }
    match result {
        Ok(r) => {
            let mut out = format!(
                "{} ({}): protocol {}, certificate verified for '{}'\n",
                peer, r.remote, r.version, r.peer
            );
            for g in &r.accepted {
                out.push_str(&format!("  group {g}: key verified both ways\n"));
            }
            for (g, code) in &r.refused {
                out.push_str(&format!("  group {g}: refused: {code}\n"));
            }
            if !r.accepted.is_empty() {
                out.push_str(&format!(
                    "  setup {:.1} ms, round trip {:.2} ms, clock offset {:+.3} s\n",
                    r.setup.as_secs_f64() * 1e3,
                    r.rtt.as_secs_f64() * 1e3,
                    r.offset_ns as f64 / 1e9
                ));
            }
            print!("{out}");
            for (g, code) in &r.refused {
                eprintln!(
                    "csync: peer {peer}: {}",
                    crate::engine::remote::refusal(config, g, *code)
                );
            }
            if r.refused.is_empty() && !r.accepted.is_empty() { Exit::Ok } else { Exit::Error }
        }
        Err(e) => fail!("peer {peer}: {e}"),
    }
}

pub(super) fn client_settings(
    args: &Args,
    sysdir: &Path,
) -> Result<crate::net::client::ClientSettings, Exit> {
    use crate::net::client::{ClientSettings, SettingsError};
    ClientSettings::load(sysdir, secs(args.timeout), secs(args.idle_timeout)).map_err(|e| match e {
        SettingsError::Identity(e) => identity_error(&e, sysdir),
        SettingsError::Tls(e) => fail!("{e}"),
    })
}

pub(super) fn in_sync_test(node: &mut Node, args: &Args, sysdir: &Path) -> Exit {
    let settings = match client_settings(args, sysdir) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let target = match args.paths.first() {
        Some(p) => match node.db_form_of(p) {
            Some((db, _)) => Some(db),
            // An ancestor of include roots (`csync -T /`): all of them.
            None if !node.arg_forms(p, true).is_empty() => None,
            None => return fail!("{}: not managed by any group", p.display()),
        },
        None => None,
    };
    let scope = match &target {
        Some(db) => crate::index::Scope::Path { path: db, recursive: true },
        None => crate::index::Scope::All,
    };
    let peers: Vec<String> = args.peers.iter().map(|p| p.to_lowercase()).collect();
    let port = args.port.unwrap_or(crate::net::DEFAULT_PORT);
    let report = match node.in_sync_test(&settings, port, &peers, scope, args.test >= 2, args.init)
    {
        Ok(r) => r,
        Err(e) => return fail!("{e}"),
    };
    let me = node.config.myname.clone();
    if args.json {
        let exit = output::emit_json(&json::in_sync(&report));
        if exit != Exit::Ok || !report.failed.is_empty() {
            return Exit::Error;
        }
        return if report.differences.is_empty() { Exit::Nothing } else { Exit::Ok };
    }
    let mut out = std::io::stdout().lock();
    for d in &report.differences {
        let _ = writeln!(out, "{}\t{me}\t{}\t{}", d.kind, d.peer, paths::display(&d.path));
        if let Some(diff) = &d.diff {
            let _ = out.write_all(diff);
        }
    }
    for (peer, why) in &report.failed {
        eprintln!("csync: peer {peer}: {why}");
    }
    if !report.failed.is_empty() {
        Exit::Error
    } else if report.differences.is_empty() {
        Exit::Nothing
    } else {
        Exit::Ok
    }
}
