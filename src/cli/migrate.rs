//! csync2's letters that csync does not need as modes of its own, and
//! `--import-csync2`: what lets a csync2 script, cron line or unit run
//! unchanged (see "Migrating from csync2" in the README).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Args, Exit, fail};
use crate::config::Config;
use crate::engine::Node;
use crate::index::Scope;
use crate::types::FileKind;

/// Rewrites csync2's argument forms into csync's: `-T NAME PEER [PATH]` and
/// `-S NAME PEER` (this node's name, then the peer).
///
/// # Errors
/// When NAME contradicts `-N`.
pub(super) fn normalize(mut args: Args) -> Result<Args, String> {
    let bare = |p: &PathBuf| {
        let s = p.as_os_str().as_encoded_bytes();
        !s.contains(&b'/') && !s.is_empty() && !p.exists()
    };
    let pair = args.list_pair
        || (args.test > 0
            && (2..=3).contains(&args.paths.len())
            && bare(&args.paths[0])
            && bare(&args.paths[1]));
    if pair {
        if args.paths.len() < 2 {
            return Err("-S needs this node's name and a peer: csync -S NAME PEER".into());
        }
        let name = args.paths.remove(0).to_string_lossy().to_lowercase();
        let peer = args.paths.remove(0).to_string_lossy().to_lowercase();
        match &args.node {
            Some(n) if n.to_lowercase() != name => {
                return Err(format!("{name} {peer}: {name} is not this node (-N {n})"));
            }
            _ => args.node = Some(name),
        }
        if !args.peers.is_empty() && !args.peers.iter().any(|p| p.to_lowercase() == peer) {
            return Err(format!("{peer} is not among -P {}", args.peers.join(",")));
        }
        args.peers = vec![peer];
    }
    Ok(args)
}

/// `-h`: alone, the help; with paths, csync2's hints, which csync does not
/// need (`-c` always checks every root against the index).
pub(super) fn hint(args: &Args) -> Exit {
    if args.paths.is_empty() {
        use clap::CommandFactory;
        let help = Args::command().render_help().to_string();
        return super::output_bytes(help.as_bytes());
    }
    if args.verbose > 0 {
        eprintln!(
            "csync: -h: {} hints accepted and dropped: csync -c checks everything anyway",
            args.paths.len()
        );
    }
    Exit::Ok
}

/// `-W FD` after a check (`-c`, `-x`): as csync2, the managed directories
/// the check recursed into (below the paths given with `-r`; every root
/// without paths), each NUL-terminated, written to the descriptor FD the caller
/// opened (`3>dirs`, a pipe).
pub(super) fn dump_dirs(node: &Node, args: &Args, fd: u32) -> Exit {
    use std::os::unix::ffi::OsStrExt;
    let files = match node.index.files(Scope::All) {
        Ok(f) => f,
        Err(e) => return fail!("{e}"),
    };
    let under: Vec<PathBuf> = args.paths.iter().map(|p| crate::paths::absolute(p)).collect();
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.meta.kind == FileKind::Dir && node.is_managed(&f.path)) {
        let Some(real) = crate::paths::real_path(&node.config, &f.path) else { continue };
        // csync2 wrote them while recursing: not for a path checked alone.
        let checked =
            under.is_empty() || (args.recursive && under.iter().any(|u| real.starts_with(u)));
        if checked {
            out.extend_from_slice(real.as_os_str().as_bytes());
            out.push(0);
        }
    }
    // /proc/self/fd: the descriptor csync2's caller opened for us, written
    // without unsafe code; append, so a file the shell opened keeps its place.
    let proc = format!("/proc/self/fd/{fd}");
    let written =
        std::fs::OpenOptions::new().append(true).open(&proc).and_then(|mut w| w.write_all(&out));
    match written {
        Ok(()) => Exit::Ok,
        Err(e) => fail!("-W {fd}: {e}"),
    }
}

/// `-H`: csync2's hint list, always empty here.
pub(super) fn list_hints() -> Exit {
    Exit::Nothing
}

/// `-S NAME PEER`: the index entries of the groups this node shares with
/// PEER, as `-L` prints them.
pub(super) fn list_pair(node: &Node, args: &Args) -> Exit {
    let Some(peer) = args.peers.first() else { return fail!("-S needs NAME PEER") };
    let groups: Vec<_> = node
        .groups
        .iter()
        .filter(|g| node.config.groups[g.index].hosts.iter().any(|h| h.name == *peer))
        .collect();
    if groups.is_empty() {
        return fail!("-S: {peer} shares no group with {}", node.config.myname);
    }
    let files = match node.index.files(Scope::All) {
        Ok(f) => f,
        Err(e) => return fail!("{e}"),
    };
    let text: String = files
        .iter()
        .filter(|f| groups.iter().any(|g| g.matcher.is_managed(&f.path)))
        .map(|f| {
            format!("{}\t{}\n", super::output::state_text(&f.meta), crate::paths::display(&f.path))
        })
        .collect();
    let exit = super::output_bytes(text.as_bytes());
    if exit == Exit::Ok && text.is_empty() { Exit::Nothing } else { exit }
}

/// `-o [-r] PATH…`: the managed paths at (and with `-r` below) the given
/// paths, one real path a line, for `xargs md5sum` (csync2-compare). With
/// `-P`, only paths of groups shared with those peers. Nothing is written.
pub(super) fn compare(config: Config, args: &Args) -> Exit {
    let index = match crate::index::Index::open_in_memory() {
        Ok(i) => i,
        Err(e) => return fail!("{e}"),
    };
    let node = match Node::new(config, index) {
        Ok(n) => n,
        Err(e) => return fail!("{e}"),
    };
    if args.paths.is_empty() {
        return fail!("-o needs at least one PATH");
    }
    let mut out = std::io::stdout().lock();
    let mut stack: Vec<PathBuf> =
        args.paths.iter().rev().map(|p| crate::paths::absolute(p)).collect();
    while let Some(p) = stack.pop() {
        let shown = crate::paths::db_forms(&node.config, &p).iter().any(|db| {
            node.is_managed(db)
                && (args.peers.is_empty()
                    || node
                        .peers_for(db)
                        .iter()
                        .any(|(peer, _)| args.peers.iter().any(|x| x == peer)))
        });
        if shown && writeln!(out, "{}", p.display()).is_err() {
            return Exit::Ok;
        }
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if is_dir && args.recursive {
            let mut kids: Vec<PathBuf> = match std::fs::read_dir(&p) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    eprintln!("csync: {}: {e}", p.display());
                    continue;
                }
            };
            kids.sort();
            stack.extend(kids.into_iter().rev());
        }
    }
    Exit::Ok
}

/// `-iii`: csync2's single-connection listener (its test suite starts one
/// per sync): binds the port, serves the first connection, exits.
pub(super) fn serve_once(args: &Args, config: &Config, sysdir: &Path) -> Exit {
    let (service, settings) = match super::serve::serving(args, config, sysdir, None) {
        Ok(s) => s,
        Err(e) => return fail!("{e}"),
    };
    let port = args.port.unwrap_or(crate::net::DEFAULT_PORT);
    let host = config
        .my_groups()
        .find_map(|g| g.me(&config.myname).and_then(|h| h.addr.clone()))
        .or_else(|| args.node.clone());
    let listener = match host {
        Some(h) => std::net::TcpListener::bind((h.as_str(), port))
            .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port))),
        None => std::net::TcpListener::bind(("0.0.0.0", port)),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => return fail!("cannot listen on port {port}: {e}"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail!("cannot start the runtime: {e}"),
    };
    let outcome = rt.block_on(async {
        let (s, from) = listener.accept().map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let s = tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())?;
        Ok::<_, String>(
            crate::net::server::serve(s, &from.to_string(), &settings, service.as_ref()).await,
        )
    });
    match outcome {
        Ok(crate::net::server::Outcome::Done { .. }) => Exit::Ok,
        Ok(crate::net::server::Outcome::Failed(why)) | Err(why) => fail!("{why}"),
    }
}

/// `--import-csync2 [DB]`: see [`crate::import_csync2`].
pub(super) fn import(node: &mut Node, args: &Args) -> Exit {
    let db = match args.import_csync2.as_deref() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => crate::import_csync2::default_path(&node.config.myname, args.cfgname.as_deref()),
    };
    let data = match crate::import_csync2::read(&db) {
        Ok(d) => d,
        Err(e) => return fail!("{e}"),
    };
    let r = match crate::import_csync2::import(node, &data) {
        Ok(r) => r,
        Err(e) => return fail!("{e}"),
    };
    for e in &r.errors {
        eprintln!("csync: {e}");
    }
    let exit = if r.errors.is_empty() { Exit::Ok } else { Exit::Error };
    let printed = if args.json {
        super::output::emit_json(&serde_json::json!({
            "db": db.display().to_string(),
            "scanned": r.scanned,
            "agreed": r.agreed,
            "peers": r.peers,
            "dirty": r.dirty,
            "changed": r.changed,
            "deleted": r.deleted,
            "unknown_base": r.unknown_base,
            "errors": r.errors,
        }))
    } else {
        super::output_bytes(
            format!(
                "imported {}: {} entries scanned; {} agreed with peers ({}), nothing to send \
                 for them; {} dirty marks from csync2, {} changed and {} deleted since its \
                 last check\n",
                db.display(),
                r.scanned,
                r.agreed,
                if r.peers.is_empty() { "none".to_string() } else { r.peers.join(", ") },
                r.dirty,
                r.changed,
                r.deleted
            )
            .as_bytes(),
        )
    };
    if r.unknown_base > 0 {
        eprintln!(
            "csync: warning: {} entries csync2 had not pushed (or that changed since its \
             last check) are marked: csync2 kept no content hash, so which version each peer \
             holds is unknown, and where a peer already holds a different copy they meet as \
             conflicts (settled by the group's auto rule, or by csync -f PATH). Running \
             csync2 -x on every node before importing avoids this.",
            r.unknown_base
        );
    }
    super::worst(exit, printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(a: &[&str]) -> Result<Args, String> {
        normalize(Args::try_parse_from(std::iter::once("csync").chain(a.iter().copied())).unwrap())
    }

    #[test]
    fn dash_t_takes_this_node_and_a_peer_as_csync2_did() {
        let a = parse(&["-T", "Alpha", "beta"]).unwrap();
        assert_eq!(
            (a.node.as_deref(), a.peers.as_slice(), a.paths.len()),
            (Some("alpha"), &["beta".to_string()][..], 0)
        );
        let a = parse(&["-T", "alpha", "beta", "/etc/x"]).unwrap();
        assert_eq!(a.paths, [PathBuf::from("/etc/x")]);
        // -N agreeing is fine; contradicting is refused.
        assert!(parse(&["-N", "alpha", "-T", "alpha", "beta"]).is_ok());
        assert!(
            parse(&["-N", "gamma", "-T", "alpha", "beta"]).unwrap_err().contains("not this node")
        );
        // A path (with a slash) stays a path.
        let a = parse(&["-T", "/etc/a", "/etc/b"]).unwrap();
        assert_eq!((a.node, a.paths.len()), (None, 2));
        assert_eq!(parse(&["-T", "/etc/a"]).unwrap().paths.len(), 1);
    }

    #[test]
    fn dash_h_is_help_alone_and_a_hint_with_paths() {
        let a = parse(&["-h"]).unwrap();
        assert_eq!(a.mode(), Ok(super::super::Mode::Hint));
        let a = parse(&["-x", "-h"]).unwrap();
        assert_eq!(a.mode(), Ok(super::super::Mode::Sync));
        assert!(
            Args::try_parse_from(["csync", "--help"])
                .is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp)
        );
    }
}
