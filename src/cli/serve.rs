//! `-i`, `-ii` and `--watch`: the listener that serves peers, the watcher
//! that pushes this node's changes, and the two together in one process.

use std::path::Path;
use std::time::Duration;

use super::args::Args;
use super::{Exit, client_settings, fail, load_config_text, open_node, secs};
use crate::config::Config;
use crate::engine::{self, Node};
use crate::index::Index;
use crate::paths;

/// `-i` / `-ii` (with `--watch`: the watcher beside it): serves peers until
/// the connection (`-i`) or the process (`-ii`) ends.
pub(super) fn serve(
    args: &Args,
    config: &Config,
    sysdir: &Path,
    activated: Vec<std::net::TcpListener>,
) -> Exit {
    let (service, settings) = match serving(args, config, sysdir, None) {
        Ok(s) => s,
        Err(e) => return fail!("{e}"),
    };
    if args.serve >= 2 {
        // Actions a killed daemon journalled but never ran: this is their next run.
        let gate = service.gate();
        let _ =
            std::thread::Builder::new().name("csync-actions".into()).spawn(move || gate.run_now());
    }
    let mut after_session = None;
    if args.watch {
        if args.serve < 2 {
            return fail!("--watch goes with -ii (or alone), not with -i");
        }
        let node = match open_node(args, config.clone()) {
            Ok(n) => n,
            Err(e) => return e,
        };
        let (wake, woken) = match crate::watch::Wake::pair() {
            Ok(p) => p,
            Err(e) => return fail!("cannot start the watcher: {e}"),
        };
        after_session = Some(wake);
        let (args, sysdir, gate) = (args.clone(), sysdir.to_path_buf(), service.gate());
        let spawned = std::thread::Builder::new().name("csync-watch".into()).spawn(move || {
            // The listener is of no use to a cluster that believes this node
            // watches: a watcher that cannot run ends the process.
            if watch(node, &args, &sysdir, Some((gate, woken))) != Exit::Ok {
                std::process::exit(1);
            }
        });
        if let Err(e) = spawned {
            return fail!("cannot start the watcher: {e}");
        }
    }
    let result = if args.serve >= 2 {
        let opts = crate::listener::Options {
            port: args.port.unwrap_or(crate::net::DEFAULT_PORT),
            bind_name: args.node.clone(),
            after_session,
        };
        let first = crate::listener::Serving { authority: service.clone(), settings };
        // SIGHUP: the config and identity as they are on disk now; the new
        // service shares the old one's action gate.
        let (args, sysdir) = (args.clone(), sysdir.to_path_buf());
        let mut previous = service;
        let reload: crate::listener::Reload = Box::new(move || {
            let config = load_config_text(&args, &sysdir)?;
            let (service, settings) = serving(&args, &config, &sysdir, Some(&previous))?;
            previous = service.clone();
            Ok(crate::listener::Serving { authority: service, settings })
        });
        crate::listener::run_standalone(config, first, reload, &opts, activated)
    } else {
        crate::listener::run_inetd(service, settings)
    };
    match result {
        Ok(()) => Exit::Ok,
        // In -i mode stdout is the connection: errors go to the log only.
        Err(e) if args.serve == 1 => {
            tracing::warn!("{e}");
            Exit::Error
        }
        Err(e) => fail!("{e}"),
    }
}

/// `--watch`: runs the watcher on `node` until the process ends; `gate` is
/// the listener's (`-ii --watch`).
pub(super) fn watch(
    node: Node,
    args: &Args,
    sysdir: &Path,
    listener: Option<(std::sync::Arc<crate::actions::Gate>, std::os::unix::net::UnixStream)>,
) -> Exit {
    let client = match client_settings(args, sysdir) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let push = engine::PushRequest {
        peers: args.peers.iter().map(|p| p.to_lowercase()).collect(),
        client: Some(client),
        port: args.port.unwrap_or(crate::net::DEFAULT_PORT),
        ..Default::default()
    };
    let mut opts = crate::watch::Options::new(
        Duration::from_millis(args.watch_delay.max(1)),
        Duration::from_secs(args.full_check_every.max(1)),
        push,
    );
    let woken = listener.map(|(gate, woken)| {
        opts.gate = Some(gate);
        woken
    });
    match crate::watch::run(node, &opts, woken) {
        Ok(()) => Exit::Ok,
        Err(e) => fail!("watch: {e}"),
    }
}

/// What the listener serves with, from `config` and the identity in
/// `sysdir`; after `previous` (SIGHUP), sharing its action gate.
pub(super) fn serving(
    args: &Args,
    config: &Config,
    sysdir: &Path,
    previous: Option<&crate::engine::receive::Service>,
) -> Result<
    (std::sync::Arc<crate::engine::receive::Service>, crate::net::server::ServerSettings),
    String,
> {
    use crate::net::SettingsError;
    let mut settings = crate::net::server::ServerSettings::load(
        sysdir,
        secs(args.timeout),
        secs(args.idle_timeout),
    )
    .map_err(|e| match e {
        SettingsError::Identity(e) => format!("identity: {e} (create one with: csync --new-ca DIR; csync --new-cert NAME --ca DIR --out {})", sysdir.display()),
        SettingsError::Tls(e) => e.to_string(),
    })?;
    settings.session_limit = secs(args.session_timeout);
    let db = paths::index_file(
        args.database.as_deref(),
        paths::config_database(config).as_deref(),
        &config.myname,
        args.cfgname.as_deref(),
    );
    // Fail at start, not at the first push, if the index cannot be opened.
    Index::open(&db, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let busy = Duration::from_secs(u64::from(config.lock_timeout.unwrap_or(30)));
    let config = std::sync::Arc::new(config.clone());
    let service = match previous {
        Some(p) => p.renewed(config, db, busy).map_err(|e| e.to_string())?,
        None => {
            crate::engine::receive::Service::new(config, db, busy).map_err(|e| e.to_string())?
        }
    };
    Ok((std::sync::Arc::new(service), settings))
}
