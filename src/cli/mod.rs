//! The `csync` command: parses arguments, loads the node, runs one mode, and
//! turns the outcome into csync2's exit codes. All user-facing text is written
//! here or in `output`; lower layers return values and typed errors.

mod args;
mod output;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub use args::{Args, Mode};

use crate::config::{self, Config, LoadOptions};
use crate::engine::{self, CheckOptions, Node};
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
    let mode = match args.mode() {
        Ok(m) => m,
        Err(msg) => return fail!("{msg}"),
    };
    if let Some(name) = &args.cfgname
        && let Err(msg) = paths::check_config_name(name)
    {
        return fail!("{msg}");
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
    if args.verbose > 0 || mode == Mode::CheckConfig {
        for w in &config.warnings {
            eprint!("{w}");
        }
    }
    match mode {
        Mode::CheckConfig => return output::config_summary(&config),
        Mode::Explain => {
            let p = args.explain.as_deref().expect("mode says --explain was given");
            return output::explain(&config, p);
        }
        Mode::Sync | Mode::Update | Mode::Check { update: true } | Mode::Test | Mode::Serve => {
            let what = match mode {
                Mode::Serve => "serving peers (-i/-ii)",
                Mode::Test => "the in-sync test (-T)",
                _ => "pushing to peers (-x/-u)",
            };
            return fail!(
                "{what} is not available in this build yet: it has the config, index and \
                 check commands only (-c, -L, -M, -m, -f, -R); nothing was changed"
            );
        }
        _ => {}
    }
    let mut node = match open_node(args, config) {
        Ok(n) => n,
        Err(exit) => return exit,
    };
    match mode {
        Mode::Check { update: false } => check(&mut node, args),
        Mode::Mark | Mode::Force => mark(&mut node, args, mode == Mode::Force),
        Mode::List => output::list(&node, args.json),
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
    config::load(&path, &opts).map_err(|diags| {
        let _ = std::io::stderr().write_all(crate::diag::render(&diags).as_bytes());
        Exit::Error
    })
}

fn open_node(args: &Args, config: Config) -> Result<Node, Exit> {
    let db = paths::index_file(
        args.database.as_deref(),
        config.database.as_deref(),
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

fn check(node: &mut Node, args: &Args) -> Exit {
    let opts = CheckOptions {
        paths: args.paths.clone(),
        recursive: args.recursive || args.paths.is_empty(),
        init: args.init,
    };
    match node.check(&opts) {
        Ok(report) => {
            if args.verbose > 0 {
                for (p, c) in &report.changed {
                    eprintln!("csync: {c}\t{}", paths::display(p));
                }
                eprintln!(
                    "csync: checked {} entries: {} changed, {} dirty marks",
                    report.seen,
                    report.changed.len(),
                    report.marks
                );
                if args.verbose > 1 {
                    for (phase, dt) in &report.timings {
                        eprintln!("csync: {phase}: {:.1} ms", dt.as_secs_f64() * 1000.0);
                    }
                }
            }
            if report_scan_problems(&report) { Exit::Ok } else { Exit::Error }
        }
        Err(e) => fail!("{e}"),
    }
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
