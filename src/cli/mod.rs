//! The `csync` command: parses arguments, loads the node, runs one mode, and
//! turns the outcome into csync2's exit codes. All user-facing text is written
//! here or in `output`; lower layers return values and typed errors.

mod args;
mod json;
mod man;
mod migrate;
mod output;
mod peers;
mod progress;
mod report;
mod serve;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub use args::{Args, Mode};

use crate::config::{self, Config, LoadOptions};
use crate::engine::{self, Node};
use crate::index::Index;
use crate::paths;

/// csync2's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any error: bad config, failed peer or path, unresolved conflict.
    Error = 1,
    /// A listing found nothing; `-T` found everything in sync.
    Nothing = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Prints a one-line error to stderr, `csync: …`.
macro_rules! fail {
    ($($t:tt)*) => {{
        eprintln!("csync: {}", format_args!($($t)*));
        Exit::Error
    }};
}
pub(crate) use fail;

use peers::{client_settings, in_sync_test, ping};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Ok,
                _ => Exit::Error,
            };
            let _ = e.print();
            return code.into();
        }
    };
    run(&args).into()
}

/// Runs one parsed command line.
pub fn run(args: &Args) -> Exit {
    let args = &match migrate::normalize(args.clone()) {
        Ok(a) => a,
        Err(msg) => return fail!("{msg}"),
    };
    if args.man {
        return match man::page() {
            Ok(out) => output_bytes(&out),
            Err(e) => fail!("man page: {e}"),
        };
    }
    if let Some(shell) = args.completions {
        return output_bytes(&man::completions(shell));
    }
    let mode = match args.mode() {
        Ok(m) => m,
        Err(msg) => return fail!("{msg}"),
    };
    if let Some(name) = &args.cfgname
        && let Err(msg) = paths::check_config_name(name)
    {
        return fail!("{msg}");
    }
    let daemon = mode == Mode::Serve || mode == Mode::Watch;
    // systemd's sockets must be taken before anything else reads the environment.
    let activated = if daemon && args.serve >= 2 {
        crate::listener::take_activation_sockets()
    } else {
        Vec::new()
    };
    crate::logging::init(args.verbose, daemon);
    match mode {
        Mode::NewCa => {
            let dir = args.new_ca.as_deref().expect("mode says --new-ca was given");
            return match crate::net::identity::new_ca_for(
                dir,
                args.days.unwrap_or(crate::net::identity::CA_DAYS),
            ) {
                Ok((cert, key)) => {
                    println!(
                        "created {} and {} (keep the key safe)",
                        cert.display(),
                        key.display()
                    );
                    Exit::Ok
                }
                Err(e) => fail!("{e}"),
            };
        }
        Mode::NewCert => {
            let name = args.new_cert.as_deref().expect("mode says --new-cert was given");
            let (ca, out) = (
                args.ca.as_deref().expect("clap requires --ca"),
                args.out.as_deref().expect("clap requires --out"),
            );
            return match crate::net::identity::new_cert_for(
                &name.to_lowercase(),
                ca,
                out,
                args.days.unwrap_or(crate::net::identity::CERT_DAYS),
            ) {
                Ok(written) => {
                    for p in written {
                        println!("created {}", p.display());
                    }
                    Exit::Ok
                }
                Err(e) => fail!("{e}"),
            };
        }
        _ => {}
    }
    if mode == Mode::Hint {
        return migrate::hint(args);
    }
    if mode == Mode::Keygen {
        let file = args.keygen.as_deref().expect("mode says -k was given");
        return match crate::keygen::create_key_file(file) {
            Ok(()) => Exit::Ok,
            Err(e) => fail!("{}: {e}", file.display()),
        };
    }
    let sysdir = paths::system_dir();
    let lock = sysdir.join("csync2.lock");
    if lock.exists() {
        return fail!("found {}: csync is paused until it is removed", lock.display());
    }
    let config = match load_config(args, &sysdir) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    if let Err(exit) = check_selection(args, &config) {
        return exit;
    }
    if args.verbose > 0 || mode == Mode::CheckConfig {
        for w in &config.warnings {
            eprint!("{w}");
        }
    }
    match mode {
        Mode::CheckConfig => {
            let (exit, findings) = node_checks(&config, &sysdir);
            if args.json {
                let exit = worst(output::emit_json(&output::config_json(&config, &findings)), exit);
                return exit;
            }
            for (error, message) in &findings {
                let level = if *error { "error" } else { "warning" };
                eprintln!("csync: {level}: {message}");
            }
            return worst(output::config_summary(&config), exit);
        }
        Mode::Explain => {
            let p = args.explain.as_deref().expect("mode says --explain was given");
            return output::explain(&config, p, args.json);
        }
        Mode::Serve if args.serve >= 3 => return migrate::serve_once(args, &config, &sysdir),
        Mode::Serve => return serve::serve(args, &config, &sysdir, activated),
        Mode::ListHints => return migrate::list_hints(),
        Mode::Compare => return migrate::compare(config, args),
        Mode::Ping => return ping(args, &config, &sysdir),
        Mode::Test => {}
        _ => {}
    }
    let mut node = match open_node(args, config) {
        Ok(n) => n,
        Err(exit) => return exit,
    };
    match mode {
        Mode::Check { update: false } | Mode::Sync | Mode::Check { update: true } => {
            let update = mode != Mode::Check { update: false };
            let exit = report::sync_run(&mut node, args, &sysdir, true, update);
            match args.paths_fd {
                Some(fd) => worst(exit, migrate::dump_dirs(&node, args, fd)),
                None => exit,
            }
        }
        Mode::Update => report::sync_run(&mut node, args, &sysdir, false, true),
        Mode::Watch => serve::watch(node, args, &sysdir, None),
        Mode::Test => {
            let t = in_sync_test(&mut node, args, &sysdir);
            worst(t, report::actions_only(&mut node, args))
        }
        Mode::Mark | Mode::Force => {
            // Marking checks the paths first: real changes found owe their
            // do-local actions like those a -c finds.
            let m = mark(&mut node, args, mode == Mode::Force || args.forced_marks);
            worst(m, report::actions_only(&mut node, args))
        }
        Mode::List => output::list(&node, args.json),
        Mode::Status => {
            let format = match (args.prometheus, args.json) {
                (true, _) => status::Format::Prometheus,
                (false, true) => status::Format::Json,
                (false, false) => status::Format::Text,
            };
            status::status(&node, format, &sysdir)
        }
        Mode::AckConflicts => {
            let paths: Vec<Vec<u8>> =
                args.paths.iter().flat_map(|p| node.arg_forms(p, true)).map(|(db, _)| db).collect();
            if !args.paths.is_empty() && paths.is_empty() {
                return fail!("none of the paths is managed by any group");
            }
            match node.index.ack_conflicts(&paths) {
                Ok(n) => {
                    if args.verbose > 0 {
                        eprintln!("csync: {n} conflict records acknowledged");
                    }
                    Exit::Ok
                }
                Err(e) => fail!("{e}"),
            }
        }
        Mode::AckFailed => ack_failed(&mut node, args),
        Mode::ListPair => migrate::list_pair(&node, args),
        Mode::ImportCsync2 => migrate::import(&mut node, args),
        Mode::ListDirty => output::list_dirty(&node, args.json),
        Mode::Prune => {
            if !args.groups.is_empty() {
                return fail!(
                    "-R with -G would drop the rows of every other group; run -R without -G"
                );
            }
            match engine::prune(&mut node) {
                Ok((f, d)) => {
                    if args.verbose > 0 {
                        eprintln!("csync: removed {f} index rows and {d} dirty rows");
                    }
                    Exit::Ok
                }
                Err(e) => fail!("{e}"),
            }
        }
        _ => unreachable!("handled above"),
    }
}

fn load_config(args: &Args, sysdir: &Path) -> Result<Config, Exit> {
    load_config_text(args, sysdir).map_err(|text| {
        let _ = std::io::stderr().write_all(text.as_bytes());
        Exit::Error
    })
}

/// The config, or its diagnostics as text (for the listener's log on SIGHUP).
fn load_config_text(args: &Args, sysdir: &Path) -> Result<Config, String> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None => paths::config_file(sysdir, args.cfgname.as_deref()),
    };
    let myname = match &args.node {
        Some(n) => n.to_lowercase(),
        None => gethostname::gethostname().to_string_lossy().to_lowercase(),
    };
    let opts = LoadOptions {
        myname,
        sysdir: sysdir.to_path_buf(),
        active_groups: (!args.groups.is_empty()).then(|| args.groups.clone()),
    };
    config::load(&path, &opts).map_err(|diags| crate::diag::render(&diags))
}

/// `-G`, `-P` and `-D` against the config, before anything runs: a typo in a
/// name must not silently select nothing (csync2 then did nothing, exit 0).
fn check_selection(args: &Args, config: &Config) -> Result<(), Exit> {
    let me = &config.myname;
    let listed: Vec<&str> = config
        .groups
        .iter()
        .filter(|g| g.hosts.iter().any(|h| h.name == *me))
        .map(|g| g.name.as_str())
        .collect();
    for g in &args.groups {
        if !listed.contains(&g.as_str()) {
            return Err(fail!(
                "-G: '{g}' is not a group of this node (groups: {})",
                listed.join(", ")
            ));
        }
    }
    let mut peers: Vec<&str> =
        config.my_groups().flat_map(|g| g.peers(me)).map(|h| h.name.as_str()).collect();
    peers.sort_unstable();
    peers.dedup();
    for p in &args.peers {
        if !peers.contains(&p.to_lowercase().as_str()) {
            let list = if peers.is_empty() { "none".to_string() } else { peers.join(", ") };
            return Err(fail!("-P: '{p}' is not a peer of this node (peers: {list})"));
        }
    }
    if let Some(d) = &args.database
        && let Err((msg, _)) = config::check_database(d)
    {
        return Err(fail!("-D: {msg}"));
    }
    Ok(())
}

fn open_node(args: &Args, config: Config) -> Result<Node, Exit> {
    let db = paths::index_file(
        args.database.as_deref(),
        paths::config_database(&config).as_deref(),
        &config.myname,
        args.cfgname.as_deref(),
    );
    let timeout = Duration::from_secs(u64::from(config.lock_timeout.unwrap_or(30)));
    let index = Index::open(&db, timeout).map_err(|e| fail!("{e}"))?;
    Node::new(config, index).map_err(|e| fail!("{e}"))
}

fn report_scan_problems(report: &engine::CheckReport) -> bool {
    for a in &report.ignored_args {
        eprintln!("csync: {}: not managed by any group; ignored", a.display());
    }
    for e in &report.errors {
        eprintln!("csync: {}: {}", e.path.display(), e.message);
    }
    report.errors.is_empty()
}

/// The worse of two outcomes (an error wins).
fn worst(a: Exit, b: Exit) -> Exit {
    if a == Exit::Error || b == Exit::Error { Exit::Error } else { a }
}

/// `--ack-failed [HOST]`: forgets recorded action failures, all or one host's.
fn ack_failed(node: &mut Node, args: &Args) -> Exit {
    let host = args.ack_failed.as_deref().filter(|h| !h.is_empty());
    let cleared = match node.index.clear_action_failures(host) {
        Ok(n) => n,
        Err(e) => return fail!("{e}"),
    };
    if let Some(h) = host {
        let known = h == node.config.myname
            || node.config.groups.iter().any(|g| g.hosts.iter().any(|x| x.name == h));
        if cleared == 0 && !known {
            // Most likely a typo: saying nothing would look like success.
            return fail!("--ack-failed {h}: no host of that name in the config");
        }
    }
    let of = host.map_or(String::new(), |h| format!(" on {h}"));
    let s = if cleared == 1 { "" } else { "s" };
    println!("acknowledged {cleared} failed action{s}{of}");
    Exit::Ok
}

fn mark(node: &mut Node, args: &Args, force: bool) -> Exit {
    if args.paths.is_empty() {
        return fail!("{} needs at least one PATH", if force { "-f" } else { "-m" });
    }
    let paths: Vec<PathBuf> = args.paths.clone();
    match engine::mark_paths(node, &paths, args.recursive, force) {
        Ok((n, ignored)) => {
            for a in &ignored {
                eprintln!("csync: {}: not managed by any group; ignored", a.display());
            }
            if args.verbose > 0 {
                eprintln!("csync: {n} dirty marks set");
            }
            if ignored.is_empty() { Exit::Ok } else { Exit::Error }
        }
        Err(e) => fail!("{e}"),
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.001)).unwrap_or(Duration::from_secs(5))
}

fn identity_error(e: &crate::net::identity::Error, sysdir: &Path) -> Exit {
    use crate::net::identity::Error;
    match e {
        // Only a missing file needs the recipe; other problems say their fix.
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            fail!(
                "identity: {e} (create one with: csync --new-ca DIR; csync --new-cert NAME --ca DIR --out {})",
                sysdir.display()
            )
        }
        _ => fail!("identity: {e}"),
    }
}

/// `--check-config`'s checks beyond the config text: this node's identity
/// (what every connection needs) and the group key files' modes, as
/// `(is_error, message)`; exit 1 when one would make `csync -x` fail.
fn node_checks(config: &Config, sysdir: &Path) -> (Exit, Vec<(bool, String)>) {
    use crate::net::identity::{self, Severity};
    use std::os::unix::fs::PermissionsExt;
    let mut exit = Exit::Ok;
    let mut findings = Vec::new();
    // A node without peers never connects: its identity cannot fail a run.
    let connects = config.my_groups().any(|g| g.peers(&config.myname).next().is_some());
    for f in identity::check(sysdir, &config.myname) {
        let error = f.severity == Severity::Error && connects;
        if error {
            exit = Exit::Error;
        }
        findings.push((error, f.message));
    }
    let mut seen = Vec::new();
    for g in config.my_groups().filter(|g| g.key.is_some()) {
        if seen.contains(&&g.key_file) {
            continue;
        }
        seen.push(&g.key_file);
        if let Ok(md) = std::fs::metadata(&g.key_file) {
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                findings.push((false, format!(
                    "group '{}': key file {} is readable by group/others (mode {mode:04o}); chmod 600 it",
                    g.name,
                    g.key_file.display()
                )));
            }
        }
    }
    (exit, findings)
}

fn output_bytes(b: &[u8]) -> Exit {
    match std::io::stdout().lock().write_all(b) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => fail!("stdout: {e}"),
    }
}
