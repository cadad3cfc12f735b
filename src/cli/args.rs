//! The command line: csync2's single letters (so cron lines and units written
//! for csync2 keep working) plus our long options.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

const AFTER_HELP: &str = "\
Modes (exactly one; -c and -u may be combined):
  -x            check, then push every change to every peer (the everyday command)
  -c            check: update the index and dirty marks, nothing on the network
  -u            update: push what is dirty
  -m / -f       mark paths dirty / force this node's version over a conflict
  -M / -L       list dirty entries / list the index
  -T / -TT      in-sync test against peers / with diffs
  -R            remove index rows the config no longer matches
  -i / -ii      serve one connection on stdin / run the listener daemon
  --watch       watch the include roots, push each burst of changes within a
                second (-ii --watch: also serve peers; see --watch-delay)
  -k FILE       create a new group key file
  --ping PEER   check the connection to a peer (TLS, identity, group keys)
  --status      what is pending, conflicts met, failed actions (exit 1 if any)
  --ack-failed [HOST]
                forget the failed actions --status lists (all, or HOST's)

Identities: csync --new-ca DIR; csync --new-cert NAME --ca DIR --out DIR2.
Each node needs csync2_ssl_ca.pem, csync2_ssl_cert.pem and csync2_ssl_key.pem
(0600) in the system dir; see certs/README.md.

Actions (action { pattern P; exec \"CMD\"; logfile F; timeout N; do-local; }):
after a run, each command runs once on every host whose matching files changed
(receivers; with do-local also here), with %% as the changed paths, one argument
each (never shell text). Output goes to logfile (else csync's log); a command
running past its timeout (default 60 s) is killed. A failed command makes the
run exit 1, on that host and on the host that pushed, and stays listed (exit 1)
by their --status until the same command succeeds there, or --ack-failed.
Pending commands survive a crash in the index and run at the next run.

Exit status: 0 success; 1 any error (failed peer, conflict, failed action, bad
config); 2 a listing found nothing, or -T found everything in sync.

Files: config <sysdir>/csync2.cfg (or csync2_NAME.cfg with -C NAME), where
sysdir is $CSYNC2_SYSTEM_DIR or /etc; index /var/lib/csync/<node>[_NAME].db.";

/// Parsed command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "csync",
    version,
    about = "Keep files identical across the servers of a cluster (csync2 compatible).",
    after_help = AFTER_HELP,
    disable_help_flag = true,
    args_override_self = true
)]
pub struct Args {
    /// Check, then update: find local changes and push everything dirty to every peer.
    #[arg(short = 'x', help_heading = "Modes")]
    pub sync: bool,
    /// Check only: update the index and the dirty marks (no network).
    #[arg(short = 'c', help_heading = "Modes")]
    pub check: bool,
    /// Update only: push what is dirty (-cu = check, then update).
    #[arg(short = 'u', help_heading = "Modes")]
    pub update: bool,
    /// Mark PATHs dirty for every peer.
    #[arg(short = 'm', help_heading = "Modes")]
    pub mark: bool,
    /// Force: this node's version of PATHs wins the next push, even over a conflict.
    #[arg(short = 'f', help_heading = "Modes")]
    pub force: bool,
    /// List dirty entries: force|chary, this node, peer, path (tab-separated).
    #[arg(short = 'M', help_heading = "Modes")]
    pub list_dirty: bool,
    /// List the index: state and path (tab-separated).
    #[arg(short = 'L', help_heading = "Modes")]
    pub list: bool,
    /// In-sync test against peers (-TT: with unified diffs; -TI: mark what differs).
    #[arg(short = 'T', action = ArgAction::Count, help_heading = "Modes")]
    pub test: u8,
    /// Remove index rows that no longer match the config.
    #[arg(short = 'R', help_heading = "Modes")]
    pub prune: bool,
    /// Serve one connection on stdin/stdout (-ii: standalone listener daemon).
    #[arg(short = 'i', action = ArgAction::Count, help_heading = "Modes")]
    pub serve: u8,
    /// Create a new group key FILE (mode 0600, refuses to overwrite).
    #[arg(short = 'k', value_name = "FILE", help_heading = "Modes")]
    pub keygen: Option<PathBuf>,
    /// Parse and resolve the config, print a summary, check this node's identity
    /// and key files, and exit (1 when a run would fail; warnings otherwise).
    #[arg(long, help_heading = "Modes")]
    pub check_config: bool,
    /// Say which group and which pattern decide whether PATH is managed.
    #[arg(long, value_name = "PATH", help_heading = "Modes")]
    pub explain: Option<PathBuf>,
    /// Show what is pending per peer, every conflict met with where the
    /// losing version was kept, and every action that failed (here or on a
    /// peer this node pushed to) and has not worked since.
    #[arg(long, help_heading = "Modes")]
    pub status: bool,
    /// Acknowledge the conflicts recorded on the given paths (all without
    /// paths): `--status` no longer lists them as open. The kept copies stay.
    #[arg(long, help_heading = "Modes")]
    pub ack_conflicts: bool,
    /// Forget the failed actions --status lists, once dealt with by hand:
    /// all of them, or only those that ran on HOST (a peer, or this node's
    /// name). They are also forgotten when the same command succeeds later.
    #[arg(
        long,
        value_name = "HOST",
        num_args = 0..=1,
        default_missing_value = "",
        help_heading = "Modes"
    )]
    pub ack_failed: Option<String>,
    /// Connect to PEER over mutual TLS, prove the shared group keys, and report
    /// the protocol version, verified identity, round trip and clock offset.
    #[arg(long, value_name = "PEER", help_heading = "Modes")]
    pub ping: Option<String>,
    /// Create a cluster CA in DIR (csync2_ssl_ca.pem and csync2_ssl_ca.key, 0600).
    #[arg(long, value_name = "DIR", help_heading = "Identities")]
    pub new_ca: Option<PathBuf>,
    /// Create a certificate and key for host NAME, signed by the CA in --ca, into --out.
    #[arg(long, value_name = "NAME", requires_all = ["ca", "out"], help_heading = "Identities")]
    pub new_cert: Option<String>,
    /// The CA directory for --new-cert.
    #[arg(long, value_name = "DIR", help_heading = "Identities")]
    pub ca: Option<PathBuf>,
    /// The output directory for --new-cert (csync2_ssl_cert.pem, csync2_ssl_key.pem, CA copy).
    #[arg(long, value_name = "DIR", help_heading = "Identities")]
    pub out: Option<PathBuf>,
    /// Connect timeout in seconds: resolving, TCP, TLS and the handshake together
    /// (a dead peer costs at most this). Default 5.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// Idle timeout in seconds for every later read and write. Default 30.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub idle_timeout: f64,
    /// Listener (-i, -ii): longest a peer's session may last, in seconds,
    /// however it stalls. Default 14400 (4 hours).
    #[arg(long, value_name = "SECS", default_value_t = 14400.0)]
    pub session_timeout: f64,

    /// Watch mode: inotify on the include roots; each burst of changes is
    /// checked and pushed to every peer at once (with -ii: also serve peers).
    #[arg(long, help_heading = "Modes")]
    pub watch: bool,
    /// Watch mode: quiet time in ms that ends a burst (capped at 10x, >= 1 s).
    #[arg(long, value_name = "MS", default_value_t = crate::watch::DEFAULT_DELAY_MS)]
    pub watch_delay: u64,
    /// Watch mode: a full check runs this often anyway, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = crate::watch::DEFAULT_FULL_CHECK_SECS)]
    pub full_check_every: u64,

    /// Recurse into directories given as PATHs.
    #[arg(short = 'r')]
    pub recursive: bool,
    /// Init run: record the current state without marking anything dirty.
    #[arg(short = 'I')]
    pub init: bool,
    /// Dry run: say what would be sent, change nothing anywhere.
    #[arg(short = 'd')]
    pub dry_run: bool,
    /// More detail (-v, -vv, -vvv); silent on success by default.
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// This node's name (default: the host name, lower-cased).
    #[arg(short = 'N', value_name = "NAME")]
    pub node: Option<String>,
    /// Config name: use <sysdir>/csync2_NAME.cfg and index <node>_NAME.db.
    #[arg(short = 'C', value_name = "NAME")]
    pub cfgname: Option<String>,
    /// Index location: a directory, or a file ending in .db.
    #[arg(short = 'D', value_name = "DIR")]
    pub database: Option<String>,
    /// TCP port (default 30865).
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// Only these peers (comma-separated).
    #[arg(short = 'P', value_name = "PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Only these groups (comma-separated).
    #[arg(short = 'G', value_name = "GROUPS", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Use this config file (overrides -C and the system dir).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Accepted for csync2 compatibility (-l: log to syslog); csync logs to stderr.
    #[arg(short = 'l', hide = true)]
    pub syslog: bool,
    /// Print help.
    #[arg(short = 'h', long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Print the man page (roff) and exit: `csync --man > csync.1`.
    #[arg(long, hide = true)]
    pub man: bool,

    /// Paths to check, mark, force or explain.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The one thing a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-x`.
    Sync,
    /// `-c` (and `-cu`, with `update`).
    Check {
        /// `-cu`: update afterwards.
        update: bool,
    },
    /// `-u`.
    Update,
    /// `-m`.
    Mark,
    /// `-f`.
    Force,
    /// `-M`.
    ListDirty,
    /// `-L`.
    List,
    /// `-T`/`-TT`.
    Test,
    /// `-R`.
    Prune,
    /// `-i`/`-ii`.
    Serve,
    /// `-k FILE`.
    Keygen,
    /// `--check-config`.
    CheckConfig,
    /// `--explain PATH`.
    Explain,
    /// `--ping PEER`.
    Ping,
    /// `--watch` (without `-ii`).
    Watch,
    /// `--status`.
    Status,
    /// `--ack-conflicts [PATH…]`.
    AckConflicts,
    /// `--ack-failed [HOST]`.
    AckFailed,
    /// `--new-ca DIR`.
    NewCa,
    /// `--new-cert NAME --ca DIR --out DIR`.
    NewCert,
}

impl Args {
    /// The mode asked for.
    ///
    /// # Errors
    /// When no mode or more than one is given (csync2 printed its help then).
    pub fn mode(&self) -> Result<Mode, String> {
        let mut modes = Vec::new();
        let mut add = |on: bool, m: Mode, flag: &'static str| {
            if on {
                modes.push((m, flag));
            }
        };
        add(self.sync, Mode::Sync, "-x");
        add(self.check, Mode::Check { update: self.update }, "-c");
        add(self.update && !self.check, Mode::Update, "-u");
        add(self.mark, Mode::Mark, "-m");
        add(self.force, Mode::Force, "-f");
        add(self.list_dirty, Mode::ListDirty, "-M");
        add(self.list, Mode::List, "-L");
        add(self.test > 0, Mode::Test, "-T");
        add(self.prune, Mode::Prune, "-R");
        add(self.serve > 0, Mode::Serve, "-i");
        add(self.watch && self.serve == 0, Mode::Watch, "--watch");
        add(self.keygen.is_some(), Mode::Keygen, "-k");
        add(self.check_config, Mode::CheckConfig, "--check-config");
        add(self.explain.is_some(), Mode::Explain, "--explain");
        add(self.ping.is_some(), Mode::Ping, "--ping");
        add(self.status, Mode::Status, "--status");
        add(self.ack_conflicts, Mode::AckConflicts, "--ack-conflicts");
        add(self.ack_failed.is_some(), Mode::AckFailed, "--ack-failed");
        add(self.new_ca.is_some(), Mode::NewCa, "--new-ca");
        add(self.new_cert.is_some(), Mode::NewCert, "--new-cert");
        match modes.as_slice() {
            [] => {
                Err("no mode given: use one of -x -c -u -m -f -M -L -T -R -i -k (see --help)"
                    .into())
            }
            [(m, _)] => Ok(*m),
            many => Err(format!(
                "only one mode at a time, got {} (only -c and -u combine)",
                many.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(" ")
            )),
        }
    }
}
